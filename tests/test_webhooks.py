"""Outgoing webhooks from a real ``edgecert serve`` to a local aiohttp receiver that checks every signature.

One edge, one receiver; the receiver's answer depends on the event's hostname:
``ok.*`` always 200, ``flaky.*`` 503 the first time it sees an event then 200, ``down.*`` always 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time

import pytest
from aiohttp import web

from edge.demo.process import free_port
from edge.lifecycle.webhooks import verify_signature

pytestmark = pytest.mark.real

SECRET = "whsec-test-0123456789abcdef"
OK, FLAKY, DOWN = "ok.hooks.test", "flaky.hooks.test", "down.hooks.test"


def check_signature(secret: str, body: bytes, header: str) -> bool:
    """Independent of edge.webhooks: what a receiver written from docs/webhooks.md does."""
    fields = dict(item.split("=", 1) for item in header.split(","))
    t = int(fields["t"])
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - t) < 300 and hmac.compare_digest(mac, fields["v1"])


class Receiver:
    """An aiohttp server in a thread of its own, recording every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/edgecert"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("X-Edgecert-Signature", "")
        payload = json.loads(body)
        host = payload["hostname"]
        with self._lock:
            first = payload["id"] not in self._seen
            self._seen.add(payload["id"])
            status = 200
            if host.startswith("down."):
                status = 500
            elif host.startswith("flaky.") and first:
                status = 503
            self.requests.append({"body": body, "payload": payload, "headers": dict(request.headers),
                                  "signed": check_signature(SECRET, body, header), "status": status,
                                  "path": request.path})
        return web.Response(status=status, text="ok" if status == 200 else "receiver says no")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hooks/edgecert", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> "Receiver":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def for_host(self, host: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["payload"]["hostname"] == host]


def deliveries(edge, **query) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    st, body = edge.call("GET", "/v1/webhooks/deliveries" + (f"?{qs}" if qs else ""))
    assert st == 200, body
    return body["deliveries"]


def test_events_are_delivered_signed_filtered_retried_and_logged(edge_factory, dns):
    with Receiver() as rx:
        edge = edge_factory(EDGECERT_WEBHOOK_URL=rx.url, EDGECERT_WEBHOOK_SECRET=SECRET,
                            EDGECERT_WEBHOOK_EVENTS="domain_*,certificate_*,swapped",
                            EDGECERT_WEBHOOK_RETRY_SCHEDULE="0.5,0.5")
        for h in (FLAKY, DOWN):
            dns.add_a(h, ["192.0.2.40"])  # stay pending_dns: only domain_added passes the filter for them
        edge.add_domain(OK, tenant="hooks")
        edge.add_domain(FLAKY, tenant="hooks")
        edge.add_domain(DOWN, tenant="hooks")
        edge.wait_status(OK, "active")

        # 1. A healthy receiver gets each wanted event once, signed, with the documented body.
        edge.wait_for(lambda: {"domain_added", "certificate_obtained", "swapped"}
                      <= {r["payload"]["type"] for r in rx.for_host(OK)}, what="deliveries for the ok host")
        got = rx.for_host(OK)
        assert all(r["signed"] for r in got)
        assert all(r["headers"]["Content-Type"] == "application/json" for r in got)
        types = [r["payload"]["type"] for r in got]
        assert len(types) == len(set(types))  # no duplicates
        assert set(types) <= {"domain_added", "certificate_obtained", "swapped", "certificate_expired",
                              "domain_removed"}  # the filter holds: no order_placed, dns_checked, ...
        obtained = next(r for r in got if r["payload"]["type"] == "certificate_obtained")
        p = obtained["payload"]
        assert set(p) == {"id", "type", "hostname", "message", "data", "created_at"}
        assert p["hostname"] == OK and p["id"].startswith("evt_") and p["created_at"].endswith("Z")
        assert p["data"]["serial"] == edge.domain(OK)["certificate"]["serial"]
        assert obtained["headers"]["X-Edgecert-Event"] == "certificate_obtained"
        assert obtained["headers"]["X-Edgecert-Event-Id"] == p["id"]
        # The library's verifier agrees, and refuses a tampered body or a wrong secret.
        sig = obtained["headers"]["X-Edgecert-Signature"]
        assert verify_signature(SECRET, obtained["body"], sig)
        assert not verify_signature(SECRET, obtained["body"].replace(b"obtained", b"revoked"), sig)
        assert not verify_signature("another-secret", obtained["body"], sig)
        assert not verify_signature(SECRET, obtained["body"], sig, now=time.time() + 3600)  # replayed later

        # 2. A receiver that fails first then succeeds: the retry is in the log and at the receiver.
        def flaky_done():
            rows = deliveries(edge, hostname=FLAKY)
            return rows if rows and all(r["status"] == "delivered" for r in rows) else None
        rows = edge.wait_for(flaky_done, what="the flaky delivery to succeed")
        assert [r["type"] for r in rows] == ["domain_added"]
        assert rows[0]["attempts"] == 2 and rows[0]["last_status_code"] == 200 and rows[0]["last_error"] is None
        seen = rx.for_host(FLAKY)
        assert [r["status"] for r in seen] == [503, 200]
        assert seen[0]["body"] == seen[1]["body"] and all(r["signed"] for r in seen)

        # 3. A receiver that always fails: given up after the schedule (1 attempt + 2 retries), status failed.
        def down_failed():
            rows = deliveries(edge, hostname=DOWN)
            return rows if rows and rows[0]["status"] == "failed" else None
        row = edge.wait_for(down_failed, what="the down delivery to fail")[0]
        assert row["attempts"] == 3 and row["last_status_code"] == 500
        assert row["last_error"].startswith("HTTP 500") and row["next_attempt_at"] is None
        assert [r["status"] for r in rx.for_host(DOWN)] == [500, 500, 500]

        # 4. The log: every delivery, newest first, filterable; the body as sent.
        log = deliveries(edge)
        assert [r["id"] for r in log] == sorted((r["id"] for r in log), reverse=True)
        assert {r["status"] for r in deliveries(edge, status="failed")} == {"failed"}
        assert all(r["url"] == rx.url for r in log)
        assert {r["event"]["id"] for r in log if r["hostname"] == OK} == {r["payload"]["id"] for r in got}

        # 5. Removing a domain is an event too.
        assert edge.call("DELETE", f"/v1/domains/{OK}")[0] == 204
        edge.wait_for(lambda: "domain_removed" in [r["payload"]["type"] for r in rx.for_host(OK)],
                      what="domain_removed delivery")
