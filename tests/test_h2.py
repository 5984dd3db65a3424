"""HTTP/2 on the TLS edge (edge/tls_edge/h2.py), in process, against a real aiohttp origin: curl --http2, nghttp2's
nghttp and h2load, headless Chromium loading a page with 50 assets, the per-hostname switch, and hostile clients
(the ``h2`` library as a raw client): rapid reset, CONTINUATION flood, too many streams, an oversized header list,
while another tenant's connection keeps being served. No timing is asserted."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import ssl
import tempfile
import types

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

h2 = pytest.importorskip("h2")

from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.errors import ErrorCodes  # noqa: E402
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset  # noqa: E402
from hyperframe.frame import ContinuationFrame, HeadersFrame  # noqa: E402

from edge.config import Settings  # noqa: E402
from edge.demo.process import free_port  # noqa: E402
from edge.tls_edge import certificates  # noqa: E402
from edge.tls_edge import engine as tlsengine  # noqa: E402
from edge.tls_edge import h2 as h2mod  # noqa: E402
from edge.tls_edge.certificates import generate_default_certificate  # noqa: E402
from edge.tls_edge.index import CertEntry, SniIndex, load_host_settings  # noqa: E402
from edge.tls_edge.http import EdgeHttpServer  # noqa: E402
from tests.certs import self_signed  # noqa: E402
from tests.helpers import IN_CI, require_binary  # noqa: E402

NAME = "shop.h2.test"
OTHER = "other.h2.test"      # another tenant (hostile-client tests: it keeps being served)
H1ONLY = "legacy.h2.test"    # its index entry says http2 = false


def _origin_app() -> web.Application:
    """The origin: echo (headers, path, body digest), a streamed answer, a page of 50 stylesheets, 1 MiB, a slow one."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"headers": dict(request.headers), "path": request.path_qs,
                                  "method": request.method, "body_sha256": hashlib.sha256(body).hexdigest(),
                                  "body_len": len(body)})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"chunk-{i}\n".encode() * 1000)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def page(request: web.Request) -> web.Response:
        links = "".join(f"<link rel=stylesheet href='/asset/{i}.css'>" for i in range(50))
        script = ("<script>addEventListener('load',()=>{const r=performance.getEntriesByType('resource');"
                  "document.getElementById('out').textContent=JSON.stringify({n:r.length,"
                  "protos:[...new Set(r.map(e=>e.nextHopProtocol))],"
                  "nav:performance.getEntriesByType('navigation')[0].nextHopProtocol,"
                  "colors:[...document.querySelectorAll('.a')].filter(e=>getComputedStyle(e).color==="
                  "'rgb(1, 2, 3)').length})})</script>")
        divs = "".join(f"<div class='a a{i}'>{i}</div>" for i in range(50))
        return web.Response(text=f"<!doctype html><html><head>{links}{script}</head><body>{divs}"
                                 f"<pre id=out>pending</pre></body></html>", content_type="text/html")

    async def asset(request: web.Request) -> web.Response:
        i = int(request.match_info["n"])
        return web.Response(text=f".a{i}{{color:rgb(1,2,3)}}\n/* {'x' * 1000} */", content_type="text/css")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * (1 << 20), content_type="application/octet-stream")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/stream", stream)
    app.router.add_get("/page.html", page)
    app.router.add_get(r"/asset/{n:\d+}.css", asset)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture(params=["engine", "pyssl"])
def driver(request):
    if request.param == "engine" and not tlsengine.available():
        if IN_CI:
            pytest.fail(f"the C TLS engine is not available in CI: {tlsengine.unavailable_reason()}")
        pytest.skip(f"C TLS engine unavailable: {tlsengine.unavailable_reason()}")
    return request.param


class Edge:
    def __init__(self, srv: EdgeHttpServer, port: int, stats: dict, certs: dict[str, bytes], runner) -> None:
        self.srv, self.port, self.stats, self.certs, self.runner = srv, port, stats, certs, runner

    async def close(self) -> None:
        await self.srv.stop(grace=0.5)
        await self.runner.cleanup()


