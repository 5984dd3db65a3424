"""The renewal planner over a real Pebble issuing 40-second certificates: "renew when under 30 days" (and a
renew_ratio of 0.9) must not turn into a renewal loop; each certificate renews at half its lifetime."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.helpers import EdgeProcess


def _iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.mark.real
@pytest.mark.slow
def test_ca_issuing_certificates_shorter_than_the_threshold_never_loops(tmp_path, pebble_factory, dns):
    short = pebble_factory("pebble-40s", certificate_validity_period=40)
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=short, dns=dns, env={
        "EDGECERT_RENEW_BEFORE": str(30 * 86400), "EDGECERT_RENEW_RATIO": "0.9"}).start()
    host = "loop.plan.test"
    try:
        edge.add_domain(host, tenant="plan")
        d1 = edge.wait_status(host, "active", timeout=30)
        c1 = d1["certificate"]
        nb, na = _iso(c1["not_before"]), _iso(c1["not_after"])
        planned = _iso(d1["next_renewal_at"])
        assert planned == nb + (na - nb) / 2, (planned, nb, na)  # half, not "now" (30 days > 40 s)
        time.sleep(8)
        assert short.order_count() == 1, "a fresh certificate was renewed at once"
        d2 = edge.wait_for(lambda: (lambda d: d if d["certificate"]["serial"] != c1["serial"] else None)(
            edge.domain(host)), timeout=40, what="the renewal")
        c2 = d2["certificate"]
        swapped = [e for e in edge.events(host) if e["kind"] == "swapped"]
        assert _iso(swapped[-1]["at"]) >= planned - dt.timedelta(seconds=1)
        d2 = edge.wait_for(lambda: (lambda d: d if d["next_renewal_at"] and
                                    _iso(d["next_renewal_at"]) > _iso(c2["not_before"]) else None)(
            edge.domain(host)), timeout=10, what="the next plan")
        nb2, na2 = _iso(c2["not_before"]), _iso(c2["not_after"])
        assert _iso(d2["next_renewal_at"]) == nb2 + (na2 - nb2) / 2
        time.sleep(3)
        assert short.order_count() == 2
    finally:
        edge.stop()
