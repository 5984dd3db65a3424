"""Property tests for hostname validation."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given, settings, strategies as st

from edge.names import InvalidHostname, is_valid_sni, registered_domain, validate_hostname

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