async def _edge(driver: str, tmp_path, **extra) -> Edge:
    was = certificates.HTTP2
    certificates.HTTP2 = True  # the Python ssl driver's contexts offer h2 (apply_settings does this from settings)
    try:
        runner = web.AppRunner(_origin_app())
        await runner.setup()
        oport = free_port()
        await web.TCPSite(runner, "127.0.0.1", oport).start()
        dpem, dkey = generate_default_certificate()
        index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=driver == "engine")
        certs = {}
        for name, http2 in ((NAME, None), (OTHER, None), (H1ONLY, False)):
            pem, key, _ = self_signed(name)
            index.put(CertEntry(hostname=name, fullchain_pem=pem, key_pem=key, serial="1"))
            if http2 is not None:  # the per-hostname switch (domains.http2), as the store loader puts it
                load_host_settings(index, [(name, None, None, http2, False)], hostnames=[name])
            certs[name] = pem
            (tmp_path / f"{name}.pem").write_bytes(pem)
        stats = {"connections": 0, "resumed": 0}
        settings = Settings(bench_stats=True, upstream=f"http://127.0.0.1:{oport}", **extra)
        srv = EdgeHttpServer(types.SimpleNamespace(settings=settings, index=index, bench_stats=stats))
        port = free_port()
        await srv.start("127.0.0.1", port, index.default_context)
    finally:
        certificates.HTTP2 = was
    return Edge(srv, port, stats, certs, runner)


async def _run(*cmd: str, timeout: float = 60) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        raise
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _curl(edge: Edge, tmp_path, name: str, path: str, *args: str) -> list[str]:
    return [require_binary("curl"), "-sS", "--http2", "--cacert", str(tmp_path / f"{name}.pem"),
            "--resolve", f"{name}:{edge.port}:127.0.0.1", *args, f"https://{name}:{edge.port}{path}"]


async def test_curl_http2_proxy_421_bodies_and_per_host_switch(driver, tmp_path):
    edge = await _edge(driver, tmp_path)
    try:
        # GET through to the origin over h2, forwarding headers set by the edge
        rc, out, err = await _run(*_curl(edge, tmp_path, NAME, "/hello?x=1", "-H", "X-Forwarded-For: 203.0.113.9",
                                         "-w", "\n%{http_version} %{http_code}"))
        assert rc == 0, err
        body, _, tail = out.rpartition("\n")
        assert tail == "2 200"
        j = json.loads(body)
        h = {k.lower(): v for k, v in j["headers"].items()}
        assert j["path"] == "/hello?x=1" and h["host"] == NAME and h["x-forwarded-proto"] == "https"
        assert h["x-forwarded-for"] == "127.0.0.1"
        # :authority is not the SNI name: 421, the origin never sees it
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/", "-H", f"Host: {OTHER}", "-o", "/dev/null",
                                       "-w", "%{http_version} %{http_code}"))
        assert out == "2 421"
        # a 3 MB upload (flow control: acknowledged as the origin takes it), a 1 MiB download, a streamed response
        payload = os.urandom(3 * 1000 * 1000)
        (tmp_path / "up.bin").write_bytes(payload)
        rc, out, err = await _run(*_curl(edge, tmp_path, NAME, "/upload", "--data-binary", f"@{tmp_path}/up.bin"))
        assert rc == 0, err
        j = json.loads(out)
        assert j["body_len"] == len(payload) and j["body_sha256"] == hashlib.sha256(payload).hexdigest()
        # an upload to a name this connection is not for: 421 at once, the body read and dropped
        rc, out, err = await _run(*_curl(edge, tmp_path, NAME, "/x", "-H", f"Host: {OTHER}", "--data-binary",
                                         f"@{tmp_path}/up.bin", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"))
        assert (rc, out) == (0, "2 421"), err
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/big", "-o", str(tmp_path / "big"),
                                       "-w", "%{http_version} %{http_code} %{size_download}"))
        assert out == f"2 200 {1 << 20}"
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/stream"))
        assert out.count("chunk-4") == 1000
        # HEAD: headers only
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/hello", "-I"))
        assert out.startswith("HTTP/2 200") and "content-length" in out
        # the per-hostname switch: http2 = false for this name -> ALPN gives http/1.1 (the engine decides ALPN by
        # name; the Python ssl fallback offers h2 by the global setting only)
        if driver == "engine":
            rc, out, _ = await _run(*_curl(edge, tmp_path, H1ONLY, "/hello", "-o", "/dev/null",
                                           "-w", "%{http_version} %{http_code}"))
            assert out == "1.1 200"
        # a plain HTTP/1.1 client is still served on the same listener
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/hello", "--http1.1", "-o", "/dev/null",
                                       "-w", "%{http_version} %{http_code}"))
        assert out == "1.1 200"
    finally:
        await edge.close()


