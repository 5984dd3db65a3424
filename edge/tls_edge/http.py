"""One concern: the TLS edge's client connection, from the first TCP byte to the close.

The TLS edge's HTTP/1.1 layer: one ``asyncio.Protocol`` per client connection, parsed by ``httptools`` (llhttp), its
TLS driven either by the C engine (:class:`EngineHttpProtocol`, :mod:`edge.tls_edge.engine`) or by Python's
``ssl`` over memory BIOs (:class:`EdgeHttpProtocol`, the fallback). The fast lane: between two requests, a plain
complete head (GET/HEAD, HTTP/1.1, keep-alive or "Connection: close", no body, one Host, nothing odd) is parsed and its forwarded headers
rewritten in one C call (``edge/tls_edge/_edgehttp.c``, optional); everything else goes to httptools unchanged.

- no SNI -> 421 page; Host (port stripped, lower-cased) != SNI name -> 421 page; unknown name -> 404 page;
- no upstream -> the placeholder page (or ``placeholder_text``, used by ``bench/bench_serve.py``); the decision and
  the pages are :mod:`edge.tls_edge.routing`'s;
- otherwise a streaming reverse proxy to ``EDGECERT_UPSTREAM`` (:mod:`edge.tls_edge.upstream`): request bodies
  streamed (Content-Length kept, chunked re-chunked), responses streamed, keep-alive both sides, websockets and
  other upgrades passed through as a byte tunnel after the upstream's 101;
- keep-alive and pipelining downstream, ``bench_stats`` counting, ``TCP_NODELAY``.

Bounds (settings ``edge_*``, docs/configuration.md): every phase of a connection has a deadline (handshake, request
head, keep-alive idle, body progress, a client that does not read its answers), checked by one sweeper instead of a
timer per connection; the request line, each header line and the whole head are limited as the bytes arrive (data is
fed to the parser in slices, so a limit is never overrun by more than one slice); at most ``edge_max_pipeline``
requests wait per connection and no answer is written while the transport asks us to pause (``pause_writing``):
the edge then stops reading from the client (:meth:`EdgeHttpProtocol.hold_reading`) and keeps at most one slice
of unparsed bytes. Upgrades are tunnelled only for a valid websocket handshake, after the Host/SNI check.

Why not aiohttp here: on the handshake-bound hot path (one request per connection), aiohttp's per-connection machinery
(RequestHandler task, Request/Response objects, multidicts, the router) is most of the Python time per connection.
This layer answers the 421/404/placeholder cases synchronously from the parser callbacks, without a task; only a
proxied request gets one coroutine.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import logging
import socket
import ssl
import time
from typing import Any

import httptools

from edge.tls_edge import routing
from edge.tls_edge.clienthello import peek as peek_client_hello
from edge.tls_edge.engine import Error as TLSError
from edge.tls_edge.h2 import AVAILABLE as H2_AVAILABLE, H2Session
from edge.tls_edge.routing import response
from edge.tls_edge import upstream
from edge.tls_edge.upstream import (HOLD_UPGRADE, OriginPools, UpstreamFailed, UpstreamPool, UpstreamRetry,
                                    request_head, response_head, set_nodelay)

__all__ = ["EdgeHttpServer", "EdgeHttpProtocol", "EngineHttpProtocol"]

log = logging.getLogger("edge.proxy")

_BUF_HIGH = 1 << 20            # buffered request body (all requests of a connection) before reading pauses
_SLICE = 16 * 1024             # bytes fed to the parser at a time: the most any limit is overrun by
_TAIL_MAX = 256 * 1024         # bytes kept after an upgrade request's head until the tunnel opens

# Why the edge stops reading from a client (bits of EdgeHttpProtocol.holds): it reads again once none is left.
HOLD_PIPELINE = 4              # edge_max_pipeline requests wait for their answers
HOLD_BODY = 8                  # request bodies buffered before an upstream took them
HOLD_BAD = 32                  # a bad request head waits for the answers to the requests before it

# What a connection's deadline is for (EdgeHttpProtocol.phase).
PH_NONE, PH_HANDSHAKE, PH_HEAD, PH_IDLE, PH_BODY = range(5)


class _Request:
    __slots__ = ("method", "url", "headers", "keep_alive", "upgrade", "version", "has_body", "chunked", "done",
                 "body", "body_size", "sink", "sync", "task", "expect_continue", "last", "bad_upgrade", "ws_key",
                 "kept", "host_raw")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.kept: bytes | None = None  # the fast lane's forwarded header lines (then ``headers`` stays empty)
        self.host_raw = b""             # the fast lane's Host value
        self.done = False
        self.body: list[bytes] = []   # body chunks received before an upstream took them
        self.body_size = 0
        self.sink: Any = None         # the upstream connection the body streams to, once attached
        self.sync: bytes | None = None
        self.task: asyncio.Task | None = None
        self.upgrade = False          # a valid websocket handshake: tunnelled after the origin's 101
        self.last = False             # the parser stopped after this request (an Upgrade of any kind, CONNECT)
        self.bad_upgrade = 0          # 400/426: an invalid websocket handshake
        self.ws_key = b""


class EdgeHttpProtocol(asyncio.Protocol):
    """One downstream (client) connection of the TLS edge."""

    __slots__ = ("srv", "transport", "parser", "sni", "req", "active", "queue", "closing", "tunnel", "tail", "up",
                 "write_paused", "inc", "out", "obj", "hs_done", "closed", "ip", "holds", "pending", "buffered",
                 "phase", "deadline", "wdeadline", "in_head", "hsize", "line", "advancing", "h2", "corked",
                 "ka", "ended", "host_memo", "bad")

    h1_fast = True  # upstream.UpstreamConn may write an origin's plain response head as is (its fast lane)

    def __init__(self, srv: "EdgeHttpServer") -> None:
        self.srv = srv
        self.parser = httptools.HttpRequestParser(self)
        self.req: _Request | None = None        # the request being parsed
        self.active: _Request | None = None     # the request being answered
        self.queue: collections.deque[_Request] | None = None  # pipelined requests waiting
        self.closing = False
        self.tunnel: Any = None                 # upstream connection once upgraded (websocket)
        self.tail = b""                         # bytes after an upgrade request's head
        self.up: Any = None                     # upstream connection streaming a response to us
        self.write_paused = False
        self.hs_done = False
        self.closed = False
        self.sni = None
        self.ip: str | None = None              # counted in srv.per_ip
        self.holds = 0                          # HOLD_* bits: why reading is paused
        self.pending = b""                      # bytes read but not parsed yet (reading is held)
        self.buffered = 0                       # request body bytes waiting for an upstream
        self.phase = PH_HANDSHAKE
        self.deadline = 0.0                     # loop time the current phase must end by (0: none)
        self.wdeadline = 0.0                    # loop time the client must have read our answers by (0: none)
        self.in_head = False                    # a request head is being received
        self.hsize = 0                          # bytes of the current head so far
        self.line = 0                           # bytes of its current line so far
        self.advancing = False
        self.h2: H2Session | None = None        # ALPN chose h2: the HTTP/2 session (edge/tls_edge/h2.py)
        self.corked: list[bytes] | None = None  # sends gathered into one TLS write (see cork)
        self.ka = True                          # the last request parsed kept the connection (fast lane allowed)
        self.ended = False                      # a "Connection: close" request came: later bytes are dropped
        self.host_memo: tuple[bytes, str] = (b"", "")  # the last Host value and its host_of()
        self.bad = 0                            # status owed to a bad head once the requests before it are answered

    def client_ip(self) -> str:
        """The client's address, for the forwarding headers (the counted one when the per-address cap is on)."""
        if self.ip is not None:
            return self.ip
        peer = self.transport.get_extra_info("peername")
        return peer[0] if peer else ""

    def _admit(self, transport: Any) -> bool:
        """Common part of connection_made: the per-address cap, the handshake deadline."""
        self.transport = transport
        srv = self.srv
        cap = srv.max_per_ip
        if cap:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else ""
            n = srv.per_ip.get(ip, 0)
            if n >= cap:
                self.closed = self.closing = True
                srv.refused += 1
                transport.abort()
                return False
            srv.per_ip[ip] = n + 1
            self.ip = ip
        srv.conns.add(self)
        self.deadline = srv.loop.time() + srv.hs_timeout
        if srv.nodelay:
            set_nodelay(transport)
        return True

    # -- TLS, driven here over memory BIOs -------------------------------------------------------------------
    # The listener is plain TCP; this protocol runs the TLS state machine itself (ssl.SSLObject + MemoryBIO).
    # Measured against uvloop's own TLS transport (create_server(ssl=...)), same SniIndex and context: ~15% less
    # server CPU per full handshake, mostly because the close is one-way (close_notify sent, then the TCP close, as
    # nginx does) instead of waiting for the client's close_notify, and there is one layer less per read/write.
    def connection_made(self, transport: Any) -> None:
        if not self._admit(transport):
            return
        self.inc = inc = ssl.MemoryBIO()
        self.out = out = ssl.MemoryBIO()
        self.obj = self.srv.ctx.wrap_bio(inc, out, server_side=True)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.hs_done:
            index = self.srv.index
            if (index.challenges or index.min_tls) and not hasattr(self.obj, "edgecert_hello"):
                # TLS-ALPN-01 answers / per-name TLS floors: the SNI callback needs the whole ClientHello (its ALPN
                # offer and versions), which Python's ssl does not show it (edge/tls_edge/clienthello.py).
                data = peek_client_hello(self.obj, data)
                if data is None:
                    return
                if self.obj.edgecert_hello.acme_only:  # a validation: the challenge context from the start
                    obj = index.challenge_object(self.obj.edgecert_hello.server_name, self.inc, self.out)
                    if obj is not None:
                        obj.edgecert_hello = self.obj.edgecert_hello
                        self.obj = obj
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
        """The handshake is complete: remember the SNI (for the Host == SNI check) and count it (bench); the first
        request head is due within ``edge_request_head_timeout``."""
        self.hs_done = True
        self.sni = sni
        srv = self.srv
        self.phase = PH_HEAD
        self.deadline = srv.loop.time() + srv.head_timeout
        count = srv.count
        if count is not None:
            count["connections"] += 1
            if reused:
                count["resumed"] += 1
        if srv.index.challenges and self.obj.selected_alpn_protocol() == "acme-tls/1":
            self.close()  # TLS-ALPN-01 (RFC 8737): the certificate was the answer; no HTTP on this connection
        elif srv.h2_offered and self.obj.selected_alpn_protocol() == "h2":
            self.parser = None
            self.h2 = H2Session(self)

    def _flush(self) -> None:
        out = self.out.read()
        if out:
            self.transport.write(out)

    def send(self, data: bytes) -> None:
        """Encrypt and write application data (gathered while corked)."""
        if self.corked is not None:
            self.corked.append(data)
            return
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
        if self.corked:
            last, self.corked = b"".join(self.corked) + last, None
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
        self.corked = None
        self.transport.abort()

    def cork(self) -> None:
        """Gather what is sent until :meth:`uncork` into one TLS write: an origin's response head and the body
        that came with it in one read go out as one record and one syscall (as nginx writes them)."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        buf = self.corked
        if buf is None:
            return
        self.corked = None
        if buf:
            self.send(buf[0] if len(buf) == 1 else b"".join(buf))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.obj
        return self.transport.get_extra_info(name, default)

    # -- reading, bounded ------------------------------------------------------------------------------------
    def hold_reading(self, why: int) -> None:
        """Stop reading from the client for reason ``why`` (a HOLD_* bit) until :meth:`release_reading`."""
        if not self.holds and not self.closed:
            self.transport.pause_reading()
        self.holds |= why

    def release_reading(self, why: int) -> None:
        if not self.holds & why:
            return
        self.holds &= ~why
        if self.holds or self.closed:
            return
        self.transport.resume_reading()
        if self.phase in (PH_HEAD, PH_BODY):  # the client was not at fault while held
            self.deadline = self.srv.loop.time() + (
                self.srv.head_timeout if self.phase == PH_HEAD else self.srv.body_timeout)
        if self.pending:
            asyncio.get_running_loop().call_soon(self._feed_pending)  # never from inside a parser callback

    def _feed_pending(self) -> None:
        if self.holds or self.closing or not self.pending:
            return
        data, self.pending = self.pending, b""
        self._app_data(data)

    def _app_data(self, data: bytes) -> None:
        h2 = self.h2
        if h2 is not None:
            if self.holds or self.pending:
                self.pending += data  # at most what was in flight when reading was held
            else:
                h2.data_received(data)
            return
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            return
        if self.parser is None:  # upgraded, tunnel not open yet (reading is held meanwhile)
            if len(self.tail) + len(data) > _TAIL_MAX:
                self.abort()
                return
            self.tail += data
            return
        if self.holds or self.pending:
            self.pending += data  # at most what was in flight when reading was held
            return
        n = len(data)
        pos = 0
        srv = self.srv
        fast = upstream.fast_request
        while pos < n:
            if self.closing or self.parser is None:
                return
            if self.holds:
                self.pending = data[pos:]
                return
            if self.ended:  # after a "Connection: close" request nothing more is read as a request (RFC 9112
                return      # section 9.6): the bytes are dropped, that request is answered, then the connection closes
            if fast is not None and self.req is None and not self.in_head and self.ka:
                # Between two requests: a plain, complete head is parsed and rewritten in one C call
                # (edge/tls_edge/_edgehttp.c); anything else (a body, an upgrade, a limit, an oddity, a head not
                # all here) goes to httptools below, byte for byte as without the fast lane.
                m = fast(data, pos, srv.max_line, srv.max_head)
                if m is not None:
                    pos = m[0]
                    self._fast_request(m)
                    continue
            piece = data if n <= _SLICE and not pos else data[pos:pos + _SLICE]
            size = len(piece)
            pos += size
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade as e:
                self.parser = None
                self.tail = piece[e.args[0]:] + data[pos:]
                if self.tunnel is None and not self.closing:
                    self.hold_reading(HOLD_UPGRADE)
                return
            except httptools.HttpParserError as e:
                if not self.ka and self.req is None and not self.in_head:
                    self.ended = True  # llhttp's "Data after `Connection: close`": dropped, as above
                    return
                self._bad_request(e.__context__ if isinstance(e.__context__, _TooLarge) else e)
                return
            if self.in_head:  # the head is not complete yet: count what this slice added to it
                i = piece.rfind(b"\n")
                self.line = self.line + size if i < 0 else size - i - 1
                self.hsize += size  # (over-counted by less than a slice when a pipelined head began in it)
                if self.line > srv.max_line or self.hsize > srv.max_head:
                    self._bad_request(_TooLarge(431, "a header line" if self.line > srv.max_line else "the head"))
                    return

    def eof_received(self) -> bool | None:
        return None  # TLS cannot half-close: the connection closes (and a tunnel with it, gracefully)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = self.closed = True
        # The parser holds bound methods of this protocol (a reference cycle): dropped here, the protocol, its
        # transport and its TLS state (the engine's SSL object) are freed by reference counting now, while their
        # memory is still in cache, instead of by the cyclic collector tens of connections later.
        self.parser = None
        srv = self.srv
        srv.conns.discard(self)
        ip = self.ip
        if ip is not None:
            self.ip = None
            n = srv.per_ip.get(ip, 1) - 1
            if n > 0:
                srv.per_ip[ip] = n
            else:
                srv.per_ip.pop(ip, None)
        self.pending = self.tail = b""
        self.queue = None
        if self.h2 is not None:
            self.h2.connection_lost()
        if self.up is not None:
            self.up.abort()
        if self.tunnel is not None:
            self.tunnel.closed = True
            self.tunnel.transport.close()
        a = self.active
        if a is not None and a.task is not None and not a.task.done():
            a.task.cancel()

    def pause_writing(self) -> None:
        """The client does not read as fast as we answer: stop the origin's side, answer no further request
        (they wait, then reading stops), and give the client ``edge_body_timeout`` to read on."""
        self.write_paused = True
        self.wdeadline = self.srv.loop.time() + self.srv.body_timeout
        if self.h2 is not None:
            self.h2.pause_writing()
            return
        for other in (self.up, self.tunnel):
            if other is not None:
                other.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wdeadline = 0.0
        if self.h2 is not None:
            self.h2.resume_writing()
            return
        for other in (self.up, self.tunnel):
            if other is not None:
                other.transport.resume_reading()
        if self.active is None and self.queue and not self.closing:
            self._advance()

    def timed_out(self) -> None:
        """The sweeper found the current phase's deadline passed."""
        phase = self.phase
        self.deadline = 0.0
        if self.h2 is not None:
            self.h2.timed_out()
            return
        if phase == PH_HANDSHAKE:
            self.abort()
        elif phase == PH_IDLE:
            if self.active is None and self.req is None:
                self.close()
        elif phase in (PH_HEAD, PH_BODY):
            log.debug("TLS edge: %s timed out", "request head" if phase == PH_HEAD else "request body")
            self.close()

    def send_head(self, r: _Request, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str,
                  tunnel: bool) -> str:
        """The origin's response head, as HTTP/1.1 (upstream.Downstream)."""
        head, down = response_head(r, status, reason, headers, framing, tunnel)
        self.send(head)
        return down

    # -- parser callbacks ------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.hsize = self.line = 0
        if self.phase != PH_HEAD:  # a keep-alive request (the first one's deadline runs from the handshake)
            self.phase = PH_HEAD
            self.deadline = self.srv.loop.time() + self.srv.head_timeout

    def on_url(self, url: bytes) -> None:
        r = self.req
        if r is None:
            r = self.req = _Request()
        r.url += url
        if len(r.url) > self.srv.max_line:
            raise _TooLarge(414, "the request target")

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.req
        if r is None:
            r = self.req = _Request()
        r.headers.append((name, value))
        if len(name) + len(value) + 4 > self.srv.max_line:
            raise _TooLarge(431, "a header line")

    def on_headers_complete(self) -> None:
        self.in_head = False
        r = self.req
        if r is None:
            r = self.req = _Request()
        p = self.parser
        r.method = p.get_method()
        r.version = p.get_http_version()
        r.keep_alive = self.ka = p.should_keep_alive()
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
        if p.should_upgrade():
            r.last = True  # the parser stops after this request: nothing more is read on this connection
            r.keep_alive = False
            if r.method != b"CONNECT":
                _check_upgrade(r)
        srv = self.srv
        if r.has_body:
            self.phase = PH_BODY
            self.deadline = srv.loop.time() + srv.body_timeout
        else:
            self.phase = PH_NONE
            self.deadline = 0.0
        self._take(r)

    def _take(self, r: _Request) -> None:
        """A complete request head: answered now, or queued behind the ones in flight (pipelining, bounded)."""
        if self.active is None and not self.queue and not self.write_paused:
            self._start(r)
        else:
            q = self.queue
            if q is None:
                q = self.queue = collections.deque()
            q.append(r)
            if len(q) >= self.srv.max_pipeline:
                self.hold_reading(HOLD_PIPELINE)

    def _fast_request(self, m: tuple) -> None:
        """A whole request head from the fast lane (GET/HEAD, HTTP/1.1, no body; keep-alive or "Connection:
        close"): what on_message_begin, on_headers_complete and on_message_complete do for it."""
        r = _Request()
        _, r.method, r.url, r.host_raw, r.kept, ka = m
        r.version = "1.1"
        r.keep_alive = self.ka = ka
        self.ended = not ka
        r.done = True
        r.has_body = r.chunked = r.expect_continue = False
        self.phase = PH_NONE
        self.deadline = 0.0
        self._take(r)

    def on_body(self, body: bytes) -> None:
        r = self.req
        if r is None:
            return
        if self.phase == PH_BODY:
            self.deadline = self.srv.loop.time() + self.srv.body_timeout
        if r.sink is not None:
            r.sink.send_body(body, r.chunked)
        elif r.sync is None:
            r.body.append(body)
            r.body_size += len(body)
            self.buffered += len(body)
            if self.buffered > _BUF_HIGH:
                self.hold_reading(HOLD_BODY)
        # a request answered locally (421/404/placeholder): the body is read and dropped

    def on_message_complete(self) -> None:
        r = self.req
        self.req = None
        if self.phase == PH_BODY:
            self.phase = PH_NONE
            self.deadline = 0.0
        if r is None:
            return
        r.done = True
        if r.sink is not None:
            r.sink.end_body(r.chunked)
        if r is self.active and r.sync is not None:
            self._finish_sync(r)

    # -- answering -------------------------------------------------------------------------------------------
    def _unbuffer(self, r: _Request) -> list[bytes]:
        """Take ``r``'s buffered body chunks (the connection's body buffer shrinks: reading may go on)."""
        chunks, r.body = r.body, []
        self.buffered -= r.body_size
        r.body_size = 0
        if self.buffered <= _BUF_HIGH:
            self.release_reading(HOLD_BODY)
        return chunks

    def _start(self, r: _Request) -> None:
        self.active = r
        srv = self.srv
        host = ""
        if r.kept is not None:  # the fast lane's
            raw = r.host_raw
            memo = self.host_memo
            if memo[0] == raw:
                host = memo[1]
            else:
                host = routing.host_of(raw)
                self.host_memo = (raw, host)
        else:
            for name, value in r.headers:
                if len(name) == 4 and name.lower() == b"host":
                    host = routing.host_of(value)
                    break
        pool = srv.origins.for_host(host, srv.index.host_settings)  # per-hostname origin (issue 17), memory only
        page = routing.decide(self.sni, host, srv.index.lookup, has_origin=pool is not None,
                              placeholder_text=srv.placeholder)
        if page is not None:
            r.sync = response(page, r.keep_alive, r.method == b"HEAD")
        elif r.method == b"CONNECT":
            r.sync = response(routing.NO_CONNECT, False, False)
        elif r.bad_upgrade:
            r.keep_alive = False
            r.sync = response(routing.BAD_UPGRADE[r.bad_upgrade], False, r.method == b"HEAD")
        else:
            if not self._proxy_now(r, host, pool):
                r.task = asyncio.ensure_future(self._proxy(r, host, pool))
            return
        if r.body:
            self._unbuffer(r)
        if r.last:
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
        """``r`` is answered: close, or go on with the next pipelined request (unless the client does not read its
        answers: then when it does, see :meth:`resume_writing`), or wait (keep-alive)."""
        self.active = None
        if not r.keep_alive or self.closing or self.parser is None:
            self.close()
            return
        if not self.advancing:
            self._advance()

    def _advance(self) -> None:
        """Answer the waiting requests in order, as long as the answers can be written (a loop, not a recursion:
        locally answered requests complete synchronously)."""
        srv = self.srv
        self.advancing = True
        try:
            while self.active is None and not self.closing and not self.write_paused:
                q = self.queue
                if not q:
                    break
                r = q.popleft()
                if len(q) <= srv.max_pipeline >> 1:  # half drained: reading resumes (not once per answer)
                    self.release_reading(HOLD_PIPELINE)
                self._start(r)
        finally:
            self.advancing = False
        if self.bad and self.active is None and not self.queue and not self.closing:
            self.closing = True  # every request before the bad head is answered: now its 4xx, and close
            self.parser = None
            self.close(response(routing.BAD_REQUEST[self.bad], False))
            return
        if self.active is None and not self.queue and self.req is None and not self.closing:
            self.phase = PH_IDLE
            self.deadline = srv.loop.time() + srv.keepalive_timeout

    def _bad_request(self, why: BaseException | str) -> None:
        if self.closing:
            return
        status = why.status if isinstance(why, _TooLarge) else 400
        log.debug("bad request on the TLS edge: %s", why)
        if self.in_head and (self.active is not None or self.queue):
            # A bad head pipelined behind requests still being answered: they are answered first, in order (their
            # bytes all came before it), then this one gets its 4xx and the connection closes (as nginx does, which
            # reads a request only once the one before is answered). Nothing more is read meanwhile.
            self.bad = status
            self.in_head = False
            self.req = None
            self.phase = PH_NONE
            self.deadline = 0.0
            self.hold_reading(HOLD_BAD)
            return
        self.closing = True
        self.parser = None
        if self.active is None or self.active.sync is not None:
            self.send(response(routing.BAD_REQUEST[status], False))
        self.close()

    # -- the reverse proxy -----------------------------------------------------------------------------------
    def _proxy_now(self, r: _Request, host: str, pool: UpstreamPool) -> bool:
        """The common case without a task: an idle pooled origin connection is there and this is not an upgrade.
        The exchange starts now and :meth:`_proxied` finishes it when the origin has answered. False: take the
        coroutine path (:meth:`_proxy`: connecting, retrying)."""
        if r.upgrade or not pool.idle:
            return False
        try:
            head = request_head(r, host, False, pool.prefix, self.client_ip(), self.srv.public_port)
        except httptools.HttpParserError:
            return False  # the coroutine path answers it
        up = pool.take_idle()
        if up is None:
            return False
        up.start(self, r, head, lambda exc: self._proxied(r, host, pool, exc))
        if r.expect_continue:
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            r.expect_continue = False
        if r.body:
            for c in self._unbuffer(r):
                up.send_body(c, r.chunked)
        if r.done:
            up.end_body(r.chunked)
        r.sink = up
        return True

    def _proxied(self, r: _Request, host: str, pool: UpstreamPool, exc: BaseException | None) -> None:
        """The end of an exchange started by :meth:`_proxy_now` (``exc``: how it failed)."""
        r.sink = None
        if self.closed:
            return  # the client went away (its origin connection was closed with it)
        if exc is None:
            if not r.done:
                r.keep_alive = False  # the origin answered before the request body was all read (e.g. 413)
            self._next(r)
        elif isinstance(exc, UpstreamRetry) and not r.has_body:
            # the reused connection was closed by the origin before answering: once more, on the coroutine path
            r.task = asyncio.ensure_future(self._proxy(r, host, pool, retried=True))
        elif isinstance(exc, UpstreamFailed) and exc.head_sent:
            log.warning("upstream error for %s: %s", host, exc)
            self.abort()
        else:
            if not isinstance(exc, UpstreamRetry):
                log.warning("upstream error for %s: %s", host, exc)
            self._bad_gateway(r)

    async def _proxy(self, r: _Request, host: str, pool: UpstreamPool, retried: bool = False) -> None:
        ws = r.upgrade
        try:
            head = request_head(r, host, ws, pool.prefix, self.client_ip(), self.srv.public_port)
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
                for c in self._unbuffer(r):
                    up.send_body(c, r.chunked)
            if r.done and not ws:
                up.end_body(r.chunked)
            r.sink = up
            try:
                await done
            except UpstreamRetry:
                if attempt == 1 and reused and not r.has_body and not retried:
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
        r.keep_alive = r.keep_alive and r.done and not r.last
        self.send(response(routing.BAD_GATEWAY, r.keep_alive, r.method == b"HEAD"))
        self._next(r)


