"""The plain-HTTP listener: ACME HTTP-01 answers, and a redirect to HTTPS for everything else.

An answer comes from this node's memory first (the answers it published itself, ``edge.app.StorePublisher``), then
from the store (answers published by other nodes). So a node keeps answering the validations it started while the
database is unreachable; an answer only the store has is then a ``503`` with ``Retry-After`` (never a 500), and the
CA retries or fails that one validation.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from store.protocol import StoreUnavailable

from edge.api.state import SERVICES, ApiServices
from edge.names import is_valid_sni

__all__ = ["make_http_app", "ANSWERS", "LocalAnswers"]


class LocalAnswers(Protocol):
    """Challenge answers this node published (``edge.app.StorePublisher``)."""

    def answer(self, token: str) -> tuple[str, str, str] | None:
        """(hostname, kind, key_authorization) or None."""
        ...


ANSWERS = web.AppKey("answers", LocalAnswers)


def _host(request: web.Request) -> str:
    raw = request.host or ""
    return raw.rsplit(":", 1)[0].lower().rstrip(".") if not raw.startswith("[") else raw


async def challenge(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if not token or len(token) > 200:
        raise web.HTTPNotFound(text="no such challenge\n")
    host = _host(request)
    local = request.app.get(ANSWERS)
    mine = local.answer(token) if local is not None else None
    if mine is not None:
        hostname, kind, key_authorization = mine
    else:
        try:
            c = await request.app[SERVICES].storage.get_challenge(token)
        except StoreUnavailable:
            retry = request.app[SERVICES].settings.store_retry_after
            return web.Response(status=503, text="edgecert cannot reach its database; try again\n",
                                headers={"Retry-After": str(retry)})
        if c is None:
            raise web.HTTPNotFound(text="no such challenge\n")
        hostname, kind, key_authorization = c.hostname, c.kind, c.key_authorization
    if kind != "http-01" or (host and hostname != host):
        raise web.HTTPNotFound(text="no such challenge\n")
    return web.Response(text=key_authorization, content_type="text/plain")


async def redirect(request: web.Request) -> web.StreamResponse:
    raw = request.host or ""
    host = raw.rsplit(":", 1)[0] if not raw.startswith("[") else ""
    host = host.lower().rstrip(".")
    if not is_valid_sni(host):
        return web.Response(status=400, text="edgecert: this listener needs a Host header with a DNS name\n")
    https_port = request.app[SERVICES].settings.https_public_port
    port = "" if https_port == 443 else f":{https_port}"
    raise web.HTTPPermanentRedirect(f"https://{host}{port}{request.rel_url}")


def make_http_app(services: ApiServices, answers: LocalAnswers | None = None) -> web.Application:
    """The plain-HTTP app, answering HTTP-01 challenges from ``answers`` (this node's, default
    ``services.publisher``) first, then from ``services.storage``."""
    app = web.Application()
    app[SERVICES] = services
    answers = answers if answers is not None else getattr(services, "publisher", None)
    if answers is not None:
        app[ANSWERS] = answers
    app.router.add_get("/.well-known/acme-challenge/{token}", challenge)
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app
