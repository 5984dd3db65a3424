"""The tenant status page in every state, as a real headless Chromium renders it (issue 17, item 6).

The page is served by the real handler (``edge.api.status_page``) over HTTP from a real store (SQLite) holding one
domain per state, written as the lifecycle writes them (stored exception texts and internal addresses included, so
that the test sees they never reach the page). For each state the DOM Chromium built must show a badge whose colour
(tone) and words agree with the card under it, the ``dig`` line of the record type the tenant must create, whole
numbers, and no exception text or internal URL. Screenshots go to a temporary directory (path printed); a few are
kept in docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from store import open_storage
from store.models import CertificateVersion, DomainStatus, utcnow

from edge.api.state import LIMITER, SERVICES, RateLimiter
from edge.api.status_page import status_page
from edge.config import Settings
from edge.demo.process import free_port
from edge.lifecycle.dnscheck import DnsChecker
from tests.test_status_page import Dom, chromium

pytestmark = [pytest.mark.real, pytest.mark.slow]

# What a stored error may hold that a tenant must never see.
LEAKS = ("Traceback", "HTTPSConnectionPool", "urllib3", "Errno", "10.0.0.7", "http://", "14000", "acme/new-order",
         "Exception", "Error(", "edgecert-test-internal")
INTERNAL_ERROR = ("HTTPSConnectionPool(host='10.0.0.7', port=14000): Max retries exceeded with url: /acme/new-order "
                  "(Caused by NewConnectionError('[Errno 111] Connection refused'))")

#: state -> (expected tone, words the badge shows, words the card's headline shows)
STATES = {
    "pending_ownership": ("wait", "pending ownership", "Waiting for proof"),
    "pending_dns": ("wait", "pending dns", "Waiting for your DNS record"),
    "pending_issuance": ("wait", "pending issuance", "Getting your certificate"),
    "issuing": ("wait", "issuing", "Getting your certificate"),
    "rate_limited": ("wait", "rate limited", "Waiting on the certificate authority"),
    "active": ("ok", "active", "Your site is served over HTTPS"),
    "active-probe-failing": ("bad", "active, but the self-check fails", "the self-check found a problem"),
    "failed": ("bad", "failed", "could not be issued"),
    "expired": ("bad", "expired", "has expired"),
}


def _seed(st, suffix: str) -> dict[str, str]:
    """One domain per state; returns state -> hostname."""
    now = utcnow()
    names = {state: f"{state.replace('_', '-')}.{suffix}" for state in STATES}

    async def cert(d, *, days_left: float, days_total: float = 1826) -> None:
        await st.add_certificate(CertificateVersion(
            domain_id=d.id, names=json.dumps([d.hostname]), serial="6eae4761dfad8974",
            not_before=now + dt.timedelta(days=days_left - days_total), not_after=now + dt.timedelta(days=days_left),
            issuer="CN=Pebble Intermediate CA 6fb7d3", sha256="ab" * 32, cert_pem="-", chain_pem="",
            key_enc=b"x", key_type="ecdsa-p256"))

    async def run():
        t = await st.ensure_tenant("secret-tenant-name")
        add = lambda state, **f: st.add_domain(names[state], t.id, **f)  # noqa: E731
        await add("pending_ownership", status=DomainStatus.PENDING_OWNERSHIP, ownership_required=True,
                  last_error="no TXT record _edgecert-verify yet", last_error_code="ownership_missing")
        await add("pending_dns", status=DomainStatus.PENDING_DNS, last_error_code="dns_wrong_target",
                  last_error="the name resolves to 192.0.2.10, not to the edge",
                  dns_observed=json.dumps({"ok": False, "reason": "wrong_target", "cname_chain": [],
                                           "addresses": ["192.0.2.10"]}))
        await add("pending_issuance", status=DomainStatus.PENDING_ISSUANCE, last_error=INTERNAL_ERROR,
                  last_error_code="ca_unreachable", retry_at=now + dt.timedelta(minutes=5))
        await add("issuing", status=DomainStatus.ISSUING)
        await add("rate_limited", status=DomainStatus.RATE_LIMITED, last_error_code="rate_limited",
                  last_error="urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued for "
                             "this exact set of identifiers in the last 168h0m0s, retry after "
                             "2026-12-04T01:02:03Z: see https://letsencrypt.org/docs/rate-limits/",
                  retry_at=now + dt.timedelta(hours=3))
        d = await add("active", status=DomainStatus.ACTIVE, last_probe_ok=True, last_probe_at=now,
                      next_renewal_at=now + dt.timedelta(days=1200),
                      last_probe=json.dumps({"ok": True, "failure_mode": None, "address": "10.0.0.7:443"}))
        await cert(d, days_left=1826)
        d = await add("active-probe-failing", status=DomainStatus.ACTIVE, last_probe_ok=False, last_probe_at=now,
                      last_probe=json.dumps({"ok": False, "failure_mode": "incomplete_chain",
                                             "address": "10.0.0.7:443", "detail": "Traceback (most recent call "
                                             "last): ssl.SSLCertVerificationError: edgecert-test-internal"}))
        await cert(d, days_left=45.6)
        await st.add_event(names["active-probe-failing"], "probe_failed",
                           "self-probe failed: incomplete_chain: connect to 10.0.0.7:443: Errno 104",
                           {"failure_mode": "incomplete_chain", "address": "10.0.0.7:443"})
        await add("failed", status=DomainStatus.FAILED, last_error_code="rejected_identifier",
                  last_error="acme.messages.Error: urn:ietf:params:acme:error:rejectedIdentifier :: Exception: "
                             "policy forbids issuing for name (http://10.0.0.7:14000/acme/new-order)")
        d = await add("expired", status=DomainStatus.EXPIRED, last_error="the certificate expired")
        await cert(d, days_left=-2.5, days_total=90)
    asyncio.run(run())
    return names


class StatusServer:
    """The real status page handler on a real port, over a real store (in a thread)."""

    def __init__(self, storage, edge_target: str) -> None:
        settings = Settings(status_page_brand="Acme Hosting")
        services = SimpleNamespace(settings=settings, storage=storage,
                                   dns=DnsChecker(resolver=None, edge_target=edge_target, ownership_key=b"k" * 32))
        app = web.Application()
        app[SERVICES] = services
        app[LIMITER] = RateLimiter(rate=1000, burst=1000)
        app.router.add_get("/status/{hostname}", status_page)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()

        async def start():
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner
        self.runner = self.loop.run_until_complete(start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def url(self, hostname: str) -> str:
        return f"http://127.0.0.1:{self.port}/status/{hostname}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def shots() -> Path:
    d = Path(os.environ.get("EDGECERT_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="edgecert-status-"))
    d.mkdir(parents=True, exist_ok=True)
    print(f"\nstatus page screenshots: {d}")
    return d


def _check_page(dom: Dom, state: str, hostname: str, html: str) -> None:
    tone, badge, headline = STATES[state]
    # One colour for the badge and the card, and the badge's words say the same as the card.
    assert dom.attr("status", "data-tone") == tone, (state, dom.attr("status", "class"))
    assert dom.attr("now-card", "data-tone") == tone
    assert f"tone-{tone}" in dom.attr("status", "class").split()
    card_class = dom.attr("now-card", "class").split()
    assert {"ok": "okcard", "bad": "error", "wait": "waiting"}[tone] in card_class
    assert not ({"okcard", "error", "waiting"} - {{"ok": "okcard", "bad": "error", "wait": "waiting"}[tone]}) \
        & set(card_class)
    assert dom.text("status") == badge, (state, dom.text("status"))
    assert headline in dom.text("now"), (state, dom.text("now"))
    if tone == "ok":
        assert not any(dom.attr(i, "data-state") == "failed" for i in ("step-dns", "step-cert", "step-serve"))
    # Plain words: no exception text, no internal address or URL, no tenant name, whole numbers.
    for leak in LEAKS:
        assert leak not in html, (state, leak)
    assert "secret-tenant-name" not in html
    assert not re.search(r"\d+\.\d+ days", html), state
    assert "<script" not in html.lower()


def test_every_state_speaks_plainly_in_chromium(shots):
    with tempfile.TemporaryDirectory() as tmp:
        st = open_storage(f"sqlite:///{tmp}/status.db")
        cname = StatusServer(st, "edge.saas.example")
        a_rec = StatusServer(st, "203.0.113.7")
        try:
            names = _seed(st, "states.example.com")
            doms: dict[str, Dom] = {}
            for state, hostname in names.items():
                png = shots / f"status-{state}.png"
                chromium(cname.url(hostname), f"--screenshot={png}", "--window-size=420,900")
                assert png.stat().st_size > 5000, state  # a real picture
                html = chromium(cname.url(hostname), "--dump-dom")
                dom = doms[state] = Dom(html)
                _check_page(dom, state, hostname, html)
                if state in ("pending_dns", "pending_ownership"):
                    # The check command asks for the record type the tenant must create.
                    assert dom.text("dns-type") == "CNAME"
                    assert f"dig +short CNAME {hostname}." in html
                    assert "dig +short A " not in html
            d = doms["active"]
            assert d.text("days-left") == "in about 5 years (1826 days)" and d.attr("days-left", "data-days") == "1826"
            assert "expires in about 5 years (1826 days)" in d.text("step-days")
            d = doms["active-probe-failing"]
            assert d.text("days-left") == "in 46 days"
            assert d.attr("step-serve", "data-state") == "failed" and "incomplete_chain" in d.text("probe")
            assert "the service operator" in d.text("who")
            assert "We cannot reach the certificate authority" in doms["pending_issuance"].text("problem")
            assert "rate limit" in doms["rate_limited"].text("now-card")
            # An edge reached by address: the tenant creates an A record, and is told to check an A record.
            hostname = names["pending_dns"]
            png = shots / "status-pending_dns-a-record.png"
            chromium(a_rec.url(hostname), f"--screenshot={png}", "--window-size=420,900")
            html = chromium(a_rec.url(hostname), "--dump-dom")
            dom = Dom(html)
            _check_page(dom, "pending_dns", hostname, html)
            assert dom.text("dns-type") == "A" and dom.text("dns-value") == "203.0.113.7"
            assert f"dig +short A {hostname}." in html and "dig +short CNAME" not in html
        finally:
            cname.stop()
            a_rec.stop()
            st.close()