async def test_global_switch_off_offers_http11_only(tmp_path):
    if not tlsengine.available():
        pytest.skip("C TLS engine unavailable")
    edge = await _edge("engine", tmp_path, edge_http2=False)
    try:
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/hello", "-o", "/dev/null",
                                       "-w", "%{http_version} %{http_code}"))
        assert out == "1.1 200"
    finally:
        await edge.close()


async def test_without_the_nghttp2_extension_alpn_offers_http11_only(tmp_path, monkeypatch):
    """No ``_edgeh2`` built: ALPN never chooses h2 (engine: ``h2_allowed``; Python ssl: ``apply_settings``), and
    HTTP/1.1 is served as usual. There is no Python HTTP/2 to fall back to."""
    if not tlsengine.available():
        if IN_CI:
            pytest.fail(f"the C TLS engine is not available in CI: {tlsengine.unavailable_reason()}")
        pytest.skip("C TLS engine unavailable")
    from edge.tls_edge import http as httpmod
    monkeypatch.setattr(httpmod, "H2_AVAILABLE", False)
    monkeypatch.setattr(h2mod, "AVAILABLE", False)
    was = certificates.HTTP2
    try:
        certificates.apply_settings(Settings(edge_http2=True))
        assert certificates.HTTP2 is False
    finally:
        certificates.HTTP2 = was
    edge = await _edge("engine", tmp_path)
    try:
        assert edge.srv.h2_allowed(NAME) is False and edge.srv.h2_allowed(None) is False
        rc, out, _ = await _run(*_curl(edge, tmp_path, NAME, "/hello", "-o", "/dev/null",
                                       "-w", "%{http_version} %{http_code}"))
        assert out == "1.1 200"
    finally:
        await edge.close()


async def test_nghttp_and_h2load(driver, tmp_path):
    nghttp, h2load = require_binary("nghttp"), require_binary("h2load")
    edge = await _edge(driver, tmp_path)
    try:
        rc, out, err = await _run(nghttp, "-nv", f"https://127.0.0.1:{edge.port}/hello",
                                  "-H", f":authority: {NAME}")
        assert rc == 0, err
        assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100" in out
        assert re.search(r"recv \(stream_id=13\) :status: 200", out)
        rc, out, err = await _run(h2load, "-n", "400", "-c", "2", "-m", "20",
                                  f"--connect-to=127.0.0.1:{edge.port}", f"https://{NAME}:{edge.port}/a")
        assert rc == 0, err
        assert "400 succeeded, 0 failed, 0 errored" in out and "400 2xx" in out
        assert "Application protocol: h2" in out
    finally:
        await edge.close()


