"""Prometheus metrics (one registry per process/app, so tests can run several apps in one interpreter).

Counters that follow events are fed by :meth:`Metrics.on_event`, an :class:`~edge.events.EventBus` subscriber: the
event bus is the one place where the event log, webhooks and metrics attach. Gauges that describe the store
(domains by status, seconds to expiry) are refreshed at each scrape (``Services.refresh_metrics``).

Exposed families (``_total`` is added to counters in the text format):

========================================== ================================================================
``edgecert_domains{status}``               tenant domains by status
``edgecert_certificate_expiry_seconds``    seconds until the served certificate of ``hostname`` expires
                                           (only with ``expose_domain_metrics = true``)
``edgecert_certificate_expiry_min_seconds`` seconds until the first served certificate expires
``edgecert_acme_requests{kind,status}``    requests to the CA by kind and HTTP status
``edgecert_acme_errors{code}``             failed issuance attempts by error type (``rate_limited``, ...)
``edgecert_rate_limit_waits{limit}``       issuances held back by a rate limit
``edgecert_tls_handshakes{sni}``           handshakes by SNI outcome: ``known`` (a tenant certificate),
                                           ``default`` (no SNI), ``unknown`` (SNI without certificate),
                                           ``invalid`` (SNI that is not a host name)
``edgecert_probe_failures{failure_mode}``  failed self-probes by failure mode (counted by edge/probes.py)
``edgecert_reload_hook_runs{result}``      reload hook runs by result (``ok`` / ``failed``)
``edgecert_webhook_deliveries{result}``    webhook attempts: ``delivered``, ``retry``, ``failed``, ``dropped``
``edgecert_events{kind}``                  domain events by kind
``edgecert_served_certificate_stale``      post-swap checks that found the old certificate still served
``edgecert_state_write_errors{errno}``     failed writes into the state dir (``ENOSPC``, ``EIO``, ...; nothing
                                           was changed in place, see edge/lifecycle/files.py)
========================================== ================================================================
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

__all__ = ["Metrics"]


class _HandshakeCollector:
    """Handshake counts live in a plain dict: the SNI callback only increments an int (no lock, no I/O)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def collect(self):
        fam = CounterMetricFamily("edgecert_tls_handshakes", "TLS handshakes by SNI outcome "
                                  "(known: a tenant certificate; default: no SNI; unknown: SNI without certificate; "
                                  "invalid: SNI that is not a host name)", labels=["sni"])
        for k, v in sorted(self.counts.items()):
            fam.add_metric([k], v)
        yield fam


class Metrics:
    """The metrics of one edgecert process.

    Args:
        per_domain_labels: expose ``edgecert_certificate_expiry_seconds{hostname}`` (setting
            ``expose_domain_metrics``); with False no metric carries a host name.
    """

    def __init__(self, *, per_domain_labels: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.per_domain = per_domain_labels
        self.handshakes: dict[str, int] = {"known": 0, "default": 0, "unknown": 0, "invalid": 0}
        r.register(_HandshakeCollector(self.handshakes))
        self.domains = Gauge("edgecert_domains", "Tenant domains by status", ["status"], registry=r)
        self.cert_expiry: Gauge | None = None
        #: Series that name tenants' hostnames: shown to the operator only (render(operator=True)): anyone who can
        #: reach the API (tenants too) may read /metrics, and a tenant sees only its own domains.
        self.domain_registry = CollectorRegistry()
        if per_domain_labels:
            self.cert_expiry = Gauge("edgecert_certificate_expiry_seconds",
                                     "Seconds until the served certificate expires", ["hostname"],
                                     registry=self.domain_registry)
        self.cert_expiry_min = Gauge("edgecert_certificate_expiry_min_seconds",
                                     "Seconds until the first served certificate expires", registry=r)
        self.acme_requests = Counter("edgecert_acme_requests", "Requests to the CA", ["kind", "status"], registry=r)
        self.acme_errors = Counter("edgecert_acme_errors", "Failed issuance attempts by ACME error type", ["code"],
                                   registry=r)
        self.rate_limit_waits = Counter("edgecert_rate_limit_waits", "Issuances held by a rate limit",
                                        ["limit"], registry=r)
        self.issuance_seconds = Histogram("edgecert_issuance_seconds", "Time to obtain a certificate",
                                          buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.hook_runs = Counter("edgecert_reload_hook_runs", "Reload hook runs", ["result"], registry=r)
        self.probe_failures = Counter("edgecert_probe_failures", "Self-probe failures by failure mode",
                                      ["failure_mode"], registry=r)
        self.webhook_deliveries = Counter("edgecert_webhook_deliveries", "Webhook delivery attempts by result",
                                          ["result"], registry=r)
        self.events = Counter("edgecert_events", "Domain events by kind", ["kind"], registry=r)
        self.account_recreated = Counter("edgecert_acme_account_recreated", "ACME accounts registered again because "
                                         "the CA no longer knew them", ["directory"], registry=r)
        self.issuer_skips = Counter("edgecert_issuer_skips", "Names sent on to the next issuer, by issuer and reason",
                                    ["directory", "reason"], registry=r)
        self.issuer_requests = Counter("edgecert_issuer_requests", "Requests to each CA (ACME directory)",
                                       ["directory"], registry=r)
        self.stale = Counter("edgecert_served_certificate_stale", "Post-swap checks that found an old certificate",
                             registry=r)
        self.state_write_errors = Counter("edgecert_state_write_errors", "Failed writes into the state dir by errno",
                                          ["errno"], registry=r)

    def on_write_error(self, err: OSError) -> None:
        """:class:`edge.lifecycle.files.LiveFiles` ``on_error``: count a failed write by its errno name."""
        import errno as errno_mod
        self.state_write_errors.labels(errno=errno_mod.errorcode.get(err.errno or 0, "unknown")).inc()

    def on_handshake(self, outcome: str) -> None:
        self.handshakes[outcome] = self.handshakes.get(outcome, 0) + 1

    async def on_event(self, hostname: str, kind: str, message: str, data: dict[str, Any]) -> None:
        """EventBus subscriber: count what the events say (no I/O)."""
        self.events.labels(kind=kind).inc()
        data = data or {}
        if kind in ("issuance_failed", "rate_limited") and isinstance(data.get("error"), dict):
            self.acme_errors.labels(code=str(data["error"].get("code") or "unknown")).inc()
        if kind == "rate_limited":
            self.rate_limit_waits.labels(limit=str(data.get("limit") or "ca")).inc()
        elif kind in ("hook_succeeded", "hook_failed"):
            self.hook_runs.labels(result="ok" if kind == "hook_succeeded" else "failed").inc()
        elif kind == "served_certificate_stale":
            self.stale.inc()
        elif kind == "certificate_obtained" and isinstance(data.get("seconds"), (int, float)):
            self.issuance_seconds.observe(float(data["seconds"]))

    def render(self, *, operator: bool = False) -> bytes:
        """The Prometheus text; the per-hostname series only for the operator."""
        text = generate_latest(self.registry)
        return text + generate_latest(self.domain_registry) if operator else text
