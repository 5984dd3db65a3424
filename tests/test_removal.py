"""Removing a domain cleans up, over a real ``edgecert serve`` and a real Pebble: files, exports, the reload hook,
the SNI index, the open order's authorizations at the CA, and revocation (``DELETE ...?revoke=true``, CLI
``domains remove --revoke``); a CA that is down does not block the removal and is reported."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from aiohttp import web

from tests.helpers import REPO, EdgeProcess, served_leaf
from tests.support.acmeproxy import AcmeProxy, ProxyThread


def _serial(d: dict) -> str:
    return d["certificate"]["serial"].lower().replace(":", "")


@pytest.mark.real
@pytest.mark.slow
def test_remove_with_revoke_cleans_up_everything_and_pebble_reports_revoked(tmp_path, pebble, dns):
    hook_log = tmp_path / "hook.log"
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_RELOAD_COMMAND": f'echo "$EDGECERT_HOSTNAMES" >> {hook_log}',
        "EDGECERT_HOOK_BATCH_WINDOW": "0.1"}).start()
    host, other = "gone.removal.test", "stays.removal.test"
    try:
        st, tenant = edge.call("POST", "/v1/tenants", {"name": "leaving"})
        assert st == 201
        edge.add_domain(host, tenant="leaving")
        edge.add_domain(other, tenant="leaving")
        d = edge.wait_status(host, "active", timeout=60)
        edge.wait_status(other, "active", timeout=60)
        # The first reload (for both new certificates) has run before the removal: the removal's own reload is then
        # a run of its own, not merged into that pending one (which the hook's batching would rightly do).
        edge.wait_for(lambda: hook_log.exists() and {host, other} <= set(hook_log.read_text().split()),
                      timeout=30, what="the first reload hook run")
        runs_before = len(hook_log.read_text().splitlines())
        serial = _serial(d)
        state = tmp_path / "edge" / "state"
        exports = state / "exports" / "nginx-servers.conf"
        assert (state / "live" / host / "fullchain.pem").exists() and host in exports.read_text()
        assert format(served_leaf(edge.https_port, host).serial_number, "x") == serial
        assert pebble.cert_status(serial)["Status"] == "Valid"

        # Bad input changes nothing.
        st, err = edge.call("DELETE", f"/v1/domains/{host}?revoke=maybe", token=tenant["token"])
        assert st == 422 and err["error"]["code"] == "invalid_query"
        assert edge.domain(host)["status"] == "active"

        # The tenant removes its own domain, revoking, through the CLI.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
        r = subprocess.run([sys.executable, "-m", "edge", "domains", "remove", host, "--revoke", "--json",
                            "--api", edge.api, "--token", tenant["token"]], capture_output=True, text=True,
                           timeout=120, env=env, cwd=REPO)
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout)
        assert report["removed"] is True and report["revoked"] is True and report["failed_steps"] == []
        steps = {s["step"]: s["status"] for s in report["cleanup"]}
        assert steps == {"serving_stopped": "done", "renewal_stopped": "done", "files_removed": "done",
                         "exports_updated": "done", "reload_requested": "done", "order_abandoned": "skipped",
                         "certificate_revoked": "done"}

        # The CA says revoked, with reason cessationOfOperation (5).
        status = pebble.cert_status(serial)
        assert status["Status"] == "Revoked" and int(status.get("Reason", -1)) == 5, status
        # Gone from the store, the files, the exports and the SNI index; the other name untouched.
        assert edge.call("GET", f"/v1/domains/{host}")[0] == 404
        assert not (state / "live" / host).exists() and not (state / "archive" / host).exists()
        assert host not in exports.read_text() and other in exports.read_text()
        assert format(served_leaf(edge.https_port, host).serial_number, "x") != serial
        assert edge.domain(other)["status"] == "active"
        # The reload hook ran for the other servers after the removal.
        edge.wait_for(lambda: hook_log.exists() and any(line.split() == [host] for line in
                                                        hook_log.read_text().splitlines()[runs_before:]),
                      timeout=15, what="the reload hook run for the removed name")
        # Removing again: 404, nothing else.
        assert edge.call("DELETE", f"/v1/domains/{host}")[0] == 404
    finally:
        edge.stop()


class DeactivationSpy(AcmeProxy):
    """The test ACME proxy, remembering every authorization update it forwarded and what Pebble answered."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[str, dict, int, str | None]] = []

    async def _forward(self, request: web.Request, kind: str, body: bytes) -> web.Response:
        resp = await super()._forward(request, kind, body)
        if kind == "authz" and request.method == "POST" and body:
            raw = json.loads(body).get("payload") or ""
            if raw:
                payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
                answered = json.loads(resp.body).get("status") if resp.status == 200 else None
                self.updates.append((request.path, payload, resp.status, answered))
        return resp


@pytest.mark.real
@pytest.mark.slow
def test_open_order_is_deactivated_and_a_ca_outage_does_not_block_removal(tmp_path, pebble, dns):
    pt = ProxyThread(pebble.directory_url)
    pt.proxy = DeactivationSpy(pebble.directory_url, upstream_ca=pebble.ca_bundle, work_dir=tmp_path / "proxy",
                               ari=False)
    pt.start()
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_ACME_DIRECTORY": pt.directory_url, "EDGECERT_ACME_CA_BUNDLE": pt.ca_bundle,
        "EDGECERT_ORDER_TIMEOUT": "3", "EDGECERT_TRANSIENT_RETRY_SCHEDULE": "60",
        "EDGECERT_REMOVAL_CA_TIMEOUT": "5"}).start()
    served, stuck = "served.removal-ca.test", "stuck.removal-ca.test"
    try:
        edge.add_domain(served, tenant="t")
        d = edge.wait_status(served, "active", timeout=60)
        serial = _serial(d)

        # An order whose challenge the CA never gets (503): it stays open, its authorization pending at Pebble.
        pt.inject(kind="challenge", status=503, times=None, methods=["POST"])
        edge.add_domain(stuck, tenant="t")
        edge.wait_for(lambda: any(e["kind"] == "issuance_failed" for e in edge.events(stuck)), timeout=30,
                      what="the order to be left open")
        st, report = edge.call("DELETE", f"/v1/domains/{stuck}?report=true")
        assert st == 200 and report["removed"] is True, report
        steps = {s["step"]: s for s in report["cleanup"]}
        assert steps["authorizations_deactivated"]["status"] == "done", steps
        assert steps["authorizations_deactivated"]["detail"].startswith("1 authorization")
        assert steps["order_abandoned"]["status"] == "done"
        deactivations = [u for u in pt.proxy.updates if u[1] == {"status": "deactivated"}]
        assert len(deactivations) == 1 and deactivations[0][2:] == (200, "deactivated"), pt.proxy.updates
        pt.clear_faults()

        # The CA goes down: the removal still happens, the failed revocation is reported.
        pt.set_unreachable(True)
        t0 = time.monotonic()
        st, report = edge.call("DELETE", f"/v1/domains/{served}?revoke=true")
        assert st == 200 and report["removed"] is True and report["revoked"] is False, report
        assert time.monotonic() - t0 < 20
        assert report["failed_steps"] == ["certificate_revoked"]
        failed = next(s for s in report["cleanup"] if s["step"] == "certificate_revoked")
        assert "could not be reached" in failed["detail"] and serial in failed["detail"]
        assert edge.call("GET", f"/v1/domains/{served}")[0] == 404
        assert not (tmp_path / "edge" / "state" / "live" / served).exists()
        assert pebble.cert_status(serial)["Status"] == "Valid"
    finally:
        edge.stop()
        pt.stop()
