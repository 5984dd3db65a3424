"""The TLS edge's HTTP/1.1 layer, lean: one ``asyncio.Protocol`` per connection, parsed by ``httptools`` (llhttp).

Same behaviour as the aiohttp layer in :mod:`edge.proxy` (which stays as the fallback when httptools is missing):

- no SNI -> 421 page; Host (port stripped, lower-cased) != SNI name -> 421 page; unknown name -> 404 page;
- no upstream -> the placeholder page (or ``placeholder_text``, used by ``edgecert bench-serve``);
- otherwise a streaming reverse proxy to ``EDGECERT_UPSTREAM``: hop-by-hop headers dropped, ``X-Forwarded-For``
  appended, ``X-Forwarded-Proto``/``X-Forwarded-Host`` set, request bodies streamed (Content-Length kept, chunked
  re-chunked), responses streamed, keep-alive both sides (a small pool of upstream connections), websockets and
  other upgrades passed through as a byte tunnel after the upstream's 101;
- keep-alive and pipelining downstream, ``bench_stats`` counting, ``TCP_NODELAY``.

Why not aiohttp here: on the handshake-bound hot path (one request per connection), aiohttp's per-connection machinery
(RequestHandler task, Request/Response objects, multidicts, the router) is most of the Python time per connection.
This layer answers the 421/404/placeholder cases synchronously from the parser callbacks, without a task; only a
proxied request gets one coroutine. Responses from the origin flow callback to callback (no await per chunk), with
flow control both ways (pause_reading/resume_reading on the other side when a write buffer is full).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
import urllib.parse
from email.utils import formatdate
from typing import Any

import httptools

from edge.tls_edge.aiohttp_layer import HOP_BY_HOP, page_html
from edge.tls_edge.engine import Error as _TLS_ERROR

__all__ = ["EdgeHttpServer", "UpstreamPool"]

log = logging.getLogger("edge.proxy")

_HOP = frozenset(h.encode() for h in HOP_BY_HOP) | {b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for",
                                                     b"expect"}
_HOP_RESP = frozenset(h.encode() for h in HOP_BY_HOP)
_WS_KEEP = frozenset({b"upgrade", b"connection"})
_MAX_HEAD = 64 * 1024          # request line + headers
_BUF_HIGH = 1 << 20            # buffered request body before reading pauses
_KEEPALIVE_TIMEOUT = 75.0      # idle downstream keep-alive (aiohttp's default)
_UPSTREAM_IDLE = 30.0          # idle pooled upstream connection
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 300.0
HANDSHAKE_TIMEOUT = 60.0       # as uvloop's/asyncio's ssl_handshake_timeout
SWEEP_INTERVAL = 10.0
_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 421: "Misdirected Request",
            431: "Request Header Fields Too Large", 502: "Bad Gateway"}

_date_cache = [0, b""]


def _nodelay(transport: Any) -> None:
    """No Nagle delay: a response and the close go out at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _date() -> bytes:
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]


def _response(status: int, ctype: bytes, body: bytes, keep_alive: bool, head_only: bool = False) -> bytes:
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n%s\r\n"
            % (status, _REASONS.get(status, "Unknown").encode(), ctype, len(body), _date(),
               b"" if keep_alive else b"Connection: close\r\n"))
    return head if head_only else head + body


def _page(status: int, title: str, body: str, keep_alive: bool, head_only: bool) -> bytes:
    return _response(status, b"text/html; charset=utf-8", page_html(title, body).encode(), keep_alive, head_only)