def _spki_hash(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.mark.slow
async def test_chromium_loads_a_page_of_50_assets_over_one_h2_connection(tmp_path):
    chromium = require_binary("chromium")
    driver = "engine" if tlsengine.available() else "pyssl"
    edge = await _edge(driver, tmp_path)
    sessions: list = []
    real_init = h2mod.H2Session.__init__

    def init(self, proto):
        real_init(self, proto)
        sessions.append(self)
    h2mod.H2Session.__init__ = init
    try:
        with tempfile.TemporaryDirectory() as profile:
            rc, out, err = await _run(
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={_spki_hash(edge.certs[NAME])}",
                f"--host-resolver-rules=MAP {NAME} 127.0.0.1:{edge.port}", "--virtual-time-budget=10000",
                "--dump-dom", f"https://{NAME}/page.html", timeout=90)
        m = re.search(r'<pre id="out">(.*?)</pre>', out)
        assert m, (out[-2000:], err[-2000:])
        result = json.loads(m.group(1))
        assert result == {"n": 50, "protos": ["h2"], "nav": "h2", "colors": 50}, result
        # the page and its 50 assets on one HTTP/2 connection (Chromium may race a spare connection that stays
        # unused: at most one more handshake)
        assert max(s.requests for s in sessions) >= 51, [s.requests for s in sessions]  # (+ favicon.ico)
        assert edge.stats["connections"] <= 2
    finally:
        h2mod.H2Session.__init__ = real_init
        await edge.close()


# -- hostile clients -------------------------------------------------------------------------------------------

class _Client:
    """A raw HTTP/2 client over TLS (the h2 library), for hostile-client tests."""

    def __init__(self, reader, writer, conn: H2Connection) -> None:
        self.r, self.w, self.c = reader, writer, conn
        self.events: list = []
        self.closed = False
        self.sent = 0

    @classmethod
    async def open(cls, port: int, name: str = NAME, *, unlimited: bool = False) -> "_Client":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
        assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        conn = (_Unlimited if unlimited else H2Connection)(H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        c = cls(r, w, conn)
        await c.flush()
        return c

    async def flush(self) -> None:
        data = self.c.data_to_send()
        if data:
            self.sent += len(data)
            self.w.write(data)
            await self.w.drain()

    async def write_raw(self, data: bytes) -> None:
        self.sent += len(data)
        self.w.write(data)
        await self.w.drain()

    async def pump(self, timeout: float = 5.0, until=None, *, answer: bool = True) -> list:
        """Read and process until ``until(events)`` or the connection closes or ``timeout``; ``answer``: send what
        the client's h2 state machine wants to (SETTINGS ACK, WINDOW_UPDATE)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.closed and (until is None or not until(self.events)):
            left = end - loop.time()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(self.r.read(65536), left)
            except asyncio.TimeoutError:
                break
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            try:
                self.events += self.c.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            if not answer:
                self.c.clear_outbound_data_buffer()
                continue
            for ev in self.events:
                if isinstance(ev, DataReceived) and ev.flow_controlled_length:
                    try:
                        self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except (h2.exceptions.StreamClosedError, KeyError):
                        pass
            try:
                await self.flush()
            except (ConnectionError, ssl.SSLError):
                self.closed = True
        return self.events

    def goaway(self) -> ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, ConnectionTerminated)), None)

    def close(self) -> None:
        self.w.close()


class _Unlimited(H2Connection):
    """A client that ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


def _req(name: str = NAME, path: str = "/hello", method: str = "GET", extra=()) -> list[tuple[bytes, bytes]]:
    return [(b":method", method.encode()), (b":path", path.encode()), (b":scheme", b"https"),
            (b":authority", name.encode()), *extra]


async def _other_tenant_ok(edge: Edge) -> None:
    """Another tenant, on its own connection, is answered while a hostile client works on its connection."""
    c = await _Client.open(edge.port, OTHER)
    try:
        c.c.send_headers(1, _req(OTHER), end_stream=True)
        await c.flush()
        ev = await c.pump(10, until=lambda evs: any(isinstance(e, StreamEnded) for e in evs))
        st = [dict(e.headers)[b":status"] for e in ev if isinstance(e, ResponseReceived)]
        assert st == [b"200"], (ev, c.closed)
    finally:
        c.close()


async def test_rapid_reset_gets_goaway_enhance_your_calm(tmp_path):
    edge = await _edge("engine" if tlsengine.available() else "pyssl", tmp_path, edge_http2_max_resets=50)
    try:
        c = await _Client.open(edge.port)
        other = asyncio.ensure_future(_other_tenant_ok(edge))
        sid = 1
        for _ in range(200):  # open a stream (to the origin's slow endpoint) and cancel it at once, again and again
            c.c.send_headers(sid, _req(path="/slow"), end_stream=True)
            c.c.reset_stream(sid, ErrorCodes.CANCEL)
            sid += 2
            if sid % 20 == 1:
                try:
                    await c.flush()
                except (ConnectionError, ssl.SSLError):
                    break
        try:
            await c.flush()
        except (ConnectionError, ssl.SSLError):
            pass
        await c.pump(10)
        g = c.goaway()
        assert g is not None and g.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert c.closed
        assert edge.srv.h2_calmed == 1
        await other
        c.close()
    finally:
        await edge.close()


async def test_continuation_flood_is_cut_with_bounded_memory(tmp_path):
    edge = await _edge("engine" if tlsengine.available() else "pyssl", tmp_path)
    try:
        c = await _Client.open(edge.port)
        other = asyncio.ensure_future(_other_tenant_ok(edge))
        block = c.c.encoder.encode(_req())
        f = HeadersFrame(1)
        f.data = block  # no END_HEADERS: CONTINUATION frames follow, forever
        reader = asyncio.ensure_future(c.pump(20, answer=False))  # read while writing: the GOAWAY arrives before the close
        await c.write_raw(f.serialize())
        cont = ContinuationFrame(1)
        # header fields (never-indexed literals, "x-flood: vvv...") that never end the header block: valid HPACK,
        # as in CVE-2024-27316 (junk bytes would be a malformed field, a stream error, not a flood)
        field = b"\x10\x07x-flood\x64" + b"v" * 100
        cont.data = field * (16000 // len(field))
        chunk = cont.serialize()
        try:
            for _ in range(10 * 64):  # up to 10 MB, unless the edge cuts it first
                if c.closed:
                    break
                await c.write_raw(chunk)
                await asyncio.sleep(0.001)
        except (ConnectionError, ssl.SSLError):
            pass
        await reader
        assert c.closed
        g = c.goaway()
        assert g is not None and g.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        # cut once about edge_max_head_bytes (64 KiB) of header block arrived, plus what was in flight
        assert c.sent < 4 * 1024 * 1024, c.sent
        await other
        c.close()
    finally:
        await edge.close()


async def test_too_many_streams_are_refused_and_oversized_headers_fail(tmp_path):
    edge = await _edge("engine" if tlsengine.available() else "pyssl", tmp_path)
    try:
        c = await _Client.open(edge.port, unlimited=True)
        other = asyncio.ensure_future(_other_tenant_ok(edge))
        # 100 uploads that never finish keep 100 streams open; the 101st and 102nd are refused
        for i in range(102):
            c.c.send_headers(1 + 2 * i, _req(path="/upload", method="POST"), end_stream=False)
        await c.flush()
        ev = await c.pump(5, until=lambda evs: sum(isinstance(e, StreamReset) for e in evs) >= 2)
        refused = [e for e in ev if isinstance(e, StreamReset)]
        assert [(e.stream_id, e.error_code) for e in refused] == [(201, ErrorCodes.REFUSED_STREAM),
                                                                  (203, ErrorCodes.REFUSED_STREAM)]
        assert not c.closed
        # one header field over edge_max_line_bytes: 431 on that stream
        c2 = await _Client.open(edge.port)
        c2.c.send_headers(1, _req(extra=[(b"x-big", b"v" * 20000)]), end_stream=True)
        await c2.flush()
        ev = await c2.pump(5, until=lambda evs: any(isinstance(e, StreamEnded) for e in evs))
        assert [dict(e.headers)[b":status"] for e in ev if isinstance(e, ResponseReceived)] == [b"431"]
        # a header list over SETTINGS_MAX_HEADER_LIST_SIZE (edge_max_head_bytes): the connection is refused
        c2.c.send_headers(3, _req(extra=[(b"x-h%d" % i, os.urandom(6000).hex().encode()) for i in range(8)]),
                          end_stream=True)
        await c2.flush()
        await c2.pump(5)
        g = c2.goaway()
        assert c2.closed and g is not None and g.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        await other
        c.close()
        c2.close()
    finally:
        await edge.close()


async def test_flow_control_pauses_the_origin_and_ping_flood_is_cut(tmp_path):
    edge = await _edge("engine" if tlsengine.available() else "pyssl", tmp_path, edge_http2_max_control_frames=100)
    try:
        # a client that never opens its window gets only its initial window of a 1 MiB answer; the rest waits
        c = await _Client.open(edge.port)
        c.c.send_headers(1, _req(path="/big"), end_stream=True)
        await c.flush()
        got = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 2
        while loop.time() < end:
            try:
                data = await asyncio.wait_for(c.r.read(65536), 0.3)
            except asyncio.TimeoutError:
                continue
            if not data:
                break
            for e in c.c.receive_data(data):  # no acknowledge: the window stays closed
                if isinstance(e, DataReceived):
                    got += len(e.data)
        assert got == 65535
        sess = next(p.h2 for p in edge.srv.conns if p.h2 is not None and 1 in p.h2.streams)
        s = sess.streams[1]
        assert s.pending_n <= 512 * 1024  # at most what the origin connection had in flight when it was paused
        # PING flood: cut with GOAWAY(ENHANCE_YOUR_CALM)
        p = await _Client.open(edge.port)
        for i in range(300):
            p.c.ping(b"%08d" % i)
        try:
            await p.flush()
        except (ConnectionError, ssl.SSLError):
            pass
        await p.pump(5)
        g = p.goaway()
        assert p.closed and g is not None and g.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        c.close()
        p.close()
    finally:
        await edge.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the switch that raises, on purpose
def test_engine_alpn_switch_in_memory():
    """The C engine's ALPN: h2 only when its ``h2`` switch says so for the ClientHello's SNI; a switch that raises
    offers http/1.1 (the handshake goes on)."""
    if not tlsengine.available():
        if IN_CI:
            pytest.fail(f"the C TLS engine is not available in CI: {tlsengine.unavailable_reason()}")
        pytest.skip("C TLS engine unavailable")
    dpem, dkey = generate_default_certificate()
    tpem, tkey, _ = self_signed("a.h2.test")
    tenant = tlsengine.certkey(ssl.PEM_cert_to_DER_cert(tpem.decode()), b"", tkey)
    eng = tlsengine.make_engine(lambda n: tenant, dpem, dkey)
    seen: list = []

    def per_name(name):
        seen.append(name)
        return name == "a.h2.test"

    def broken(name):
        raise RuntimeError("switch failed")

    cases = [(None, "a.h2.test", "http/1.1"), (True, "b.h2.test", "h2"), (per_name, "a.h2.test", "h2"),
             (per_name, "b.h2.test", "http/1.1"), (broken, "a.h2.test", "http/1.1")]
    for switch, name, want in cases:
        eng.h2 = switch
        client, conn, _, _ = tlsengine.handshake_with(eng, name, alpn=["h2", "http/1.1"])
        assert client.selected_alpn_protocol() == want == conn.selected_alpn_protocol(), (switch, name)
    assert seen == ["a.h2.test", "b.h2.test"]
    eng.h2 = per_name
    client, conn, _, _ = tlsengine.handshake_with(eng, "a.h2.test", alpn=["http/1.1"])  # h2 not offered: no ask
    assert client.selected_alpn_protocol() == "http/1.1" and seen == ["a.h2.test", "b.h2.test"]
    with pytest.raises(TypeError):
        eng.h2 = "yes"


async def test_idle_and_header_block_deadlines(tmp_path):
    """A connection whose streams are all answered closes after edge_keepalive_timeout (GOAWAY NO_ERROR); a header
    block left unfinished closes it after edge_request_head_timeout."""
    edge = await _edge("engine" if tlsengine.available() else "pyssl", tmp_path, edge_keepalive_timeout=1.0,
                       edge_request_head_timeout=1.0)
    try:
        c = await _Client.open(edge.port)
        c.c.send_headers(1, _req(), end_stream=True)
        await c.flush()
        ev = await c.pump(10, until=lambda evs: any(isinstance(e, StreamEnded) for e in evs))
        assert [dict(e.headers)[b":status"] for e in ev if isinstance(e, ResponseReceived)] == [b"200"]
        await c.pump(8)  # idle: the edge says goodbye
        g = c.goaway()
        assert c.closed and g is not None and g.error_code == ErrorCodes.NO_ERROR
        c.close()
        c = await _Client.open(edge.port)
        f = HeadersFrame(1)
        f.data = c.c.encoder.encode(_req())  # no END_HEADERS, and nothing more
        await c.write_raw(f.serialize())
        await c.pump(8, answer=False)
        assert c.closed and c.goaway() is not None
        c.close()
    finally:
        await edge.close()


@pytest.mark.parametrize("lane", ["c", "python"])
async def test_request_fields_reach_the_origin_as_http11(lane, tmp_path, monkeypatch):
    """What the origin gets from a stream (the C lane and its Python stand-in): the cookie crumbs of HTTP/2 joined
    into one Cookie line (RFC 9113 8.2.3), the client's forwarding and hop-by-hop fields dropped, the edge's own
    set, a body with its content-length; the pooled origin connection taken at once for the later streams (the
    task-free path) answers the same; the response's fields come back lower-case with its content-length."""
    if lane == "python":
        monkeypatch.setattr(h2mod, "_request_fields", h2mod._py_request_fields)
    edge = await _edge("engine" if tlsengine.available() else "pyssl", tmp_path)
    c = await _Client.open(edge.port)
    try:
        extra = [(b"cookie", b"a=1"), (b"x-forwarded-for", b"6.6.6.6"), (b"cookie", b"b=2"), (b"te", b"trailers"),
                 (b"forwarded", b"for=evil"), (b"content-length", b"5"), (b"x-keep", b"yes")]
        for sid in (1, 3, 5):
            c.c.send_headers(sid, _req(path=f"/echo/{sid}", method="POST", extra=extra))
            c.c.send_data(sid, b"hello", end_stream=True)
            await c.flush()
            ev = await c.pump(10, until=lambda evs, sid=sid: any(
                isinstance(e, StreamEnded) and e.stream_id == sid for e in evs))
            heads = [e for e in ev if isinstance(e, ResponseReceived) and e.stream_id == sid]
            assert heads, (ev, c.closed)
            fields = heads[0].headers
            assert dict(fields)[b":status"] == b"200"
            assert all(n == n.lower() for n, _ in fields) and b"content-length" in dict(fields)
            body = b"".join(e.data for e in ev if isinstance(e, DataReceived) and e.stream_id == sid)
            j = json.loads(body)
            h = {k.lower(): v for k, v in j["headers"].items()}
            assert j["path"] == f"/echo/{sid}" and j["method"] == "POST" and j["body_len"] == 5
            assert h["cookie"] == "a=1; b=2"
            assert h["x-forwarded-for"] == "127.0.0.1" and "for=evil" not in h["forwarded"]
            assert "te" not in h and h["x-keep"] == "yes" and h["host"] == NAME and h["content-length"] == "5"
    finally:
        c.close()
        await edge.close()
