"""TargetNotAllowed, argument validation and the CLI entry points' exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import edge.diagnostics as diagnostics
from edge.diagnostics import FAILURE_MODES, TargetNotAllowed, diagnose, diagnose_main

PY = sys.executable


def run_cli(code: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, timeout=120, input=stdin,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


DIAG = "import sys; from edge.diagnostics import diagnose_main; sys.exit(diagnose_main(sys.argv[1:]))"
TRIAGE = "import sys; from edge.diagnostics import triage_main; sys.exit(triage_main(sys.argv[1:]))"


def test_public_surface():
    assert diagnostics.__all__ == ["diagnose", "triage", "diagnose_main", "triage_main", "TargetNotAllowed",
                                   "FAILURE_MODES"]
    assert issubclass(TargetNotAllowed, ValueError)
    required = {"ok", "dns_not_configured", "wrong_endpoint", "connection_refused", "connection_timeout",
                "plain_http_on_tls_port", "protocol_version_mismatch", "cipher_mismatch", "sni_unrecognized",
                "handshake_failure", "default_certificate", "hostname_mismatch", "expired", "not_yet_valid",
                "client_clock_skew", "incomplete_chain", "self_signed", "untrusted_root", "tls_interception",
                "weak_signature", "weak_key", "revoked", "mixed_content"}
    assert required <= set(FAILURE_MODES)
    for m in FAILURE_MODES.values():
        assert m.summary and m.fix and m.phase and m.who_acts
        assert set(m.browser_errors) == {"chrome", "firefox", "safari", "edge"}


@pytest.mark.parametrize("connect,reason", [
    ("127.0.0.1:443", "loopback"), ("10.0.0.5:443", "private"), ("192.168.1.1:8443", "private"),
    ("169.254.169.254:80", "cloud metadata"), ("[fd00:ec2::254]:443", "cloud metadata"),
    ("[::1]:443", "loopback"), ("0.0.0.0:443", "unspecified"), ("224.0.0.1:443", "multicast"),
    ("169.254.10.10:443", "link-local"), ("[::ffff:127.0.0.1]:443", "loopback"), ("240.0.0.1:443", "reserved"),
])
async def test_private_targets_refused_before_connecting(connect, reason):
    with pytest.raises(TargetNotAllowed) as e:
        await diagnose("shop.example.com", connect=connect, allow_private=False, timeout=1)
    assert e.value.reason == reason


async def test_resolved_private_address_refused(corpus):
    with pytest.raises(TargetNotAllowed):
        await diagnose("good.test", resolver=corpus.dns.address, port=corpus.ok_server.port, allow_private=False)
    with pytest.raises(TargetNotAllowed):
        await diagnose("127.0.0.1", allow_private=False)


@pytest.mark.parametrize("kwargs", [
    {"hostname": "https://shop.example.com/"}, {"hostname": ""}, {"hostname": "a..b"},
    {"hostname": "x" * 64 + ".example.com"}, {"hostname": "bad_host name"},
    {"hostname": "ok.test", "connect": "127.0.0.1"}, {"hostname": "ok.test", "connect": "127.0.0.1:99999"},
    {"hostname": "ok.test", "cafile": "/nonexistent.pem"}, {"hostname": "ok.test", "expected_sha256": "abc"},
    {"hostname": "ok.test", "timeout": 0},
])
async def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        await diagnose(**kwargs)


@pytest.mark.slow
def test_diagnose_cli_exit_codes(corpus):
    ok, bad = corpus.endpoints["ok"], corpus.endpoints["expired"]
    r = run_cli(DIAG, ok.hostname, "--connect", ok.connect, "--cafile", ok.cafile)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok.test: OK") and "reproduce:" in r.stdout and "openssl s_client" in r.stdout
    r = run_cli(DIAG, bad.hostname, "--connect", bad.connect, "--cafile", bad.cafile, "--json")
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    assert data["failure_mode"] == "expired" and data["ok"] is False
    r = run_cli(DIAG, bad.hostname, "--connect", bad.connect, "--cafile", bad.cafile)
    assert r.returncode == 1 and r.stdout.startswith("expired.test: EXPIRED")
    for args in ([], ["--bogus-flag", "x"], ["ok.test", "--timeout", "abc"], ["https://x/"],
                 ["ok.test", "--connect", "nope"], ["ok.test", "--timeout", "-1"]):
        r = run_cli(DIAG, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "error" in r.stderr
    assert "invalid hostname" in run_cli(DIAG, "https://x/").stderr


def test_diagnose_main_in_process(corpus, capsys):
    ep = corpus.endpoints["connection_refused"]
    assert diagnose_main([ep.hostname, "--connect", ep.connect, "--timeout", "2"]) == 1
    assert "CONNECTION_REFUSED" in capsys.readouterr().out
    assert diagnose_main(["--help"]) == 0
    assert diagnose_main(["a b"]) == 2


def test_triage_cli():
    r = run_cli(TRIAGE, "curl: (60) SSL certificate problem: certificate has expired", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["failure_mode"] == "expired"
    r = run_cli(TRIAGE, "-", "--hostname", "shop.example.com", stdin="Error code: SSL_ERROR_BAD_CERT_DOMAIN\n")
    assert r.returncode == 0 and r.stdout.startswith("hostname_mismatch") and "openssl s_client" in r.stdout
    r = run_cli(TRIAGE, "--json", stdin="SEC_ERROR_UNKNOWN_ISSUER")
    assert r.returncode == 0 and json.loads(r.stdout)["failure_mode"] == "incomplete_chain"
    assert run_cli(TRIAGE, stdin="").returncode == 2
    assert run_cli(TRIAGE, "-", stdin="x" * 70000).returncode == 2
    assert run_cli(TRIAGE, "--nope").returncode == 2
    assert run_cli(TRIAGE, "ERR_CONNECTION_REFUSED", "--hostname", "bad host").returncode == 2