def _check_upgrade(r: _Request) -> None:
    """An Upgrade request: a valid websocket handshake (RFC 6455 4.2.1) is tunnelled (``r.upgrade``); a websocket
    one that is not valid is refused (``r.bad_upgrade``: 426 for another version, 400 otherwise); any other
    protocol (h2c, made-up tokens) is served as plain HTTP, the Upgrade header dropped."""
    tokens: list[bytes] = []
    key = version = None
    keys = 0
    for name, value in r.headers:
        n = name.lower()
        if n == b"upgrade":
            tokens += [t.strip().lower() for t in value.split(b",") if t.strip()]
        elif n == b"sec-websocket-key":
            key, keys = value.strip(), keys + 1
        elif n == b"sec-websocket-version":
            version = value.strip()
    if not any(t == b"websocket" or t.startswith(b"websocket/") for t in tokens):
        return  # not a websocket: plain HTTP
    ok = tokens == [b"websocket"] and r.method == b"GET" and r.version == "1.1" and not r.has_body and keys == 1
    if ok and key is not None and len(key) == 24:
        try:
            ok = len(binascii.a2b_base64(key, strict_mode=True)) == 16
        except binascii.Error:
            ok = False
    else:
        ok = False
    if not ok:
        r.bad_upgrade = 400
    elif version != b"13":
        r.bad_upgrade = 426
    else:
        r.upgrade = True
        r.ws_key = key


