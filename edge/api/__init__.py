"""The operator / tenant / diagnostic HTTP API (JSON; ``Authorization: Bearer <token>``).

Errors are always ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for bad input; a 500 never leaks
internals. With a tenant token, another tenant's domain answers 404 exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from store import Conflict, NotFound
from store.models import CertificateVersion, Domain, Tenant, utcnow

from edge.names import InvalidHostname, validate_hostname

__all__ = ["make_api_app", "api_error", "domain_json", "Caller"]

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024
_TENANT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def api_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    headers = {"WWW-Authenticate": 'Bearer realm="edgecert"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


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
            "days_left": round((c.not_after - utcnow()).total_seconds() / 86400, 2)}


def domain_json(d: Domain, tenant: str, cert: CertificateVersion | None, *, expected_record: dict | None = None
                ) -> dict:
    observed = json.loads(d.dns_observed) if d.dns_observed else None
    return {
        "hostname": d.hostname,
        "tenant": tenant,
        "status": d.status,
        "last_error": d.last_error,
        "last_error_code": d.last_error_code,
        "next_renewal_at": iso(d.next_renewal_at),
        "retry_at": iso(d.retry_at),
        "next_check_at": iso(d.next_check_at),
        "attempts": d.attempts,
        "certificate": cert_json(cert),
        "reload": {"pending": bool(d.hook_pending), "verified_serial": d.served_serial},
        "last_probe": json.loads(d.last_probe) if d.last_probe else None,
        "renewal": {"reason": d.renewal_reason, "ari_window": {"start": iso(d.ari_window_start),
                                                               "end": iso(d.ari_window_end)}
                    if d.ari_window_start else None},
        "dns": {"expected_record": expected_record, "observed": observed},
        "created_at": iso(d.created_at),
        "updated_at": iso(d.updated_at),
        "links": {"self": f"/v1/domains/{d.hostname}", "events": f"/v1/domains/{d.hostname}/events",
                  "status_page": f"/status/{d.hostname}", "diagnose": f"/v1/diagnose/{d.hostname}"},
    }


@dataclass
class Caller:
    admin: bool
    tenant: Tenant | None

    def can_see(self, d: Domain) -> bool:
        return self.admin or (self.tenant is not None and d.tenant_id == self.tenant.id)


async def _json_body(request: web.Request) -> dict:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", f"request body is larger than {MAX_BODY} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"request body is larger than {MAX_BODY} bytes") from None
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return data


def _valid_tenant_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ApiError(422, "invalid_tenant", "tenant must be a non-empty string")
    n = name.strip()
    if len(n) > 100 or not set(n.lower()) <= _TENANT_NAME_CHARS:
        raise ApiError(422, "invalid_tenant",
                       "tenant names are 1-100 characters of letters, digits, '-', '_' and '.'")
    return n


class _RateLimiter:
    """Per-client token bucket for the public endpoints (diagnose, triage, status)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._b: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self._b.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._b[key] = (tokens, now)
            return False
        self._b[key] = (tokens - 1, now)
        if len(self._b) > 10000:
            self._b.clear()
        return True


