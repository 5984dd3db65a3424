"""Tenant domains: ``/v1/domains`` (add, list), ``/v1/domains/{hostname}`` (get, delete) and its ``renew``,
``events`` and ``certificate`` (upload) sub-resources.

With a tenant token, another tenant's domain answers 404 exactly like a missing one (``visible_domain``).

Ownership before binding (``tenant_claims_require_proof``): a name added with a tenant token stays
``pending_ownership`` (nothing ordered, nothing served) until the tenant's TXT record ``_edgecert-verify.<name>``
is seen (at once here, or by the periodic re-check in the manager). Such an unproven claim never locks the name: a
tenant whose own record is in place takes it over (``claim_superseded``); a proven or operator-added name answers 409.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
from typing import Any

from aiohttp import web

from store import Conflict, LockTimeout, NotFound
from store.models import Domain, DomainStatus, utcnow

from edge.api.analysis import analyse
from edge.api.auth import Caller, caller
from edge.api.errors import ApiError, json_body, query_int
from edge.api.hostsettings import settings_fields
from acme_client.errors import tenant_event
from edge.api.serialize import domain_json, iso
from edge.api.state import SERVICES, ApiServices
from edge.api.tenants import valid_tenant_name
from edge.lifecycle.swap import SwapRejected
from edge.lifecycle.upload import UploadError, validate_upload
from edge.names import InvalidHostname, validate_hostname

__all__ = ["visible_domain", "render_domain", "create_domain", "add_checked", "batch_domains", "list_domains", "get_domain", "delete_domain",
           "renew_domain", "upload_certificate", "domain_events", "patch_domain", "apply_host_settings"]

log = logging.getLogger("edge.api")

_KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096")


async def visible_domain(request: web.Request, c: Caller | None) -> Domain:
    """The domain named in the path, if ``c`` may see it (``None``: a public call sees every domain); else
    ``ApiError`` 404, the same for a missing, invalid or another tenant's name."""
    raw = request.match_info["hostname"]
    try:
        name = validate_hostname(raw, allow_wildcard=True).ascii
    except InvalidHostname:
        raise ApiError(404, "not_found", f"no domain {raw!r}") from None
    d = await request.app[SERVICES].storage.get_domain(name)
    if d is None or (c is not None and not c.can_see(d)):
        raise ApiError(404, "not_found", f"no domain {name!r}")
    return d


async def render_domain(services: ApiServices, d: Domain, *, for_tenant: bool = False) -> dict:
    """The domain object of ``d``, with its tenant's name, current certificate and expected DNS record
    (``for_tenant``: as a tenant token sees it, without operator-only text)."""
    storage = services.storage
    tenant = await storage.get_tenant_by_id(d.tenant_id)
    cert = await storage.get_certificate(d.current_cert_id) if d.current_cert_id else None
    name = tenant.name if tenant else "?"
    return domain_json(d, name, cert, expected_record=services.dns.expected_record(d.hostname),
                       dns_records=services.dns.dns_records(d.hostname, name, ownership=d.ownership_pending),
                       for_tenant=for_tenant)