def _host_of(raw: bytes) -> str:
    h = raw.decode("latin-1").strip()
    if h.startswith("["):
        return h.split("]")[0] + "]"
    if ":" in h:
        h = h.rsplit(":", 1)[0]
    return h.lower().rstrip(".")


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
            _nodelay(transport)

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
        head_only = r.method == b"HEAD"
        sni = self.sni
        if sni is None:
            r.sync = _page(421, "Misdirected request",
                           "This edge serves tenant sites by name and needs TLS Server Name Indication (SNI); "
                           "your client did not send it.", r.keep_alive, head_only)
        else:
            host = ""
            for name, value in r.headers:
                if len(name) == 4 and name.lower() == b"host":
                    host = _host_of(value)
                    break
            if host != sni:
                r.sync = _page(421, "Misdirected request",
                               f"This connection was opened for {_esc(sni)} but asks for "
                               f"{_esc(host or '(no Host)')}. Open a new connection to that name.",
                               r.keep_alive, head_only)
            elif srv.index.lookup(sni) is None:
                r.sync = _page(404, "No site here",
                               f"{_esc(sni)} is not served by this edge (yet). If it is your domain, check its "
                               f"status page or ask the site operator.", r.keep_alive, head_only)
            elif srv.pool is None:
                if srv.placeholder is not None:
                    r.sync = _response(200, b"text/plain; charset=utf-8", srv.placeholder, r.keep_alive, head_only)
                else:
                    r.sync = _page(200, f"{_esc(sni)} is served by edgecert",
                                   "The certificate for this domain is active. No origin (EDGECERT_UPSTREAM) is "
                                   "configured, so this placeholder page is shown.", r.keep_alive, head_only)
            elif r.method == b"CONNECT":
                r.sync = _page(400, "Bad request", "CONNECT is not supported by this edge.", False, head_only)
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
            self.send(_page(status, _REASONS[status], "The request could not be parsed.", False, False))
        self.close()

    # -- the reverse proxy -----------------------------------------------------------------------------------
    async def _proxy(self, r: _Request, host: str) -> None:
        pool: UpstreamPool = self.srv.pool
        ws = r.upgrade
        try:
            head = self._upstream_head(r, host, ws)
        except httptools.HttpParserError:
            r.keep_alive = False
            self.send(_page(400, "Bad request", "The request target could not be parsed.", False, False))
            self._next(r)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                up, reused = await pool.acquire(fresh=ws)
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                log.warning("upstream error for %s: %s", host, e)
                self._bad_gateway(r, "The edge could not reach this site's origin server. Try again shortly.")
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
            except _Retry:
                if attempt == 1 and reused and not r.has_body:
                    r.sink = None
                    continue
                self._bad_gateway(r, "The edge could not reach this site's origin server. Try again shortly.")
                return
            except _UpstreamFailed as e:
                log.warning("upstream error for %s: %s", host, e)
                if e.head_sent:
                    self.abort()
                else:
                    self._bad_gateway(r, "The edge could not reach this site's origin server. Try again shortly.")
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

    def _bad_gateway(self, r: _Request, text: str) -> None:
        r.keep_alive = r.keep_alive and r.done and not r.upgrade
        self.send(_page(502, "Bad gateway", text, r.keep_alive, r.method == b"HEAD"))
        self._next(r)

    def _upstream_head(self, r: _Request, host: str, ws: bool) -> bytes:
        pool: UpstreamPool = self.srv.pool
        url = r.url
        if not url.startswith(b"/"):
            if url == b"*":
                url = b"*"
            else:  # absolute-form: keep path and query
                u = httptools.parse_url(url)
                url = (u.path or b"/") + (b"?" + u.query if u.query else b"")
        drop = _HOP if not ws else (_HOP - {b"upgrade"})
        conn_tokens: set[bytes] = set()
        prior: list[bytes] = []
        for name, value in r.headers:
            n = name.lower()
            if n == b"connection":
                conn_tokens.update(t.strip().lower() for t in value.split(b","))
            elif n == b"x-forwarded-for":
                prior.append(value.strip())
        if ws:
            conn_tokens.discard(b"upgrade")
        parts = [r.method, b" ", pool.prefix + url if url != b"*" else url, b" HTTP/1.1\r\n"]
        for name, value in r.headers:
            n = name.lower()
            if n in drop or n in conn_tokens:
                continue
            parts += (name, b": ", value, b"\r\n")
        peer = self.transport.get_extra_info("peername")
        peer_ip = (peer[0] if peer else "").encode()
        xff = b", ".join(prior + [peer_ip]) if prior else peer_ip
        hb = host.encode("idna") if not host.isascii() else host.encode()
        parts += (b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ", hb,
                  b"\r\nHost: ", hb, b"\r\n")
        if ws:
            parts.append(b"Connection: Upgrade\r\n")
        elif r.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            for name, value in r.headers:
                if name.lower() == b"content-length":
                    parts += (b"Content-Length: ", value.strip(), b"\r\n")
                    break
        parts.append(b"\r\n")
        return b"".join(parts)

    # -- called by the upstream connection ------------------------------------------------------------------
    def response_head(self, r: _Request, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      framing: str, tunnel: bool) -> str:
        """Write the response head downstream; returns the downstream framing: "length", "chunked", "close",
        "none" or "tunnel"."""
        parts = [b"HTTP/1.1 %d " % status, reason or _REASONS.get(status, "Unknown").encode(), b"\r\n"]
        keep = _WS_KEEP if tunnel else frozenset()
        has_date = False
        for name, value in headers:
            n = name.lower()
            if n in _HOP_RESP and n not in keep:
                continue
            if n == b"date":
                has_date = True
            parts += (name, b": ", value, b"\r\n")
        if not has_date:
            parts += (b"Date: ", _date(), b"\r\n")
        if tunnel:
            down = "tunnel"
        elif r.method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            down = "none"
            if framing.startswith("length:"):
                parts += (b"Content-Length: ", framing[7:].encode(), b"\r\n")
        elif framing.startswith("length:"):
            down = "length"
            parts += (b"Content-Length: ", framing[7:].encode(), b"\r\n")
        elif r.version == "1.1":
            down = "chunked"
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            down = "close"
            r.keep_alive = False
        if not tunnel:
            if r.upgrade:
                r.keep_alive = False
            if not r.keep_alive:
                parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        self.send(b"".join(parts))
        return down


