"""One concern: an HTTP/2 client connection of the TLS edge (ALPN ``h2``), from its preface to its GOAWAY.

The HTTP/2 framing, HPACK, flow control and the stream state machines are nghttp2's (the C library behind curl,
Apache httpd and Node), through the sans-I/O extension type ``edge.tls_edge._edgeh2.Session`` (``_edgeh2.c``); this
module drives one per client connection on top of the TLS driver of :mod:`edge.tls_edge.http`
(which hands over the decrypted bytes once ALPN chose ``h2``), and proxies each stream to the origin over the same
pooled HTTP/1.1 keep-alive connections as HTTP/1.1 requests (:mod:`edge.tls_edge.upstream`): a stream is the
upstream exchange's :class:`~edge.tls_edge.upstream.Downstream`.

Decided as for HTTP/1.1 (:mod:`edge.tls_edge.routing`): ``:authority`` (or ``host``) must name the connection's SNI
(421 otherwise: a browser that coalesced connections opens a new one), unknown names 404, no origin -> placeholder.
No websockets and no extended CONNECT over HTTP/2 (SETTINGS_ENABLE_CONNECT_PROTOCOL is not sent; CONNECT -> 400):
websockets use HTTP/1.1. Without the extension built (no libnghttp2 headers), :data:`AVAILABLE` is false and the
edge does not offer ``h2`` in ALPN: there is no second, Python, implementation.

Limits (settings ``edge_http2_*`` and the HTTP/1.1 ones, docs/http2.md), per stream and per connection:

- at most ``edge_http2_max_streams`` streams open (SETTINGS_MAX_CONCURRENT_STREAMS); more -> RST_STREAM
  (REFUSED_STREAM) for that stream alone, each counted as a reset (in ``_edgeh2.c``);
- header blocks: the HPACK table is ``edge_http2_header_table_bytes``; the decoded header list is at most
  ``edge_max_head_bytes`` (SETTINGS_MAX_HEADER_LIST_SIZE, else GOAWAY(ENHANCE_YOUR_CALM)); the *encoded* block,
  HEADERS plus its CONTINUATIONs, is capped at the same size as the frames arrive, before anything buffers them
  (CONTINUATION flood, CVE-2024-27316 / -27983; a frame-header scanner in ``_edgeh2.c`` ahead of nghttp2, whose
  own CONTINUATION count limit stays on behind it); one header field at most ``edge_max_line_bytes`` (431);
- flow control: request bodies are acknowledged (WINDOW_UPDATE) only once the origin connection took them, so at
  most ``edge_http2_stream_window`` bytes per stream (``edge_http2_connection_window`` per connection) wait in the
  edge; a response is sent no faster than the client's windows allow: the origin's connection stops being read
  while a stream has unsent data (at most one origin read beyond the window waits, queued in the C session);
- rapid reset (CVE-2023-44487): RST_STREAM frames and refused streams are counted per connection over
  ``edge_http2_flood_window`` seconds; past ``edge_http2_max_resets``, GOAWAY(ENHANCE_YOUR_CALM) and close, as
  nginx and HAProxy do; SETTINGS, PING, PRIORITY and empty DATA/HEADERS/CONTINUATION frames likewise against
  ``edge_http2_max_control_frames`` (both counted by the scanner; nghttp2's stream reset rate limit, SETTINGS
  entry cap and outbound ACK queue cap are set as a backstop);
- timeouts: a header block must complete within ``edge_request_head_timeout`` (and the first request must come
  that long after the handshake), a connection without streams closes after ``edge_keepalive_timeout``, a request
  body without progress and a response the client does not take (its window closed) reset the stream after
  ``edge_body_timeout``; a client that does not read what is written at all is cut like an HTTP/1.1 one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any

import httptools

from edge.tls_edge import routing
from edge.tls_edge.upstream import (FORWARDING, HOP_BY_HOP, UpstreamFailed, UpstreamPool, UpstreamRetry,
                                    request_head)

try:
    from edge.tls_edge._edgehttp import request_fields as _fast_request_fields
except ImportError:  # not built: the same in Python (_py_request_fields)
    _fast_request_fields = None

try:
    from edge.tls_edge import _edgeh2
except ImportError:  # not built (no libnghttp2 headers): the edge offers http/1.1 only
    _edgeh2 = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "H2Session", "HOLD_H2_WRITE", "NGHTTP2_VERSION"]

AVAILABLE = _edgeh2 is not None   # whether ALPN may offer h2 at all (EdgeHttpServer.h2_allowed, certificates)
NGHTTP2_VERSION = _edgeh2.NGHTTP2_VERSION if _edgeh2 is not None else None

log = logging.getLogger("edge.proxy")

HOLD_H2_WRITE = 16             # bit of EdgeHttpProtocol.holds: the client does not read what we write

_DROP = HOP_BY_HOP | FORWARDING | {b"expect"}  # request side, as upstream.request_head drops them
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(rb"(/[\x21-\x7e]*|\*)\Z")   # origin-form (no space, no control) or "*"

if _edgeh2 is not None:
    _EV_REQUEST, _EV_REQUEST_END, _EV_DATA, _EV_END = (_edgeh2.EV_REQUEST, _edgeh2.EV_REQUEST_END, _edgeh2.EV_DATA,
                                                       _edgeh2.EV_END)
    _EV_CLOSED, _EV_GOAWAY, _EV_CALM = _edgeh2.EV_CLOSED, _edgeh2.EV_GOAWAY, _edgeh2.EV_CALM
    NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = _edgeh2.NO_ERROR, _edgeh2.PROTOCOL_ERROR, _edgeh2.INTERNAL_ERROR
    REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = _edgeh2.REFUSED_STREAM, _edgeh2.CANCEL, _edgeh2.ENHANCE_YOUR_CALM
    _Error: Any = _edgeh2.Error
else:
    _EV_REQUEST = _EV_REQUEST_END = _EV_DATA = _EV_END = _EV_CLOSED = _EV_GOAWAY = _EV_CALM = -1
    NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x2, 0x7, 0x8, 0xb
    _Error = RuntimeError


def _py_request_fields(fields: list[tuple[bytes, bytes]], max_line: int) -> tuple:
    """What ``_edgehttp.request_fields`` returns, without the extension: ``(method, path, authority, host,
    forwarded_headers, content_length, too_long)`` of a stream's request (nghttp2's field list); the header lines
    the origin gets are those of HTTP/1.1 (:func:`upstream.request_head`: hop-by-hop, Expect and forwarding headers
    dropped), ``host`` left to the edge, the ``cookie`` crumbs joined into one line (RFC 9113 8.2.3), last."""
    method = path = authority = host = clen = None
    too_long = False
    lines: list[bytes] = []
    cookies: list[bytes] = []
    for name, value in fields:
        if len(name) + len(value) + 4 > max_line:
            too_long = True
        if name[0] == 58:  # b":"
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue  # :scheme, :protocol (extended CONNECT: not enabled)
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            host = value
            continue
        if name == b"content-length":
            clen = value
        elif name in _DROP or name.startswith(b"x-forwarded-"):
            continue
        lines += (name, b": ", value, b"\r\n")
    if cookies:
        lines += (b"cookie: ", b"; ".join(cookies), b"\r\n")
    return method, path, authority, host, b"".join(lines), clen, too_long


_request_fields = _fast_request_fields or _py_request_fields


class _Stream:
    """One request stream: the parsed request (what :func:`upstream.request_head` and ``UpstreamConn`` read) and
    the :class:`~edge.tls_edge.upstream.Downstream` its upstream exchange answers. Its response bytes wait in the C
    session (``pending_n``) until the client's windows take them."""

    __slots__ = ("sess", "sid", "method", "url", "kept", "host", "chunked", "has_body", "done", "body",
                 "sink", "task", "up", "unacked", "held", "ended", "reset", "last_rx", "stalled_since", "pool",
                 "wrote")
    # what UpstreamConn and request_head read on a request
    upgrade = False
    ws_key = b""
    keep_alive = True
    last = False
    version = "2"
    expect_continue = False
    tunnel = None
    tail = b""
    h2_fast = True  # upstream.UpstreamConn may hand a plain response head over as fields (send_fields)

    def __init__(self, sess: "H2Session", sid: int) -> None:
        self.sess = sess
        self.sid = sid
        self.done = False
        self.body: list[bytes] = []   # request body received before an upstream took it (unacknowledged)
        self.sink: Any = None         # the upstream connection the body streams to
        self.task: asyncio.Task | None = None
        self.pool: Any = None         # the origin's upstream pool (per hostname), chosen with the route
        self.up: Any = None           # the upstream connection answering (Downstream protocol)
        self.unacked = 0              # request body bytes received but not acknowledged to the client
        self.held = 0                 # HOLD_* bits of the upstream: acknowledge nothing meanwhile
        self.ended = False            # our side is finished (END_STREAM queued or stream reset)
        self.reset = False
        self.wrote = False            # response data given to the session since its last flush
        self.last_rx = 0.0
        self.stalled_since = 0.0      # loop time since which unsent response data waits for the client's window

    @property
    def pending_n(self) -> int:
        """Response bytes of this stream queued in the session: what the client's windows did not take yet."""
        return self.sess.h.pending(self.sid)

    # -- Downstream (edge.tls_edge.upstream) -------------------------------------------------------------------
    @property
    def transport(self) -> Any:
        return self.sess.p.transport

    def send_head(self, r: Any, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str,
                  tunnel: bool) -> str:
        """The origin's response head as HEADERS; returns the downstream framing (``h2`` or ``h2-none``)."""
        if self.ended:
            return "h2-none"
        out = [(b":status", b"%d" % status)]
        has_date = False
        for name, value in headers:
            n = name.lower()
            if n in HOP_BY_HOP:
                continue
            if n == b"date":
                has_date = True
            out.append((n, value))
        if framing.startswith("length:"):
            out.append((b"content-length", framing[7:].encode()))
        if not has_date:
            out.append((b"date", routing.http_date()))
        body = not (self.method == b"HEAD" or status in (204, 304))
        self.sess.send_headers(self, out, end_stream=False)
        return "h2" if body else "h2-none"

    def send_fields(self, fields: list[tuple[bytes, bytes]], data: bytes, start: int, stop: int,
                    last: bool) -> None:
        """The upstream fast lane's response: HEADERS ``fields`` as they go out (``:status`` first, the origin's
        forwarded headers lower-cased, ``content-length``, ``date``), then the body bytes ``data[start:stop]``
        (queued in the session as they are, not copied); ``last``: that is all of it (END_STREAM with it). Not for
        HEAD, 204 or 304 (the lane does not take those)."""
        if self.ended:
            return
        sess = self.sess
        if stop > start:
            sess.send_headers(self, fields, end_stream=False)
            if not self.ended:
                sess.send_data(self, data, last, start, stop)
        else:
            sess.send_headers(self, fields, end_stream=last)

    def send(self, data: bytes) -> None:
        if self.ended or not data:
            return
        self.sess.send_data(self, data)

    def end_stream(self) -> None:
        if self.ended:
            return
        self.sess.end_stream(self)

    def cork(self) -> None:  # frames are gathered anyway: one TLS write per loop iteration (H2Session.flush)
        pass

    def uncork(self) -> None:
        pass

    def close(self, last: bytes = b"") -> None:  # a tunnel's end: no tunnels over HTTP/2
        self.sess.reset_stream(self, CANCEL)

    def hold_reading(self, why: int) -> None:
        self.held |= why

    def release_reading(self, why: int) -> None:
        self.held &= ~why
        if not self.held and self.unacked:
            self.sess.ack(self, self.unacked)

    # -- request body -----------------------------------------------------------------------------------------
    def take_body(self) -> list[bytes]:
        chunks, self.body = self.body, []
        return chunks


