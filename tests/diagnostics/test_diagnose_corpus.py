"""``diagnose()`` against the corpus of real broken endpoints; every printed openssl command is RUN under sh and
its output must show the same failure."""

from __future__ import annotations

import re

import pytest

from edge.diagnostics import FAILURE_MODES, diagnose

from .conftest import need, run_sh

# name -> expected failure mode (the corpus builds exactly these; nginx_* are served by nginx)
EXPECTED = {
    "ok": "ok",
    "ok_wildcard": "ok",
    "wildcard_too_deep": "hostname_mismatch",
    "expired": "expired",
    "expired_intermediate": "expired",
    "not_yet_valid": "not_yet_valid",
    "self_signed": "self_signed",
    "untrusted_root": "untrusted_root",
    "untrusted_root_not_sent": "untrusted_root",
    "incomplete_chain": "incomplete_chain",
    "hostname_mismatch": "hostname_mismatch",
    "weak_signature": "weak_signature",
    "weak_key": "weak_key",
    "revoked": "revoked",
    "default_certificate": "default_certificate",
    "default_certificate_unchained": "default_certificate",
    "mixed_content": "mixed_content",
    "sni_unrecognized": "sni_unrecognized",
    "tls11_only": "protocol_version_mismatch",
    "raw_http": "plain_http_on_tls_port",
    "raw_reset": "handshake_failure",
    "raw_eof": "handshake_failure",
    "connection_refused": "connection_refused",
    "connection_timeout": "connection_timeout",
    "dns_ok": "ok",
    "dns_nxdomain": "dns_not_configured",
    "dns_no_address": "dns_not_configured",
    "wrong_endpoint": "wrong_endpoint",
    "wrong_endpoint_cname": "wrong_endpoint",
    "nginx_ok": "ok",
    "nginx_incomplete_chain": "incomplete_chain",
    "nginx_plain_http": "plain_http_on_tls_port",
    "nginx_tls10_only": "protocol_version_mismatch",
    "nginx_cipher_mismatch": "cipher_mismatch",
    "nginx_ocsp_revoked": "revoked",
}

# What the reproducing command's output must contain (any one of), per failure mode.
SHOWS = {
    "ok": [r"Verify return code: 0 \(ok\)"],
    "expired": [r"verify error:num=10:certificate has expired"],
    "not_yet_valid": [r"verify error:num=9:certificate is not yet valid"],
    "self_signed": [r"verify error:num=18:self-signed certificate"],
    "untrusted_root": [r"verify error:num=19:", r"verify error:num=20:"],
    "incomplete_chain": [r"verify error:num=20:unable to get local issuer certificate"],
    "hostname_mismatch": [r"verify error:num=62:hostname mismatch"],
    "default_certificate": [r"verify error:num=62:hostname mismatch"],
    "wrong_endpoint": [r"verify error:num=62:hostname mismatch"],
    "weak_signature": [r"verify error:num=68:CA signature digest algorithm too weak"],
    "weak_key": [r"verify error:num=66:EE certificate key too weak"],
    "revoked": [r"verify error:num=23:certificate revoked", r"Cert Status: revoked"],
    "plain_http_on_tls_port": [r"wrong version number"],
    "protocol_version_mismatch": [r"alert protocol version.*alert number 70"],
    "cipher_mismatch": [r"alert handshake failure.*alert number 40"],
    "sni_unrecognized": [r"unrecognized name.*alert number 112"],
    "handshake_failure": [r"unexpected eof while reading", r"errno=104", r"Connection reset by peer"],
    "connection_refused": [r"Connection refused", r"connect:errno=111"],
    "connection_timeout": [r"timed out"],
    "dns_not_configured": [r"Name or service not known|BIO_lookup_ex"],
    "mixed_content": [r"src=\"http://cdn\.mixed\.test/app\.js"],
}


