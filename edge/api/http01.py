"""The plain-HTTP listener: ACME HTTP-01 answers from the store, and a redirect to HTTPS for everything else."""

from __future__ import annotations

from aiohttp import web

from edge.api.state import SERVICES, ApiServices
from edge.names import is_valid_sni

__all__ = ["make_http_app"]


async def challenge(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if not token or len(token) > 200:
        raise web.HTTPNotFound(text="no such challenge\n")
    c = await request.app[SERVICES].storage.get_challenge(token)
    host = (request.host or "").rsplit(":", 1)[0].lower().rstrip(".") if not (request.host or "").startswith("[") \
        else request.host
    if c is None or c.kind != "http-01" or (host and c.hostname != host):
        raise web.HTTPNotFound(text="no such challenge\n")
    return web.Response(text=c.key_authorization, content_type="text/plain")


async def redirect(request: web.Request) -> web.StreamResponse:
    raw = request.host or ""
    host = raw.rsplit(":", 1)[0] if not raw.startswith("[") else ""
    host = host.lower().rstrip(".")
    if not is_valid_sni(host):
        return web.Response(status=400, text="edgecert: this listener needs a Host header with a DNS name\n")
    https_port = request.app[SERVICES].settings.https_public_port
    port = "" if https_port == 443 else f":{https_port}"
    raise web.HTTPPermanentRedirect(f"https://{host}{port}{request.rel_url}")


def make_http_app(services: ApiServices) -> web.Application:
    """The plain-HTTP app, answering HTTP-01 challenges from ``services.storage``."""
    app = web.Application()
    app[SERVICES] = services
    app.router.add_get("/.well-known/acme-challenge/{token}", challenge)
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app