class H2Session:
    """The HTTP/2 side of one client connection (``proto``: :class:`edge.tls_edge.http.EdgeHttpProtocol`)."""

    def __init__(self, proto: Any) -> None:
        if _edgeh2 is None:
            raise RuntimeError("HTTP/2 needs edge.tls_edge._edgeh2 (libnghttp2), which is not built")
        self.p = proto
        srv = self.srv = proto.srv
        # The first SETTINGS frame and the connection's WINDOW_UPDATE are queued here; effective at once.
        self.h = _edgeh2.Session(srv.h2_max_streams, srv.h2_table, srv.h2_stream_window, srv.h2_conn_window,
                                 srv.max_head, srv.h2_max_resets, srv.h2_max_controls, srv.h2_flood_window)
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.goaway = False            # no new streams (GOAWAY sent): close once the last one ends
        self.flush_soon = False
        self.wrote: list[_Stream] = []  # streams given response data since the last flush
        self.stalled: dict[int, _Stream] = {}  # streams whose response waits for the client's window
        self.block_seq = 0             # the session's header block counter when block_since was set
        self.block_since = 0.0         # a header block is incomplete since then (0: none)
        loop = srv.loop
        now = loop.time()
        self.idle_since = now
        self.first = True              # no request yet: the first one is due within the head timeout
        self.requests = 0              # streams accepted on this connection
        self.host_memo: tuple[bytes | None, str] = (None, "")  # the last :authority seen and its host_of
        self._reschedule()
        self.flush()

    # -- bytes in ---------------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        h = self.h
        try:
            events = h.feed(data)
        except (_Error, MemoryError) as e:
            log.warning("TLS edge: HTTP/2 session failed: %s", e)
            self._terminate()
            return
        if events:
            self._events(events)
            if self.closed:
                return
        if h.block:
            seq = h.block_seq
            if seq != self.block_seq:
                self.block_seq, self.block_since = seq, self.srv.loop.time()
        elif self.block_since:
            self.block_since = 0.0
        self._reschedule()
        self.flush()

    def _events(self, events: Any) -> None:
        for kind, sid, x in events:
            if kind == _EV_DATA:
                self._on_data(sid, x)
            elif kind == _EV_CLOSED:
                self._on_closed(sid, x)
            elif kind == _EV_REQUEST_END:
                self._on_request(sid, x, True)
            elif kind == _EV_REQUEST:
                self._on_request(sid, x, False)
            elif kind == _EV_END:
                self._on_end(sid)
            elif kind == _EV_GOAWAY:
                self._terminate()
            elif kind == _EV_CALM:
                self.calm(x, queued=True)
            else:  # EV_ERROR: a protocol error (nghttp2 queued its GOAWAY), or a GOAWAY went out or came in
                log.debug("HTTP/2 session over (%s): %s", self.p.sni, x)
                self._terminate()
            if self.closed:
                return

    # -- events -----------------------------------------------------------------------------------------------
    def _on_request(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        srv = self.srv
        if self.goaway:
            self.h.rst_stream(sid, REFUSED_STREAM)
            return
        self.first = False
        self.requests += 1
        s = _Stream(self, sid)
        s.last_rx = srv.loop.time()
        self.streams[sid] = s
        # nghttp2 checked the pseudo-header fields (RFC 9113 8.3) and the field syntax; the origin's header lines
        # are made here once (upstream.request_head takes them as they are: ``kept``)
        method, path, authority, host, kept, clen, too_long = _request_fields(headers, srv.max_line)
        s.method = method or b""
        s.url = path or b""
        s.done = ended
        s.has_body = not ended
        s.chunked = s.has_body and clen is None
        s.kept = kept + b"transfer-encoding: chunked\r\n" if s.chunked else kept
        raw = authority if authority is not None else host or b""
        memo = self.host_memo
        if memo[0] == raw:
            s.host = memo[1]
        else:
            s.host = routing.host_of(raw)
            self.host_memo = (raw, s.host)
        if too_long:
            self.answer(s, routing.BAD_REQUEST[431])
            return
        s.pool = srv.origins.for_host(s.host, srv.index.host_settings)  # per-hostname origin, memory only
        page = routing.decide(self.p.sni, s.host, srv.index.lookup, has_origin=s.pool is not None,
                              placeholder_text=srv.placeholder)
        if page is None:
            if method == b"CONNECT":
                page = routing.NO_CONNECT
            elif (s.method != b"GET" and not _TOKEN.match(s.method)) or not _TARGET.match(s.url):
                page = routing.BAD_TARGET
        if page is not None:
            self.answer(s, page)
            return
        if not self._proxy_now(s):
            s.task = asyncio.ensure_future(self._proxy(s))

    def _on_data(self, sid: int, data: bytes) -> None:
        n = len(data)  # (padding nghttp2 acknowledged itself)
        s = self.streams.get(sid)
        if s is None or s.ended and s.sink is None:
            # a stream we answered already (or reset): its bytes are dropped, the window given back
            self.h.consume(sid, n)
            return
        s.last_rx = self.srv.loop.time()
        if s.sink is not None:
            s.sink.send_body(data, s.chunked)
            if s.held:
                s.unacked += n
            else:
                self.h.consume(sid, n)
        else:
            s.body.append(data)
            s.unacked += n

    def _on_end(self, sid: int) -> None:
        s = self.streams.get(sid)
        if s is None:
            return
        s.done = True
        if s.sink is not None:
            s.sink.end_body(s.chunked)

    def _on_closed(self, sid: int, code: int) -> None:
        """nghttp2 closed the stream: both sides ended, or a RST_STREAM either way."""
        s = self.streams.get(sid)
        if s is None:
            return
        if code or not s.ended:
            s.ended = s.reset = True
            self._drop(s)
        else:
            self._forget(s)

    # -- answering --------------------------------------------------------------------------------------------
    def answer(self, s: _Stream, page: routing.Page) -> None:
        """One of the edge's own pages (421, 404, placeholder, 400, 502) on stream ``s``."""
        if s.ended:
            return
        hdrs = [(b":status", b"%d" % page.status), (b"content-type", page.ctype),
                (b"content-length", b"%d" % len(page.body)), (b"date", routing.http_date())]
        for line in page.headers.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                hdrs.append((name.strip().lower(), value.strip()))
        head_only = s.method == b"HEAD"
        self.send_headers(s, hdrs, end_stream=head_only)
        if not head_only:
            s.send(page.body)
            s.end_stream()

    def send_headers(self, s: _Stream, hdrs: list[tuple[bytes, bytes]], *, end_stream: bool) -> None:
        if not self.h.submit_response(s.sid, hdrs, end_stream):
            s.ended = True  # the stream is gone (reset)
            self._drop(s)
            return
        if end_stream:
            s.ended = True
        self._schedule_flush()

    def send_data(self, s: _Stream, data: bytes, end: bool = False, start: int = 0, stop: int = -1) -> None:
        """Queue ``data`` (``data[start:stop]``) in the session: it goes out as the windows allow (flush checks what
        is left); ``end``: END_STREAM after it."""
        h = self.h
        if (h.submit_data(s.sid, data, end) if stop < 0 else h.submit_data(s.sid, data, end, start, stop)) < 0:
            s.ended = True
            self._drop(s)
            return
        if end:
            s.ended = True
        if not s.wrote:
            s.wrote = True
            self.wrote.append(s)
        self._schedule_flush()

    def end_stream(self, s: _Stream) -> None:
        # END_STREAM once the queued data is out. If the request body is not finished (a 421, the origin's
        # 413...), the rest of it is read and dropped (acknowledged as it comes) until the client ends it, as nginx
        # does, and as the HTTP/1.1 path does; edge_body_timeout bounds it. (RST_STREAM(NO_ERROR) is allowed by
        # RFC 9113 8.1, but curl < 8 reports it as a failed transfer.)
        self.h.submit_data(s.sid, b"", True)
        s.ended = True
        self._schedule_flush()

    def reset_stream(self, s: _Stream, code: int) -> None:
        if s.reset:
            return
        s.ended = s.reset = True
        self.h.rst_stream(s.sid, code)
        self._drop(s)
        self._schedule_flush()

    def ack(self, s: _Stream, n: int) -> None:
        s.unacked = 0
        self.h.consume(s.sid, n)
        self._schedule_flush()

    def _drop(self, s: _Stream) -> None:
        """``s`` is reset: stop its exchange with the origin (that connection is not reused)."""
        t = s.task
        if t is not None and not t.done():
            t.cancel()
        up = s.up
        if up is not None:
            up.abort()
        s.body = []
        if s.unacked:
            n, s.unacked = s.unacked, 0
            self.h.consume(0, n)  # the connection's window back
        self._forget(s)

    def _forget(self, s: _Stream) -> None:
        self.stalled.pop(s.sid, None)
        if self.streams.pop(s.sid, None) is not None and not self.streams:
            self.idle_since = self.srv.loop.time()
            if self.goaway:
                self._terminate()
            elif not self.closed:
                self._reschedule()  # the keep-alive deadline starts now

    # -- the reverse proxy ------------------------------------------------------------------------------------
    def _proxy_now(self, s: _Stream) -> bool:
        """The common case without a task, as on HTTP/1.1: an idle pooled origin connection is there. The exchange
        starts now and :meth:`_proxied` sees how it ended. False: take the coroutine path (:meth:`_proxy`:
        connecting, retrying)."""
        pool: UpstreamPool = s.pool
        if not pool.idle:
            return False
        try:
            head = request_head(s, s.host, False, pool.prefix, self.p.client_ip(), self.srv.public_port)
        except httptools.HttpParserError:
            return False  # the coroutine path answers it
        up = pool.take_idle()
        if up is None:
            return False
        self._begin(s, up, head, lambda exc: self._proxied(s, exc))
        return True

    def _begin(self, s: _Stream, up: Any, head: bytes, on_done: Any = None) -> Any:
        """Start ``s``'s exchange on origin connection ``up``: the head, the request body received so far (then
        acknowledged to the client), its end if it came; later DATA goes straight to ``up`` (``s.sink``). Returns
        what :meth:`UpstreamConn.start` returns."""
        done = up.start(s, s, head, on_done)
        if s.body:
            for c in s.take_body():
                up.send_body(c, s.chunked)
            if s.unacked and not s.held:
                self.ack(s, s.unacked)
        if s.done:
            up.end_body(s.chunked)
        s.sink = up
        return done

    def _proxied(self, s: _Stream, exc: BaseException | None) -> None:
        """The end of an exchange started by :meth:`_proxy_now` (``exc``: how it failed)."""
        s.sink = None
        if exc is None or self.closed or s.ended:
            return  # answered; or the stream or the connection is gone (and its origin connection with it)
        if isinstance(exc, UpstreamRetry) and not s.has_body:
            # the reused connection was closed by the origin before answering: once more, on the coroutine path
            s.task = asyncio.ensure_future(self._proxy(s, retried=True))
            return
        if isinstance(exc, UpstreamFailed) and exc.head_sent:
            log.warning("upstream error for %s: %s", s.host, exc)
            self.reset_stream(s, INTERNAL_ERROR)
        else:
            if not isinstance(exc, UpstreamRetry):
                log.warning("upstream error for %s: %s", s.host, exc)
            self.answer(s, routing.BAD_GATEWAY)
        self.flush()

    async def _proxy(self, s: _Stream, retried: bool = False) -> None:
        srv = self.srv
        pool: UpstreamPool = s.pool
        p = self.p
        try:
            head = request_head(s, s.host, False, pool.prefix, p.client_ip(), srv.public_port)
        except httptools.HttpParserError:
            self.answer(s, routing.BAD_TARGET)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                up, reused = await pool.acquire()
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                log.warning("upstream error for %s: %s", s.host, e)
                self.answer(s, routing.BAD_GATEWAY)
                self.flush()
                return
            if s.ended or self.closed:
                up.abort()
                return
            done = self._begin(s, up, head)
            try:
                await done
            except UpstreamRetry:
                if attempt == 1 and reused and not s.has_body and not retried:
                    s.sink = None
                    continue
                self.answer(s, routing.BAD_GATEWAY)
                self.flush()
                return
            except UpstreamFailed as e:
                log.warning("upstream error for %s: %s", s.host, e)
                if e.head_sent:
                    self.reset_stream(s, INTERNAL_ERROR)
                else:
                    self.answer(s, routing.BAD_GATEWAY)
                self.flush()
                return
            except asyncio.CancelledError:
                up.abort()
                raise
            break
        s.sink = None

    # -- writing ----------------------------------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        if not self.flush_soon and not self.closed:
            self.flush_soon = True
            self.srv.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what the session has ready (several frames in one TLS write); then see which streams' responses
        wait for the client's windows (their origins stop being read) and which of those were taken since."""
        self.flush_soon = False
        if self.closed:
            return
        h = self.h
        p = self.p
        try:
            data = h.send()
            if data and not p.closed:
                p.send(data)
                # send() gives ~64 KiB at a time (page-fault-free buffers); the rest while the client reads: once
                # its transport's buffer is full, resume_writing flushes again
                while h.more and not p.write_paused and not p.closed:
                    p.send(h.send())
        except (_Error, MemoryError) as e:
            log.warning("TLS edge: HTTP/2 session failed: %s", e)
            self._terminate()
            return
        events = h.events()  # streams closed by what was just sent
        if events:
            self._events(events)
            if self.closed:
                return
        if self.wrote:
            wrote, self.wrote = self.wrote, []
            now = 0.0
            for s in wrote:
                s.wrote = False
                if not s.stalled_since and s.sid in self.streams and h.pending(s.sid):
                    now = now or self.srv.loop.time()
                    s.stalled_since = now
                    self.stalled[s.sid] = s
                    up = s.up
                    if up is not None and up.transport is not None:
                        up.transport.pause_reading()
            if now:
                self._reschedule()
        if self.stalled:
            for s in list(self.stalled.values()):
                if not h.pending(s.sid):
                    del self.stalled[s.sid]
                    s.stalled_since = 0.0
                    up = s.up
                    if up is not None and up.transport is not None and not self.p.write_paused:
                        up.transport.resume_reading()

    def pause_writing(self) -> None:
        """The client does not read what is written: stop the origins' side and stop reading its frames."""
        for s in self.streams.values():
            up = s.up
            if up is not None and up.transport is not None:
                up.transport.pause_reading()
        self.p.hold_reading(HOLD_H2_WRITE)

    def resume_writing(self) -> None:
        for s in self.streams.values():
            up = s.up
            if up is not None and up.transport is not None and not s.stalled_since:
                up.transport.resume_reading()
        self.p.release_reading(HOLD_H2_WRITE)
        if self.h.more:
            self._schedule_flush()  # what flush left while the client's transport was full

    # -- ending -----------------------------------------------------------------------------------------------
    def calm(self, why: str, queued: bool = False) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) and close: a client over a flood limit (``queued``: the session has queued
        that GOAWAY itself)."""
        log.info("TLS edge: HTTP/2 client cut: %s", why)
        self.srv.h2_calmed += 1
        if not queued:
            self.h.goaway(ENHANCE_YOUR_CALM, True)
        self._terminate()

    def _terminate(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in list(self.streams.values()):
            s.ended = True
            self._drop(s)
        h = self.h
        try:
            data = h.send()
            if h.more:  # what is queued goes out before the close (bounded by what the session holds)
                parts = [data]
                while h.more:
                    parts.append(h.send())
                data = b"".join(parts)
        except (_Error, MemoryError):
            data = b""
        self.p.close(data)

    def shutdown(self) -> None:
        """Graceful: GOAWAY(NO_ERROR) now, close once the open streams are answered."""
        if self.closed or self.goaway:
            return
        self.goaway = True
        self.h.goaway(NO_ERROR, False)
        if not self.streams:
            self._terminate()
        else:
            self.flush()

    def connection_lost(self) -> None:
        self.closed = True
        for s in list(self.streams.values()):
            s.ended = True
            self._drop(s)

    # -- deadlines (the HTTP layer's sweeper calls timed_out when proto.deadline passed) -----------------------
    def _reschedule(self) -> None:
        """The next moment something may time out: a header block, the idle connection, a stalled stream."""
        srv = self.srv
        d = 0.0
        if self.block_since:
            d = self.block_since + srv.head_timeout
        if not self.streams:
            t = self.idle_since + (srv.head_timeout if self.first else srv.keepalive_timeout)
            d = t if not d or t < d else d
        else:
            for s in self.streams.values():
                if s.stalled_since:
                    t = s.stalled_since + srv.body_timeout
                elif not s.done:
                    t = s.last_rx + srv.body_timeout
                else:
                    continue
                if not d or t < d:
                    d = t
        self.p.deadline = d

    def timed_out(self) -> None:
        srv = self.srv
        now = srv.loop.time()
        if self.block_since and now - self.block_since >= srv.head_timeout:
            log.debug("TLS edge: HTTP/2 header block timed out")
            self._terminate_with(PROTOCOL_ERROR)
            return
        if not self.streams:
            limit = srv.head_timeout if self.first else srv.keepalive_timeout
            if now - self.idle_since >= limit:
                self._terminate_with(NO_ERROR)
                return
        for s in list(self.streams.values()):
            if s.stalled_since and now - s.stalled_since >= srv.body_timeout:
                log.debug("TLS edge: HTTP/2 client did not open its window in time")
                self.reset_stream(s, CANCEL)
            elif not s.done and not s.stalled_since and now - s.last_rx >= srv.body_timeout:
                log.debug("TLS edge: HTTP/2 request body timed out")
                self.reset_stream(s, CANCEL)
        self._reschedule()
        self.flush()

    def _terminate_with(self, code: int) -> None:
        self.h.goaway(code, True)
        self._terminate()
