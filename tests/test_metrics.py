"""``/metrics`` of a real ``edgecert serve`` after real issuance (through a fault-injecting proxy in front of Pebble,
which answers one newOrder with a 429) and real TLS handshakes, parsed with prometheus_client's own parser."""

from __future__ import annotations

import datetime as dt
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.acmeproxy import ProxyThread
from tests.helpers import ADMIN_TOKEN, served_leaf

pytestmark = pytest.mark.real

HOOK = 'case "$EDGECERT_HOSTNAMES" in *bad.metrics.test*) echo reload refused >&2; exit 3;; esac'


def scrape(edge, token: str | None = ADMIN_TOKEN) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} (as the operator by default)."""
    req = urllib.request.Request(edge.api + "/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return m.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_after_issuance_rate_limit_hooks_and_handshakes(edge_factory, pebble):
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls) as proxy:
        proxy.inject(kind="newOrder", status=429, retry_after=1, times=1, detail="too many new orders")
        edge = edge_factory(EDGECERT_ACME_DIRECTORY=proxy.directory_url, EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle,
                            EDGECERT_RELOAD_COMMAND=HOOK)
        good, bad = "good.metrics.test", "bad.metrics.test"
        edge.add_domain(good, tenant="metrics")
        d = edge.wait_status(good, "active", timeout=90)
        assert "rate_limited" in [e["kind"] for e in edge.events(good)]
        edge.wait_for(lambda: "hook_succeeded" in [e["kind"] for e in edge.events(good)], what="the hook")
        edge.add_domain(bad, tenant="metrics")
        edge.wait_status(bad, "active", timeout=90)
        edge.wait_for(lambda: "hook_failed" in [e["kind"] for e in edge.events(bad)], what="the failing hook")

        before = scrape(edge)
        assert served_leaf(edge.https_port, good).serial_number == int(d["certificate"]["serial"], 16)
        served_leaf(edge.https_port, "nobody.metrics.test")
        served_leaf(edge.https_port, None)
        m = scrape(edge)

    # Handshakes by SNI outcome (the edge's own post-swap checks may add "known" ones; nothing else adds others).
    hs = "edgecert_tls_handshakes_total"
    assert value(m, hs, sni="unknown") - value(before, hs, sni="unknown") == 1
    assert value(m, hs, sni="default") - value(before, hs, sni="default") == 1
    assert value(m, hs, sni="known") - value(before, hs, sni="known") >= 1

    # Domains by status.
    assert value(m, "edgecert_domains", status="active") == 2
    for st in ("pending_dns", "issuing", "pending_issuance", "rate_limited", "failed", "expired"):
        assert value(m, "edgecert_domains", status=st) == 0, st

    # Seconds to expiry, per domain and the soonest.
    not_after = dt.datetime.fromisoformat(d["certificate"]["not_after"].replace("Z", "+00:00"))
    left = (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert abs(value(m, "edgecert_certificate_expiry_seconds", hostname=good) - left) < 120
    assert 0 < value(m, "edgecert_certificate_expiry_min_seconds") <= \
        value(m, "edgecert_certificate_expiry_seconds", hostname=good)

    # ACME requests by kind and status: the injected 429 is there, and the successful orders.
    req = m["edgecert_acme_requests_total"]
    assert value(m, "edgecert_acme_requests_total", kind="newOrder", status="429") == 1
    assert value(m, "edgecert_acme_requests_total", kind="newOrder", status="201") == 2
    assert value(m, "edgecert_acme_requests_total", kind="finalize", status="200") == 2
    assert sum(req.values()) >= 10
    # ACME errors by type and rate-limit waits.
    assert m["edgecert_acme_errors_total"] == {(("code", "rate_limited"),): 1.0}
    assert sum(m["edgecert_rate_limit_waits_total"].values()) == 1
    # Reload hook runs and failures (per domain in the batch).
    assert value(m, "edgecert_reload_hook_runs_total", result="ok") >= 1
    assert value(m, "edgecert_reload_hook_runs_total", result="failed") >= 1
    # Events by kind.
    assert value(m, "edgecert_events_total", kind="swapped") == 2
    assert value(m, "edgecert_events_total", kind="domain_added") == 2
    # Probe failures are a declared family (fed by probe_failed events with their failure_mode).
    fams = {f.name for f in text_string_to_metric_families(
        urllib.request.urlopen(edge.api + "/metrics", timeout=10).read().decode())}
    assert {"edgecert_probe_failures", "edgecert_webhook_deliveries"} <= fams


def test_hostnames_are_in_metrics_for_the_operator_only(edge_factory):
    """Anyone who can reach the API may scrape /metrics (tenants too): the series naming tenants' hostnames are
    there only with the operator token, as a tenant sees only its own domains."""
    edge = edge_factory()
    st, tenant = edge.call("POST", "/v1/tenants", {"name": "peek"})
    assert st == 201
    edge.add_domain("secret-shop.metrics.test", tenant="other")
    edge.wait_status("secret-shop.metrics.test", "active")
    assert value(scrape(edge), "edgecert_certificate_expiry_seconds", hostname="secret-shop.metrics.test") > 0
    for token in (None, tenant["token"], "not-a-token"):
        m = scrape(edge, token)
        assert "edgecert_certificate_expiry_seconds" not in m, token
        assert all("hostname" not in dict(labels) for samples in m.values() for labels in samples)
        assert value(m, "edgecert_domains", status="active") == 1  # the rest is there for any scraper


def test_expose_domain_metrics_off_drops_the_hostname_label(edge_factory):
    edge = edge_factory(EDGECERT_EXPOSE_DOMAIN_METRICS="false")
    edge.add_domain("quiet.metrics.test", tenant="metrics")
    edge.wait_status("quiet.metrics.test", "active")
    m = scrape(edge)
    assert "edgecert_certificate_expiry_seconds" not in m
    assert all("hostname" not in dict(labels) for samples in m.values() for labels in samples)
    assert value(m, "edgecert_certificate_expiry_min_seconds") > 86400
    assert value(m, "edgecert_domains", status="active") == 1