async def create_domain(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    c = await caller(request)
    d = await add_checked(services, c, await json_body(request))
    return web.json_response(await render_domain(services, d, for_tenant=not c.admin), status=201,
                             headers={"Location": f"/v1/domains/{d.hostname}"})


#: ``validation`` values (edge/lifecycle/methods.py decides what ``auto`` means for each order).
_VALIDATIONS = ("auto", "http-01", "tls-alpn-01", "dns-01")


async def add_checked(services: ApiServices, c: Caller, body: dict) -> Domain:
    """Every check of ``POST /v1/domains`` and the insert, for one ``body``; ``ApiError`` when refused (nothing is
    stored then). Shared by the single add and ``POST /v1/domains/batch``."""
    storage = services.storage
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_item", "each domain must be a JSON object")
    # Per-hostname settings (origin, min_tls_version, metadata, http2): edge/api/hostsettings.py.
    host_fields = await settings_fields(body, tenant_caller=not c.admin, resolver=services.dns.resolver)
    validation = body.get("validation") or "auto"
    if validation not in _VALIDATIONS:
        raise ApiError(422, "invalid_validation", f"validation {str(validation)[:40]!r} is not one of "
                       f"{', '.join(_VALIDATIONS)}", field="validation")
    dns01 = services.settings.dns01_enabled
    try:
        hn = validate_hostname(body.get("hostname"), allow_wildcard=dns01)
    except InvalidHostname as e:
        raise ApiError(422, e.code, e.message, field="hostname") from None
    if hn.wildcard and validation not in ("auto", "dns-01"):
        raise ApiError(422, "wildcard_needs_dns01", f"a wildcard name can only be validated with DNS-01; send "
                       f"\"validation\": \"dns-01\" (or \"auto\"), not {validation!r}", field="validation")
    if validation == "dns-01" and not dns01:
        raise ApiError(422, "dns01_not_configured", "DNS-01 validation is not configured on this edge (the operator "
                       "sets EDGECERT_DNS01_SERVER, EDGECERT_DNS01_ZONE and EDGECERT_DNS01_TSIG)", field="validation")
    if c.admin:
        if "tenant" not in body:
            raise ApiError(422, "invalid_tenant", "tenant is required with the operator token", field="tenant")
        tenant = await storage.ensure_tenant(valid_tenant_name(body["tenant"]))
    else:
        assert c.tenant is not None
        if "tenant" in body and body["tenant"] != c.tenant.name:
            raise ApiError(403, "forbidden", "a tenant token can only add domains to its own tenant")
        tenant = c.tenant
    key_type = body.get("key_type")
    if key_type is not None and key_type not in _KEY_TYPES:
        raise ApiError(422, "invalid_key_type", "key_type must be ecdsa-p256, ecdsa-p384, rsa2048, rsa3072 or "
                       "rsa4096", field="key_type")
    profile = body.get("profile")
    if profile is not None and (not isinstance(profile, str) or not 0 < len(profile) <= 64
                                or not all(33 <= ord(ch) < 127 for ch in profile)):
        raise ApiError(422, "invalid_profile", "profile must be an ACME profile name the CA lists (a printable "
                       "token of at most 64 characters, e.g. tlsserver)", field="profile")
    fields: dict = dict(next_check_at=utcnow(), key_type=key_type, profile=profile, validation=validation,
                        **host_fields)
    proof = None
    if not c.admin and services.settings.tenant_claims_require_proof:
        # Ownership before binding: look for the tenant's TXT proof now (one bounded lookup); else pending.
        proof = await services.dns.check_ownership(hn.ascii, tenant.name)
        fields.update(ownership_required=True, ownership_verified_at=utcnow() if proof.ok else None,
                      status=DomainStatus.PENDING_DNS if proof.ok else DomainStatus.PENDING_OWNERSHIP)
        if not proof.ok:
            fields.update(last_error=proof.message, last_error_code=f"ownership_{proof.reason}")
    superseded = False
    try:
        d = await storage.add_domain(hn.ascii, tenant.id, **fields)
    except Conflict:
        existing = await storage.get_domain(hn.ascii)
        if existing is not None and c.can_see(existing):
            raise ApiError(409, "already_exists", f"{hn.ascii} is already registered",
                           domain=await render_domain(services, existing, for_tenant=not c.admin)) from None
        if proof is None or existing is None or not existing.ownership_pending:
            raise ApiError(409, "already_exists", f"{hn.ascii} is already registered") from None
        d = await _take_unproven_claim(services, hn.ascii, tenant, proof, fields)
        superseded = True
    await services.events.emit(d.hostname, "domain_added", f"{d.hostname} added for tenant {tenant.name}",
                               {"tenant": tenant.name, "ownership": "verified" if proof is not None and proof.ok
                                else ("pending" if proof is not None else "not required"),
                                **({"superseded_unproven_claim": True} if superseded else {})})
    if proof is not None and proof.ok:
        await services.events.emit(d.hostname, "ownership_verified", proof.message,
                                   {"record": proof.record["name"]})
    services.manager.wake(d.hostname, tenant_id=d.tenant_id)
    # Its settings reach the edge's routing table with the next sweep (a new row counts as changed), long before
    # a certificate is served for it: no per-item work here (imports of 10,000 names stay fast).
    return d


async def apply_host_settings(services: ApiServices, hostnames: list[str]) -> None:
    """Put the stored per-hostname settings of ``hostnames`` into this process's SNI index now (other processes
    and nodes follow the store at their next sweep: ``updated_at`` moved)."""
    from edge.tls_edge.index import load_host_settings
    index = getattr(services, "index", None)
    if index is None:
        return
    await asyncio.to_thread(lambda: load_host_settings(index, services.storage.host_settings_rows(hostnames),
                                                       hostnames=hostnames))


async def patch_domain(request: web.Request) -> web.Response:
    """``PATCH /v1/domains/{hostname}``: change the per-hostname settings (``origin``, ``min_tls_version``,
    ``metadata``, ``http2``; ``null`` = back to the default). The operator for any domain, a tenant for its own
    (an origin it sets must be a public address). Other fields are refused (422 ``unsupported_field``)."""
    services = request.app[SERVICES]
    c = await caller(request)
    d = await visible_domain(request, c)
    body = await json_body(request)
    from edge.api.hostsettings import SETTING_FIELDS
    other = sorted(k for k in body if k not in SETTING_FIELDS)
    if other:
        raise ApiError(422, "unsupported_field", f"{other[0][:40]!r} cannot be changed here; PATCH takes "
                       f"{', '.join(SETTING_FIELDS)}", field=other[0][:40])
    if not body:
        raise ApiError(422, "empty_patch", f"send at least one of {', '.join(SETTING_FIELDS)}")
    fields = await settings_fields(body, tenant_caller=not c.admin, resolver=services.dns.resolver)
    try:
        d = await services.storage.update_domain(d.hostname, **fields)
    except NotFound:
        raise ApiError(404, "not_found", f"no domain {d.hostname!r}") from None
    await apply_host_settings(services, [d.hostname])
    await services.events.emit(d.hostname, "settings_changed", f"settings of {d.hostname} changed: "
                               f"{', '.join(sorted(body))}", {k: body[k] for k in sorted(body) if k != "metadata"})
    return web.json_response(await render_domain(services, d, for_tenant=not c.admin))


#: At most this many items in one ``POST /v1/domains/batch``, and how many of them are worked on at once.
BATCH_MAX, BATCH_CONCURRENCY = 500, 8


async def batch_domains(request: web.Request) -> web.Response:
    """``{"domains": [...]}`` -> ``{"results": [{"hostname", "result": added|exists|refused, "error"?}]}``: each
    item through :func:`add_checked`, in order; the same name for the same tenant again is ``exists``."""
    services = request.app[SERVICES]
    c = await caller(request)
    body = await json_body(request)
    items = body.get("domains")
    if not isinstance(items, list):
        raise ApiError(422, "invalid_batch", "send {\"domains\": [{\"hostname\": ..., \"tenant\": ...}, ...]}",
                       field="domains")
    if len(items) > BATCH_MAX:
        raise ApiError(422, "batch_too_large", f"at most {BATCH_MAX} domains per batch (got {len(items)}); "
                       f"split it", field="domains", max=BATCH_MAX)
    async def one(item: Any) -> dict:
        hostname = item.get("hostname") if isinstance(item, dict) else None
        out: dict = {"hostname": hostname if isinstance(hostname, str) else None}
        try:
            d = await add_checked(services, c, item)
            out.update(hostname=d.hostname, result="added")
        except ApiError as e:
            existing = e.extra.get("domain") if e.code == "already_exists" else None
            wanted = (item.get("tenant") if isinstance(item, dict) else None) if c.admin \
                else (c.tenant.name if c.tenant else None)
            if isinstance(existing, dict) and isinstance(wanted, str) and existing.get("tenant") == wanted.strip():
                out.update(hostname=existing.get("hostname"), result="exists")
            else:
                out.update(result="refused", error={"code": e.code, "message": e.message,
                                                    **({"field": e.extra["field"]} if "field" in e.extra else {})})
        return out

    # Items of different names run BATCH_CONCURRENCY at a time (a tenant's ownership lookups are DNS round trips);
    # items naming the same host run one after the other, in the order sent (the first is added, the next exist).
    results: list[dict] = [{}] * len(items)
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        h = item.get("hostname") if isinstance(item, dict) else None
        groups.setdefault(h.strip().lower().rstrip(".") if isinstance(h, str) else f"#{i}", []).append(i)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def run(indices: list[int]) -> None:
        async with gate:
            for i in indices:
                results[i] = await one(items[i])
    await asyncio.gather(*(run(ix) for ix in groups.values()))
    return web.json_response({"results": results})


async def _take_unproven_claim(services: ApiServices, hostname: str, tenant, proof, fields: dict) -> Domain:
    """Another tenant holds ``hostname`` with an unproven claim: the caller takes it if its own proof is in
    place (the prover wins; the unproven claim is dropped, with an event), else 409 with the record to create."""
    storage = services.storage
    if not proof.ok:
        records = services.dns.dns_records(hostname, tenant.name, ownership=True)
        rec = records[0]
        raise ApiError(409, "ownership_proof_required",
                       f"{hostname} is claimed by another account that has not proven control of it. To take it, "
                       f"create this DNS record and send this request again: {rec['name']} TXT \"{rec['value']}\"",
                       dns_records=records)
    try:
        async with storage.lock(f"domain:{hostname}", ttl=60, timeout=30):
            holder = await storage.get_domain(hostname)
            if holder is not None and holder.ownership_pending:
                # Both records published (the zone's owner allowed both): the earlier claim is proven and stays.
                held_by = await storage.get_tenant_by_id(holder.tenant_id)
                if held_by is not None and (await services.dns.check_ownership(hostname, held_by.name)).ok:
                    await storage.update_domain(hostname, next_check_at=utcnow())
                    services.manager.wake(hostname, tenant_id=holder.tenant_id)
                    raise Conflict(hostname)
            try:
                d, dropped = await storage.supersede_unproven_claim(hostname, tenant.id, **fields)
            except NotFound:  # released meanwhile
                d, dropped = await storage.add_domain(hostname, tenant.id, **fields), None
    except Conflict:  # proven meanwhile by its holder: it keeps it
        raise ApiError(409, "already_exists", f"{hostname} is already registered") from None
    except LockTimeout:
        raise ApiError(503, "busy", f"{hostname} is being worked on; try again in a minute") from None
    if dropped is not None:
        old = await storage.get_tenant_by_id(dropped)
        log.info("%s: unproven claim of tenant %s dropped; tenant %s proved control", hostname,
                 old.name if old else dropped, tenant.name)
        await services.events.emit(hostname, "claim_superseded", f"an unproven claim on {hostname} by another "
                                   f"account was dropped: this account proved control with {proof.record['name']}",
                                   {"record": proof.record["name"]})
    return d


#: ``GET /v1/domains`` page sizes.
LIST_DEFAULT, LIST_MAX = 100, 1000


def _cursor(d: Domain) -> str:
    raw = json.dumps([d.sort_key or d.hostname, d.hostname], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(text: str) -> tuple[str, str]:
    try:
        if len(text) > 2048:
            raise ValueError
        k, h = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(k, str) or not isinstance(h, str):
            raise ValueError
        return k, h
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(422, "invalid_cursor", "cursor must be the 'next' value of a previous page, unchanged",
                       field="cursor") from None


#: ``probe`` filter values: the last self-probe failed / passed / none yet.
PROBE_FILTERS = ("failing", "ok", "unknown")


def _expiring_before(raw: str) -> dt.datetime:
    """``expiring_before``: an ISO date or date-time (UTC unless it says), or a number of days from now (``30``,
    ``30d``)."""
    text = raw.strip().lower()
    days = text[:-1] if text.endswith("d") else text
    if days.isdigit() and len(days) <= 6:
        return utcnow() + dt.timedelta(days=int(days))
    try:
        if len(text) > 40:
            raise ValueError
        t = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid_query", "expiring_before must be an ISO date (2027-01-31), an ISO date-time "
                       "(2027-01-31T12:00:00Z) or a number of days from now (30 or 30d)",
                       field="expiring_before") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def list_filters(query) -> dict:
    """The fleet filters of ``GET /v1/domains`` beyond status, tenant and search (422 naming a bad one):
    ``issuer`` (the issuing CA's directory URL, or a part of the issuer name), ``expiring_before``,
    ``probe`` (failing | ok | unknown), ``metadata`` (``key=value``, exact)."""
    out: dict = {}
    issuer = (query.get("issuer") or "").strip()
    if issuer:
        if len(issuer) > 500:
            raise ApiError(422, "invalid_query", "issuer is at most 500 characters", field="issuer")
        out["issuer"] = issuer
    if (query.get("expiring_before") or "").strip():
        out["expiring_before"] = _expiring_before(query["expiring_before"])
    probe = (query.get("probe") or "").strip()
    if probe:
        if probe not in PROBE_FILTERS:
            raise ApiError(422, "invalid_query", f"probe must be one of {', '.join(PROBE_FILTERS)}", field="probe")
        out["probe"] = probe
    md = query.get("metadata")
    if md:
        key, eq, value = md.partition("=")
        if not eq or not key or len(key) > 64 or len(value) > 512:
            raise ApiError(422, "invalid_query", "metadata must be key=value (key 1-64 characters, value at most "
                           "512), e.g. metadata=plan=gold", field="metadata")
        out["metadata"] = (key, value)
    return out


async def list_domains(request: web.Request) -> web.Response:
    """A page of domains in natural hostname order: ``{"domains", "count", "total", "next"}`` (keyset pagination:
    ``next`` is the cursor of the following page, null on the last). Filters ``status``, ``tenant``, ``q``
    (substring), ``prefix``, and :func:`list_filters`; an unknown status or tenant is a 422 (a tenant token naming another tenant gets the
    very same answer as for a tenant that does not exist). ``offset`` still works (without ``cursor``)."""
    services = request.app[SERVICES]
    storage = services.storage
    c = await caller(request)
    status = request.query.get("status") or None
    if status is not None and status not in DomainStatus.ALL:
        raise ApiError(422, "invalid_status", f"status must be one of {', '.join(DomainStatus.ALL)}",
                       field="status")
    tenant_id = None
    if request.query.get("tenant"):
        name = request.query["tenant"].strip()
        t = await storage.get_tenant(name) if len(name) <= 100 else None
        if t is None or (not c.admin and (c.tenant is None or t.id != c.tenant.id)):
            raise ApiError(422, "unknown_tenant", f"no tenant named {name[:100]!r}", field="tenant")
        tenant_id = t.id
    if not c.admin:
        assert c.tenant is not None
        tenant_id = c.tenant.id
    search = (request.query.get("q") or "").strip() or None
    prefix = (request.query.get("prefix") or "").strip() or None
    for field, v in (("q", search), ("prefix", prefix)):
        if v is not None and len(v) > 253:
            raise ApiError(422, "invalid_query", f"{field} is at most 253 characters", field=field)
    limit = min(query_int(request, "limit", LIST_DEFAULT, minimum=1), LIST_MAX)  # larger: clamped, see next
    after = _read_cursor(request.query["cursor"]) if request.query.get("cursor") else None
    offset = 0 if after is not None else query_int(request, "offset", 0)
    filters = dict(status=status, tenant_id=tenant_id, search=search, prefix=prefix, **list_filters(request.query))
    domains = await storage.list_domains(**filters, limit=limit + 1, offset=offset, after=after)
    total = await storage.count_domains(**filters)
    more = len(domains) > limit
    domains = domains[:limit]
    names = {}
    for i in {d.tenant_id for d in domains}:
        t = await storage.get_tenant_by_id(i)
        names[i] = t.name if t else "?"
    certs = {d.hostname: c2 for d, c2 in await storage.current_certificates([d.hostname for d in domains])} \
        if domains else {}
    out = [domain_json(d, names.get(d.tenant_id, "?"), certs.get(d.hostname),
                       expected_record=services.dns.expected_record(d.hostname),
                       dns_records=services.dns.dns_records(d.hostname, names.get(d.tenant_id, "?"),
                                                            ownership=d.ownership_pending),
                       for_tenant=not c.admin) for d in domains]
    return web.json_response({"domains": out, "count": len(out), "total": total,
                              "next": _cursor(domains[-1]) if more and domains else None})


async def get_domain(request: web.Request) -> web.Response:
    c = await caller(request)
    d = await visible_domain(request, c)
    return web.json_response(await render_domain(request.app[SERVICES], d, for_tenant=not c.admin))


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


async def delete_domain(request: web.Request) -> web.Response:
    """Remove a domain and clean up after it (``edge/lifecycle/removal.py``); ``?revoke=true`` also revokes its
    certificate at the CA (reason cessationOfOperation). A tenant may remove, and revoke, its own domains. 204 when
    every cleanup step was done and no revocation was asked for (as before); else 200 with the report
    (``removed``, ``revoked``, ``cleanup`` steps): a step that failed (CA down) is listed there and never blocks
    the removal. ``?report=true`` asks for the report in every case."""
    services = request.app[SERVICES]
    c = await caller(request)
    raw = request.query.get("revoke", "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise ApiError(422, "invalid_query", "revoke must be true or false", field="revoke")
    d = await visible_domain(request, c)
    try:
        async with services.storage.lock(f"domain:{d.hostname}", ttl=60, timeout=30):
            d = await services.storage.get_domain(d.hostname) or d  # re-check under the lock
            snap = await services.manager.removal_snapshot(d)
            try:
                await services.storage.delete_domain(d.hostname)
            except NotFound:
                raise ApiError(404, "not_found", f"no domain {d.hostname!r}") from None
    except LockTimeout:
        raise ApiError(503, "busy", f"{d.hostname} is being worked on; try again in a minute") from None
    report = await services.manager.removed(d.hostname, snapshot=snap, revoke=raw in _TRUE)
    body = report.to_dict()
    await services.events.emit(d.hostname, "domain_removed", f"{d.hostname} removed"
                               + (f" ({', '.join(report.failed)} failed)" if report.failed else ""), body)
    if raw not in _TRUE and not report.failed and request.query.get("report", "").strip().lower() not in _TRUE:
        return web.Response(status=204)
    return web.json_response(body)


async def renew_domain(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    storage = services.storage
    c = await caller(request)
    d = await visible_domain(request, c)
    if not c.admin and d.current_cert_id:
        # Tenants cannot burn the operator's CA limits: one forced renewal per certificate per day.
        cert = await storage.get_certificate(d.current_cert_id)
        min_age = dt.timedelta(seconds=services.settings.tenant_renew_min_age)
        if cert is not None and utcnow() - cert.created_at < min_age:
            retry = cert.created_at + min_age
            wait = max(1, int((retry - utcnow()).total_seconds()) + 1)
            raise ApiError(429, "renew_throttled", f"this certificate was obtained at {iso(cert.created_at)}; "
                           f"a tenant may force a renewal from {iso(retry)} on (the operator can at any time)",
                           retry_at=iso(retry), headers={"Retry-After": str(wait)})
    try:
        await services.manager.request_renewal(d.hostname)
    except NotFound:
        raise ApiError(404, "not_found", f"no domain {d.hostname!r}") from None
    except Exception:
        # A delete that commits between the read and the write of the renewal (the store's stale-row error): the
        # domain is gone, which is a 404, not a 500.
        if await storage.get_domain(d.hostname) is None:
            log.info("renew of %s raced its deletion; answered 404", d.hostname)
            raise ApiError(404, "not_found", f"no domain {d.hostname!r}") from None
        raise
    d2 = await storage.get_domain(d.hostname)
    if d2 is None:
        raise ApiError(404, "not_found", f"no domain {d.hostname!r}")
    return web.json_response(await render_domain(services, d2, for_tenant=not c.admin), status=202)


async def upload_certificate(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    c = await caller(request)
    d = await visible_domain(request, c)
    if d.ownership_pending:
        raise ApiError(409, "ownership_unproven", f"prove control of {d.hostname} first: create the ownership "
                       f"record listed in dns_records; nothing is served for it until then")
    body = await json_body(request)
    s = services.settings
    extra = tuple(p.strip() for p in (s.upload_trust_roots or "").split(",") if p.strip())
    try:
        valid = await analyse(request, validate_upload, d.hostname, body.get("certificate"), body.get("private_key"),
                              body.get("chain"), extra, max_certificates=s.upload_max_certificates,
                              max_chain=s.upload_max_chain)
    except UploadError as e:
        raise ApiError(422, e.code, e.message) from None
    async with services.storage.lock(f"domain:{d.hostname}", ttl=60, timeout=30):
        try:
            await services.manager.install_uploaded(d, valid)
        except SwapRejected as e:
            raise ApiError(422, "swap_rejected", str(e)) from None
    d2 = await services.storage.get_domain(d.hostname)
    return web.json_response(await render_domain(services, d2 or d, for_tenant=not c.admin))


async def domain_events(request: web.Request) -> web.Response:
    c = await caller(request)
    d = await visible_domain(request, c)
    after = query_int(request, "after", 0)
    limit = min(query_int(request, "limit", 200, minimum=1), 1000)
    evs = await request.app[SERVICES].storage.list_events(d.hostname, limit=limit, after_id=after)
    if not c.admin:
        # A name can change hands (released, or an unproven claim superseded): a tenant sees only its own history.
        since = d.created_at if d.created_at.tzinfo else d.created_at.replace(tzinfo=dt.timezone.utc)
        evs = [e for e in evs if (e.created_at if e.created_at.tzinfo
                                  else e.created_at.replace(tzinfo=dt.timezone.utc)) >= since]
    def shown(e) -> dict:
        data = json.loads(e.data) if e.data else {}
        message = e.message
        if not c.admin:  # tenants read plain words: no exception text, no CA detail, no URL
            message, data = tenant_event(e.kind, message, data)
        return {"id": e.id, "at": iso(e.created_at), "kind": e.kind, "message": message, "data": data}
    return web.json_response({"hostname": d.hostname, "events": [shown(e) for e in evs]})