class EngineHttpProtocol(EdgeHttpProtocol):
    """:class:`EdgeHttpProtocol` with its TLS driven by the C engine (edge/_edgetls.c, edge/tlsengine.py): one
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
            _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        obj = self.obj
        try:
            out, plain = obj.feed(data)
        except _TLS_ERROR as e:
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
        except _TLS_ERROR:
            self.abort()

    def close(self, last: bytes = b"") -> None:
        if self.closed:
            return
        self.closed = self.closing = True
        if self.hs_done:
            try:
                out = self.obj.shutdown(last)
            except _TLS_ERROR:
                out = b""
            if out:
                self.transport.write(out)
        self.transport.close()


class _TooLarge(Exception):
    def __str__(self) -> str:
        return "too large: request head over 64 KiB"


class _Retry(Exception):
    pass


class _UpstreamFailed(Exception):
    def __init__(self, msg: str, head_sent: bool) -> None:
        super().__init__(msg)
        self.head_sent = head_sent


def _esc(s: str) -> str:
    import html
    return html.escape(s)


class UpstreamConn(asyncio.Protocol):
    """One connection to the origin; carries one exchange at a time, then goes back to the pool."""

    def __init__(self, pool: "UpstreamPool") -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.down: EdgeHttpProtocol | None = None
        self.req: _Request | None = None
        self.done: asyncio.Future | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.head_sent = False
        self.framing = ""
        self.down_framing = ""
        self.closed = False
        self.tunnel_open = False
        self.upgrading = False
        self.write_paused = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.last_io = 0.0
        self.read_timer: asyncio.TimerHandle | None = None

    # exchange ---------------------------------------------------------------------------------------------
    def start(self, down: EdgeHttpProtocol, r: _Request, head: bytes) -> asyncio.Future:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.down, self.req = down, r
        self.headers, self.reason, self.head_sent, self.framing = [], b"", False, ""
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        down.up = self
        self.last_io = loop.time()
        self.read_timer = loop.call_later(_READ_TIMEOUT, self._check_read)
        self.transport.write(head)
        return self.done

    def send_body(self, chunk: bytes, chunked: bool) -> None:
        if self.closed or not chunk:
            return
        if chunked:
            self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            self.transport.write(chunk)

    def end_body(self, chunked: bool) -> None:
        if chunked and not self.closed:
            self.transport.write(b"0\r\n\r\n")

    def _check_read(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_io
        if idle >= _READ_TIMEOUT:
            self._fail("timeout reading from the origin")
            self.abort()
        else:
            self.read_timer = loop.call_later(_READ_TIMEOUT - idle, self._check_read)

    def _fail(self, msg: str) -> None:
        d = self.done
        if d is not None and not d.done():
            d.set_exception(_UpstreamFailed(msg, self.head_sent))
        self._detach()

    def _detach(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        if self.down is not None and self.down.up is self:
            self.down.up = None
            if self.write_paused:
                self.down.transport.resume_reading()
        self.down = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # protocol ---------------------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel_open:
            self.down.send(data)
            return
        if self.down is None:  # idle in the pool: the origin should not talk now
            self.abort()
            return
        self.last_io = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._open_tunnel(data[e.args[0]:])
        except httptools.HttpParserError as e:
            self._fail(f"bad response from the origin: {e}")
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # the downstream side is TLS: no half-close; both close

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.tunnel_open:
            if self.down is not None:
                self.down.close()
            return
        d = self.done
        if d is not None and not d.done():
            if self.framing == "close" and self.head_sent:
                self._complete(reuse=False)  # a close-delimited body ends here
            elif not self.head_sent and not self.headers and not self.reason:
                d.set_exception(_Retry())
                self._detach()
            else:
                self._fail(f"the origin closed the connection mid-response ({exc or 'EOF'})")

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.down is not None:
            self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.down is not None:
            self.down.transport.resume_reading()

    # parser callbacks --------------------------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        status = p.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers, self.reason = [], b""  # interim response (100 Continue...): not forwarded
            return
        r = self.req
        framing = "close"
        for name, value in self.headers:
            n = name.lower()
            if n == b"transfer-encoding":
                framing = "chunked"
                break
            if n == b"content-length":
                framing = "length:" + value.strip().decode("latin-1")
        tunnel = status == 101 and r is not None and r.upgrade
        self.upgrading = tunnel
        self.framing = framing
        self.head_sent = True
        self.down_framing = self.down.response_head(r, status, self.reason, self.headers, framing, tunnel)
        self.reusable = p.should_keep_alive() and framing != "close"
        if r.method == b"HEAD":
            # llhttp would wait for a body that a HEAD response does not have: the exchange ends here, and this
            # connection's parser state is unknown, so it is not reused.
            self.reusable = False
            self._complete(reuse=False)

    def on_body(self, body: bytes) -> None:
        d = self.down
        if d is None or self.down_framing == "none":
            return
        if self.down_framing == "chunked":
            d.send(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            d.send(body)

    def on_message_complete(self) -> None:
        if not self.head_sent or self.upgrading:
            return  # end of an interim 1xx response, or of a 101 (the tunnel opens next)
        if self.down is not None and self.done is not None and not self.done.done():
            self._complete(reuse=self.reusable)

    def _complete(self, reuse: bool) -> None:
        d = self.down
        if d is not None and self.down_framing == "chunked":
            d.send(b"0\r\n\r\n")
        fut = self.done
        r = self.req
        self._detach()
        self.req = None
        if fut is not None and not fut.done():
            fut.set_result(None)
        if reuse and r is not None and r.done and not self.closed:
            self.done = None
            self.pool.release(self)
        else:
            self.abort()

    def _open_tunnel(self, tail: bytes) -> None:
        d = self.down
        if d is None or self.req is None or not self.req.upgrade or not self.head_sent:
            self._fail("unexpected upgrade from the origin")
            self.abort()
            return
        self.tunnel_open = True
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        d.up = None
        d.tunnel = self
        if tail:
            d.send(tail)
        if d.tail:
            self.transport.write(d.tail)
            d.tail = b""
        fut = self.done
        if fut is not None and not fut.done():
            fut.set_result(None)


class UpstreamPool:
    """Keep-alive connections to the one origin (``EDGECERT_UPSTREAM``)."""

    def __init__(self, upstream: str, *, max_idle: int = 256) -> None:
        u = urllib.parse.urlsplit(upstream)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"upstream must be http(s)://host[:port][/prefix], not {upstream!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/").encode()
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if u.scheme == "https" else None
        self.idle: list[UpstreamConn] = []
        self.max_idle = max_idle
        self.loop = asyncio.get_event_loop()

    async def acquire(self, *, fresh: bool = False) -> tuple[UpstreamConn, bool]:
        idle = self.idle
        while idle and not fresh:
            c = idle.pop()
            if not c.closed and not c.transport.is_closing():
                return c, True
        loop = asyncio.get_running_loop()
        self.loop = loop
        _, c = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConn(self), self.host, self.port, ssl=self.ssl,
                                   server_hostname=self.host if self.ssl else None),
            _CONNECT_TIMEOUT)
        return c, False

    def release(self, c: UpstreamConn) -> None:
        if len(self.idle) >= self.max_idle or c.closed:
            c.abort()
            return
        c.parser = httptools.HttpResponseParser(c)  # a fresh parser: state is per message anyway
        c.transport.resume_reading()  # in case the last client was slow (flow control paused it)
        self.idle.append(c)
        c.idle_timer = self.loop.call_later(_UPSTREAM_IDLE, self._expire, c)

    def _expire(self, c: UpstreamConn) -> None:
        c.idle_timer = None
        self.forget(c)
        c.abort()

    def forget(self, c: UpstreamConn) -> None:
        try:
            self.idle.remove(c)
        except ValueError:
            pass

    def close(self) -> None:
        for c in self.idle:
            c.abort()
        self.idle.clear()


class EdgeHttpServer:
    """The TLS edge's listener(s): ``await start(host, port, ssl_ctx)``, ``await stop()``."""

    def __init__(self, services: Any) -> None:
        settings = services.settings
        self.index = services.index
        self.placeholder: bytes | None = None
        text = settings.extra.get("placeholder_text")
        if text is not None:
            self.placeholder = text.encode()
        self.count = services.bench_stats if settings.extra.get("bench_stats") else None
        self.nodelay = True
        self.upstream = settings.upstream
        self.pool: UpstreamPool | None = None
        self.conns: set[EdgeHttpProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self.ctx: ssl.SSLContext | None = None
        self.engine = self.index.engine  # edge/tlsengine.py: TLS driven in C, when built
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
