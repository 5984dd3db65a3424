"""The TLS edge's lean HTTP layer (edge/fasthttp.py), in process, against a real aiohttp origin: the same behaviour as
the aiohttp layer (421/404/placeholder, streaming reverse proxy with X-Forwarded-*, websockets), plus keep-alive,
pipelining, HEAD, chunked bodies both ways, 502, and the edge worker's store loading. No timing is asserted."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import json
import os
import ssl
import types

import aiohttp
import pytest
from aiohttp import web

pytest.importorskip("httptools")

from edge.tls_edge import engine as tlsengine  # noqa: E402
from edge.tls_edge.certificates import generate_default_certificate, make_server_context  # noqa: E402
from edge.tls_edge.index import CertEntry, SniIndex, load_index_rows  # noqa: E402
from edge.demo.process import free_port  # noqa: E402
from edge.config import Settings
from edge.tls_edge.http import EdgeHttpServer  # noqa: E402
from tests.certs import self_signed  # noqa: E402
from tests.origin import FixedResolver, check_websocket_and_misdirected, make_origin_app  # noqa: E402

NAME = "app.fast.test"


def _cert(name: str) -> tuple[bytes, bytes]:
    pem, key, _ = self_signed(name)
    return pem, key


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_ENGINE = {"on": True}


@pytest.fixture(params=["engine", "pyssl"])
def tls_driver(request):
    """Each HTTP-layer test runs twice: TLS driven by the C engine (edge/_edgetls.c) and by Python's ssl module."""
    if request.param == "engine" and not tlsengine.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the C TLS engine is not available in CI: {tlsengine.unavailable_reason()}")
        pytest.skip(f"C TLS engine unavailable: {tlsengine.unavailable_reason()}")
    _ENGINE["on"] = request.param == "engine"
    return request.param


async def _edge(upstream: str | None, extra: dict | None = None) -> tuple[EdgeHttpServer, int, dict]:
    dpem, dkey = generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=_ENGINE["on"])
    assert (index.engine is not None) == _ENGINE["on"]
    pem, key = _cert(NAME)
    index.put(CertEntry(hostname=NAME, fullchain_pem=pem, key_pem=key, serial="1"))
    stats = {"connections": 0, "resumed": 0}
    settings = Settings(bench_stats=True, upstream=upstream, **(extra or {}))
    srv = EdgeHttpServer(types.SimpleNamespace(settings=settings, index=index, bench_stats=stats))
    port = free_port()
    await srv.start("127.0.0.1", port, index.default_context)
    return srv, port, stats


async def _raw(port: int, data: bytes, sni: str | None = NAME, *, read_until_close: bool = True) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(), server_hostname=sni)
    w.write(data)
    if read_until_close:
        out = await asyncio.wait_for(r.read(), 10)
    else:
        out = await asyncio.wait_for(r.read(65536), 10)
    w.close()
    return out


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


