"""Real clients against real broken endpoints on loopback (tests/triage_realclients.py), their output triaged as
it comes: the new modes of issue 16 (a client certificate demanded, no common application protocol, a certificate
not for TLS servers, a chain that is complete but invalid, a handshake that never finishes) in each client's own
words. Only pairs whose output names the cause are asserted (git's "server certificate verification failed" names
none: that it still lists the cause among the candidates is checked separately)."""

from __future__ import annotations

import pytest

from edge.diagnostics import triage
from tests import triage_realclients as rc

from .conftest import need

#: endpoint -> the clients whose message names the cause
CLEAR = {
    "client_cert_tls13": ["openssl", "curl", "node", "gnutls-cli", "php"],
    "client_cert_tls12": ["openssl", "curl -v"],
    "alpn_mismatch": ["openssl", "curl", "python", "node", "gnutls-cli", "git", "php"],
    "unsuitable_purpose": ["openssl", "curl", "python", "node", "gnutls-cli"],
    "invalid_ca": ["openssl", "curl", "python", "node", "wget", "gnutls-cli"],
    "name_constraints": ["openssl", "curl", "python", "node"],
    "path_length": ["curl", "node", "gnutls-cli"],
    "must_staple": ["gnutls-cli"],
}
BINARIES = {"openssl": "openssl", "curl": "curl", "curl -v": "curl", "node": "node", "gnutls-cli": "gnutls-cli",
            "wget": "wget", "git": "git", "php": "php", "python": None}


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    need("openssl")
    eps = rc.build(tmp_path_factory.mktemp("triage-real"), names=list(CLEAR) + ["handshake_timeout", "expired"])
    yield {e.name: e for e in eps}
    rc.stop(eps)


@pytest.mark.real
@pytest.mark.parametrize("endpoint", list(CLEAR))
def test_each_client_in_its_own_words(endpoints, endpoint, tmp_path):
    ep = endpoints[endpoint]
    for client in CLEAR[endpoint]:
        if BINARIES[client]:
            need(BINARIES[client])
    out = rc.collect([ep], tmp_path, clients=CLEAR[endpoint])
    assert {o["client"] for o in out} == set(CLEAR[endpoint])
    for o in out:
        r = triage(o["text"])
        assert r["failure_mode"] == ep.expected, (client := o["client"], o["text"][-600:], r["matched"][:4])
        assert r["confidence"] >= 0.5, (client, r)


@pytest.mark.real
def test_generic_messages_still_list_the_cause(endpoints, tmp_path):
    need("git")
    out = rc.collect([endpoints["expired"], endpoints["invalid_ca"]], tmp_path, clients=["git"])
    for o in out:
        assert "server certificate verification failed" in o["text"]
        r = triage(o["text"])
        assert r["failure_mode"] == "untrusted_root" and o["expected"] in r["candidates"], (o, r)


@pytest.mark.real
@pytest.mark.slow
def test_a_stalled_handshake(endpoints, tmp_path):
    """TCP connects, the server never answers: Python, Java and curl -v each say so in their words."""
    need("curl")
    need("java")
    out = rc.collect([endpoints["handshake_timeout"]], tmp_path, clients=["python", "java", "curl -v"])
    for o in out:
        r = triage(o["text"])
        assert r["failure_mode"] == "handshake_timeout", (o["client"], o["text"][-400:], r["matched"][:3])


@pytest.mark.real
@pytest.mark.slow
def test_java_in_its_own_words(endpoints, tmp_path):
    need("java")
    eps = [endpoints[n] for n in ("alpn_mismatch", "unsuitable_purpose", "invalid_ca", "name_constraints")]
    for o in rc.collect(eps, tmp_path, clients=["java"]):
        r = triage(o["text"])
        assert r["failure_mode"] == o["expected"], (o["endpoint"], o["text"][-400:])
