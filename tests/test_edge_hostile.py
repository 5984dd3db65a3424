"""The TLS edge against hostile clients, over real sockets: the in-process EdgeHttpServer with both TLS drivers (the C
engine and Python's ssl), and a real ``edgecert serve`` subprocess whose RSS is read from /proc.

Endless request lines and headers are cut as they arrive; unread pipelines stop the edge reading instead of filling
its memory, and the memory comes back once the connection ends; every phase of a connection has a deadline
(handshake, first request, slow head, body, keep-alive, unread answers, the origin's first byte); a client address
has a connection cap; only valid websocket handshakes are tunnelled, after the Host/SNI check; the client's
forwarding headers are replaced by the edge's own. Bounds are asserted, never timings (deadlines are awaited with a
generous upper wait)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import ssl
import time

import pytest

pytest.importorskip("httptools")

from edge.demo.process import free_port  # noqa: E402
from tests.helpers import EdgeProcess  # noqa: E402
from tests.test_fasthttp import NAME, _client_ctx, _edge, origin, tls_driver  # noqa: E402,F401

__all__ = ["origin", "tls_driver"]  # fixtures shared with test_fasthttp (the in-process edge, both TLS drivers)

WAIT = 10  # seconds we wait for the edge to act on a deadline of at most 1 s (an upper bound, not a timing assert)
FAST = {"edge_handshake_timeout": 1.0, "edge_request_head_timeout": 1.0, "edge_keepalive_timeout": 1.0,
        "edge_body_timeout": 1.0}


async def _open(port: int, sni: str | None = NAME):
    return await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(), server_hostname=sni)


async def _closed_within(reader: asyncio.StreamReader, seconds: float = WAIT) -> bytes:
    """Everything the edge sends until it closes the connection; fails if it is still open after ``seconds``."""
    out = b""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the edge kept the connection open (got {out[:200]!r})"
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:  # (before OSError: it is one)
            raise AssertionError(f"the edge kept the connection open for {seconds}s (got {out[:200]!r})") from None
        except (ConnectionResetError, ssl.SSLError, OSError):
            return out
        if not chunk:
            return out
        out += chunk


async def _send_until_answered(port: int, head: bytes, filler: bytes, limit: int = 8 << 20) -> tuple[bytes, int]:
    """Send ``head`` then ``filler`` (64 KiB at a time, up to ``limit`` bytes) until the edge answers and closes;
    returns the answer and how many filler bytes went out."""
    r, w = await _open(port)
    w.write(head)
    reader = asyncio.ensure_future(_closed_within(r, 60))
    sent = 0
    try:
        while sent < limit and not reader.done():
            w.write(filler)
            try:
                await asyncio.wait_for(w.drain(), 5)
            except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
                break
            sent += len(filler)
            await asyncio.sleep(0)
        if not reader.done():
            assert sent < limit, f"the edge took {sent} bytes of one unfinished head without answering"
        out = await asyncio.wait_for(reader, WAIT)
    finally:
        reader.cancel()
        w.close()
    return out, sent


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


# -- endless heads ---------------------------------------------------------------------------------------------

async def test_endless_request_line_and_headers_are_cut_as_they_arrive(tls_driver):
    srv, port, _ = await _edge(None)
    fill = b"a" * 65536
    try:
        out, sent = await _send_until_answered(port, b"GET /", fill)
        assert _status(out) == 414 and sent < 1 << 20
        out, sent = await _send_until_answered(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\nX-Long: ".encode(), fill)
        assert _status(out) == 431 and sent < 1 << 20
        out, sent = await _send_until_answered(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\n".encode(), fill)
        assert _status(out) == 431 and sent < 1 << 20  # a header name that never ends
        # many short headers: the whole head is bounded too
        out, sent = await _send_until_answered(port, f"GET / HTTP/1.1\r\nHost: {NAME}\r\n".encode(),
                                               b"X-A: b\r\n" * 8192)
        assert _status(out) == 431 and sent < 1 << 20
        # within the limits all is well: a 12 KiB header is served
        r, w = await _open(port)
        w.write(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nX-Big: {'v' * 12000}\r\nConnection: close\r\n\r\n".encode())
        assert _status(await _closed_within(r)) == 200
        w.close()
    finally:
        await srv.stop()


# -- unread pipelines ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("answer", ["local", pytest.param("proxied", marks=pytest.mark.serial)])
async def test_unread_pipeline_is_held_not_buffered(tls_driver, answer, origin):
    """A client pipelines requests and never reads: the edge stops answering once its writes back up (a page of its
    own, or the origin's answer: the origin is then not read either), stops reading once edge_max_pipeline requests
    wait, and keeps at most about one read of unparsed bytes; the client not reading for edge_body_timeout gets the
    connection cut."""
    srv, port, _ = await _edge(origin[0] if answer == "proxied" else None,
                               {"edge_body_timeout": 3.0, "placeholder_text": "ok\n"})
    try:  # the bounds change nothing for a client that reads: 2,000 pipelined requests in one go, all answered
        n = 2000
        req = b"".join(f"GET /{i} HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode() for i in range(n - 1))
        req += f"GET /last HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode()
        r, w = await _open(port)
        w.write(req)
        out = await _closed_within(r, 60)
        assert out.count(b"HTTP/1.1 200 OK") == n
        if answer == "proxied":
            assert out.index(b'"/1998"') < out.index(b'"/last"')
        w.close()
    except BaseException:
        await srv.stop()
        raise
    # answered 421 (~500 bytes) by the edge, or proxied to the origin (~700 bytes of JSON)
    req = (b"GET / HTTP/1.1\r\nHost: other.fast.test\r\n\r\n" if answer == "local" else
           f"GET /p HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
    chunk = req * (65536 // len(req))
    r, w = await _open(port)
    sent = 0
    try:
        while sent < 64 << 20:
            w.write(chunk)
            try:
                await asyncio.wait_for(w.drain(), 2)
            except asyncio.TimeoutError:
                break  # the edge stopped reading
            sent += len(chunk)
        assert sent < 64 << 20, "the edge kept reading 64 MiB of requests that are never answered"
        conns = [c for c in srv.conns if c.hs_done]
        assert len(conns) == 1
        c = conns[0]
        assert c.holds, "reading is not held"
        assert c.transport.get_write_buffer_size() < 1 << 20
        assert len(c.queue or ()) <= srv.max_pipeline + 1000  # at most one slice past the bound
        assert len(c.pending) <= 512 * 1024
        if answer == "proxied":
            assert c.up is None or c.up.transport.get_write_buffer_size() < 1 << 20
        # the client still reads nothing (its stream stops at its buffer limit): cut after edge_body_timeout
        for _ in range(300):
            if not srv.conns:
                break
            await asyncio.sleep(0.1)
        assert not srv.conns, "a client that reads none of its answers is still connected"
    finally:
        w.close()
        await srv.stop()


async def test_a_bad_head_behind_pipelined_requests_lets_them_be_answered_first(tls_driver, origin):
    """Requests pipelined ahead of a malformed (or oversized) head are answered, in order, before its 4xx and the
    close -- proxied ones still in flight at the origin included; the bad head and what follows it never reach the
    origin."""
    url, seen = origin
    srv, port, _ = await _edge(url)
    try:
        for bad, status in ((b"GARBAGE \x00\r\n\r\n", 400),
                            (f"GET / HTTP/1.1\r\nHost: {NAME}\r\nX-Big: {'v' * 20000}\r\n\r\n".encode(), 431)):
            seen.clear()
            heads = b"".join(f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()
                             for path in ("/stream", "/one", "/two"))
            r, w = await _open(port)
            w.write(heads + bad + f"GET /after HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
            out = await _closed_within(r)
            w.close()
            codes = [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
            assert codes == [200, 200, 200, status], out[-400:]
            assert out.index(b"chunk-4") < out.index(b'"/one"') < out.index(b'"/two"') < out.index(b"HTTP/1.1 %d" % status)
            assert sorted(x["path"] for x in seen) == ["/one", "/two"]  # (/stream is not recorded by the origin)
    finally:
        await srv.stop()


# -- deadlines -------------------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_every_phase_has_a_deadline(tls_driver):
    srv, port, _ = await _edge(None, FAST)
    try:
        # TCP only, no ClientHello
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await _closed_within(r)
        w.close()
        # a handshake, then nothing
        r, w = await _open(port)
        assert await _closed_within(r) == b""
        w.close()
        # a slow head: one byte every 0.3 s never completes it
        r, w = await _open(port)
        w.write(f"GET / HTTP/1.1\r\nHost: {NAME}\r\n".encode())

        async def trickle():
            for _ in range(200):
                w.write(b"X")
                await asyncio.sleep(0.3)
        t = asyncio.ensure_future(trickle())
        try:
            await _closed_within(r)
        finally:
            t.cancel()
        w.close()
        # a body that stops coming
        r, w = await _open(port)
        w.write(f"POST / HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 1000\r\n\r\npartial".encode())
        await _closed_within(r)
        w.close()
        # keep-alive: one answer, then idle
        r, w = await _open(port)
        w.write(f"GET / HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
        out = await _closed_within(r)
        assert out.count(b"HTTP/1.1 200") == 1
        w.close()
        assert not [c for c in srv.conns if not c.closed]
    finally:
        await srv.stop()


async def test_per_address_connection_cap(tls_driver):
    srv, port, _ = await _edge(None, {"edge_max_conns_per_ip": 3})
    try:
        held = [await _open(port) for _ in range(3)]
        with pytest.raises((ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError)):
            r, w = await _open(port)
            w.write(f"GET / HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
            out = await asyncio.wait_for(r.read(65536), WAIT)
            if not out:
                raise ConnectionResetError("closed")
        assert srv.refused >= 1
        held.pop()[1].close()
        for _ in range(100):  # the freed slot is usable once the edge has seen the close
            if sum(srv.per_ip.values()) < 3:
                break
            await asyncio.sleep(0.05)
        r, w = await _open(port)
        w.write(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        assert _status(await _closed_within(r)) == 200
        for _, hw in held:
            hw.close()
    finally:
        await srv.stop()


# -- upgrades and forwarding headers against a hostile origin ---------------------------------------------------

class RawOrigin:
    """An origin that answers 101 to ANY Upgrade (echoing the token, no Sec-WebSocket-Accept), then records what
    comes through the would-be tunnel; ``/hang`` never answers; anything else gets 200 with the request head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.tunnelled = b""
        self.server: asyncio.AbstractServer | None = None

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                lines = head.decode("latin-1").split("\r\n")
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                if lines[0].startswith("GET /hang"):
                    await asyncio.sleep(3600)
                if "upgrade" in hdrs:
                    w.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {hdrs['upgrade']}\r\n"
                            "Connection: Upgrade\r\n\r\n".encode())
                    while True:
                        b = await r.read(65536)
                        if not b:
                            return
                        self.tunnelled += b
                        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ntunnelled")
                n = int(hdrs.get("content-length", "0"))
                if n:
                    await r.readexactly(n)
                body = json.dumps({"head": head.decode("latin-1")}).encode()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def __aenter__(self) -> str:
        port = free_port()
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port)
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