def test_corpus_matches_table(corpus):
    built = set(corpus.endpoints)
    expected = {n for n in EXPECTED if corpus.nginx is not None or not n.startswith("nginx_")}
    assert built == expected
    assert {e.expected for e in corpus.endpoints.values()} <= set(FAILURE_MODES)
    assert all(corpus.endpoints[n].expected == EXPECTED[n] for n in built)


@pytest.fixture(scope="module")
def results():
    return {}


@pytest.mark.real
@pytest.mark.parametrize("name", list(EXPECTED))
async def test_diagnose_names_the_mode(corpus, name, results):
    if name.startswith("nginx_"):
        need("nginx")
    ep = corpus.endpoints[name]
    r = await diagnose(ep.hostname, **ep.diagnose_kwargs())
    results[name] = r
    assert r["failure_mode"] == EXPECTED[name], r["checks"]
    assert r["ok"] is (EXPECTED[name] == "ok")
    mode = FAILURE_MODES[r["failure_mode"]]
    assert r["summary"].startswith(mode.summary[:40]) and r["fix"] == mode.fix and r["who_acts"] == mode.who_acts
    assert set(r["browser_errors"]) == {"chrome", "firefox", "safari", "edge"}
    assert r["hostname"] == ep.hostname
    assert all(set(c) >= {"name", "ok", "detail"} for c in r["checks"])
    if EXPECTED[name] != "ok":
        assert any(not c["ok"] for c in r["checks"]), "a failure must show in at least one check"
    else:
        # with --connect, a name that does not resolve is reported but does not fail the diagnosis
        assert all(c["ok"] or c.get("fatal") is False for c in r["checks"])
    tls_modes = {"ok", "expired", "not_yet_valid", "self_signed", "untrusted_root", "incomplete_chain",
                 "hostname_mismatch", "weak_signature", "weak_key", "revoked", "default_certificate",
                 "mixed_content", "wrong_endpoint"}
    if EXPECTED[name] in tls_modes:
        cert = r["certificate"]
        assert cert and re.fullmatch(r"[0-9a-f]{64}", cert["sha256"]) and cert["not_after"].endswith("Z")
    else:
        assert r["certificate"] is None


@pytest.mark.real
@pytest.mark.parametrize("name", list(EXPECTED))
async def test_openssl_command_reproduces(corpus, name, results):
    need("openssl")
    if name.startswith("nginx_"):
        need("nginx")
    ep = corpus.endpoints[name]
    r = results.get(name) or await diagnose(ep.hostname, **ep.diagnose_kwargs())
    cmd = r["openssl_command"]
    assert "\n" not in cmd and "openssl s_client" in cmd
    if ep.cafile and r["failure_mode"] not in ("dns_not_configured",):
        assert f"-CAfile {ep.cafile}" in cmd
    out = run_sh(cmd, timeout=30)
    text = out.stdout + out.stderr
    patterns = SHOWS[EXPECTED[name]]
    assert any(re.search(p, text) for p in patterns), f"{cmd}\n---\n{text[-3000:]}"
    if EXPECTED[name] == "ok":
        assert "verify error" not in text and out.returncode == 0
    if name == "expired_intermediate":
        assert re.search(r"depth=1 .*Expired Intermediate", text)


