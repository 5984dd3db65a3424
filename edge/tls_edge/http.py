"""The TLS edge's HTTP/1.1 layer: one ``asyncio.Protocol`` per client connection, parsed by ``httptools`` (llhttp),
its TLS driven either by the C engine (:class:`EngineHttpProtocol`, :mod:`edge.tls_edge.engine`) or by Python's
``ssl`` over memory BIOs (:class:`EdgeHttpProtocol`, the fallback).

- no SNI -> 421 page; Host (port stripped, lower-cased) != SNI name -> 421 page; unknown name -> 404 page;
- no upstream -> the placeholder page (or ``placeholder_text``, used by ``bench/bench_serve.py``); the decision and
  the pages are :mod:`edge.tls_edge.routing`'s;
- otherwise a streaming reverse proxy to ``EDGECERT_UPSTREAM`` (:mod:`edge.tls_edge.upstream`): request bodies
  streamed (Content-Length kept, chunked re-chunked), responses streamed, keep-alive both sides, websockets and
  other upgrades passed through as a byte tunnel after the upstream's 101;
- keep-alive and pipelining downstream, ``bench_stats`` counting, ``TCP_NODELAY``.

Why not aiohttp here: on the handshake-bound hot path (one request per connection), aiohttp's per-connection machinery
(RequestHandler task, Request/Response objects, multidicts, the router) is most of the Python time per connection.
This layer answers the 421/404/placeholder cases synchronously from the parser callbacks, without a task; only a
proxied request gets one coroutine.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from typing import Any

import httptools

from edge.tls_edge import routing
from edge.tls_edge.engine import Error as TLSError
from edge.tls_edge.routing import response
from edge.tls_edge.upstream import UpstreamFailed, UpstreamPool, UpstreamRetry, request_head, set_nodelay

__all__ = ["EdgeHttpServer", "EdgeHttpProtocol", "EngineHttpProtocol"]

log = logging.getLogger("edge.proxy")

_MAX_HEAD = 64 * 1024          # request line + headers
_BUF_HIGH = 1 << 20            # buffered request body before reading pauses
_KEEPALIVE_TIMEOUT = 75.0      # idle downstream keep-alive (aiohttp's default)
HANDSHAKE_TIMEOUT = 60.0       # as uvloop's/asyncio's ssl_handshake_timeout
SWEEP_INTERVAL = 10.0


class _Request:
    __slots__ = ("method", "url", "headers", "keep_alive", "upgrade", "version", "has_body", "chunked", "done",
                 "body", "body_size", "sink", "sync", "task", "expect_continue")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False
        self.body: list[bytes] = []   # body chunks received before an upstream took them
        self.body_size = 0
        self.sink: Any = None         # the upstream connection the body streams to, once attached
        self.sync: bytes | None = None
        self.task: asyncio.Task | None = None


class EdgeHttpProtocol(asyncio.Protocol):
    """One downstream (client) connection of the TLS edge."""

    __slots__ = ("srv", "transport", "parser", "sni", "req", "active", "queue", "head_size", "paused", "closing",
                 "ka_timer", "tunnel", "tail", "up", "write_paused", "inc", "out", "obj", "hs_done", "born", "closed")

    def __init__(self, srv: "EdgeHttpServer") -> None:
        self.srv = srv
        self.parser = httptools.HttpRequestParser(self)
        self.req: _Request | None = None        # the request being parsed
        self.active: _Request | None = None     # the request being answered
        self.queue: collections.deque[_Request] | None = None  # pipelined requests waiting
        self.head_size = 0
        self.paused = False
        self.closing = False
        self.ka_timer: asyncio.TimerHandle | None = None
        self.tunnel: Any = None                 # upstream connection once upgraded (websocket)
        self.tail = b""                         # bytes after an upgrade request's head
        self.up: Any = None                     # upstream connection streaming a response to us
        self.write_paused = False
        self.hs_done = False
        self.closed = False
        self.sni = None

    # -- TLS, driven here over memory BIOs -------------------------------------------------------------------
    # The listener is plain TCP; this protocol runs the TLS state machine itself (ssl.SSLObject + MemoryBIO).
    # Measured against uvloop's own TLS transport (create_server(ssl=...)), same SniIndex and context: ~15% less
    # server CPU per full handshake, mostly because the close is one-way (close_notify sent, then the TCP close, as
    # nginx does) instead of waiting for the client's close_notify, and there is one layer less per read/write.
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        srv = self.srv
        srv.conns.add(self)
        self.born = srv.tick
        self.inc = inc = ssl.MemoryBIO()
        self.out = out = ssl.MemoryBIO()
        self.obj = srv.ctx.wrap_bio(inc, out, server_side=True)
        if srv.nodelay:
            set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.inc.write(data)
        obj = self.obj
        if not self.hs_done:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, OSError, ValueError):
                self._flush()  # the alert, if any
                self.closed = self.closing = True
                self.transport.close()
                return
            self._flush()
            self._established(getattr(obj, "edgecert_sni", None), obj.session_reused)
        inc = self.inc
        while not self.closed and (inc.pending or obj.pending()):  # no read that can only raise SSLWantReadError
            try:
                data = obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the client's close_notify
                self.close()
                return
            except (ssl.SSLError, OSError, ValueError):
                self.abort()
                return
            if not data:
                self.close()
                return
            self._app_data(data)
        if not self.closed and self.out.pending:
            self._flush()  # e.g. a TLS 1.3 KeyUpdate answer

    def _established(self, sni: str | None, reused: bool) -> None:
        """The handshake is complete: remember the SNI (for the Host == SNI check) and count it (bench)."""
        self.hs_done = True
        self.sni = sni
        count = self.srv.count
        if count is not None:
            count["connections"] += 1
            if reused:
                count["resumed"] += 1

    def _flush(self) -> None:
        out = self.out.read()
        if out:
            self.transport.write(out)

    def send(self, data: bytes) -> None:
        """Encrypt and write application data."""
        if self.closed:
            return
        try:
            self.obj.write(data)
        except (ssl.SSLError, OSError, ValueError):
            self.abort()
            return
        self.transport.write(self.out.read())

    def close(self, last: bytes = b"") -> None:
        """(``last`` data, then) close_notify, then close the TCP connection (pending writes are flushed first);
        no waiting for the client's close_notify."""
        if self.closed:
            return
        self.closed = self.closing = True
        if self.hs_done:
            try:
                if last:
                    self.obj.write(last)
                self.obj.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass  # SSLWantReadError: close_notify sent, the client's not awaited
            out = self.out.read()
            if out:
                self.transport.write(out)
        self.transport.close()

    def abort(self) -> None:
        self.closed = self.closing = True
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.obj
        return self.transport.get_extra_info(name, default)

    def _app_data(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            return
        if self.parser is None:  # upgraded, tunnel not open yet
            self.tail += data
            return
        if self.ka_timer is not None:
            self.ka_timer.cancel()
            self.ka_timer = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.parser = None
            self.tail = data[e.args[0]:]
        except httptools.HttpParserError as e:
            self._bad_request(e.__context__ if isinstance(e.__context__, _TooLarge) else e)

    def eof_received(self) -> bool | None:
        return None  # TLS cannot half-close: the connection closes (and a tunnel with it, gracefully)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = self.closed = True
        self.srv.conns.discard(self)
        if self.ka_timer is not None:
            self.ka_timer.cancel()
        if self.up is not None:
            self.up.abort()
        if self.tunnel is not None:
            self.tunnel.closed = True
            self.tunnel.transport.close()
        a = self.active
        if a is not None and a.task is not None and not a.task.done():
            a.task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        for other in (self.up, self.tunnel):
            if other is not None:
                other.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        for other in (self.up, self.tunnel):
            if other is not None:
                other.transport.resume_reading()

    # -- parser callbacks ------------------------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        r = self.req
        if r is None:
            r = self.req = _Request()
        r.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.req
        if r is None:
            r = self.req = _Request()
        r.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > _MAX_HEAD:
            raise _TooLarge()

    def on_headers_complete(self) -> None:
        r = self.req
        if r is None:
            r = self.req = _Request()
        p = self.parser
        r.method = p.get_method()
        r.version = p.get_http_version()
        r.keep_alive = p.should_keep_alive()
        r.upgrade = p.should_upgrade()
        r.has_body = r.chunked = False
        r.expect_continue = False
        for name, value in r.headers:
            n = name.lower()
            if n == b"content-length":
                r.has_body = value.strip() not in (b"0", b"")
            elif n == b"transfer-encoding":
                r.has_body = r.chunked = True
            elif n == b"expect" and value.strip().lower() == b"100-continue":
                r.expect_continue = True
        self.head_size = 0
        if self.active is None:
            self._start(r)
        else:
            if self.queue is None:
                self.queue = collections.deque()
            self.queue.append(r)

    def on_body(self, body: bytes) -> None:
        r = self.req
        if r is None:
            return
        if r.sink is not None:
            r.sink.send_body(body, r.chunked)
        elif r.sync is None:
            r.body.append(body)
            r.body_size += len(body)
            if r.body_size > _BUF_HIGH and not self.paused:
                self.paused = True
                self.transport.pause_reading()
        # a request answered locally (421/404/placeholder): the body is read and dropped

    def on_message_complete(self) -> None:
        r = self.req
        self.req = None
        if r is None:
            return
        r.done = True
        if r.sink is not None:
            r.sink.end_body(r.chunked)
        if r is self.active and r.sync is not None:
            self._finish_sync(r)

    # -- answering -------------------------------------------------------------------------------------------
    def _start(self, r: _Request) -> None:
        self.active = r
        srv = self.srv
        host = ""
        for name, value in r.headers:
            if len(name) == 4 and name.lower() == b"host":
                host = routing.host_of(value)
                break
        page = routing.decide(self.sni, host, srv.index.lookup, has_origin=srv.pool is not None,
                              placeholder_text=srv.placeholder)
        if page is not None:
            r.sync = response(page, r.keep_alive, r.method == b"HEAD")
        elif r.method == b"CONNECT":
            r.sync = response(routing.NO_CONNECT, False, False)
        else:
            r.task = asyncio.ensure_future(self._proxy(r, host))
            return
        if r.upgrade:
            r.keep_alive = False  # the parser stopped at the upgrade: nothing more can be read on this connection
        if r.done:
            self._finish_sync(r)

    def _finish_sync(self, r: _Request) -> None:
        data = r.sync
        if not r.keep_alive and b"Connection: close" not in data[:400]:
            data = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        if not r.keep_alive or self.closing or self.parser is None:
            self.active = None
            self.close(data)  # the answer and the close_notify in one write, one TCP segment
            return
        self.send(data)
        self._next(r)

    def _next(self, r: _Request) -> None:
        """``r`` is answered: close, or go on with the next pipelined request, or wait (keep-alive)."""
        self.active = None
        if not r.keep_alive or self.closing or self.parser is None:
            self.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        q = self.queue
        if q:
            self._start(q.popleft())
        elif self.req is None:
            self.ka_timer = asyncio.get_running_loop().call_later(_KEEPALIVE_TIMEOUT, self._idle_close)

    def _idle_close(self) -> None:
        self.ka_timer = None
        if self.active is None and self.req is None and not self.closing:
            self.close()

    def _bad_request(self, why: BaseException | str) -> None:
        if self.closing:
            return
        self.closing = True
        self.parser = None
        status = 431 if isinstance(why, _TooLarge) else 400
        log.debug("bad request on the TLS edge: %s", why)
        if self.active is None or self.active.sync is not None:
            self.send(response(routing.BAD_REQUEST[status], False))
        self.close()

    # -- the reverse proxy -----------------------------------------------------------------------------------
    async def _proxy(self, r: _Request, host: str) -> None:
        pool: UpstreamPool = self.srv.pool
        ws = r.upgrade
        try:
            peer = self.transport.get_extra_info("peername")
            head = request_head(r, host, ws, pool.prefix, (peer[0] if peer else "").encode())
        except httptools.HttpParserError:
            r.keep_alive = False
            self.send(response(routing.BAD_TARGET, False))
            self._next(r)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                up, reused = await pool.acquire(fresh=ws)
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                log.warning("upstream error for %s: %s", host, e)
                self._bad_gateway(r)
                return
            if self.closing:
                up.abort()
                return
            done = up.start(self, r, head)
            if r.expect_continue and not ws:
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                r.expect_continue = False
            if r.body:
                chunks, r.body, r.body_size = r.body, [], 0
                for c in chunks:
                    up.send_body(c, r.chunked)
            if r.done and not ws:
                up.end_body(r.chunked)
            r.sink = up
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            try:
                await done
            except UpstreamRetry:
                if attempt == 1 and reused and not r.has_body:
                    r.sink = None
                    continue
                self._bad_gateway(r)
                return
            except UpstreamFailed as e:
                log.warning("upstream error for %s: %s", host, e)
                if e.head_sent:
                    self.abort()
                else:
                    self._bad_gateway(r)
                return
            except asyncio.CancelledError:
                up.abort()
                raise
            break
        r.sink = None
        if up.tunnel_open:
            return  # the connection is a byte tunnel now; it ends when either side closes
        if not r.done:
            # The origin answered before the request body was all read (e.g. 413): stop here.
            r.keep_alive = False
        self._next(r)

    def _bad_gateway(self, r: _Request) -> None:
        r.keep_alive = r.keep_alive and r.done and not r.upgrade
        self.send(response(routing.BAD_GATEWAY, r.keep_alive, r.method == b"HEAD"))
        self._next(r)


class EngineHttpProtocol(EdgeHttpProtocol):
    """:class:`EdgeHttpProtocol` with its TLS driven by the C engine (:mod:`edge.tls_edge.engine`): one
    ``Conn.feed`` per chunk read runs the handshake (the certificate picked by SNI in C through the index's
    ``select``) and returns the records to send and the decrypted data; no SSLObject, no MemoryBIO calls from Python."""

    __slots__ = ()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        srv = self.srv
        srv.conns.add(self)
        self.born = srv.tick
        self.obj = srv.engine.conn()
        if srv.nodelay:
            set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        obj = self.obj
        try:
            out, plain = obj.feed(data)
        except TLSError as e:
            last = e.args[1] if len(e.args) > 1 else None
            if last:
                self.transport.write(last)  # the alert
            self.closed = self.closing = True
            self.transport.close()
            return
        if out:
            self.transport.write(out)
        if not self.hs_done:
            if not obj.established:
                return
            name = obj.server_name
            self._established(name.lower().rstrip(".") if name is not None else None, obj.session_reused)
        if plain:
            self._app_data(plain)
        if obj.eof and not self.closed:  # the client's close_notify
            self.close()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.transport.write(self.obj.write(data))
        except TLSError:
            self.abort()

    def close(self, last: bytes = b"") -> None:
        if self.closed:
            return
        self.closed = self.closing = True
        if self.hs_done:
            try:
                out = self.obj.shutdown(last)
            except TLSError:
                out = b""
            if out:
                self.transport.write(out)
        self.transport.close()


class _TooLarge(Exception):
    def __str__(self) -> str:
        return "too large: request head over 64 KiB"


class EdgeHttpServer:
    """The TLS edge's listener(s): ``await start(host, port, ssl_ctx)``, ``await stop()``."""

    def __init__(self, services: Any) -> None:
        settings = services.settings
        self.index = services.index
        self.placeholder: bytes | None = None
        text = settings.placeholder_text
        if text is not None:
            self.placeholder = text.encode()
        self.count = services.bench_stats if settings.bench_stats else None
        self.nodelay = True
        self.upstream = settings.upstream
        self.pool: UpstreamPool | None = None
        self.conns: set[EdgeHttpProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self.ctx: ssl.SSLContext | None = None
        self.engine = self.index.engine  # edge/tls_edge/engine.py: TLS driven in C, when built
        self.tick = 0  # advanced every SWEEP_INTERVAL by the sweeper (handshake timeouts without a timer each)
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int, ssl_ctx: ssl.SSLContext, *, reuse_port: bool = False,
                    backlog: int = 1024) -> asyncio.AbstractServer:
        """Listen on plain TCP; every connection runs TLS with ``ssl_ctx`` (its sni_callback picks the
        certificate) inside :class:`EdgeHttpProtocol`."""
        loop = asyncio.get_running_loop()
        self.ctx = ssl_ctx
        if self.upstream:
            self.pool = UpstreamPool(self.upstream)
        self.nodelay = not _loop_sets_nodelay(loop)
        proto = EngineHttpProtocol if self.engine is not None else EdgeHttpProtocol
        self.server = await loop.create_server(lambda: proto(self), host or None, port,
                                               backlog=backlog, reuse_address=True, reuse_port=reuse_port or None)
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self.server

    async def _sweep(self) -> None:
        """Close connections that have not finished their TLS handshake within HANDSHAKE_TIMEOUT."""
        limit = max(1, int(HANDSHAKE_TIMEOUT / SWEEP_INTERVAL))
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.tick += 1
            old = self.tick - limit
            for c in list(self.conns):
                if not c.hs_done and c.born <= old:
                    c.abort()

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            if c.active is None and c.tunnel is None:
                c.close()
        deadline = time.monotonic() + grace
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.conns):
            c.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.pool is not None:
            self.pool.close()


def _loop_sets_nodelay(loop: asyncio.AbstractEventLoop) -> bool:
    """uvloop sets TCP_NODELAY on every TCP transport itself; plain asyncio does too since 3.7 for
    ``create_server`` connections. Checked once, on the first connection otherwise."""
    return type(loop).__module__.startswith("uvloop")