async def test_only_valid_websocket_handshakes_are_tunnelled(tls_driver):
    o = RawOrigin()
    async with o as url:
        srv, port, _ = await _edge(url)
        try:
            smuggled = b"GET /admin HTTP/1.1\r\nHost: shop.beta.test\r\n\r\n"
            for upgrade, conn in ((b"h2c", b"Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__"),
                                  (b"made-up/1.0", b"upgrade"), (b"websocket, h2c", b"upgrade")):
                r, w = await _open(port)
                w.write(b"GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: %s\r\nConnection: %s\r\n\r\n"
                        % (NAME.encode(), upgrade, conn) + smuggled)
                out = await _closed_within(r)
                w.close()
                if upgrade.startswith(b"websocket"):
                    assert _status(out) == 400, out[:300]  # a websocket offer mixed with another protocol
                else:  # served as plain HTTP: the origin saw no Upgrade, the connection closed after the answer
                    assert _status(out) == 200 and b"HTTP/1.1 101" not in out, out[:300]
                    assert b"upgrade:" not in o.heads[-1].lower()
                assert b"tunnelled" not in out
            key = base64.b64encode(os.urandom(16))
            bad = {400: [b"Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13",  # no key
                         b"Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\n"
                         b"Sec-WebSocket-Version: 13"],  # a key of 5 bytes
                   426: [b"Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: " + key
                         + b"\r\nSec-WebSocket-Version: 8"]}
            n = len(o.heads)
            for status, variants in bad.items():
                for v in variants:
                    r, w = await _open(port)
                    w.write(b"GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n" % (NAME.encode(), v) + smuggled)
                    out = await _closed_within(r)
                    w.close()
                    assert _status(out) == status, out[:300]
                    if status == 426:
                        assert b"Sec-WebSocket-Version: 13" in out
            assert len(o.heads) == n  # refused by the edge, the origin never asked
            # a valid handshake that the origin answers without the right Sec-WebSocket-Accept: 502, no tunnel
            r, w = await _open(port)
            w.write(b"GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                    b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (NAME.encode(), key) + smuggled)
            out = await _closed_within(r)
            w.close()
            assert _status(out) == 502 and b"tunnelled" not in out
            # an upgrade on a connection whose SNI is not the Host: 421, never the origin
            r, w = await _open(port)
            w.write(b"GET / HTTP/1.1\r\nHost: shop.beta.test\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")
            assert _status(await _closed_within(r)) == 421
            w.close()
            assert o.tunnelled == b"" and not any(b"shop.beta.test" in h for h in o.heads)
        finally:
            await srv.stop()


async def test_origin_that_never_answers_gets_a_502(tls_driver):
    o = RawOrigin()
    async with o as url:
        srv, port, _ = await _edge(url, {"edge_upstream_read_timeout": 1.0})
        try:
            r, w = await _open(port)
            w.write(f"GET /hang HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
            assert _status(await _closed_within(r)) == 502
            w.close()
        finally:
            await srv.stop()


async def test_client_forwarding_headers_are_replaced(origin, tls_driver):
    url, seen = origin
    srv, port, _ = await _edge(url)
    try:
        spoof = {"Forwarded": "for=6.6.6.6;host=evil.test;proto=http", "X-Real-IP": "6.6.6.6",
                 "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.test",
                 "X-Forwarded-Port": "80", "X-Forwarded-Server": "evil.test", "X-Forwarded-Prefix": "/evil",
                 "X-Original-Host": "evil.test", "X-Host": "evil.test", "X-Original-URL": "/admin",
                 "True-Client-IP": "6.6.6.6", "X-Client-IP": "6.6.6.6", "CF-Connecting-IP": "6.6.6.6"}
        head = "".join(f"{k}: {v}\r\n" for k, v in spoof.items())
        r, w = await _open(port)
        w.write(f"GET /f HTTP/1.1\r\nHost: {NAME}\r\n{head}Connection: close\r\n\r\n".encode())
        out = await _closed_within(r)
        w.close()
        assert _status(out) == 200
        h = {k.lower(): v for k, v in seen[-1]["headers"].items()}
        assert h["x-forwarded-for"] == "127.0.0.1" and h["x-real-ip"] == "127.0.0.1"
        assert h["x-forwarded-proto"] == "https" and h["x-forwarded-host"] == NAME and h["host"] == NAME
        assert h["x-forwarded-port"] == "443"
        assert h["forwarded"] == f"for=127.0.0.1;proto=https;host={NAME}"
        for gone in ("x-forwarded-server", "x-forwarded-prefix", "x-original-host", "x-host", "x-original-url",
                     "true-client-ip", "x-client-ip", "cf-connecting-ip"):
            assert gone not in h, gone
        assert "6.6.6.6" not in json.dumps(h) and "evil.test" not in json.dumps(h)
    finally:
        await srv.stop()


# -- a real `edgecert serve`: its RSS under attack, and after ----------------------------------------------------

def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _tls(port: int, sni: str) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return _client_ctx().wrap_socket(sock, server_hostname=sni)


def _flood(port: int, sni: str, first: bytes, filler: bytes, total: int, pid: int, rss_cap: float) -> float:
    """Send ``first`` then ``filler`` until ``total`` bytes, the edge stops reading (3 s blocked) or closes, or its
    RSS passes ``rss_cap`` MiB; never reads. Returns the highest RSS seen (MiB)."""
    peak = _rss_mib(pid)
    s = _tls(port, sni)
    s.settimeout(3)
    sent = 0
    try:
        s.sendall(first)
        while sent < total and peak < rss_cap:
            s.sendall(filler)
            sent += len(filler)
            peak = max(peak, _rss_mib(pid))
    except (socket.timeout, ssl.SSLError, OSError):
        pass
    peak = max(peak, _rss_mib(pid))
    s.close()
    return peak


@pytest.mark.slow
def test_edge_memory_stays_bounded_and_returns(tmp_path, pebble, dns):
    """Against a normally configured ``edgecert serve``: 3 rounds of 16 MiB of pipelined requests (answered 404 and
    421 by the edge) that are never read, and 64 MiB endless headers; the edge's RSS grows by less than 64 MiB at any
    time and is back within 32 MiB of where it started once the connections are gone."""
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={"EDGECERT_LOG_LEVEL": "INFO"}).start()
    try:
        pid = edge.proc.pid
        port = edge.https_port
        for _ in range(3):  # warm up: first connections allocate what every later one reuses
            s = _tls(port, "nope.hostile.test")
            s.sendall(b"GET / HTTP/1.1\r\nHost: nope.hostile.test\r\nConnection: close\r\n\r\n")
            s.recv(65536)
            s.close()
        base = _rss_mib(pid)
        cap = base + 64
        peaks = []
        for sni, host in (("nope.hostile.test", "nope.hostile.test"), ("nope.hostile.test", "other.hostile.test"),
                          ("nope.hostile.test", "nope.hostile.test")):
            req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            peaks.append(_flood(port, sni, b"", req * (65536 // len(req)), 16 << 20, pid, cap))
        peaks.append(_flood(port, "nope.hostile.test", b"GET / HTTP/1.1\r\nHost: nope.hostile.test\r\nX-A: ",
                            b"a" * 65536, 64 << 20, pid, cap))
        peaks.append(_flood(port, "nope.hostile.test", b"GET /", b"a" * 65536, 64 << 20, pid, cap))
        print(f"edge RSS {base:.0f} MiB at rest, peaks {[round(p) for p in peaks]} MiB under attack")
        assert max(peaks) < cap, f"RSS {base:.0f} MiB at rest, peaks {[round(p) for p in peaks]} MiB under attack"
        deadline = time.monotonic() + 15
        while _rss_mib(pid) > base + 32 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _rss_mib(pid) <= base + 32, f"RSS {_rss_mib(pid):.0f} MiB after the attacks, {base:.0f} before"
        print(f"edge RSS {_rss_mib(pid):.0f} MiB after the attacks")
        # and the edge still answers
        s = _tls(port, "nope.hostile.test")
        s.sendall(b"GET / HTTP/1.1\r\nHost: nope.hostile.test\r\nConnection: close\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 404")
        s.close()
    finally:
        edge.stop()
