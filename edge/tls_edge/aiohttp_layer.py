"""The TLS edge's HTTP side: 421 when Host is not the SNI name, then a streaming reverse proxy to the origin
(``EDGECERT_UPSTREAM``) with X-Forwarded-For/Proto/Host, websockets passed through; a placeholder page without one.

This module is the aiohttp implementation. The edge normally runs the lean one in :mod:`edge.fasthttp` (same
behaviour, far less Python per connection); this one is used when ``httptools`` is not installed or when the
``edge_http`` extra setting is ``"aiohttp"``."""

from __future__ import annotations

import asyncio
import html
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiohttp is imported where used: the lean edge worker (edge/edge_worker.py) never loads it
    import aiohttp
    from aiohttp import web

__all__ = ["make_edge_app", "page_html", "HOP_BY_HOP", "fast_layer_available"]

log = logging.getLogger(__name__)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "proxy-connection", "host", "content-length"}


def fast_layer_available(settings) -> bool:
    """True when the TLS edge should use :mod:`edge.fasthttp` (httptools installed, not turned off)."""
    if str(settings.extra.get("edge_http", "fast")).lower() == "aiohttp":
        return False
    try:
        import httptools  # noqa: F401
    except ImportError:
        log.warning("httptools is not installed: the TLS edge uses its aiohttp HTTP layer (slower per connection)")
        return False
    return True


def use_tls_engine(settings) -> bool:
    """True when the TLS edge should drive TLS with the C engine (edge/tlsengine.py): the lean HTTP layer is in use
    and ``tls_engine`` is not false. Whether the engine is built and passes its self-test is checked by the index."""
    return fast_layer_available(settings) and str(settings.extra.get("tls_engine", True)).lower() not in (
        "false", "0", "off", "no")


def _sni(request: web.Request) -> str | None:
    sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
    return getattr(sslobj, "edgecert_sni", None) if sslobj is not None else None


def _host(request: web.Request) -> str:
    raw = request.headers.get("Host", "")
    if raw.startswith("["):
        return raw.split("]")[0] + "]"
    return raw.rsplit(":", 1)[0].lower().rstrip(".") if ":" in raw else raw.lower().rstrip(".")


def page_html(title: str, body: str) -> str:
    """The edge's own pages (421, 404, 502, placeholder); ``body`` is HTML, already escaped."""
    return ("<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)}</title><body style='font-family:system-ui,sans-serif;max-width:40em;"
            f"margin:3em auto;padding:0 1em'><h1>{html.escape(title)}</h1><p>{body}</p></body></html>\n")


def _page(status: int, title: str, body: str) -> web.Response:
    from aiohttp import web
    return web.Response(status=status, content_type="text/html", text=page_html(title, body))


def make_edge_app(services) -> web.Application:
    from aiohttp import web
    settings = services.settings
    index = services.index
    upstream = settings.upstream.rstrip("/") if settings.upstream else None
    placeholder_text = settings.extra.get("placeholder_text")
    count = services.bench_stats if settings.extra.get("bench_stats") else None

    async def handle(request: web.Request) -> web.StreamResponse:
        if count is not None:
            count["connections"] += 1
            sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
            if sslobj is not None and sslobj.session_reused:
                count["resumed"] += 1
        sni = _sni(request)
        host = _host(request)
        if sni is None:
            return _page(421, "Misdirected request",
                         "This edge serves tenant sites by name and needs TLS Server Name Indication (SNI); "
                         "your client did not send it.")
        if host != sni:
            return _page(421, "Misdirected request",
                         f"This connection was opened for {html.escape(sni)} but asks for "
                         f"{html.escape(host or '(no Host)')}. Open a new connection to that name.")
        entry = index.lookup(sni)
        if entry is None:
            return _page(404, "No site here",
                         f"{html.escape(sni)} is not served by this edge (yet). If it is your domain, check its "
                         f"status page or ask the site operator.")
        if upstream is None:
            if placeholder_text is not None:
                return web.Response(text=placeholder_text)
            return _page(200, f"{html.escape(sni)} is served by edgecert",
                         "The certificate for this domain is active. No origin (EDGECERT_UPSTREAM) is configured, "
                         "so this placeholder page is shown.")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _proxy_ws(request, services.http_client, upstream, host)
        return await _proxy_http(request, services.http_client, upstream, host)

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _forward_headers(request: web.Request, host: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = "https"
    headers["X-Forwarded-Host"] = host
    headers["Host"] = host
    return headers


async def _proxy_http(request: web.Request, client: aiohttp.ClientSession, upstream: str, host: str
                      ) -> web.StreamResponse:
    import aiohttp
    from aiohttp import web
    url = upstream + str(request.rel_url)
    headers = _forward_headers(request, host)
    body = request.content if request.body_exists else None
    try:
        async with client.request(request.method, url, headers=headers, data=body, allow_redirects=False,
                                  auto_decompress=False) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    resp.headers.add(k, v)
            if up.headers.get("Content-Length") and "Content-Encoding" not in up.headers:
                resp.content_length = int(up.headers["Content-Length"])
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(65536):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        log.warning("upstream error for %s: %s", host, e)
        return _page(502, "Bad gateway", "The edge could not reach this site's origin server. Try again shortly.")


async def _proxy_ws(request: web.Request, client: aiohttp.ClientSession, upstream: str, host: str
                    ) -> web.StreamResponse:
    import aiohttp
    from aiohttp import web
    url = upstream.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + str(request.rel_url)
    headers = {k: v for k, v in _forward_headers(request, host).items()
               if not k.lower().startswith("sec-websocket")}
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        up = await client.ws_connect(url, headers=headers, protocols=protocols, autoping=False)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        log.warning("upstream websocket error for %s: %s", host, e)
        return _page(502, "Bad gateway", "The origin refused the websocket connection.")
    down = web.WebSocketResponse(protocols=protocols, autoping=False)
    await down.prepare(request)

    async def pump(src, dst) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await dst.pong(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                break
        await dst.close()

    async with up:
        a = asyncio.ensure_future(pump(down, up))
        b = asyncio.ensure_future(pump(up, down))
        done, pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return down