@pytest.mark.real
async def test_details_of_findings(corpus, results):
    """Spot checks of what the checks say, beyond the mode."""
    ep = corpus.endpoints["wrong_endpoint_cname"]
    r = await diagnose(ep.hostname, **ep.diagnose_kwargs())
    assert "127.0.0.2" in r["summary"] and "old-cdn.test" in r["summary"]
    assert r["dns"]["cnames"] == ["old-cdn.test"]

    ep = corpus.endpoints["dns_ok"]
    r = await diagnose(ep.hostname, **ep.diagnose_kwargs())
    dns = next(c for c in r["checks"] if c["name"] == "dns")
    assert "ok.test -> edge.test -> 127.0.0.1" in dns["detail"]

    ep = corpus.endpoints["ok"]
    r = await diagnose(ep.hostname, **ep.diagnose_kwargs(), expected_sha256=corpus.ok_leaf.sha256)
    assert r["ok"] and r["certificate"]["expected"] is True
    assert r["certificate"]["sha256"] == corpus.ok_leaf.sha256
    assert [c["subject"] for c in r["certificate"]["chain"]][-1].startswith("CN=Edgecert Test Root")
    assert r["tls"]["versions"]["TLSv1.3"] is True

    ep = corpus.endpoints["incomplete_chain"]
    r = await diagnose(ep.hostname, **ep.diagnose_kwargs())
    assert r["certificate"]["served_chain_length"] == 1

    ep = corpus.endpoints["tls11_only"]
    r = await diagnose(ep.hostname, **ep.diagnose_kwargs())
    assert r["tls"]["versions"] == {"TLSv1.0": False, "TLSv1.1": True, "TLSv1.2": False, "TLSv1.3": False}

    # connect overrides DNS: a name that does not resolve is still probed where asked, and not failed for DNS
    ok = corpus.endpoints["ok"]
    r = await diagnose("ok.test", connect=ok.connect, cafile=ok.cafile, resolver=corpus.dns.address,
                       edge_targets=["192.0.2.1"])
    assert r["failure_mode"] == "ok"
    assert any(c["name"] == "dns_points_to_edge" and not c["ok"] for c in r["checks"])


@pytest.mark.real
async def test_same_endpoint_other_trust_store(corpus):
    """Without the test CA, the healthy endpoint chains to a root the system does not trust."""
    ep = corpus.endpoints["ok"]
    r = await diagnose(ep.hostname, connect=ep.connect)
    assert r["failure_mode"] == "untrusted_root"
    assert "-CAfile" not in r["openssl_command"]
    out = run_sh(r["openssl_command"])
    assert "verify error:num=20" in out.stdout + out.stderr


# What the curl command beside it prints, per failure mode (None: curl cannot show it, e.g. a CRL it never reads).
CURL_SHOWS = {
    "ok": r"^HTTP 200", "expired": r"curl: \(60\).*certificate has expired",
    "not_yet_valid": r"curl: \(60\).*not yet valid", "self_signed": r"curl: \(60\).*self-signed certificate",
    "untrusted_root": r"curl: \(60\)", "incomplete_chain": r"curl: \(60\).*unable to get local issuer",
    "hostname_mismatch": r"curl: \(60\)", "default_certificate": r"curl: \(60\)", "wrong_endpoint": r"curl: \(60\)",
    "weak_signature": r"curl: \(60\)", "weak_key": r"curl: \(60\).*key too weak",
    "plain_http_on_tls_port": r"curl: \(35\).*wrong version number",
    "protocol_version_mismatch": r"curl: \(35\)", "cipher_mismatch": r"curl: \(35\)",
    "sni_unrecognized": r"curl: \(35\).*unrecognized name", "handshake_failure": r"curl: \((35|56)\)",
    "connection_refused": r"curl: \(7\)", "connection_timeout": r"curl: \(28\)", "dns_not_configured": r"curl: \(6\)",
    "revoked": r"curl: \(91\)",
    "mixed_content": r"src=\"http://cdn\.mixed\.test/app\.js",
}


@pytest.mark.real
@pytest.mark.parametrize("name", list(EXPECTED))
async def test_curl_command_reproduces(corpus, name, results):
    need("curl")
    if name.startswith("nginx_"):
        need("nginx")
    ep = corpus.endpoints[name]
    r = results.get(name) or await diagnose(ep.hostname, **ep.diagnose_kwargs())
    cmd = r["curl_command"]
    assert "\n" not in cmd and cmd.startswith("curl ")
    if name == "revoked":  # through a CRL: curl reads no CRL by itself
        return
    out = run_sh(cmd, timeout=30)
    text = out.stdout + out.stderr
    assert re.search(CURL_SHOWS[EXPECTED[name]], text, re.M), f"{cmd}\n---\n{text[-2000:]}"
