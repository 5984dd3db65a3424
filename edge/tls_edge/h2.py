"""One concern: an HTTP/2 client connection of the TLS edge (ALPN ``h2``), from its preface to its GOAWAY.

The HTTP/2 framing, HPACK and the stream state machines are the ``h2`` library's (python-hyper, sans-I/O); this
module drives one ``H2Connection`` per client connection on top of the TLS driver of :mod:`edge.tls_edge.http`
(which hands over the decrypted bytes once ALPN chose ``h2``), and proxies each stream to the origin over the same
pooled HTTP/1.1 keep-alive connections as HTTP/1.1 requests (:mod:`edge.tls_edge.upstream`): a stream is the
upstream exchange's :class:`~edge.tls_edge.upstream.Downstream`.

Decided as for HTTP/1.1 (:mod:`edge.tls_edge.routing`): ``:authority`` (or ``host``) must name the connection's SNI
(421 otherwise: a browser that coalesced connections opens a new one), unknown names 404, no origin -> placeholder.
No websockets and no extended CONNECT over HTTP/2 (SETTINGS_ENABLE_CONNECT_PROTOCOL is not sent; CONNECT -> 400):
websockets use HTTP/1.1.

Limits (settings ``edge_http2_*`` and the HTTP/1.1 ones, docs/http2.md), per stream and per connection:

- at most ``edge_http2_max_streams`` streams open (SETTINGS_MAX_CONCURRENT_STREAMS); more -> RST_STREAM
  (REFUSED_STREAM), each counted as a reset;
- header blocks: the HPACK table is ``edge_http2_header_table_bytes``; the decoded header list is at most
  ``edge_max_head_bytes`` (SETTINGS_MAX_HEADER_LIST_SIZE, else GOAWAY(ENHANCE_YOUR_CALM)); the *encoded* block,
  HEADERS plus its CONTINUATIONs, is capped at the same size as the frames arrive, before anything buffers them
  (CONTINUATION flood, CVE-2024-27316 / -27983); one header field at most ``edge_max_line_bytes`` (431);
- flow control: request bodies are acknowledged (WINDOW_UPDATE) only once the origin connection took them, so at
  most ``edge_http2_stream_window`` bytes per stream (``edge_http2_connection_window`` per connection) wait in the
  edge; a response is sent no faster than the client's windows allow: the origin's connection stops being read
  while a stream has unsent data (at most one origin read beyond the window waits here);
- rapid reset (CVE-2023-44487): RST_STREAM frames and refused streams are counted per connection over
  ``edge_http2_flood_window`` seconds; past ``edge_http2_max_resets``, GOAWAY(ENHANCE_YOUR_CALM) and close, as
  nginx and HAProxy do; SETTINGS, PING, PRIORITY and empty DATA/HEADERS/CONTINUATION frames likewise against
  ``edge_http2_max_control_frames``;
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
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset, WindowUpdated
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings

from edge.tls_edge import routing
from edge.tls_edge.upstream import HOP_BY_HOP, UpstreamFailed, UpstreamPool, UpstreamRetry, request_head

__all__ = ["H2Session", "HOLD_H2_WRITE"]

log = logging.getLogger("edge.proxy")

HOLD_H2_WRITE = 16             # bit of EdgeHttpProtocol.holds: the client does not read what we write

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(rb"(/[\x21-\x7e]*|\*)\Z")   # origin-form (no space, no control) or "*"
_PREFACE_LEN = 24

# Frame types and flags (RFC 9113 section 6) the scanner looks at.
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PING, _CONTINUATION = 0, 1, 2, 3, 4, 6, 9
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


class _EdgeH2Connection(H2Connection):
    """``H2Connection`` that leaves the concurrent-stream check to the edge: h2 treats one stream too many as a
    connection error (PROTOCOL_ERROR); the edge refuses just that stream (REFUSED_STREAM), as nginx does."""

    @property
    def open_inbound_streams(self) -> int:
        n = H2Connection.open_inbound_streams.fget(self)  # also forgets closed streams
        return min(n, self.local_settings.max_concurrent_streams - 1)


class _Stream:
    """One request stream: the parsed request (what :func:`upstream.request_head` and ``UpstreamConn`` read) and
    the :class:`~edge.tls_edge.upstream.Downstream` its upstream exchange answers."""

    __slots__ = ("sess", "sid", "method", "url", "headers", "host", "chunked", "has_body", "done", "body",
                 "sink", "task", "up", "unacked", "held", "pending", "pending_n", "end_pending", "ended", "reset",
                 "last_rx", "stalled_since", "pool")
    # what UpstreamConn and request_head read on a request
    upgrade = False
    ws_key = b""
    keep_alive = True
    last = False
    version = "2"
    expect_continue = False
    tunnel = None
    tail = b""

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
        self.pending: list[bytes] = []  # response bytes the client's window does not allow yet
        self.pending_n = 0
        self.end_pending = False      # END_STREAM to send once pending is out
        self.ended = False            # our side is finished (END_STREAM sent or stream reset)
        self.reset = False
        self.last_rx = 0.0
        self.stalled_since = 0.0      # loop time since which unsent response data waits for the client's window

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

    def send(self, data: bytes) -> None:
        if self.ended or not data:
            return
        if self.pending:
            self.pending.append(data)
            self.pending_n += len(data)
            return
        self.sess.send_data(self, data)

    def end_stream(self) -> None:
        if self.ended:
            return
        if self.pending:
            self.end_pending = True
            return
        self.sess.end_stream(self)

    def cork(self) -> None:  # frames are gathered anyway: one TLS write per loop iteration (H2Session.flush)
        pass

    def uncork(self) -> None:
        pass

    def close(self, last: bytes = b"") -> None:  # a tunnel's end: no tunnels over HTTP/2
        self.sess.reset_stream(self, ErrorCodes.CANCEL)

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
        self.p = proto
        srv = self.srv = proto.srv
        cfg = H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                              normalize_inbound_headers=True, validate_outbound_headers=False,
                              normalize_outbound_headers=False)
        c = self.conn = _EdgeH2Connection(cfg)
        # Effective at once (not waiting for the client's ACK) and sent in the first SETTINGS frame.
        c.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: srv.h2_max_streams,
            SettingCodes.HEADER_TABLE_SIZE: srv.h2_table,
            SettingCodes.MAX_HEADER_LIST_SIZE: srv.max_head,
            SettingCodes.INITIAL_WINDOW_SIZE: srv.h2_stream_window,
            SettingCodes.MAX_FRAME_SIZE: 16384,
        })
        c.decoder.max_header_list_size = srv.max_head
        c.decoder.max_allowed_table_size = srv.h2_table
        c.initiate_connection()
        if srv.h2_conn_window > 65535:
            c.increment_flow_control_window(srv.h2_conn_window - 65535)
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.goaway = False            # no new streams (GOAWAY sent): close once the last one ends
        self.flush_soon = False
        # frame scanner (before h2 sees the bytes): preface, then 9-byte headers and payloads skipped
        self.preface = _PREFACE_LEN
        self.fhead = b""
        self.skip = 0
        self.block = 0                 # bytes of the header block being received (HEADERS + CONTINUATIONs)
        self.block_since = 0.0
        loop = srv.loop
        now = loop.time()
        self.win_start = now
        self.resets = 0
        self.controls = 0
        self.idle_since = now
        self.first = True              # no request yet: the first one is due within the head timeout
        self.requests = 0              # streams accepted on this connection
        self._reschedule()
        self.flush()

    # -- bytes in ---------------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        why = self._scan(data)
        if why is not None:
            self.calm(why)
            return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as e:  # h2 has queued its GOAWAY (its error code)
            log.debug("HTTP/2 protocol error from the client (%s): %s", self.p.sni, e)
            self._terminate()
            return
        for ev in events:
            t = type(ev)
            if t is DataReceived:
                self._on_data(ev)
            elif t is RequestReceived:
                self._on_request(ev)
            elif t is StreamEnded:
                self._on_end(ev.stream_id)
            elif t is WindowUpdated:
                self._on_window(ev.stream_id)
            elif t is StreamReset:
                self._on_reset(ev.stream_id)
            elif t is ConnectionTerminated:
                self._terminate(sent_goaway=True)
                return
            if self.closed:
                return
        self._reschedule()
        self.flush()

    def _scan(self, data: bytes) -> str | None:
        """Walk the frame headers of ``data`` (before h2 buffers anything): cap header blocks across CONTINUATION
        frames, count resets and control frames. Returns why the connection must stop, or None."""
        n = len(data)
        pos = 0
        if self.preface:
            k = min(self.preface, n)
            self.preface -= k
            pos = k
        srv = self.srv
        while pos < n:
            if self.skip:
                k = min(self.skip, n - pos)
                self.skip -= k
                pos += k
                continue
            need = 9 - len(self.fhead)
            if n - pos < need:
                self.fhead += data[pos:]
                return None
            h = self.fhead + data[pos:pos + need] if self.fhead else data[pos:pos + 9]
            self.fhead = b""
            pos += need
            length = (h[0] << 16) | (h[1] << 8) | h[2]
            ftype, flags = h[3], h[4]
            self.skip = length
            if ftype == _DATA:
                if length == 0 and not flags & _END_STREAM:
                    self.controls += 1
            elif ftype == _HEADERS or ftype == _CONTINUATION:
                if ftype == _HEADERS:
                    self.block = 0
                    self.block_since = srv.loop.time()
                self.block += length
                if self.block > srv.max_head:
                    return "a header block over the limit (CONTINUATION flood)"
                if length == 0 and not flags & (_END_HEADERS | _END_STREAM):
                    self.controls += 1
                if flags & _END_HEADERS:
                    self.block = 0
            elif ftype == _RST:
                self.resets += 1
            elif ftype == _PRIORITY or ((ftype == _SETTINGS or ftype == _PING) and not flags & _ACK):
                self.controls += 1
            else:
                continue
            if self.resets > srv.h2_max_resets or self.controls > srv.h2_max_controls:
                now = srv.loop.time()
                if now - self.win_start >= srv.h2_flood_window:
                    self.win_start, self.resets, self.controls = now, 0, 0
                elif self.resets > srv.h2_max_resets:
                    return "too many streams reset (rapid reset)"
                else:
                    return "too many control frames (SETTINGS/PING/PRIORITY/empty frames)"
        return None

    # -- events -----------------------------------------------------------------------------------------------
    def _on_request(self, ev: RequestReceived) -> None:
        sid = ev.stream_id
        srv = self.srv
        if self.goaway:
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= srv.h2_max_streams:
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self.resets += 1
            if self.resets > srv.h2_max_resets and srv.loop.time() - self.win_start < srv.h2_flood_window:
                self.calm("too many streams refused")
            return
        self.first = False
        self.requests += 1
        s = _Stream(self, sid)
        s.last_rx = srv.loop.time()
        self.streams[sid] = s
        method = path = authority = host = None
        hdrs: list[tuple[bytes, bytes]] = []
        max_line = srv.max_line
        too_long = False
        for name, value in ev.headers:
            if len(name) + len(value) + 4 > max_line:
                too_long = True
            if name[0] == 58:  # b":"
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue  # :scheme (h2 checked it is there), :protocol (extended CONNECT: not enabled)
            if name == b"host":
                host = value
            hdrs.append((name, value))
        s.method = method or b""
        s.url = path or b""
        s.headers = hdrs
        s.has_body = s.chunked = ev.stream_ended is None
        if s.has_body:
            for name, value in hdrs:
                if name == b"content-length":
                    s.chunked = False
                    break
        s.host = routing.host_of(authority if authority is not None else host or b"")
        if too_long:
            self.answer(s, routing.BAD_REQUEST[431])
            return
        s.pool = srv.origins.for_host(s.host, srv.index.host_settings)  # per-hostname origin, memory only
        page = routing.decide(self.p.sni, s.host, srv.index.lookup, has_origin=s.pool is not None,
                              placeholder_text=srv.placeholder)
        if page is None:
            if method == b"CONNECT":
                page = routing.NO_CONNECT
            elif not _TOKEN.match(s.method) or not _TARGET.match(s.url):
                page = routing.BAD_TARGET
        if page is not None:
            self.answer(s, page)
            return
        s.task = asyncio.ensure_future(self._proxy(s))

    def _on_data(self, ev: DataReceived) -> None:
        n = ev.flow_controlled_length
        s = self.streams.get(ev.stream_id)
        if s is None or s.ended and s.sink is None:
            if n:  # a stream we answered already (or reset): its bytes are dropped, the window given back
                self._ack_conn(ev.stream_id, n)
            return
        s.last_rx = self.srv.loop.time()
        data = ev.data
        if s.sink is not None:
            s.sink.send_body(data, s.chunked)
            if s.held:
                s.unacked += n
            elif n:
                self.ack(s, n)
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
        self._maybe_forget(s)

    def _on_window(self, sid: int) -> None:
        if sid:
            s = self.streams.get(sid)
            if s is not None and s.pending:
                self._drain(s)
            return
        for s in list(self.streams.values()):
            if s.pending:
                self._drain(s)
                if self.conn.outbound_flow_control_window <= 0:
                    break

    def _on_reset(self, sid: int) -> None:
        s = self.streams.get(sid)
        if s is None:
            return
        s.ended = s.reset = True
        self._drop(s)

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
        try:
            self.conn.send_headers(s.sid, hdrs, end_stream=end_stream)
        except (ProtocolError, StreamClosedError):
            s.ended = True
            self._drop(s)
            return
        if end_stream:
            s.ended = True
            self._maybe_forget(s)
        self._schedule_flush()

    def send_data(self, s: _Stream, data: bytes) -> None:
        """Send what the windows allow of ``data`` now; keep the rest (the origin stops being read meanwhile)."""
        c = self.conn
        sid = s.sid
        mv = memoryview(data)
        pos, n = 0, len(data)
        try:
            while pos < n:
                w = min(c.local_flow_control_window(sid), c.max_outbound_frame_size)
                if w <= 0:
                    break
                k = min(w, n - pos)
                c.send_data(sid, mv[pos:pos + k].tobytes() if k < n else data)
                pos += k
        except (ProtocolError, StreamClosedError):
            s.ended = True
            self._drop(s)
            return
        if pos < n:
            s.pending.append(data[pos:])
            s.pending_n += n - pos
            s.stalled_since = self.srv.loop.time()
            up = s.up
            if up is not None and up.transport is not None:
                up.transport.pause_reading()
            self._reschedule()
        self._schedule_flush()

    def _drain(self, s: _Stream) -> None:
        chunks, s.pending, s.pending_n = s.pending, [], 0
        data = b"".join(chunks)
        self.send_data(s, data)
        if self.closed or s.ended:
            return
        if not s.pending:
            s.stalled_since = 0.0
            up = s.up
            if up is not None and up.transport is not None and not self.p.write_paused:
                up.transport.resume_reading()
            if s.end_pending:
                s.end_pending = False
                self.end_stream(s)

    def end_stream(self, s: _Stream) -> None:
        try:
            self.conn.end_stream(s.sid)
        except (ProtocolError, StreamClosedError):
            pass
        s.ended = True
        if not s.done:
            # The response is complete before the request body (a 421, the origin's 413...): the rest of the body
            # is read and dropped (acknowledged as it comes) until the client ends it, as nginx does, and as the
            # HTTP/1.1 path does; edge_body_timeout bounds it. (RST_STREAM(NO_ERROR) is allowed by RFC 9113 8.1,
            # but curl < 8 reports it as a failed transfer.)
            self._schedule_flush()
            return
        self._maybe_forget(s)
        self._schedule_flush()

    def reset_stream(self, s: _Stream, code: int) -> None:
        if s.reset:
            return
        self._reset(s, code)
        self._schedule_flush()

    def _reset(self, s: _Stream, code: int) -> None:
        s.ended = s.reset = True
        try:
            self.conn.reset_stream(s.sid, code)
        except (ProtocolError, StreamClosedError):
            pass
        self._drop(s)

    def ack(self, s: _Stream, n: int) -> None:
        s.unacked = 0
        self._ack_conn(s.sid, n)

    def _ack_conn(self, sid: int, n: int) -> None:
        try:
            self.conn.acknowledge_received_data(n, sid)
        except (ProtocolError, StreamClosedError, KeyError):
            try:  # the stream is gone: give the connection's window back at least
                self.conn.acknowledge_received_data(n, 0)
            except (ProtocolError, KeyError):
                pass
        self._schedule_flush()

    def _maybe_forget(self, s: _Stream) -> None:
        if s.ended and s.done and not s.pending:
            self._forget(s)

    def _drop(self, s: _Stream) -> None:
        """``s`` is reset: stop its exchange with the origin (that connection is not reused)."""
        t = s.task
        if t is not None and not t.done():
            t.cancel()
        up = s.up
        if up is not None:
            up.abort()
        s.pending, s.pending_n, s.body = [], 0, []
        if s.unacked:
            n, s.unacked = s.unacked, 0
            try:
                self.conn.acknowledge_received_data(n, 0)
            except (ProtocolError, KeyError):
                pass
        self._forget(s)

    def _forget(self, s: _Stream) -> None:
        if self.streams.pop(s.sid, None) is not None and not self.streams:
            self.idle_since = self.srv.loop.time()
            if self.goaway:
                self._terminate()
            elif not self.closed:
                self._reschedule()  # the keep-alive deadline starts now

    # -- the reverse proxy ------------------------------------------------------------------------------------
    async def _proxy(self, s: _Stream) -> None:
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
            done = up.start(s, s, head)
            if s.body:
                for c in s.take_body():
                    up.send_body(c, s.chunked)
                if s.unacked and not s.held:
                    self.ack(s, s.unacked)
            if s.done:
                up.end_body(s.chunked)
            s.sink = up
            try:
                await done
            except UpstreamRetry:
                if attempt == 1 and reused and not s.has_body:
                    s.sink = None
                    continue
                self.answer(s, routing.BAD_GATEWAY)
                self.flush()
                return
            except UpstreamFailed as e:
                log.warning("upstream error for %s: %s", s.host, e)
                if e.head_sent:
                    self.reset_stream(s, ErrorCodes.INTERNAL_ERROR)
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
        """Send what h2 has queued (several frames in one TLS write)."""
        self.flush_soon = False
        data = self.conn.data_to_send()
        if data and not self.p.closed:
            self.p.send(data)

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
            if up is not None and up.transport is not None and not s.pending:
                up.transport.resume_reading()
        self.p.release_reading(HOLD_H2_WRITE)

    # -- ending -----------------------------------------------------------------------------------------------
    def calm(self, why: str) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) and close: a client over a flood limit."""
        log.info("TLS edge: HTTP/2 client cut: %s", why)
        self.srv.h2_calmed += 1
        try:
            self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        except ProtocolError:
            pass
        self._terminate()

    def _terminate(self, sent_goaway: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for s in list(self.streams.values()):
            s.ended = True
            self._drop(s)
        data = self.conn.data_to_send()
        self.p.close(data)

    def shutdown(self) -> None:
        """Graceful: GOAWAY(NO_ERROR) now, close once the open streams are answered."""
        if self.closed or self.goaway:
            return
        self.goaway = True
        try:
            self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=self.conn.highest_inbound_stream_id)
        except ProtocolError:
            pass
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
        if self.block:
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
        if self.block and now - self.block_since >= srv.head_timeout:
            log.debug("TLS edge: HTTP/2 header block timed out")
            self._terminate_with(ErrorCodes.PROTOCOL_ERROR)
            return
        if not self.streams:
            limit = srv.head_timeout if self.first else srv.keepalive_timeout
            if now - self.idle_since >= limit:
                self._terminate_with(ErrorCodes.NO_ERROR)
                return
        for s in list(self.streams.values()):
            if s.stalled_since and now - s.stalled_since >= srv.body_timeout:
                log.debug("TLS edge: HTTP/2 client did not open its window in time")
                self.reset_stream(s, ErrorCodes.CANCEL)
            elif not s.done and not s.stalled_since and now - s.last_rx >= srv.body_timeout:
                log.debug("TLS edge: HTTP/2 request body timed out")
                self.reset_stream(s, ErrorCodes.CANCEL)
        self._reschedule()
        self.flush()

    def _terminate_with(self, code: int) -> None:
        try:
            self.conn.close_connection(code)
        except ProtocolError:
            pass
        self._terminate()