def make_api_app(services) -> web.Application:
    s = services.settings
    storage = services.storage
    limiter = _RateLimiter(rate=float(s.extra.get("public_rate_per_s", 1.0)),
                           burst=int(s.extra.get("public_burst", 30)))

    @web.middleware
    async def errors_mw(request: web.Request, handler):
        try:
            return await handler(request)
        except ApiError as e:
            return api_error(e.status, e.code, e.message, **e.extra)
        except web.HTTPException as e:
            if e.status >= 400 and e.content_type != "application/json":
                code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.status, "http_error")
                return api_error(e.status, code, e.reason)
            raise
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            return api_error(500, "internal_error", "internal error; see the server log")

    async def caller(request: web.Request, *, admin_only: bool = False) -> Caller:
        auth = request.headers.get("Authorization", "")
        if not s.admin_token:
            raise ApiError(403, "admin_token_not_configured",
                           "the operator API is disabled until EDGECERT_ADMIN_TOKEN is set")
        if not auth:
            raise ApiError(401, "missing_token", "send Authorization: Bearer <token>")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "invalid_token", "the Authorization header must be 'Bearer <token>'")
        if hmac.compare_digest(token.encode(), s.admin_token.encode()):
            return Caller(admin=True, tenant=None)
        tenant = await storage.tenant_for_token(token) if len(token) < 200 else None
        if tenant is None:
            raise ApiError(401, "invalid_token", "the token is not valid (wrong, revoked or expired)")
        if admin_only:
            raise ApiError(403, "forbidden", "this call needs the operator token")
        return Caller(admin=False, tenant=tenant)

    async def optional_caller(request: web.Request) -> Caller | None:
        if "Authorization" not in request.headers:
            return None
        return await caller(request)

    async def _tenant_names(ids: set[int]) -> dict[int, str]:
        out = {}
        for i in ids:
            t = await storage.get_tenant_by_id(i)
            out[i] = t.name if t else "?"
        return out

    async def _visible_domain(request: web.Request, c: Caller | None) -> Domain:
        raw = request.match_info["hostname"]
        try:
            name = validate_hostname(raw, allow_wildcard=True).ascii
        except InvalidHostname:
            raise ApiError(404, "not_found", f"no domain {raw!r}") from None
        d = await storage.get_domain(name)
        if d is None or (c is not None and not c.can_see(d)):
            raise ApiError(404, "not_found", f"no domain {name!r}")
        return d

    async def _render(d: Domain) -> dict:
        tenant = await storage.get_tenant_by_id(d.tenant_id)
        cert = await storage.get_certificate(d.current_cert_id) if d.current_cert_id else None
        return domain_json(d, tenant.name if tenant else "?", cert,
                           expected_record=services.dns.expected_record(d.hostname))

    # -- domains ---------------------------------------------------------------------------------------------
    async def create_domain(request: web.Request) -> web.Response:
        c = await caller(request)
        body = await _json_body(request)
        try:
            hn = validate_hostname(body.get("hostname"), allow_wildcard=False)
        except InvalidHostname as e:
            raise ApiError(422, e.code, e.message, field="hostname") from None
        if c.admin:
            if "tenant" not in body:
                raise ApiError(422, "invalid_tenant", "tenant is required with the operator token", field="tenant")
            tenant = await storage.ensure_tenant(_valid_tenant_name(body["tenant"]))
        else:
            assert c.tenant is not None
            if "tenant" in body and body["tenant"] != c.tenant.name:
                raise ApiError(403, "forbidden", "a tenant token can only add domains to its own tenant")
            tenant = c.tenant
        key_type = body.get("key_type")
        if key_type is not None and key_type not in ("ecdsa-p256", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096"):
            raise ApiError(422, "invalid_key_type", "key_type must be ecdsa-p256, ecdsa-p384, rsa2048, rsa3072 or "
                           "rsa4096", field="key_type")
        try:
            d = await storage.add_domain(hn.ascii, tenant.id, next_check_at=utcnow(), key_type=key_type)
        except Conflict:
            existing = await storage.get_domain(hn.ascii)
            if existing is not None and c.can_see(existing):
                raise ApiError(409, "already_exists", f"{hn.ascii} is already registered",
                               domain=await _render(existing)) from None
            raise ApiError(409, "already_exists", f"{hn.ascii} is already registered") from None
        await services.events.emit(d.hostname, "domain_added", f"{d.hostname} added for tenant {tenant.name}",
                                   {"tenant": tenant.name})
        services.manager.wake(d.hostname, tenant_id=d.tenant_id)
        return web.json_response(await _render(d), status=201,
                                 headers={"Location": f"/v1/domains/{d.hostname}"})

    async def list_domains(request: web.Request) -> web.Response:
        c = await caller(request)
        status = request.query.get("status") or None
        tenant_id = None
        if "tenant" in request.query:
            t = await storage.get_tenant(request.query["tenant"])
            if t is None or (not c.admin and c.tenant is not None and t.id != c.tenant.id):
                return web.json_response({"domains": [], "count": 0})
            tenant_id = t.id
        if not c.admin:
            assert c.tenant is not None
            tenant_id = c.tenant.id
        try:
            limit = min(max(int(request.query.get("limit", "1000")), 1), 10000)
            offset = max(int(request.query.get("offset", "0")), 0)
        except ValueError:
            raise ApiError(400, "invalid_query", "limit and offset must be integers") from None
        domains = await storage.list_domains(status=status, tenant_id=tenant_id, limit=limit, offset=offset)
        names = await _tenant_names({d.tenant_id for d in domains})
        certs = {d.hostname: c2 for d, c2 in await storage.current_certificates([d.hostname for d in domains])} \
            if domains else {}
        out = [domain_json(d, names.get(d.tenant_id, "?"), certs.get(d.hostname),
                           expected_record=services.dns.expected_record(d.hostname)) for d in domains]
        return web.json_response({"domains": out, "count": len(out)})

    async def get_domain(request: web.Request) -> web.Response:
        c = await caller(request)
        d = await _visible_domain(request, c)
        return web.json_response(await _render(d))

    async def delete_domain(request: web.Request) -> web.Response:
        c = await caller(request)
        d = await _visible_domain(request, c)
        async with storage.lock(f"domain:{d.hostname}", ttl=60, timeout=30):
            try:
                await storage.delete_domain(d.hostname)
            except NotFound:
                raise ApiError(404, "not_found", f"no domain {d.hostname!r}") from None
        await services.manager.removed(d.hostname)
        await services.events.emit(d.hostname, "domain_removed", f"{d.hostname} removed")
        return web.Response(status=204)

    async def renew_domain(request: web.Request) -> web.Response:
        c = await caller(request)
        d = await _visible_domain(request, c)
        if not c.admin and d.current_cert_id:
            # Tenants cannot burn the operator's CA limits: one forced renewal per certificate per day.
            cert = await storage.get_certificate(d.current_cert_id)
            min_age = dt.timedelta(seconds=float(s.extra.get("tenant_renew_min_age", 86400)))
            if cert is not None and utcnow() - cert.created_at < min_age:
                retry = cert.created_at + min_age
                raise ApiError(429, "renew_throttled", f"this certificate was obtained at {iso(cert.created_at)}; "
                               f"a tenant may force a renewal from {iso(retry)} on (the operator can at any time)",
                               retry_at=iso(retry))
        await services.manager.request_renewal(d.hostname)
        d2 = await storage.get_domain(d.hostname)
        return web.json_response(await _render(d2 or d), status=202)

    async def upload_certificate(request: web.Request) -> web.Response:
        c = await caller(request)
        d = await _visible_domain(request, c)
        body = await _json_body(request)
        from edge.lifecycle.swap import SwapRejected  # noqa: PLC0415
        from edge.lifecycle.upload import UploadError, load_trust_roots, validate_certificate  # noqa: PLC0415
        extra = [p.strip() for p in (s.upload_trust_roots or "").split(",") if p.strip()]
        roots = await asyncio.to_thread(load_trust_roots, extra)
        try:
            valid = validate_certificate(d.hostname, body.get("certificate"), body.get("private_key"),
                                         chain_pem=body.get("chain") or "", roots=roots)
        except UploadError as e:
            raise ApiError(422, e.code, e.message) from None
        async with storage.lock(f"domain:{d.hostname}", ttl=60, timeout=30):
            try:
                await services.manager.install_uploaded(d, valid)
            except SwapRejected as e:
                raise ApiError(422, "swap_rejected", str(e)) from None
        d2 = await storage.get_domain(d.hostname)
        return web.json_response(await _render(d2 or d))

    async def domain_events(request: web.Request) -> web.Response:
        c = await caller(request)
        d = await _visible_domain(request, c)
        try:
            after = int(request.query.get("after", "0"))
            limit = min(int(request.query.get("limit", "200")), 1000)
        except ValueError:
            raise ApiError(400, "invalid_query", "after and limit must be integers") from None
        evs = await storage.list_events(d.hostname, limit=limit, after_id=after)
        return web.json_response({"hostname": d.hostname, "events": [
            {"id": e.id, "at": iso(e.created_at), "kind": e.kind, "message": e.message,
             "data": json.loads(e.data) if e.data else {}} for e in evs]})

    # -- tenants ---------------------------------------------------------------------------------------------
    async def create_tenant(request: web.Request) -> web.Response:
        await caller(request, admin_only=True)
        body = await _json_body(request)
        name = _valid_tenant_name(body.get("name"))
        existing = await storage.get_tenant(name)
        tenant = existing or await storage.ensure_tenant(name)
        token = "ect_" + secrets.token_urlsafe(32)
        await storage.add_token(tenant.id, token)
        return web.json_response({"name": tenant.name, "token": token, "created": existing is None},
                                 status=201 if existing is None else 200)

    async def list_tenants(request: web.Request) -> web.Response:
        await caller(request, admin_only=True)
        ts = await storage.list_tenants()
        return web.json_response({"tenants": [{"name": t.name, "created_at": iso(t.created_at)} for t in ts]})

    async def rotate_token(request: web.Request) -> web.Response:
        await caller(request, admin_only=True)
        t = await storage.get_tenant(request.match_info["name"])
        if t is None:
            raise ApiError(404, "not_found", "no such tenant")
        revoked = await storage.revoke_tokens(t.id)
        token = "ect_" + secrets.token_urlsafe(32)
        await storage.add_token(t.id, token)
        return web.json_response({"name": t.name, "token": token, "revoked": revoked}, status=201)

    async def revoke_tokens(request: web.Request) -> web.Response:
        await caller(request, admin_only=True)
        t = await storage.get_tenant(request.match_info["name"])
        if t is None:
            raise ApiError(404, "not_found", "no such tenant")
        return web.json_response({"name": t.name, "revoked": await storage.revoke_tokens(t.id)})

    # -- diagnostics -------------------------------------------------------------------------------------------
    def _limit(request: web.Request) -> None:
        if not limiter.allow(request.remote or "?"):
            raise ApiError(429, "rate_limited", "too many requests from this client; try again in a minute")

    async def diagnose(request: web.Request) -> web.Response:
        _limit(request)
        c = await optional_caller(request)
        d = await _visible_domain(request, c)
        from edge.diagnostics import TargetNotAllowed, diagnose as run_diagnose  # noqa: PLC0415
        cert = await storage.get_certificate(d.current_cert_id) if d.current_cert_id else None
        targets = [t.strip() for t in (s.edge_target or "").split(",") if t.strip()] or None
        try:
            result = await asyncio.wait_for(run_diagnose(
                d.hostname, resolver=s.dns_resolver, allow_private=s.diagnose_allow_private,
                expected_sha256=cert.sha256 if cert else None, edge_targets=targets,
                cafile=s.extra.get("diagnose_cafile"), port=s.https_public_port, timeout=5.0), 90)
        except TargetNotAllowed as e:
            raise ApiError(422, "target_not_allowed", f"{d.hostname} resolves to an address the diagnostic endpoint "
                           f"may not connect to ({e}); run 'edgecert diagnose' from your own network instead") \
                from None
        except ValueError as e:
            raise ApiError(422, "invalid_target", str(e)) from None
        except TimeoutError:
            raise ApiError(504, "diagnose_timeout", "the diagnosis took too long") from None
        return web.json_response(result)

    async def triage(request: web.Request) -> web.Response:
        _limit(request)
        body = await _json_body(request)
        report = body.get("report")
        if not isinstance(report, str) or not report.strip():
            raise ApiError(422, "invalid_report", "report must be a non-empty string (the pasted error text)",
                           field="report")
        hostname = body.get("hostname")
        if hostname is not None:
            try:
                hostname = validate_hostname(hostname).ascii
            except InvalidHostname as e:
                raise ApiError(422, e.code, e.message, field="hostname") from None
        from edge.diagnostics import triage as run_triage  # noqa: PLC0415
        issuers = await services.edge_issuers()
        served_valid = None
        if hostname:
            d = await storage.get_domain(hostname)
            if d is not None and d.current_cert_id:
                cert = await storage.get_certificate(d.current_cert_id)
                served_valid = bool(cert and cert.not_before <= utcnow() < cert.not_after)
        try:
            result = run_triage(report, hostname=hostname, edge_issuers=issuers or None,
                                served_certificate_valid=served_valid)
        except ValueError as e:
            raise ApiError(422, "invalid_report", str(e), field="report") from None
        return web.json_response(result)

    # -- webhooks and the API description ---------------------------------------------------------------------
    async def webhook_deliveries(request: web.Request) -> web.Response:
        await caller(request, admin_only=True)
        from edge.lifecycle.webhooks import delivery_json, list_deliveries  # noqa: PLC0415
        try:
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
            after = max(int(request.query.get("after", "0")), 0)
        except ValueError:
            raise ApiError(400, "invalid_query", "limit and after must be integers") from None
        rows = await list_deliveries(storage, status=request.query.get("status") or None,
                                     hostname=request.query.get("hostname") or None,
                                     type_=request.query.get("type") or None, limit=limit, after_id=after)
        out = [delivery_json(row) for row in rows]
        return web.json_response({"deliveries": out, "count": len(out)})

    async def openapi_json(request: web.Request) -> web.Response:
        from edge.api.openapi import openapi_document  # noqa: PLC0415
        return web.json_response(openapi_document())

    # -- health and metrics ----------------------------------------------------------------------------------
    async def healthz(request: web.Request) -> web.Response:
        try:
            counts = await storage.count_domains_by_status()
        except Exception as e:
            return web.json_response({"ok": False, "error": f"store unavailable: {type(e).__name__}"}, status=503)
        return web.json_response({"ok": True, "domains": counts, "served": len(services.index),
                                  "version": services.version,
                                  "tls": "engine" if services.index.engine is not None else "python-ssl"})

    async def metrics(request: web.Request) -> web.Response:
        await services.refresh_metrics()
        return web.Response(body=services.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application(middlewares=[errors_mw], client_max_size=MAX_BODY)
    r = app.router
    r.add_post("/v1/domains", create_domain)
    r.add_get("/v1/domains", list_domains)
    r.add_get("/v1/domains/{hostname}", get_domain)
    r.add_delete("/v1/domains/{hostname}", delete_domain)
    r.add_post("/v1/domains/{hostname}/renew", renew_domain)
    r.add_get("/v1/domains/{hostname}/events", domain_events)
    r.add_put("/v1/domains/{hostname}/certificate", upload_certificate)
    r.add_post("/v1/tenants", create_tenant)
    r.add_get("/v1/tenants", list_tenants)
    r.add_post("/v1/tenants/{name}/tokens", rotate_token)
    r.add_delete("/v1/tenants/{name}/tokens", revoke_tokens)
    r.add_get("/v1/diagnose/{hostname}", diagnose)
    r.add_post("/v1/triage", triage)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/v1/webhooks/deliveries", webhook_deliveries)
    r.add_get("/v1/openapi.json", openapi_json)
    from edge.api.status_page import add_status_routes  # noqa: PLC0415
    add_status_routes(app, services, limiter=limiter)
    return app
