"""The TLS edge proxies tenant traffic to the origin: X-Forwarded-*, streaming bodies both ways, websockets."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading

import aiohttp
import pytest
from aiohttp import web

from edge.demo.process import free_port
from tests.helpers import EdgeProcess
from tests.origin import FixedResolver, check_websocket_and_misdirected, make_origin_app


@pytest.fixture
def origin():
    """A real origin server (aiohttp) in a thread: echoes headers, streams, speaks websocket."""
    port = free_port()
    loop = asyncio.new_event_loop()
    seen: list[dict] = []

    async def start():
        runner = web.AppRunner(make_origin_app(seen))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner
    runner = loop.run_until_complete(start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}", seen
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


async def _client(pebble) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context(cafile=pebble.roots_file)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))


def test_proxy_to_origin_streams_and_passes_websockets(tmp_path, pebble, dns, origin):
    url, seen = origin
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={"EDGECERT_UPSTREAM": url}).start()
    try:
        edge.add_domain("app.proxy.test", tenant="px")
        edge.wait_status("app.proxy.test", "active", timeout=30)
        base = f"https://app.proxy.test:{edge.https_port}"

        async def run():
            resolver = aiohttp.resolver.AsyncResolver if False else None
            ctx = ssl.create_default_context(cafile=pebble.roots_file)

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, resolver=FixedResolver())) as s:
                # headers and query pass; X-Forwarded-* added
                async with s.get(base + "/hello?x=1", headers={"X-Forwarded-For": "203.0.113.9"}) as r:
                    assert r.status == 200 and r.headers["X-Origin"] == "yes"
                    j = await r.json()
                assert j["path"] == "/hello?x=1"
                h = {k.lower(): v for k, v in j["headers"].items()}
                assert h["x-forwarded-proto"] == "https" and h["x-forwarded-host"] == "app.proxy.test"
                assert h["x-forwarded-for"] == "127.0.0.1"  # the client's own is not vouched for: replaced
                assert h["host"] == "app.proxy.test"
                # a large request body, streamed (chunked) up
                payload = b"0123456789abcdef" * 200000  # 3.2 MB

                async def gen():
                    for i in range(0, len(payload), 65536):
                        yield payload[i:i + 65536]
                async with s.post(base + "/upload", data=gen()) as r:
                    j = await r.json()
                assert j["body_len"] == len(payload)
                assert j["body_sha256"] == hashlib.sha256(payload).hexdigest()
                # a streamed response arrives in full
                async with s.get(base + "/stream") as r:
                    text = await r.text()
                assert text.count("chunk-4") == 1000 and len(text) == 5 * 8 * 1000
                # websockets pass through both ways; an unknown Host on the connection for app.proxy.test: 421,
                # never reaches the origin
                await check_websocket_and_misdirected(s, base, seen, "other.proxy.test")
        asyncio.run(run())
    finally:
        edge.stop()
