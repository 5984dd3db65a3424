"""Operations endpoints: ``/healthz`` (store health, served certificates), ``/metrics`` (Prometheus text),
``/v1/openapi.json`` (the API description) and ``/v1/webhooks/deliveries`` (the webhook delivery log, operator only)."""

from __future__ import annotations

from aiohttp import web

from edge.api.auth import caller, is_operator
from edge.api.errors import query_int
from edge.api.openapi import openapi_document
from edge.api.state import SERVICES
from edge.lifecycle.webhooks import delivery_json, list_deliveries

__all__ = ["healthz", "metrics", "openapi_json", "webhook_deliveries"]


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        counts = await services.storage.count_domains_by_status()
    except Exception as e:
        return web.json_response({"ok": False, "error": f"store unavailable: {type(e).__name__}"}, status=503)
    return web.json_response({"ok": True, "domains": counts, "served": len(services.index),
                              "version": services.version,
                              "tls": "engine" if services.index.engine is not None else "python-ssl"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text for anyone who can reach the API (a scraper needs no token); the series that name tenants'
    hostnames only with the operator token (``Authorization: Bearer $EDGECERT_ADMIN_TOKEN``): a tenant sees only its
    own domains."""
    services = request.app[SERVICES]
    await services.refresh_metrics()
    return web.Response(body=services.metrics.render(operator=is_operator(request)),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def webhook_deliveries(request: web.Request) -> web.Response:
    await caller(request, admin_only=True)
    limit = min(query_int(request, "limit", 100, minimum=1), 1000)
    after = query_int(request, "after", 0)
    rows = await list_deliveries(request.app[SERVICES].storage, status=request.query.get("status") or None,
                                 hostname=request.query.get("hostname") or None,
                                 type_=request.query.get("type") or None, limit=limit, after_id=after)
    out = [delivery_json(row) for row in rows]
    return web.json_response({"deliveries": out, "count": len(out)})
