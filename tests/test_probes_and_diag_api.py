"""Self-probes, expiry warnings and the diagnose / triage endpoints, over a real ``edgecert serve``."""

from __future__ import annotations

import json
import subprocess
import sys

from edge.demo.process import free_port
from edge.lifecycle.probes import warning_thresholds
from tests.helpers import EdgeProcess
from tests.test_swap_e2e import LocalCA, _key_pem, _pem

import datetime as dt


def test_warning_thresholds_scale_for_short_certificates():
    assert warning_thresholds(dt.timedelta(days=90))[0] == dt.timedelta(days=30)
    assert warning_thresholds(dt.timedelta(days=180))[-1] == dt.timedelta(days=1)
    short = warning_thresholds(dt.timedelta(days=6))
    assert short[0] == dt.timedelta(days=2) and short[-1] == dt.timedelta(days=6) / 90


def test_probes_record_result_and_warn_before_expiry(tmp_path, pebble, dns):
    ca = LocalCA("probe")
    roots = tmp_path / "roots.pem"
    roots.write_text(_pem(ca.root))
    dns.add_a("expiring.probe.test", ["192.0.2.55"])
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_UPLOAD_TRUST_ROOTS": str(roots), "EDGECERT_PROBE_INTERVAL": "1"}).start()
    try:
        # An issued domain: the probe right after the swap records ok with days to expiry.
        edge.add_domain("fine.probe.test", tenant="p")
        edge.wait_status("fine.probe.test", "active", timeout=30)
        d = edge.wait_for(lambda: (lambda d: d if d["last_probe"] else None)(edge.domain("fine.probe.test")),
                          timeout=10, what="a probe")
        p = d["last_probe"]
        assert p["ok"] and p["served_serial"] == d["certificate"]["serial"] and p["days_to_expiry"] > 300
        assert p["failure_mode"] is None
        # An uploaded 90-day certificate with 2 days left: one warning, at the 3-day level.
        edge.add_domain("expiring.probe.test", tenant="p")
        cert, key = ca.leaf("expiring.probe.test", days=2, start=-88)
        st, body = edge.call("PUT", "/v1/domains/expiring.probe.test/certificate",
                             {"certificate": _pem(cert) + _pem(ca.inter), "private_key": _key_pem(key)})
        assert st == 200, body
        warn = edge.wait_for(lambda: [e for e in edge.events("expiring.probe.test") if e["kind"] == "expiry_warning"],
                             timeout=10, what="an expiry warning")
        assert warn[0]["data"]["level_days"] == 3 and "expires in 2.00 days" in warn[0]["message"] or \
            warn[0]["message"].startswith("the certificate expires in 1.99")
        import time
        time.sleep(2.5)  # more probe rounds: the same level is not repeated
        assert len([e for e in edge.events("expiring.probe.test") if e["kind"] == "expiry_warning"]) == 1
        st, metrics = edge.call("GET", "/metrics", token=None)
        assert 'edgecert_events_total{kind="expiry_warning"}' in metrics
    finally:
        edge.stop()


def test_probe_failure_names_the_failure_mode(tmp_path, pebble, dns):
    closed = free_port()
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_PROBE_INTERVAL": "1", "EDGECERT_PROBE_ADDRESS": f"127.0.0.1:{closed}"}).start()
    try:
        edge.add_domain("down.probe.test", tenant="p")
        edge.wait_status("down.probe.test", "active", timeout=30)
        d = edge.wait_for(lambda: (lambda d: d if d["last_probe"] and not d["last_probe"]["ok"] else None)(
            edge.domain("down.probe.test")), timeout=15, what="a failed probe")
        assert d["last_probe"]["failure_mode"] == "connection_refused"
        ev = [e for e in edge.events("down.probe.test") if e["kind"] == "probe_failed"]
        assert len(ev) == 1 and ev[0]["data"]["failure_mode"] == "connection_refused"
        st, metrics = edge.call("GET", "/metrics", token=None)
        assert 'edgecert_probe_failures_total{failure_mode="connection_refused"}' in metrics
    finally:
        edge.stop()