class EngineHttpProtocol(EdgeHttpProtocol):
    """:class:`EdgeHttpProtocol` with its TLS driven by the C engine (:mod:`edge.tls_edge.engine`): one
    ``Conn.feed`` per chunk read runs the handshake (the certificate picked by SNI in C through the index's
    ``select``) and returns the records to send and the decrypted data; no SSLObject, no MemoryBIO calls from Python."""

    __slots__ = ()

    def connection_made(self, transport: Any) -> None:
        if self._admit(transport):
            self.obj = self.srv.engine.conn()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
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
            self._established(obj.sni, obj.session_reused)  # sni: lower-cased, no trailing dot (in C)
        if plain:
            self._app_data(plain)
        if obj.eof and not self.closed:  # the client's close_notify
            self.close()

    def send(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
            return
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
        if self.corked:
            last, self.corked = b"".join(self.corked) + last, None
        if self.hs_done:
            try:
                out = self.obj.shutdown(last)
            except TLSError:
                out = b""
            if out:
                self.transport.write(out)
        self.transport.close()


class _TooLarge(Exception):
    """A request line (414), header line or head (431) over its limit."""

    def __init__(self, status: int, what: str) -> None:
        super().__init__(status, what)
        self.status = status
        self.what = what

    def __str__(self) -> str:
        return f"too large: {self.what}"


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
        self.origins = OriginPools(None)  # replaced at start: the global upstream + per-hostname origins
        self.conns: set[EdgeHttpProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self.ctx: ssl.SSLContext | None = None
        self.engine = self.index.engine  # edge/tls_edge/engine.py: TLS driven in C, when built
        self.settings = settings
        self.hs_timeout = float(settings.edge_handshake_timeout)
        self.head_timeout = float(settings.edge_request_head_timeout)
        self.keepalive_timeout = float(settings.edge_keepalive_timeout)
        self.body_timeout = float(settings.edge_body_timeout)
        self.max_line = int(settings.edge_max_line_bytes)
        self.max_head = int(settings.edge_max_head_bytes)
        self.max_pipeline = int(settings.edge_max_pipeline)
        self.max_per_ip = int(settings.edge_max_conns_per_ip)
        self.public_port = int(settings.https_public_port)
        self.per_ip: dict[str, int] = {}
        # HTTP/2 (edge/tls_edge/h2.py): offered by ALPN per name (h2_allowed), with these limits.
        self.h2_default = bool(settings.edge_http2)
        self.h2_offered = True   # whether any connection may have chosen h2 (checked after each handshake)
        self.h2_max_streams = int(settings.edge_http2_max_streams)
        self.h2_table = int(settings.edge_http2_header_table_bytes)
        self.h2_stream_window = int(settings.edge_http2_stream_window)
        self.h2_conn_window = int(settings.edge_http2_connection_window)
        self.h2_max_resets = int(settings.edge_http2_max_resets)
        self.h2_max_controls = int(settings.edge_http2_max_control_frames)
        self.h2_flood_window = float(settings.edge_http2_flood_window)
        self.h2_calmed = 0       # HTTP/2 connections cut with GOAWAY(ENHANCE_YOUR_CALM)
        self.refused = 0  # connections closed at once: their address had edge_max_conns_per_ip open
        # One sweeper checks every connection's deadline (no timer per connection); it runs often enough that no
        # deadline is passed by more than a quarter of the shortest timeout (and at most a second).
        self.sweep_interval = min(1.0, max(0.05, min(self.hs_timeout, self.head_timeout, self.keepalive_timeout,
                                                     self.body_timeout) / 4))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task | None = None
        self._peak = 0          # most connections open since memory was last handed back (see _sweep)
        self._next_trim = 0.0

    async def start(self, host: str, port: int, ssl_ctx: ssl.SSLContext, *, reuse_port: bool = False,
                    backlog: int = 1024, sock: socket.socket | None = None) -> asyncio.AbstractServer:
        """Listen on plain TCP; every connection runs TLS with ``ssl_ctx`` (its sni_callback picks the
        certificate) inside :class:`EdgeHttpProtocol`. ``sock``: a listening socket to serve instead of binding
        ``host:port`` (handed over by the service manager, edge/listenfds.py)."""
        loop = self.loop = asyncio.get_running_loop()
        self.ctx = ssl_ctx
        s = self.settings
        self.origins = OriginPools(self.upstream, max_pools=s.edge_max_origin_pools,
                                   connect_timeout=s.edge_upstream_connect_timeout,
                                   read_timeout=s.edge_upstream_read_timeout, max_head=self.max_head)
        self.pool = self.origins.default
        self.nodelay = not _loop_sets_nodelay(loop)
        if self.engine is not None:
            self.engine.h2 = self.h2_allowed  # ALPN: h2 per name (the C engine asks during the handshake)
        proto = EngineHttpProtocol if self.engine is not None else EdgeHttpProtocol
        if sock is not None:
            self.server = await loop.create_server(lambda: proto(self), sock=sock, backlog=backlog)
        else:
            self.server = await loop.create_server(lambda: proto(self), host or None, port, backlog=backlog,
                                                   reuse_address=True, reuse_port=reuse_port or None)
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self.server

    def h2_allowed(self, server_name: str | None) -> bool:
        """Whether ALPN may choose h2 on a connection for ``server_name`` (the engine asks in the handshake; memory
        only): the name's own ``http2`` switch (an index entry's, when it has one), else ``edge_http2``; never
        without the nghttp2 extension (``edge.tls_edge._edgeh2`` not built: http/1.1 only)."""
        if not H2_AVAILABLE:
            return False
        if server_name is None:
            return self.h2_default
        hs = self.index.host_settings(server_name.lower().rstrip("."))  # domains.http2 (per-hostname settings)
        v = hs.http2 if hs is not None else None
        return self.h2_default if v is None else bool(v)

    async def _sweep(self) -> None:
        """Close the connections whose phase is past its deadline (handshake, request head, keep-alive idle, body
        progress: not while the edge itself holds reading) or that have not read their answers in time."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = loop.time()
            n = len(self.conns)
            if n > self._peak:
                self._peak = n
            elif self._peak - n >= _TRIM_DROP and now >= self._next_trim:
                # Many connections (a flood?) have ended: hand their freed memory back to the system, at most
                # every _TRIM_EVERY seconds (glibc keeps it in its arenas otherwise).
                self._peak, self._next_trim = n, now + _TRIM_EVERY
                _malloc_trim()
            for c in list(self.conns):
                d = c.deadline
                if d and now >= d and not c.holds and not c.closed:
                    c.timed_out()
                w = c.wdeadline
                if w and now >= w and not c.closed:
                    log.debug("TLS edge: the client did not read its answers in time")
                    c.abort()

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            if c.h2 is not None:
                c.h2.shutdown()  # GOAWAY; closes once its open streams are answered
            elif c.active is None and c.tunnel is None:
                c.close()
        deadline = time.monotonic() + grace
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in list(self.conns):
            c.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.origins.close()


_TRIM_DROP = 128
_TRIM_EVERY = 30.0
_libc: list = []


def _malloc_trim() -> None:
    """glibc's ``malloc_trim(0)`` (a no-op elsewhere): free pages of every arena go back to the system."""
    if not _libc:
        try:
            import ctypes
            _libc.append(ctypes.CDLL(None).malloc_trim)
        except (OSError, AttributeError):
            _libc.append(None)
    if _libc[0] is not None:
        _libc[0](0)


def _loop_sets_nodelay(loop: asyncio.AbstractEventLoop) -> bool:
    """uvloop sets TCP_NODELAY on every TCP transport itself; plain asyncio does too since 3.7 for
    ``create_server`` connections. Checked once, on the first connection otherwise."""
    return type(loop).__module__.startswith("uvloop")
