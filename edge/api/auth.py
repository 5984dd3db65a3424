"""Who is calling: the operator token, a tenant's token, or nobody (public endpoints, rate-limited per client)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from store.models import Domain, Tenant

from edge.api.errors import ApiError
from edge.api.state import LIMITER, SERVICES

__all__ = ["Caller", "caller", "is_operator", "optional_caller", "limit_public"]


@dataclass
class Caller:
    admin: bool
    tenant: Tenant | None

    def can_see(self, d: Domain) -> bool:
        return self.admin or (self.tenant is not None and d.tenant_id == self.tenant.id)


def is_operator(request: web.Request) -> bool:
    """Whether ``request`` carries the operator token (never raises: for answers that anyone may have, with more
    for the operator)."""
    admin_token = request.app[SERVICES].settings.admin_token
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return bool(admin_token) and scheme.lower() == "bearer" and token.isascii() and \
        hmac.compare_digest(token.encode(), admin_token.encode())


async def caller(request: web.Request, *, admin_only: bool = False) -> Caller:
    """The caller of ``request`` from its bearer token; ``ApiError`` 401/403 when there is none or it may not call."""
    services = request.app[SERVICES]
    admin_token = services.settings.admin_token
    auth = request.headers.get("Authorization", "")
    if not admin_token:
        raise ApiError(403, "admin_token_not_configured",
                       "the operator API is disabled: EDGECERT_ADMIN_TOKEN is not set on the server. Set it (e.g. "
                       "export EDGECERT_ADMIN_TOKEN=$(openssl rand -hex 32)) where edgecert serve runs, restart it, "
                       "and send the same value as Authorization: Bearer <token>", missing="EDGECERT_ADMIN_TOKEN")
    if not auth:
        raise ApiError(401, "missing_token", "no Authorization header: send Authorization: Bearer <token>. The "
                       "operator token is EDGECERT_ADMIN_TOKEN on the server (the edgecert CLI sends "
                       "$EDGECERT_ADMIN_TOKEN or $EDGECERT_TOKEN); a tenant's token comes from POST /v1/tenants",
                       missing="Authorization")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not token.isascii() or not token.isprintable():
        shown = scheme[:20] if scheme.isascii() and scheme.isalpha() else "?"
        raise ApiError(401, "invalid_token", f"the Authorization header must be 'Bearer <token>' (it starts with "
                       f"{shown!r}{' and has no token' if scheme.lower() == 'bearer' else ''}); the operator token "
                       "is EDGECERT_ADMIN_TOKEN on the server")
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(admin=True, tenant=None)
    tenant = await services.storage.tenant_for_token(token) if len(token) < 200 else None
    if tenant is None:
        raise ApiError(401, "invalid_token", "the bearer token is not valid (wrong, revoked or expired): the "
                       "operator token must equal EDGECERT_ADMIN_TOKEN on the server; a tenant's token comes from "
                       "POST /v1/tenants or POST /v1/tenants/{name}/tokens (a rotation revokes the old one)")
    if admin_only:
        raise ApiError(403, "forbidden", "this call needs the operator token (EDGECERT_ADMIN_TOKEN on the server); "
                       "a tenant token was sent")
    return Caller(admin=False, tenant=tenant)


async def optional_caller(request: web.Request) -> Caller | None:
    """``None`` without an Authorization header (a public call), else the checked caller."""
    if "Authorization" not in request.headers:
        return None
    return await caller(request)


def limit_public(request: web.Request) -> None:
    """Spend one of the client's tokens for a public endpoint; ``ApiError`` 429 when it has none left."""
    limiter, key = request.app[LIMITER], request.remote or "?"
    if not limiter.allow(key):
        wait = limiter.retry_after(key)
        raise ApiError(429, "rate_limited", f"too many requests from this client; try again in {wait} "
                       f"second{'s' if wait != 1 else ''}", retry_after=wait, headers={"Retry-After": str(wait)})
