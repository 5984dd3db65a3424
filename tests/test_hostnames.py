"""Property tests for hostname validation; the permissive form diagnostics uses; host:port values."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given, settings, strategies as st

from edge.names import (InvalidHostname, InvalidHostPort, format_hostport, is_valid_sni, parse_hostport,
                        registered_domain, validate_hostname)

LDH = string.ascii_lowercase + string.digits
label = st.text(alphabet=LDH, min_size=1, max_size=20).filter(lambda s: s[2:4] != "--") | \
    st.builds(lambda a, b: f"{a}-{b}", st.text(alphabet=LDH, min_size=1, max_size=10),
              st.text(alphabet=LDH, min_size=1, max_size=10))
hostname = st.builds(lambda labels, tld: ".".join(labels + [tld]), st.lists(label, min_size=1, max_size=4),
                     st.sampled_from(["com", "net", "org", "test", "example", "dev"]))


@given(hostname)
@settings(max_examples=300, deadline=None)
def test_valid_names_are_accepted_canonical_and_idempotent(name):
    try:
        h = validate_hostname(name)
    except InvalidHostname as e:
        # The only legitimate refusals for these names: all-digit-ish IP-like or a public suffix hit.
        assert e.code in ("public_suffix", "ip_literal"), (name, e.code)
        return
    assert h.ascii == name.lower()
    assert validate_hostname(h.ascii) == h
    assert validate_hostname(h.ascii.upper() + ".") == h
    assert is_valid_sni(h.ascii)
    assert h.ascii.endswith(h.registered_domain)


@given(st.ip_addresses())
def test_ip_literals_are_refused(ip):
    for form in (str(ip), f"[{ip}]" if ip.version == 6 else str(ip) + "."):
        with pytest.raises(InvalidHostname) as e:
            validate_hostname(form)
        assert e.value.code == "ip_literal"


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_arbitrary_text_never_crashes_and_accepted_names_are_ldh(text):
    try:
        h = validate_hostname(text)
    except InvalidHostname as e:
        assert e.code and e.message
        return
    assert len(h.ascii) <= 253
    assert all(0 < len(lab) <= 63 for lab in h.ascii.split("."))
    assert set(h.ascii) <= set(LDH + "-.")
    assert not h.wildcard


@given(label, st.integers(min_value=64, max_value=80))
def test_long_labels_refused(lab, n):
    with pytest.raises(InvalidHostname) as e:
        validate_hostname("a" * n + "." + lab + ".com")
    assert e.value.code == "label_too_long"


@pytest.mark.parametrize("suffix", ["co.uk", "com.au", "github.io", "blogspot.com", "s3.amazonaws.com", "com"])
def test_public_suffixes_refused(suffix):
    with pytest.raises(InvalidHostname):
        validate_hostname(suffix)
    assert validate_hostname("shop." + suffix).registered_domain == "shop." + suffix


def test_idna_and_wildcards():
    h = validate_hostname("Bücher.Example")
    assert h.ascii == "xn--bcher-kva.example" and h.unicode == "bücher.example"
    assert validate_hostname("*.shop.example.com", allow_wildcard=True).wildcard
    with pytest.raises(InvalidHostname) as e:
        validate_hostname("*.shop.example.com")
    assert e.value.code == "wildcard_not_allowed"
    with pytest.raises(InvalidHostname):
        validate_hostname("a.*.example.com", allow_wildcard=True)
    assert registered_domain("a.b.shop.co.uk") == "shop.co.uk"
    assert not is_valid_sni("") and not is_valid_sni(None) and not is_valid_sni("a_b.com")
    assert ipaddress.ip_address("127.0.0.1")


@given(hostname)
@settings(max_examples=100, deadline=None)
def test_names_a_tenant_may_register_are_probeable_unchanged(name):
    try:
        h = validate_hostname(name)
    except InvalidHostname:
        return
    assert validate_hostname(name, registrable=False).ascii == h.ascii


@pytest.mark.parametrize("raw,ascii", [
    ("localhost", "localhost"), ("co.uk", "co.uk"), ("_dmarc.Example.COM.", "_dmarc.example.com"),
    ("foo.123", "foo.123"), ("[::1]", "::1"), ("127.0.0.1", "127.0.0.1"), ("Bücher.example", "xn--bcher-kva.example"),
])
def test_probeable_names(raw, ascii):
    assert validate_hostname(raw, registrable=False).ascii == ascii


@pytest.mark.parametrize("raw", ["", "https://x/", "a..b", "1.2.3.4.5", "x" * 64 + ".com", "a b", "h:443", "*.a.com"])
def test_probeable_names_refused(raw):
    with pytest.raises(InvalidHostname):
        validate_hostname(raw, registrable=False)


def test_hostport():
    assert parse_hostport("shop.example.com:8443") == ("shop.example.com", 8443)
    assert parse_hostport(" [2001:db8::1]:53 ") == ("2001:db8::1", 53)
    assert parse_hostport("::1:53") == ("::1", 53)
    assert parse_hostport("::1", default_port=53) == parse_hostport("[::1]", default_port=53) == ("::1", 53)
    assert parse_hostport("ns.example", default_port=53) == ("ns.example", 53)
    assert parse_hostport(":8080", listen=True) == ("0.0.0.0", 8080)
    assert parse_hostport("127.0.0.1:0", listen=True) == ("127.0.0.1", 0)
    for value, kw in (("no-port", {}), (":8080", {}), ("127.0.0.1:0", {}), ("h:99999", {}), ("h:x", {}),
                      ("[::1]x", {}), ("fe80::1", {}), ("a:b:80", {})):
        with pytest.raises(InvalidHostPort) as e:
            parse_hostport(value, what="HTTPS_LISTEN", **kw)
        assert e.value.value == value and e.value.what == "HTTPS_LISTEN" and "HTTPS_LISTEN" in str(e.value)
    assert issubclass(InvalidHostPort, ValueError)
    assert format_hostport("::1", 443) == "[::1]:443" and format_hostport("a.test", 80) == "a.test:80"
