"""Tenants and their API tokens (operator token only): ``/v1/tenants``, ``/v1/tenants/{name}/tokens``."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from edge.api.auth import caller
from edge.api.errors import ApiError, json_body
from edge.api.serialize import iso
from edge.api.state import SERVICES

__all__ = ["valid_tenant_name", "create_tenant", "list_tenants", "rotate_token", "revoke_tokens", "patch_tenant"]

_TENANT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def valid_tenant_name(name: Any) -> str:
    """``name`` stripped, if it is a valid tenant name; else ``ApiError`` 422 ``invalid_tenant``."""
    if not isinstance(name, str) or not name.strip():
        raise ApiError(422, "invalid_tenant", "tenant must be a non-empty string")
    n = name.strip()
    if len(n) > 100 or not set(n.lower()) <= _TENANT_NAME_CHARS:
        raise ApiError(422, "invalid_tenant",
                       "tenant names are 1-100 characters of letters, digits, '-', '_' and '.'")
    return n


def _new_token() -> str:
    return "ect_" + secrets.token_urlsafe(32)


async def create_tenant(request: web.Request) -> web.Response:
    await caller(request, admin_only=True)
    storage = request.app[SERVICES].storage
    body = await json_body(request)
    name = valid_tenant_name(body.get("name"))
    origin = await _origin(body)
    existing = await storage.get_tenant(name)
    tenant = existing or await storage.ensure_tenant(name)
    if "origin" in body:
        tenant = await _set_origin(request, tenant.name, origin)
    token = _new_token()
    await storage.add_token(tenant.id, token)
    return web.json_response({"name": tenant.name, "token": token, "created": existing is None,
                              "origin": tenant.origin}, status=201 if existing is None else 200)


async def _origin(body: dict) -> str | None:
    """The ``origin`` of a tenant body (operator only: any address may be named); None: the global upstream."""
    from edge.api.hostsettings import check_origin
    v = body.get("origin")
    return None if v in (None, "") else await check_origin(v, tenant_caller=False)


async def _set_origin(request: web.Request, name: str, origin: str | None):
    """Store the tenant's origin; this process's edge routes its domains by it at once, the others at their next
    sweep (the tenant's domains count as changed)."""
    from edge.api.domains import apply_host_settings
    services = request.app[SERVICES]
    t = await services.storage.set_tenant_origin(name, origin)
    if await services.storage.count_domains(tenant_id=t.id) <= _APPLY_AT_ONCE:
        hostnames = [d.hostname for d in await services.storage.list_domains(tenant_id=t.id, limit=_APPLY_AT_ONCE)]
        await apply_host_settings(services, hostnames)
    # (a larger tenant: its domains count as changed; the next sweep of every process applies it)
    return t


#: A tenant with at most this many domains gets its new origin applied by this process at once.
_APPLY_AT_ONCE = 5000


async def patch_tenant(request: web.Request) -> web.Response:
    """``PATCH /v1/tenants/{name}`` ``{"origin": URL | null}`` (operator token): the default origin of the tenant's
    domains (a domain's own ``origin`` wins; null: the global ``EDGECERT_UPSTREAM``)."""
    await caller(request, admin_only=True)
    storage = request.app[SERVICES].storage
    t = await storage.get_tenant(request.match_info["name"])
    if t is None:
        raise ApiError(404, "not_found", "no such tenant")
    body = await json_body(request)
    other = sorted(k for k in body if k != "origin")
    if other or not body:
        raise ApiError(422, "unsupported_field", "PATCH /v1/tenants/{name} takes {\"origin\": URL or null}",
                       field=(other or ["origin"])[0][:40])
    t = await _set_origin(request, t.name, await _origin(body))
    return web.json_response({"name": t.name, "origin": t.origin, "created_at": iso(t.created_at)})


async def list_tenants(request: web.Request) -> web.Response:
    await caller(request, admin_only=True)
    ts = await request.app[SERVICES].storage.list_tenants()
    return web.json_response({"tenants": [{"name": t.name, "origin": t.origin, "created_at": iso(t.created_at)}
                                          for t in ts]})


async def rotate_token(request: web.Request) -> web.Response:
    await caller(request, admin_only=True)
    storage = request.app[SERVICES].storage
    t = await storage.get_tenant(request.match_info["name"])
    if t is None:
        raise ApiError(404, "not_found", "no such tenant")
    revoked = await storage.revoke_tokens(t.id)
    token = _new_token()
    await storage.add_token(t.id, token)
    return web.json_response({"name": t.name, "token": token, "revoked": revoked}, status=201)


async def revoke_tokens(request: web.Request) -> web.Response:
    await caller(request, admin_only=True)
    storage = request.app[SERVICES].storage
    t = await storage.get_tenant(request.match_info["name"])
    if t is None:
        raise ApiError(404, "not_found", "no such tenant")
    return web.json_response({"name": t.name, "revoked": await storage.revoke_tokens(t.id)})
