"""Wildcard names (docs/dns-01.md): the hostname rules and the SNI index's selection one label below."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.names import InvalidHostname, validate_hostname
from edge.tls_edge.certificates import generate_default_certificate
from edge.tls_edge.index import CertEntry, SniIndex
from tests.certs import self_signed


@pytest.mark.parametrize("raw, ascii_, base", [
    ("*.customer.com", "*.customer.com", "customer.com"),
    ("*.Shop.Customer.COM.", "*.shop.customer.com", "customer.com"),
    ("*.customer.co.uk", "*.customer.co.uk", "customer.co.uk"),
    ("*.bücher.example", "*.xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_wildcards_allowed(raw, ascii_, base):
    h = validate_hostname(raw, allow_wildcard=True)
    assert h.wildcard and h.ascii == ascii_ and h.registered_domain == base


@pytest.mark.parametrize("raw, code", [
    ("*.*", "invalid_hostname"),
    ("*.*.customer.com", "invalid_hostname"),
    ("a.*.customer.com", "invalid_hostname"),
    ("x*.customer.com", "invalid_hostname"),
    ("**.customer.com", "invalid_hostname"),
    ("*.com", "not_fully_qualified"),
    ("*.co.uk", "public_suffix"),
    ("*.github.io", "public_suffix"),
    ("*.", "invalid_hostname"),
])
def test_wildcards_refused(raw, code):
    with pytest.raises(InvalidHostname) as e:
        validate_hostname(raw, allow_wildcard=True)
    assert e.value.code == code, e.value.message
    assert e.value.message  # a sentence a person can act on


def test_wildcard_needs_permission():
    with pytest.raises(InvalidHostname) as e:
        validate_hostname("*.customer.com")
    assert e.value.code == "wildcard_not_allowed" and "DNS-01" in e.value.message


def _entry(name: str) -> CertEntry:
    cert, key, serial = self_signed(name)
    return CertEntry(hostname=name, fullchain_pem=cert, key_pem=key, serial=serial, sha256="0",
                     not_after=dt.datetime.now(dt.timezone.utc))


def test_index_serves_a_wildcard_one_label_below_only_and_an_exact_name_first():
    dpem, dkey = generate_default_certificate()
    idx = SniIndex(default_fullchain=dpem, default_key=dkey)
    idx.put(_entry("*.customer.com"), prebuild=False)
    idx.put(_entry("vip.customer.com"), prebuild=False)
    assert idx.lookup("shop.customer.com").hostname == "*.customer.com"
    assert idx.lookup("vip.customer.com").hostname == "vip.customer.com"    # exact first
    assert idx.lookup("customer.com") is None                               # the apex is not covered
    assert idx.lookup("a.shop.customer.com") is None                        # two labels below: not covered
    assert idx.lookup("customer.com.evil.test") is None
    idx.remove("*.customer.com")
    assert idx.lookup("shop.customer.com") is None
