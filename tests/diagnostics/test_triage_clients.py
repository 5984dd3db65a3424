"""``triage()`` on what real clients print against the corpus: openssl s_client, curl, Python ssl, Node, Java."""

from __future__ import annotations

import shutil
import time

import pytest

from edge.diagnostics import triage

from . import clients
from .conftest import need

NAMES = [
    "expired", "expired_intermediate", "not_yet_valid", "self_signed", "untrusted_root", "untrusted_root_not_sent",
    "incomplete_chain", "hostname_mismatch", "weak_signature", "weak_key", "default_certificate",
    "default_certificate_unchained", "sni_unrecognized", "tls11_only", "raw_http", "raw_reset", "raw_eof",
    "connection_refused", "nginx_tls10_only", "nginx_cipher_mismatch", "nginx_plain_http",
]
CLIENTS = ["openssl", "curl", "python", "node", "java"]

# The client's text cannot tell these apart; the expected mode must then be among the candidates.
AMBIGUOUS = {
    # "unable to get local issuer certificate" (verify code 20): a missing intermediate or an unknown root
    **{(c, "untrusted_root_not_sent"): "code 20" for c in ("openssl", "curl", "python", "node")},
    # a default certificate shows as the generic chain error of its own chain
    **{(c, "default_certificate"): "self-signed fallback" for c in ("curl", "python", "node", "java")},
    **{(c, "default_certificate_unchained"): "code 20 hides the name" for c in ("curl", "python", "node", "java")},
    # Java says "PKIX path building failed" for every chain problem
    **{("java", n): "PKIX" for n in ("self_signed", "incomplete_chain")},
}
# Clients that do not fail at all (Java accepts SHA-1 signed leaves and RSA-1024 by default; Node accepts RSA-1024).
ACCEPTS = {("java", "weak_signature"), ("java", "weak_key"), ("node", "weak_key")}


@pytest.fixture(scope="module")
def captured(corpus, tmp_path_factory):
    eps = [corpus.endpoints[n] for n in NAMES if n in corpus.endpoints]
    work = tmp_path_factory.mktemp("clients")
    out: dict[tuple[str, str], str] = {}
    for ep in eps:
        out[("openssl", ep.name)] = clients.openssl_transcript(ep)
        out[("python", ep.name)] = clients.python_error(ep)
        if shutil.which("curl"):
            out[("curl", ep.name)] = clients.curl_error(ep)
    if shutil.which("node"):
        for k, v in clients.node_errors(eps, work).items():
            out[("node", k)] = v
    if shutil.which("java"):
        for k, v in clients.java_errors(eps, work).items():
            out[("java", k)] = v
    return out


@pytest.mark.real
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("name", NAMES)
def test_triage_of_real_client_output(corpus, captured, client, name):
    need(client)
    if name.startswith("nginx_"):
        need("nginx")
    if (client, name) in ACCEPTS:
        assert captured[(client, name)].startswith("OK"), captured[(client, name)]
        return
    ep = corpus.endpoints[name]
    text = captured[(client, name)]
    assert text.strip() and not text.startswith("OK"), f"{client} did not fail against {name}"
    r = triage(text, hostname=ep.hostname)
    if (client, name) in AMBIGUOUS:
        assert ep.expected in r["candidates"] or r["failure_mode"] == ep.expected, (r, text[-600:])
    else:
        assert r["failure_mode"] == ep.expected, (r, text[-1500:])
        assert r["confidence"] >= 0.5
    assert r["openssl_command"].startswith("openssl s_client -connect ") or r["failure_mode"] == "mixed_content"
    assert r["explanation"] and r["next_steps"]


@pytest.mark.real
def test_triage_revocation_reports(corpus):
    need("curl")
    ep = corpus.endpoints["revoked"]
    crl = next(corpus.pki.dir.glob("inter.crl"))
    pem = corpus.pki.dir / "inter.crl.pem"
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem.write_bytes(x509.load_der_x509_crl(crl.read_bytes()).public_bytes(serialization.Encoding.PEM))
    text = clients.curl_error(ep, "--crlfile", str(pem))
    assert "revoked" in text
    assert triage(text)["failure_mode"] == "revoked"
    text = clients.openssl_transcript(ep, "-crl_check", "-crl_download")
    assert "verify error:num=23" in text
    assert triage(text, hostname=ep.hostname)["failure_mode"] == "revoked"
    if corpus.nginx is not None:
        ep = corpus.endpoints["nginx_ocsp_revoked"]
        text = clients.curl_error(ep, "--cert-status")
        assert "curl: (91)" in text
        assert triage(text)["failure_mode"] == "revoked"
        assert triage(clients.openssl_transcript(ep))["failure_mode"] == "revoked"


@pytest.mark.real
def test_triage_context_rules_on_real_transcripts(corpus):
    # the untrusted endpoint is issued by "Elsewhere Private Intermediate": not the edge's. The report's own words
    # decide the mode (the same answer as the command line without that knowledge); interception is the first
    # candidate and the context says why.
    ep = corpus.endpoints["untrusted_root"]
    text = clients.openssl_transcript(ep)
    plain = triage(text, hostname=ep.hostname)
    r = triage(text, hostname=ep.hostname, edge_issuers=["CN=Edgecert Test Intermediate"])
    assert r["failure_mode"] == plain["failure_mode"] == "untrusted_root"
    assert r["candidates"][0] == "tls_interception" and any("not one of the edge's issuers" in c for c in r["context"])
    # the same transcript from the healthy endpoint has the edge's issuer: no interception
    ok = corpus.endpoints["ok"]
    r = triage(clients.openssl_transcript(ok), hostname=ok.hostname, edge_issuers=["Edgecert Test Intermediate"])
    assert r["failure_mode"] == "ok" and "tls_interception" not in r["candidates"]
    # a client whose clock is 200 days ahead: openssl -attime shows "expired" with a notAfter still in the future
    text = clients.openssl_transcript(ok, "-attime", str(int(time.time()) + 200 * 86400))
    assert "verify error:num=10" in text
    r = triage(text, hostname=ok.hostname)
    assert r["failure_mode"] == "client_clock_skew", r
    # an expiry error while the served certificate is valid: still "expired" (what the text says), with the clock
    # as the first candidate and the reason in the context
    need("curl")
    r = triage(clients.curl_error(corpus.endpoints["expired"]), served_certificate_valid=True)
    assert r["failure_mode"] == "expired" and r["candidates"][0] == "client_clock_skew"
    assert any("valid now" in c for c in r["context"])
    r = triage(clients.curl_error(corpus.endpoints["expired"]), served_certificate_valid=False)
    assert r["failure_mode"] == "expired" and "client_clock_skew" not in r["candidates"]
