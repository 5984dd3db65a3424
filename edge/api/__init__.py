"""The operator / tenant / diagnostic HTTP API (JSON; ``Authorization: Bearer <token>``), assembled here from its parts:

- ``errors``: the error shape ``{"error": {"code": ..., "message": ...}}`` (a 500 never leaks internals), body reading;
- ``auth``: operator and tenant tokens, the public rate limit; ``state``: the app's typed keys;
- ``domains``, ``tenants``, ``diagnostics``, ``ops``: the handlers, by resource; ``serialize``: their JSON shapes;
- ``status_page``: the tenant-facing HTML page; ``openapi``: the API description; ``http01``: the plain-HTTP listener.

With a tenant token, another tenant's domain answers 404 exactly like a missing one.
"""

from __future__ import annotations

from aiohttp import web

from edge.api import diagnostics, domains, ops, tenants
from edge.api.auth import Caller
from edge.api.errors import MAX_BODY, api_error, error_middleware
from edge.api.serialize import domain_json
from edge.api.state import ANALYSIS, LIMITER, SERVICES, ApiServices, RateLimiter
from edge.diagnostics.budget import AnalysisPool
from edge.api.status_page import status_page

__all__ = ["make_api_app", "api_error", "domain_json", "Caller"]


def make_api_app(services: ApiServices) -> web.Application:
    """The API app (every route of ``openapi.openapi_document()``), serving from ``services``."""
    s = services.settings
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[SERVICES] = services
    app[LIMITER] = RateLimiter(rate=s.public_rate_per_s,
                               burst=s.public_burst)
    pool = AnalysisPool(workers=s.analysis_workers, budget=s.analysis_budget,
                        warm=("edge.diagnostics.triage", "edge.diagnostics.certificate", "edge.lifecycle.upload"))
    app[ANALYSIS] = pool

    async def close_pool(_app: web.Application) -> None:
        pool.close()
    app.on_cleanup.append(close_pool)
    r = app.router
    r.add_post("/v1/domains", domains.create_domain)
    r.add_get("/v1/domains", domains.list_domains)
    r.add_post("/v1/domains/batch", domains.batch_domains)
    r.add_get("/v1/domains/{hostname}", domains.get_domain)
    r.add_delete("/v1/domains/{hostname}", domains.delete_domain)
    r.add_patch("/v1/domains/{hostname}", domains.patch_domain)
    r.add_post("/v1/domains/{hostname}/renew", domains.renew_domain)
    r.add_get("/v1/domains/{hostname}/events", domains.domain_events)
    r.add_put("/v1/domains/{hostname}/certificate", domains.upload_certificate)
    r.add_post("/v1/tenants", tenants.create_tenant)
    r.add_get("/v1/tenants", tenants.list_tenants)
    r.add_patch("/v1/tenants/{name}", tenants.patch_tenant)
    r.add_post("/v1/tenants/{name}/tokens", tenants.rotate_token)
    r.add_delete("/v1/tenants/{name}/tokens", tenants.revoke_tokens)
    r.add_get("/v1/diagnose/{hostname}", diagnostics.diagnose)
    r.add_post("/v1/triage", diagnostics.triage)
    r.add_get("/healthz", ops.healthz)
    r.add_get("/metrics", ops.metrics)
    r.add_get("/v1/webhooks/deliveries", ops.webhook_deliveries)
    r.add_get("/v1/openapi.json", ops.openapi_json)
    r.add_get("/status/{hostname}", status_page)
    return app
