"""A real origin server for proxy tests (aiohttp): echoes the request, streams a response, speaks websocket."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
from aiohttp import web


def make_origin_app(seen: list[dict]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"headers": dict(request.headers), "path": request.path_qs, "method": request.method})
        return web.json_response({"headers": dict(request.headers), "path": request.path_qs, "method": request.method,
                                  "body_sha256": hashlib.sha256(body).hexdigest(), "body_len": len(body)},
                                 headers={"X-Origin": "yes", "Set-Cookie": "a=1"})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"chunk-{i}\n".encode() * 1000)
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        w = web.WebSocketResponse()
        await w.prepare(request)
        async for msg in w:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await w.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await w.send_bytes(msg.data[::-1])
        return w

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def check_websocket_and_misdirected(s: aiohttp.ClientSession, base: str, seen: list[dict],
                                          other_host: str) -> None:
    """Through an edge in front of :func:`make_origin_app`: a websocket passes both ways, and a request whose Host is
    not the connection's SNI gets 421 without reaching the origin."""
    async with s.ws_connect(base.replace("https", "wss") + "/ws") as w:
        await w.send_str("hi")
        assert (await w.receive()).data == "echo:hi"
        await w.send_bytes(b"abc")
        assert (await w.receive()).data == b"cba"
    n = len(seen)
    async with s.get(base + "/x", headers={"Host": other_host}) as r:
        assert r.status == 421
    assert len(seen) == n


class FixedResolver(aiohttp.abc.AbstractResolver):
    """Every name resolves to 127.0.0.1 (the edge under test)."""

    async def resolve(self, host, port=0, family=0):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": 2, "proto": 0, "flags": 0}]

    async def close(self):
        pass
