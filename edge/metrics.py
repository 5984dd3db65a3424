"""Prometheus metrics (one registry per process/app, so tests can run several apps in one interpreter)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

__all__ = ["Metrics"]


class _HandshakeCollector:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def collect(self):
        fam = CounterMetricFamily("edgecert_tls_handshakes", "TLS handshakes by SNI outcome "
                                  "(known: a tenant certificate; default: no SNI; unknown: SNI without certificate)",
                                  labels=["sni"])
        for k, v in sorted(self.counts.items()):
            fam.add_metric([k], v)
        yield fam


class Metrics:
    def __init__(self, *, per_domain_labels: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.per_domain = per_domain_labels
        self.handshakes: dict[str, int] = {"known": 0, "default": 0, "unknown": 0, "invalid": 0}
        r.register(_HandshakeCollector(self.handshakes))
        self.domains = Gauge("edgecert_domains", "Tenant domains by status", ["status"], registry=r)
        self.cert_expiry = Gauge("edgecert_certificate_expiry_seconds",
                                 "Seconds until the served certificate expires", ["hostname"], registry=r)
        self.cert_expiry_min = Gauge("edgecert_certificate_expiry_min_seconds",
                                     "Seconds until the first served certificate expires", registry=r)
        self.acme_requests = Counter("edgecert_acme_requests", "Requests to the CA", ["kind", "status"], registry=r)
        self.acme_errors = Counter("edgecert_acme_errors", "Issuance errors by type", ["code"], registry=r)
        self.rate_limit_waits = Counter("edgecert_rate_limit_waits", "Issuances held by a rate limit",
                                        ["limit"], registry=r)
        self.issuance_seconds = Histogram("edgecert_issuance_seconds", "Time to obtain a certificate",
                                          buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.hook_runs = Counter("edgecert_reload_hook_runs", "Reload hook runs", ["result"], registry=r)
        self.probe_failures = Counter("edgecert_probe_failures", "Self-probe failures by failure mode",
                                      ["failure_mode"], registry=r)
        self.events = Counter("edgecert_events", "Domain events by kind", ["kind"], registry=r)
        self.stale = Counter("edgecert_served_certificate_stale", "Post-swap checks that found an old certificate",
                             registry=r)

    def on_handshake(self, outcome: str) -> None:
        self.handshakes[outcome] = self.handshakes.get(outcome, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