def test_diagnose_endpoint_registered_only_and_no_private_targets_by_default(tmp_path, pebble, dns, edge_factory):
    edge = edge_factory("strict", EDGECERT_PUBLIC_BURST="4", EDGECERT_PUBLIC_RATE_PER_S="0.01")
    edge.add_domain("diag.api.test", tenant="d")
    edge.wait_status("diag.api.test", "active", timeout=30)
    st, body = edge.call("GET", "/v1/diagnose/diag.api.test", token=None)
    assert st == 422 and body["error"]["code"] == "target_not_allowed"  # resolves to loopback
    st, body = edge.call("GET", "/v1/diagnose/not-registered.example.com", token=None)
    assert st == 404
    st, body = edge.call("GET", "/v1/diagnose/diag.api.test", token=None)
    st, body = edge.call("GET", "/v1/diagnose/diag.api.test", token=None)
    st, body = edge.call("GET", "/v1/diagnose/diag.api.test", token=None)
    assert st == 429 and body["error"]["code"] == "rate_limited"


def test_diagnose_endpoint_in_a_lab_setup_and_triage(tmp_path, pebble, dns):
    from edge.demo.process import free_port
    https = free_port()
    edge = EdgeProcess(work_dir=tmp_path / "lab", pebble=pebble, dns=dns, env={
        "EDGECERT_HTTPS_LISTEN": f"127.0.0.1:{https}", "EDGECERT_HTTPS_PUBLIC_PORT": str(https),
        "EDGECERT_DIAGNOSE_ALLOW_PRIVATE": "true",
        "EDGECERT_DIAGNOSE_CAFILE": pebble.roots_file}).start()
    try:
        edge.add_domain("lab.diag.test", tenant="lab")
        d = edge.wait_status("lab.diag.test", "active", timeout=30)
        st, diag = edge.call("GET", "/v1/diagnose/lab.diag.test", token=None)
        assert st == 200, diag
        assert diag["ok"] is True and diag["failure_mode"] == "ok", diag["summary"]
        assert diag["hostname"] == "lab.diag.test" and "openssl s_client" in diag["openssl_command"]
        assert diag["certificate"]["serial"].lower().lstrip("0") == d["certificate"]["serial"].lstrip("0") or \
            d["certificate"]["serial"] in json.dumps(diag["certificate"]).lower()
        assert "PRIVATE KEY" not in json.dumps(diag)
        # Triage of a pasted browser error, with the hostname: the command to run from the affected network.
        st, tri = edge.call("POST", "/v1/triage", {"report": "NET::ERR_CERT_DATE_INVALID", "hostname": "lab.diag.test"},
                            token=None)
        # The report's words decide, as on the command line (issue 16); the served certificate being valid is
        # evidence: the visitor's clock is the first candidate and the context says why.
        assert st == 200 and tri["failure_mode"] == "expired", tri
        assert tri["candidates"][0] == "client_clock_skew" and any("valid now" in c for c in tri["context"]), tri
        cli = subprocess.run([sys.executable, "-m", "edge", "triage", "NET::ERR_CERT_DATE_INVALID", "--hostname",
                              "lab.diag.test", "--json"], capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and json.loads(cli.stdout)["failure_mode"] == tri["failure_mode"], cli.stderr
        assert "lab.diag.test" in tri["openssl_command"]
        st, tri = edge.call("POST", "/v1/triage", {"report": "curl: (35) error:0A00010B:SSL routines::wrong version number"},
                            token=None)
        assert st == 200 and tri["failure_mode"] == "plain_http_on_tls_port" and tri["openssl_command"] is None
        for bad in ({"report": ""}, {"report": 5}, {}, {"report": "x", "hostname": "1.2.3.4"}):
            st, err = edge.call("POST", "/v1/triage", bad, token=None)
            assert st == 422, (bad, st, err)
        st, err = edge.call("POST", "/v1/triage", {"report": "A" * 70000}, token=None)
        assert st == 422 and "too large" in err["error"]["message"]
        st, err = edge.call("POST", "/v1/triage", raw=b"not json", token=None)
        assert st == 400
    finally:
        edge.stop()