async def test_local_answers_keepalive_pipelining_and_counters(tls_driver):
    srv, port, stats = await _edge(None)
    try:
        # placeholder page, Connection: close honoured
        out = await _raw(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        assert _status(out) == 200 and f"{NAME} is served by edgecert".encode() in out
        assert b"Connection: close" in out
        # Host != SNI -> 421; no SNI -> 421; unknown SNI -> 404
        out = await _raw(port, b"GET / HTTP/1.1\r\nHost: other.fast.test\r\nConnection: close\r\n\r\n")
        assert _status(out) == 421 and b"other.fast.test" in out
        out = await _raw(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", sni=None)
        assert _status(out) == 421 and b"Server Name Indication" in out
        out = await _raw(port, b"GET / HTTP/1.1\r\nHost: nope.fast.test\r\nConnection: close\r\n\r\n",
                         sni="nope.fast.test")
        assert _status(out) == 404
        # Host with a port and upper case still matches the SNI name
        out = await _raw(port, f"GET / HTTP/1.1\r\nHost: {NAME.upper()}:443\r\nConnection: close\r\n\r\n".encode())
        assert _status(out) == 200
        # pipelined: three requests in one write (a HEAD and a POST with a body among them), answered in order
        req = (f"GET /a HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
               f"HEAD /b HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
               f"POST /c HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").encode()
        out = await _raw(port, req)
        assert out.count(b"HTTP/1.1 200 OK") == 3
        bodies = out.split(b"<!doctype html>")
        assert len(bodies) == 3  # the HEAD answer has headers only
        # garbage -> 400 and close
        out = await _raw(port, b"NOT HTTP AT ALL\r\n\r\n")
        assert _status(out) == 400
        # HTTP/1.0 without keep-alive: closed after the answer
        out = await _raw(port, f"GET / HTTP/1.0\r\nHost: {NAME}\r\n\r\n".encode())
        assert _status(out) == 200
        assert stats["connections"] >= 8 and stats["resumed"] == 0
    finally:
        await srv.stop()


async def test_bench_placeholder_text(tls_driver):
    srv, port, _ = await _edge(None, {"placeholder_text": "ok\n"})
    try:
        out = await _raw(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        head, _, body = out.partition(b"\r\n\r\n")
        assert _status(out) == 200 and body == b"ok\n" and b"Content-Length: 3" in head
    finally:
        await srv.stop()


async def test_a_closed_connection_is_freed_by_reference_counting(tls_driver):
    """Once a connection is lost, its protocol (and with it the transport and the TLS state) is freed at once, not
    left in a reference cycle for the cyclic collector (measured: that cycle kept tens of closed connections' SSL
    objects alive and cost L2 misses on every handshake, bench/RESULTS.md "Session 6")."""
    from edge.tls_edge.http import EdgeHttpProtocol
    srv, port, _ = await _edge(None, {"placeholder_text": "ok\n"})
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            out = await _raw(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
            assert _status(out) == 200
        for _ in range(100):  # connection_lost runs on the server's side once the close has gone through
            if not srv.conns:
                break
            await asyncio.sleep(0.01)
        assert not srv.conns
        await asyncio.sleep(0.05)
        left = [o for o in gc.get_objects() if isinstance(o, EdgeHttpProtocol) and o.srv is srv]
        assert left == []
    finally:
        gc.enable()
        await srv.stop()


@pytest.fixture
async def origin():
    seen: list[dict] = []
    runner = web.AppRunner(make_origin_app(seen))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


_Fixed = FixedResolver


async def test_reverse_proxy_streams_forwards_headers_and_passes_websockets(origin, tls_driver):
    url, seen = origin
    srv, port, _ = await _edge(url)
    base = f"https://{NAME}:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_client_ctx(), resolver=_Fixed())) as s:
            async with s.get(base + "/hello?x=1", headers={"X-Forwarded-For": "203.0.113.9",
                                                            "Connection": "keep-alive, X-Private",
                                                            "X-Private": "hop", "X-Forwarded-Proto": "http"}) as r:
                assert r.status == 200 and r.headers["X-Origin"] == "yes" and r.headers["Set-Cookie"] == "a=1"
                j = await r.json()
            assert j["path"] == "/hello?x=1"
            h = {k.lower(): v for k, v in j["headers"].items()}
            assert h["x-forwarded-for"] == "127.0.0.1"  # the client's own is not vouched for: replaced
            assert h["x-forwarded-proto"] == "https" and h["x-forwarded-host"] == NAME and h["host"] == NAME
            assert "x-private" not in h  # named in Connection: hop-by-hop
            # a large chunked upload, and one with a Content-Length, both streamed up in full
            payload = b"0123456789abcdef" * 200000

            async def gen():
                for i in range(0, len(payload), 65536):
                    yield payload[i:i + 65536]
            async with s.post(base + "/upload", data=gen()) as r:
                j = await r.json()
            assert j["body_len"] == len(payload) and j["body_sha256"] == hashlib.sha256(payload).hexdigest()
            async with s.put(base + "/put", data=payload[:100000]) as r:
                j = await r.json()
            assert j["body_len"] == 100000 and j["headers"]["Content-Length"] == "100000"
            # a streamed (chunked) response arrives in full
            async with s.get(base + "/stream") as r:
                text = await r.text()
            assert text.count("chunk-4") == 1000 and len(text) == 5 * 8 * 1000
            # HEAD through the proxy, then more requests (the upstream connection is not confused)
            async with s.head(base + "/x") as r:
                assert r.status == 200 and int(r.headers["Content-Length"]) > 0
            for i in range(3):
                async with s.get(base + f"/again/{i}") as r:
                    assert (await r.json())["path"] == f"/again/{i}"
            # websockets pass through both ways; Host != SNI: 421, the origin never sees it
            await check_websocket_and_misdirected(s, base, seen, "other.fast.test")
        # pipelined proxied requests come back in order
        req = (f"GET /p1 HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
               f"GET /p2 HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").encode()
        out = await _raw(port, req)
        assert out.count(b"HTTP/1.1 200") == 2 and out.index(b'"/p1"') < out.index(b'"/p2"')
    finally:
        await srv.stop()


async def test_bad_gateway_when_the_origin_is_down(tls_driver):
    srv, port, _ = await _edge(f"http://127.0.0.1:{free_port()}")
    try:
        out = await _raw(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        assert _status(out) == 502 and b"Bad gateway" in out
    finally:
        await srv.stop()


async def test_edge_store_loads_and_follows_changes(tmp_path):
    """The edge worker's reader: the same rows as the store's ``served_rows``, and ``changed_since``."""
    from store.readonly import EdgeStore
    from store import SQLStorage, load_keybox, make_engine, migrate
    from store.models import CertificateVersion, Domain, Tenant
    from sqlalchemy import insert, update

    url = f"sqlite:///{tmp_path}/s.db"
    engine = make_engine(url)
    migrate(engine)
    kb = load_keybox(secret_key=None, state_dir=tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    pems = {}
    with engine.begin() as conn:
        conn.execute(insert(Tenant.__table__).values(id=1, name="t", created_at=now))
        for i, h in enumerate(("a.load.test", "b.load.test"), start=1):
            pem, key = _cert(h)
            pems[h] = pem
            conn.execute(insert(Domain.__table__).values(
                id=i, hostname=h, tenant_id=1, status="active", current_cert_id=i, attempts=0, dns_attempts=0,
                renew_requested=False, hook_pending=False, created_at=now, updated_at=now - dt.timedelta(hours=1)))
            conn.execute(insert(CertificateVersion.__table__).values(
                id=i, domain_id=i, names=json.dumps([h]), serial=str(i), not_before=now, not_after=now, issuer="x",
                sha256="x", cert_pem=pem.decode(), chain_pem="", key_enc=kb.encrypt(key, purpose=f"cert-key:{h}".encode()),
                key_type="ecdsa-p256", source="upload", created_at=now))
    storage_rows = SQLStorage(engine).served_rows()
    st = EdgeStore(url)
    rows = list(st.served_rows())
    assert sorted(r[0] for r in rows) == sorted(r[0] for r in storage_rows)
    dpem, dkey = generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey)
    assert load_index_rows(index, rows, load_keybox(secret_key=None, state_dir=tmp_path)) == 2
    entry = index.get("a.load.test")
    assert entry.fullchain_pem.startswith(pems["a.load.test"])
    make_server_context(entry.fullchain_pem, entry.key_pem)  # the key decrypts and matches
    assert st.changed_since(now - dt.timedelta(minutes=5)) == []
    with engine.begin() as conn:
        conn.execute(update(Domain.__table__).where(Domain.__table__.c.hostname == "b.load.test")
                     .values(current_cert_id=None, updated_at=dt.datetime.now(dt.timezone.utc)))
    changed = st.changed_since(now - dt.timedelta(minutes=5))
    assert changed == ["b.load.test"]
    load_index_rows(index, st.served_rows(changed), None, hostnames=changed)
    assert "b.load.test" not in index and "a.load.test" in index
    # prewarm fills the LRU in the background, up to its bound
    index.start_prewarm()
    for _ in range(200):
        if index.context_count() >= 1:
            break
        await asyncio.sleep(0.01)
    index.stop_prewarm()
    assert index.context_count() == 1 and index.prewarmed == 1
    st.close()
    engine.dispose()


def test_serve_with_two_workers_shares_the_port_and_follows_the_store(tmp_path, pebble, dns):
    """``workers: 2``: the full service plus one TLS-edge-only process on the same port (SO_REUSEPORT); a domain
    issued by the first is served by both (the edge worker follows the store's changes)."""
    import os
    import time as _time
    from tests.helpers import EdgeProcess, served_leaf
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_WORKERS": "2"}).start()
    try:
        children = [int(p) for p in open(f"/proc/{edge.proc.pid}/task/{edge.proc.pid}/children").read().split()]
        cmdlines = [open(f"/proc/{c}/cmdline", "rb").read() for c in children]
        assert sum(b"edge.tls_edge.worker" in c for c in cmdlines) == 1, cmdlines
        edge.add_domain("two.workers.test", tenant="w")
        d = edge.wait_status("two.workers.test", "active", timeout=30)
        serial = int(d["certificate"]["serial"], 16)
        deadline = _time.monotonic() + 15
        while True:  # until 40 handshakes in a row (spread over both processes by the kernel) serve it
            ok = all(served_leaf(edge.https_port, "two.workers.test").serial_number == serial for _ in range(40))
            if ok or _time.monotonic() > deadline:
                break
            _time.sleep(0.3)
        assert ok
    finally:
        edge.stop()
    assert edge.proc.returncode == 0
    for c in children:
        assert not os.path.exists(f"/proc/{c}") or "Z" in open(f"/proc/{c}/stat").read().split(")")[1][:3]
