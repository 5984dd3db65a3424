"""Renewal, rate limits, Retry-After, ARI and crash safety over a real Pebble (and the project's fault-injecting
ACME proxy in front of it, for what Pebble lacks)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from tests.helpers import EdgeProcess, served_leaf


def _iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.fixture
def short_pebble(pebble_factory):
    """A Pebble issuing 40-second certificates."""
    return pebble_factory("pebble-short", certificate_validity_period=40)


@pytest.fixture
def proxy(pebble, tmp_path):
    from tests.support.acmeproxy import ProxyThread
    pr = ProxyThread(pebble.directory_url, upstream_ca=pebble.ca_bundle, work_dir=tmp_path / "proxy",
                     ari_retry_after=1, upstream_management_url=pebble.management_url)
    pr.start()
    yield pr
    pr.stop()


def _edge(tmp_path, pebble, dns, name="edge", **env) -> EdgeProcess:
    return EdgeProcess(work_dir=tmp_path / name, pebble=pebble, dns=dns, env=env).start()


class Watcher:
    """Handshakes in a loop, recording (time, served serial) for one name."""

    def __init__(self, port: int, name: str) -> None:
        self.port, self.name = port, name
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append((time.monotonic(), format(served_leaf(self.port, self.name).serial_number, "x")))
            except OSError as e:  # any failed handshake is downtime: record it
                self.seen.append((time.monotonic(), f"error:{e}"))
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


@pytest.mark.slow
def test_short_certificate_renewed_on_time_new_serial_served_old_never_again(tmp_path, short_pebble, dns):
    edge = _edge(tmp_path, short_pebble, dns)
    try:
        edge.add_domain("renew.short.test", tenant="short")
        d1 = edge.wait_status("renew.short.test", "active", timeout=30)
        c1 = d1["certificate"]
        nb, na = _iso(c1["not_before"]), _iso(c1["not_after"])
        planned = _iso(d1["next_renewal_at"])
        assert planned == na - (na - nb) / 2  # lifetimes <= 10 days renew with half the lifetime left
        with Watcher(edge.https_port, "renew.short.test") as w:
            d2 = edge.wait_for(lambda: (lambda d: d if d["certificate"]["serial"] != c1["serial"] else None)(
                edge.domain("renew.short.test")), timeout=45, what="a renewed certificate")
            time.sleep(1.0)
        c2 = d2["certificate"]
        assert d2["status"] == "active" and _iso(c2["not_after"]) > na
        swapped = [e for e in edge.events("renew.short.test") if e["kind"] == "swapped"]
        assert len(swapped) == 2
        at = _iso(swapped[1]["at"])
        assert planned - dt.timedelta(seconds=1) <= at <= planned + dt.timedelta(seconds=10), (planned, at)
        assert at < na  # renewed before expiry
        serials = [s for _, s in w.seen]
        assert not any(s.startswith("error") for s in serials), "a handshake failed during the renewal"
        assert c1["serial"] in serials and c2["serial"] in serials
        first_new = serials.index(c2["serial"])
        assert c1["serial"] not in serials[first_new:], "the old certificate was served after the swap"
        assert short_pebble.order_count() == 2
    finally:
        edge.stop()


def test_retry_after_from_the_ca_is_honoured_exactly(tmp_path, pebble, dns, proxy):
    proxy.inject(kind="newOrder", status=429, retry_after=4, times=1,
                 problem_type="urn:ietf:params:acme:error:rateLimited", detail="too many certificates for this name")
    edge = _edge(tmp_path, pebble, dns, EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                 EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle)
    try:
        edge.add_domain("wait.retry.test", tenant="r")
        d = edge.wait_status("wait.retry.test", "rate_limited", timeout=20)
        assert "rateLimited" in d["last_error"] and d["retry_at"]
        edge.wait_status("wait.retry.test", "active", timeout=30)
        orders = [r for r in proxy.records("newOrder")]
        assert [r.status for r in orders] == [429, 201], [(r.status, r.injected) for r in orders]
        waited = orders[1].time - orders[0].time
        assert waited >= 4.0, waited  # never earlier than the CA said
        retry_at = _iso(d["retry_at"])
        assert abs((retry_at - orders[0].wall.replace(tzinfo=dt.timezone.utc)).total_seconds() - 4) < 1.5
        kinds = [e["kind"] for e in edge.events("wait.retry.test")]
        assert "rate_limited" in kinds
    finally:
        edge.stop()


def test_ledger_holds_names_over_the_registered_domain_limit(tmp_path, pebble, dns):
    limits = json.dumps({"certificates_per_registered_domain": {"capacity": 10, "period": 7 * 86400}})
    edge = _edge(tmp_path, pebble, dns, EDGECERT_RATE_LIMITS=limits)
    try:
        orders_before = pebble.order_count()
        names = [f"n{i:02d}.bulk-customer.test" for i in range(12)]
        t0 = dt.datetime.now(dt.timezone.utc)
        for n in names:
            edge.add_domain(n, tenant="bulk")
        def settled():
            ds = [edge.domain(n) for n in names]
            return ds if all(d["status"] in ("active", "rate_limited") for d in ds) else None
        ds = edge.wait_for(settled, timeout=90, what="all names active or rate_limited")
        active = [d for d in ds if d["status"] == "active"]
        held = [d for d in ds if d["status"] == "rate_limited"]
        assert len(active) == 10 and len(held) == 2, [(d["hostname"], d["status"]) for d in ds]
        assert pebble.order_count() - orders_before == 10
        for d in held:
            assert "certificates per registered domain" in d["last_error"]
            assert "bulk-customer.test" in d["last_error"]
            retry_at = _iso(d["retry_at"])
            # 10 tokens per 7 days: the next one is 16.8 h after the bucket began to drain.
            expected = t0 + dt.timedelta(days=7) / 10
            assert abs((retry_at - expected).total_seconds()) < 120, (retry_at, expected)
            assert d["certificate"] is None
    finally:
        edge.stop()


def test_ari_window_drives_renewal_with_replaces_and_is_exempt_from_limits(tmp_path, pebble, dns, proxy):
    from tests.support.acmeproxy import renew_now_window
    limits = json.dumps({"duplicate_certificates": {"capacity": 1, "period": 7 * 86400}})
    edge = _edge(tmp_path, pebble, dns, EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                 EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle, EDGECERT_RATE_LIMITS=limits)
    try:
        edge.add_domain("ari.window.test", tenant="ari")
        d1 = edge.wait_status("ari.window.test", "active", timeout=30)
        serial1 = d1["certificate"]["serial"]
        # The window is asked right after issuance (after the domain shows active, which happens first).
        edge.wait_for(lambda: proxy.count("renewalInfo") >= 1, timeout=10, what="the ARI request after issuance")
        # The default window is at 2/3..3/4 of a 5-year lifetime: nothing happens now.
        time.sleep(2)
        assert edge.domain("ari.window.test")["certificate"]["serial"] == serial1
        # The CA moves the window to now (e.g. a revocation event): the edge renews inside it.
        leaf = served_leaf(edge.https_port, "ari.window.test")
        proxy.set_renewal_window(leaf, window=renew_now_window(3))
        d2 = edge.wait_for(lambda: (lambda d: d if d["certificate"]["serial"] != serial1 else None)(
            edge.domain("ari.window.test")), timeout=40, what="ARI-driven renewal")
        assert d2["status"] == "active"
        from tests.support.acmeproxy import cert_id
        assert cert_id(leaf) in proxy.replaces_seen()  # 'replaces' sent with the renewal order
        # The duplicate-certificate limit (1 per week here) did not hold the ARI renewal: exempt.
        kinds = [e["kind"] for e in edge.events("ari.window.test")]
        assert "rate_limited" not in kinds
        sched = [e for e in edge.events("ari.window.test") if e["kind"] == "renewal_scheduled"]
        assert any(e["data"].get("reason") == "ari_window" for e in sched)
        # Outside an ARI window, the same duplicate limit does hold an operator-forced renewal.
        st, _ = edge.call("POST", "/v1/domains/ari.window.test/renew")
        assert st == 202
        edge.wait_for(lambda: any(e["kind"] == "rate_limited" for e in edge.events("ari.window.test")),
                      timeout=20, what="the duplicate limit to hold a forced renewal")
        assert edge.domain("ari.window.test")["status"] == "active"  # still served meanwhile
    finally:
        edge.stop()


def test_crash_in_the_middle_of_an_order_resumes_the_same_order(tmp_path, pebble, dns, proxy):
    # The challenge POST fails once with 503 + Retry-After: the order is placed and open when we kill -9. (A
    # transient error is retried on the same order within one attempt; the attempt's order_timeout of 2 s is shorter
    # than the Retry-After, so the attempt ends and the domain waits as pending_issuance.)
    proxy.inject(kind="challenge", status=503, retry_after=3, times=1, detail="try later")
    edge = _edge(tmp_path, pebble, dns, EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                 EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle, EDGECERT_ORDER_TIMEOUT="2")
    try:
        orders_before = pebble.order_count()
        edge.add_domain("crash.resume.test", tenant="crash")
        edge.wait_for(lambda: any(e["kind"] == "order_placed" for e in edge.events("crash.resume.test")),
                      timeout=20, what="order_placed")
        edge.wait_for(lambda: edge.domain("crash.resume.test")["status"] == "pending_issuance", timeout=20,
                      what="the failed challenge")
        order_url = [e for e in edge.events("crash.resume.test") if e["kind"] == "order_placed"][0]["data"]["order_url"]
        edge.kill()
        edge.start()
        d = edge.wait_status("crash.resume.test", "active", timeout=40)
        assert d["certificate"]["serial"]
        assert pebble.order_count() - orders_before == 1  # no new order
        resumed = [e for e in edge.events("crash.resume.test") if e["kind"] == "order_resumed"]
        assert resumed and resumed[0]["data"]["order_url"] == order_url
        assert proxy.count("newOrder") == 1
    finally:
        edge.stop()
