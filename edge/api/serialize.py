"""The API's JSON shapes of stored objects: timestamps (``iso``), certificates (``cert_json``), domains
(``domain_json``)."""

from __future__ import annotations

import datetime as dt
import json

from acme_client.errors import tenant_text
from store.models import CertificateVersion, Domain, utcnow

from edge.api.hostsettings import settings_json

__all__ = ["iso", "cert_json", "domain_json"]


def iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def cert_json(c: CertificateVersion | None) -> dict | None:
    if c is None:
        return None
    return {"serial": c.serial, "not_before": iso(c.not_before), "not_after": iso(c.not_after), "issuer": c.issuer,
            "sha256": c.sha256, "names": json.loads(c.names), "key_type": c.key_type, "source": c.source,
            "issuer_directory": c.issuer_directory, "profile": c.profile,
            "days_left": round((c.not_after - utcnow()).total_seconds() / 86400, 2)}


def domain_json(d: Domain, tenant: str, cert: CertificateVersion | None, *, expected_record: dict | None = None,
                dns_records: list[dict] | None = None, for_tenant: bool = False) -> dict:
    """The domain object. ``dns_records``: every record the tenant must create (``{"name", "type", "value",
    "purpose"}``, no trailing dots; ``purpose`` is ``pointing``, ``acme-challenge`` or ``ownership``).
    ``for_tenant``: a tenant token asked: ``last_error`` without its operator-only part (an unpause URL, ...)."""
    observed = json.loads(d.dns_observed) if d.dns_observed else None
    return {
        "hostname": d.hostname,
        "tenant": tenant,
        "status": d.status,
        "last_error": tenant_text(d.last_error) if for_tenant else d.last_error,
        "last_error_code": d.last_error_code,
        "next_renewal_at": iso(d.next_renewal_at),
        "retry_at": iso(d.retry_at),
        "next_check_at": iso(d.next_check_at),
        "attempts": d.attempts,
        "profile": d.profile,
        "certificate": cert_json(cert),
        "reload": {"pending": bool(d.hook_pending), "verified_serial": d.served_serial},
        "last_probe": json.loads(d.last_probe) if d.last_probe else None,
        "renewal": {"reason": d.renewal_reason, "ari_window": {"start": iso(d.ari_window_start),
                                                               "end": iso(d.ari_window_end)}
                    if d.ari_window_start else None},
        "dns": {"expected_record": expected_record, "observed": observed,
                # A certificate obtained before the cutover (DNS-01) is served while the name does not point here.
                "ready_for_cutover": d.status == "pending_dns" and cert is not None,
                "delegation_seen_at": iso(d.delegation_seen_at)},
        "validation": d.validation or "auto",
        "validation_method": d.validation_method,
        "wildcard": d.hostname.startswith("*."),
        "dns_records": list(dns_records or []),
        **settings_json(d),  # per-hostname settings: origin, min_tls_version, metadata, http2 (null: the default)
        "ownership": {"required": bool(d.ownership_required), "verified": not d.ownership_pending,
                      "verified_at": iso(d.ownership_verified_at)},
        "created_at": iso(d.created_at),
        "updated_at": iso(d.updated_at),
        "links": {"self": f"/v1/domains/{d.hostname}", "events": f"/v1/domains/{d.hostname}/events",
                  "status_page": f"/status/{d.hostname}", "diagnose": f"/v1/diagnose/{d.hostname}"},
    }
