"""One concern: the origin side of a proxied request. The TLS edge's upstream side: keep-alive connections to the
origin (``EDGECERT_UPSTREAM``), the request head sent to it (hop-by-hop headers dropped; every forwarding header the client sent dropped and the edge's own set:
``X-Forwarded-For``/``-Proto``/``-Host``/``-Port``, ``X-Real-IP``, ``Forwarded``) and the response head passed back;
a 101 turns the exchange into a byte tunnel, only for a valid websocket handshake answered with the right
``Sec-WebSocket-Accept``. Timeouts: connecting, and each read (the first byte included); the response head is
bounded like the request's.

The downstream side (:mod:`edge.tls_edge.http`, or an HTTP/2 stream of :mod:`edge.tls_edge.h2`) is seen through
the small :class:`Downstream` protocol, which also writes the response head in its own framing. Responses
from the origin flow callback to callback (no await per chunk), with flow control both ways (pause_reading /
resume_reading on the other side when a write buffer is full). A plain response head (HTTP/1.1, a Content-Length,
nothing odd) takes the fast lane: parsed in one C call (``_edgehttp.c``) and, for an HTTP/1.1 client, rewritten and
written with the body bytes that came with it, or, for an HTTP/2 stream, turned into its HEADERS fields and given
with those bytes; anything else goes through httptools' callbacks.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
import socket
import ssl
import logging
import urllib.parse
from collections import OrderedDict
from typing import Any, Protocol

import httptools

from edge.addresses import forbidden_reason
from edge.tls_edge.routing import REASONS, http_date

try:  # the fast lane for plain heads (edge/tls_edge/_edgehttp.c); without it every head goes through httptools
    from edge.tls_edge._edgehttp import parse_request as fast_request, parse_response as fast_response
    from edge.tls_edge._edgehttp import response_fields as fast_fields
except ImportError:  # pragma: no cover - the extension is optional (setup.py)
    fast_request = fast_response = fast_fields = None

__all__ = ["UpstreamConn", "UpstreamPool", "OriginPools", "UpstreamFailed", "UpstreamRetry", "Downstream", "HOP_BY_HOP",
           "FORWARDING", "HOLD_UPSTREAM", "HOLD_UPGRADE", "forwarding", "request_head", "response_head", "set_nodelay",
           "websocket_accept"]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection", b"host",
                        b"content-length"})
# Forwarding headers a client may send that the edge does not vouch for: dropped from every request (any other
# ``X-Forwarded-*`` too); the edge sets its own (see request_head, docs/operator-guide.md).
FORWARDING = frozenset({b"forwarded", b"x-real-ip", b"x-original-host", b"x-host", b"x-original-url",
                        b"x-rewrite-url", b"x-client-ip", b"true-client-ip", b"cf-connecting-ip", b"client-ip",
                        b"x-cluster-client-ip", b"fastly-client-ip", b"x-original-forwarded-for",
                        b"x-proxyuser-ip"})
_HOP = HOP_BY_HOP | FORWARDING | {b"expect"}  # request side
_WS_KEEP = frozenset({b"upgrade", b"connection"})
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_UPSTREAM_IDLE = 30.0          # idle pooled upstream connection

# Why a client connection stops being read (bits of EdgeHttpProtocol.holds; the HTTP layer has its own too).
HOLD_UPSTREAM = 1              # the origin does not take the request body as fast as the client sends it
HOLD_UPGRADE = 2               # an upgrade request waits for the origin's 101

FAST_H1 = 1                    # UpstreamConn.fast: the response head goes to an HTTP/1.1 client as rewritten bytes
FAST_H2 = 2                    # ... to an HTTP/2 stream as its HEADERS fields


class UpstreamRetry(Exception):
    """The origin closed a reused keep-alive connection before answering: the request may be sent again."""


class UpstreamFailed(Exception):
    """The exchange with the origin failed; ``head_sent``: the response head already went downstream."""

    def __init__(self, msg: str, head_sent: bool) -> None:
        super().__init__(msg)
        self.head_sent = head_sent


class Downstream(Protocol):
    """The client connection an exchange answers (:class:`edge.tls_edge.http.EdgeHttpProtocol`)."""
    transport: Any
    up: UpstreamConn | None
    tunnel: UpstreamConn | None
    tail: bytes

    def send(self, data: bytes) -> None: ...

    def send_head(self, r: Any, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str,
                  tunnel: bool) -> str:
        """Send the origin's response head (HTTP/1.1: :func:`response_head`; HTTP/2: a HEADERS frame); returns
        the downstream framing: "length", "chunked", "close", "none", "tunnel" (HTTP/1.1), "h2", "h2-none"."""

    def end_stream(self) -> None:
        """HTTP/2 only (framing "h2"/"h2-none"): the response is complete."""

    def cork(self) -> None:
        """Gather what is sent until :meth:`uncork` (one read of the origin's) into one write."""

    def uncork(self) -> None: ...

    def close(self, last: bytes = b"") -> None: ...

    def hold_reading(self, why: int) -> None: ...

    def release_reading(self, why: int) -> None: ...


def set_nodelay(transport: Any) -> None:
    """No Nagle delay: a response and the close go out at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def websocket_accept(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value that answers ``Sec-WebSocket-Key: key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


_QUOTE = re.compile(r'[:\[\]";,= ]')


def _quoted(v: str) -> str:
    return f'"{v}"' if _QUOTE.search(v) else v


def request_head(r: Any, host: str, ws: bool, prefix: bytes, peer_ip: str, port: int = 443) -> bytes:
    """The head of request ``r`` (the HTTP layer's parsed request) as sent to the origin under ``prefix``: the
    client's forwarding headers dropped (:data:`FORWARDING`, every ``X-Forwarded-*``) and the edge's set from what
    it knows (the peer address ``peer_ip``, https, ``host``, the public port ``port``).

    Raises:
        httptools.HttpParserError: the request target does not parse.
    """
    url = r.url
    if not url.startswith(b"/"):
        if url == b"*":
            url = b"*"
        else:  # absolute-form: keep path and query
            u = httptools.parse_url(url)
            url = (u.path or b"/") + (b"?" + u.query if u.query else b"")
    kept = getattr(r, "kept", None)
    if kept is not None:  # parsed by the fast lane: the forwarded headers are ready (edge/tls_edge/_edgehttp.c)
        return b"".join((r.method, b" ", prefix + url if url != b"*" else url, b" HTTP/1.1\r\n", kept,
                         forwarding(peer_ip, host, port), b"\r\n"))
    drop = _HOP if not ws else (_HOP - {b"upgrade"})
    conn_tokens: set[bytes] = set()
    for name, value in r.headers:
        if name.lower() == b"connection":
            conn_tokens.update(t.strip().lower() for t in value.split(b","))
    if ws:
        conn_tokens.discard(b"upgrade")
    parts = [r.method, b" ", prefix + url if url != b"*" else url, b" HTTP/1.1\r\n"]
    for name, value in r.headers:
        n = name.lower()
        if n in drop or n in conn_tokens or n.startswith(b"x-forwarded-"):
            continue
        parts += (name, b": ", value, b"\r\n")
    parts.append(forwarding(peer_ip, host, port))
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


@functools.lru_cache(maxsize=1024)
def forwarding(peer_ip: str, host: str, port: int) -> bytes:
    """The edge's own forwarding headers and ``Host`` (what it knows: the peer address, https, the host asked for,
    the public port), as header lines; the same for every request of a client to a host, so kept (LRU)."""
    ip = peer_ip.encode()
    hb = host.encode("idna") if not host.isascii() else host.encode()
    fwd_for = _quoted(f"[{peer_ip}]" if ":" in peer_ip else peer_ip).encode()
    return b"".join((b"X-Forwarded-For: ", ip, b"\r\nX-Real-IP: ", ip,
                     b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ", hb,
                     b"\r\nX-Forwarded-Port: %d\r\nForwarded: for=%s;proto=https;host=%s\r\nHost: " % (
                         port, fwd_for, _quoted(hb.decode("latin-1")).encode()), hb, b"\r\n"))


def response_head(r: Any, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str,
                  tunnel: bool) -> tuple[bytes, str]:
    """The head of the origin's response as sent downstream, and the downstream framing: "length", "chunked",
    "close", "none" or "tunnel" (``r.keep_alive`` is cleared when the connection cannot go on after it)."""
    parts = [b"HTTP/1.1 %d " % status, reason or REASONS.get(status, "Unknown").encode(), b"\r\n"]
    keep = _WS_KEEP if tunnel else frozenset()
    has_date = False
    for name, value in headers:
        n = name.lower()
        if n in HOP_BY_HOP and n not in keep:
            continue
        if n == b"date":
            has_date = True
        parts += (name, b": ", value, b"\r\n")
    if not has_date:
        parts += (b"Date: ", http_date(), b"\r\n")
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
        if r.last:
            r.keep_alive = False
        if not r.keep_alive:
            parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), down


class _Done:
    """What :meth:`UpstreamConn.start` keeps instead of a future when given a callback: the part of the future's
    interface the connection uses; the callback runs from the loop (``call_soon``, as a future's would), or at once
    from :meth:`UpstreamConn._complete` for the fast lane."""

    __slots__ = ("loop", "cb", "finished")

    def __init__(self, loop: asyncio.AbstractEventLoop, cb: Any) -> None:
        self.loop = loop
        self.cb = cb
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, _: None) -> None:
        self.finished = True
        self.loop.call_soon(self.cb, None)

    def set_exception(self, exc: BaseException) -> None:
        self.finished = True
        self.loop.call_soon(self.cb, exc)


class UpstreamConn(asyncio.Protocol):
    """One connection to the origin; carries one exchange at a time, then goes back to the pool."""

    def __init__(self, pool: "UpstreamPool") -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.down: Downstream | None = None
        self.req: Any = None  # the HTTP layer's request being answered
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
        # One timer per connection, not per exchange: it checks, when it fires, whether the exchange in progress
        # has read nothing for read_timeout, or the idle connection has waited _UPSTREAM_IDLE in the pool, and
        # re-arms itself (a call_later + cancel per request cost more than the rest of the exchange's bookkeeping).
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.last_io = 0.0
        self.idle_since = 0.0
        self.head_bytes = 0  # bytes of the response head read so far (bounded by the pool's max_head)
        self.reusable = False
        self.fed = False     # the httptools parser has seen bytes since it was made (a fresh one on release)
        self.fast = 0        # this exchange may take the fast lane (a plain head parsed in one C call): FAST_*
        self.remaining = 0   # fast lane: body bytes still to come (Content-Length)

    # exchange ---------------------------------------------------------------------------------------------
    def start(self, down: Downstream, r: Any, head: bytes, on_done: Any = None) -> Any:
        """Send ``head`` and answer ``down`` with the origin's response. Returns a future that ends with the
        exchange; with ``on_done``, instead, ``on_done(None or the exception)`` is called then (from the loop, as a
        future's callback would be; at once when the fast lane has just written the whole response)."""
        self.down, self.req = down, r
        self.headers, self.reason, self.head_sent, self.framing = [], b"", False, ""
        self.head_bytes = 0
        self.remaining = 0
        # The fast lane answers an HTTP/1.1 client (``h1_fast``: the head is its own framing; FAST_H1) or an HTTP/2
        # stream (``h2_fast``: the head becomes a HEADERS frame's field list; FAST_H2), and not a HEAD or an
        # upgrade request (no body / a tunnel: httptools' path knows those).
        self.fast = 0
        if fast_response is not None and not self.fed and r.method != b"HEAD" and not r.upgrade:
            if getattr(down, "h1_fast", False):
                self.fast = FAST_H1
            elif getattr(down, "h2_fast", False):
                self.fast = FAST_H2
        loop = self.pool.loop
        self.done = loop.create_future() if on_done is None else _Done(loop, on_done)
        down.up = self
        now = self.last_io = loop.time()
        limit = self.pool.read_timeout
        if self.timer is None or self.timer_at > now + limit:
            self._arm(loop, limit)
        self.transport.write(head)
        return self.done

    def _arm(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = loop.time() + delay
        self.timer = loop.call_at(self.timer_at, self._tick)

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

    def _tick(self) -> None:
        """The connection's timer: an exchange that read nothing for read_timeout fails; a connection idle in the
        pool for _UPSTREAM_IDLE is closed (checked when the timer fires: up to read_timeout late)."""
        self.timer = None
        if self.closed or self.tunnel_open:
            return
        loop = self.pool.loop
        now = loop.time()
        if self.down is not None:
            idle = now - self.last_io
            limit = self.pool.read_timeout
            if idle >= limit:
                self._fail("timeout reading from the origin")
                self.abort()
            else:
                self._arm(loop, limit - idle)
        else:
            idle = now - self.idle_since
            if idle >= _UPSTREAM_IDLE:
                self.pool.forget(self)
                self.abort()
            else:
                self._arm(loop, _UPSTREAM_IDLE - idle)

    def _fail(self, msg: str) -> None:
        d = self.done
        if d is not None and not d.done():
            d.set_exception(UpstreamFailed(msg, self.head_sent))
        self._detach()

    def _detach(self) -> None:
        if self.down is not None and self.down.up is self:
            self.down.up = None
            if self.write_paused:
                self.down.release_reading(HOLD_UPSTREAM)
        self.down = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # protocol ---------------------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel_open:
            self.down.send(data)
            return
        if self.down is None:  # idle in the pool: the origin should not talk now
            self.abort()
            return
        self.last_io = self.pool.loop.time()
        if self.remaining:
            self._fast_body(data)
            return
        if self.fast:
            fast, self.fast = self.fast, 0
            if fast == FAST_H1:
                r = self.req
                m = fast_response(data, 0, self.pool.max_head, http_date(), r.keep_alive and not r.last)
                if m is not None:
                    self._fast_head(data, m)
                    return
            else:
                m = fast_fields(data, 0, self.pool.max_head, http_date())
                if m is not None:
                    self._fast_fields(data, m)
                    return
        self.fed = True
        if not self.head_sent:
            self.head_bytes += len(data)
            if self.head_bytes > self.pool.max_head + 65536:  # a head (plus what came with it) over the bound
                self._fail("the origin's response head is too large")
                self.abort()
                return
        d = self.down
        d.cork()  # the head and the body of this read in one write downstream
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._open_tunnel(data[e.args[0]:])
        except httptools.HttpParserError as e:
            why = e.__context__
            self._fail(str(why) if isinstance(why, UpstreamFailed) else f"bad response from the origin: {e}")
            self.abort()
        finally:
            d.uncork()

    def _fast_head(self, data: bytes, m: tuple) -> None:
        """The fast lane: a plain response head with a Content-Length (``fast_response``), rewritten in C with the
        ``Date`` and ``Connection: close`` it needs and the body bytes that came with it: one write downstream."""
        end, _, out, length, _, took = m
        self.head_sent = True
        self.framing = "length"
        self.down_framing = "length"
        self.reusable = True
        r = self.req
        if r.last:
            r.keep_alive = False
        self.down.send(out)
        if took == length:
            # bytes after the body: the origin is not to be trusted further
            self._complete(reuse=len(data) - end == length, now=True)
        else:
            self.remaining = length - took

    def _fast_fields(self, data: bytes, m: tuple) -> None:
        """The fast lane for an HTTP/2 stream: the same plain head as :meth:`_fast_head`, parsed in C into the
        stream's HEADERS fields (``fast_fields``), given to the stream with the body bytes that came with it (and
        its END_STREAM when that is the whole body)."""
        end, _, fields, length, took = m
        self.head_sent = True
        self.framing = "length"
        self.down_framing = "h2"
        self.reusable = True
        self.down.send_fields(fields, data, end, end + took, took == length)
        if took == length:
            self._complete(reuse=len(data) - end == length, now=True)
        else:
            self.remaining = length - took

    def _fast_body(self, data: bytes) -> None:
        """The fast lane: more of a Content-Length body."""
        n, rem = len(data), self.remaining
        if n < rem:
            self.remaining = rem - n
            self.down.send(data)
            return
        self.remaining = 0
        self.down.send(data if n == rem else data[:rem])
        self._complete(reuse=n == rem, now=True)

    def eof_received(self) -> bool | None:
        return None  # the downstream side is TLS: no half-close; both close

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.tunnel_open:
            if self.down is not None:
                self.down.close()
            return
        d = self.done
        if d is not None and not d.done():
            if self.framing == "close" and self.head_sent:
                self._complete(reuse=False)  # a close-delimited body ends here
            elif not self.head_sent and not self.headers and not self.reason:
                d.set_exception(UpstreamRetry())
                self._detach()
            else:
                self._fail(f"the origin closed the connection mid-response ({exc or 'EOF'})")

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.down is not None:
            self.down.hold_reading(HOLD_UPSTREAM)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.down is not None:
            self.down.release_reading(HOLD_UPSTREAM)

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
        if status == 101 and not self._accepts(r):
            raise UpstreamFailed("the origin answered 101 to what is not a valid websocket handshake, or without "
                                 "the matching Sec-WebSocket-Accept", False)
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
        self.down_framing = self.down.send_head(r, status, self.reason, self.headers, framing, tunnel)
        self.reusable = p.should_keep_alive() and framing != "close"
        if r.method == b"HEAD":
            # llhttp would wait for a body that a HEAD response does not have: the exchange ends here, and this
            # connection's parser state is unknown, so it is not reused.
            self.reusable = False
            self._complete(reuse=False)

    def _accepts(self, r: Any) -> bool:
        """A 101 opens a tunnel only for a websocket request the HTTP layer validated, answered as RFC 6455 says."""
        if r is None or not r.upgrade:
            return False
        upgrade = accept = b""
        for name, value in self.headers:
            n = name.lower()
            if n == b"upgrade":
                upgrade = value.strip().lower()
            elif n == b"sec-websocket-accept":
                accept = value.strip()
        return upgrade == b"websocket" and accept == websocket_accept(r.ws_key)

    def on_body(self, body: bytes) -> None:
        d = self.down
        f = self.down_framing
        if d is None or f == "none" or f == "h2-none":
            return
        if f == "chunked":
            d.send(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            d.send(body)

    def on_message_complete(self) -> None:
        if not self.head_sent or self.upgrading:
            return  # end of an interim 1xx response, or of a 101 (the tunnel opens next)
        if self.down is not None and self.done is not None and not self.done.done():
            self._complete(reuse=self.reusable)

    def _complete(self, reuse: bool, now: bool = False) -> None:
        """The exchange is over (``reuse``: the connection may serve another). ``now``: called by the fast lane as
        the last thing it does with this connection, so an ``on_done`` callback runs at once, after the connection
        went back to the pool (the next pipelined request may take it)."""
        d = self.down
        if d is not None:
            f = self.down_framing
            if f == "chunked":
                d.send(b"0\r\n\r\n")
            elif f == "h2" or f == "h2-none":
                d.end_stream()  # an HTTP/2 stream (edge/tls_edge/h2.py): END_STREAM
        fut = self.done
        r = self.req
        self._detach()
        self.req = None
        if now and fut.__class__ is _Done and not fut.finished:
            fut.finished = True
            if reuse and r is not None and r.done and not self.closed:
                self.done = None
                self.pool.release(self)
            else:
                self.abort()
            fut.cb(None)
            return
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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        d.up = None
        d.tunnel = self
        if tail:
            d.send(tail)
        if d.tail:
            self.transport.write(d.tail)
            d.tail = b""
        d.release_reading(HOLD_UPGRADE)
        fut = self.done
        if fut is not None and not fut.done():
            fut.set_result(None)


class UpstreamPool:
    """Keep-alive connections to the one origin (``EDGECERT_UPSTREAM``)."""

    def __init__(self, upstream: str, *, max_idle: int = 256, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_head: int = 65536, public_only: bool = False) -> None:
        u = urllib.parse.urlsplit(upstream)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"upstream must be http(s)://host[:port][/prefix], not {upstream!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/").encode()
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if u.scheme == "https" else None
        self.idle: list[UpstreamConn] = []
        self.max_idle = max_idle
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.max_head = max_head
        self.loop = asyncio.get_event_loop()
        self.retired = False  # dropped by OriginPools: connections still out are closed when they come back
        self.public_only = public_only  # an origin set by a tenant: public addresses only (see _public_target)

    async def acquire(self, *, fresh: bool = False) -> tuple[UpstreamConn, bool]:
        idle = self.idle
        while idle and not fresh:
            c = idle.pop()
            if not c.closed and not c.transport.is_closing():
                return c, True
        loop = asyncio.get_running_loop()
        self.loop = loop
        target = await asyncio.wait_for(self._public_target(loop), self.connect_timeout) if self.public_only \
            else self.host
        _, c = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConn(self), target, self.port, ssl=self.ssl,
                                   server_hostname=self.host if self.ssl else None),
            self.connect_timeout)
        return c, False

    async def _public_target(self, loop: asyncio.AbstractEventLoop) -> str:
        """The address to connect to for an origin set by a tenant: resolved now, at connect time (a name that was
        public when it was set may point inside later: DNS rebinding), and only a public one.

        Raises:
            OSError: the name resolves to no public address (answered 502, logged)."""
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        for *_, addr in infos:
            if public_address(addr[0]):
                return addr[0]
        seen = ", ".join(sorted({i[4][0] for i in infos}))
        raise OSError(f"origin {self.host} resolves to no public address ({seen}); it was set with a tenant token, "
                      f"so only public addresses are used")

    def take_idle(self) -> UpstreamConn | None:
        """An idle pooled connection that is still open, or None (no waiting, no connecting)."""
        idle = self.idle
        while idle:
            c = idle.pop()
            if not c.closed and not c.transport.is_closing():
                return c
        return None

    def release(self, c: UpstreamConn) -> None:
        if len(self.idle) >= self.max_idle or c.closed or self.retired:
            c.abort()
            return
        if c.fed:
            c.parser = httptools.HttpResponseParser(c)  # a fresh parser: state is per message anyway
            c.fed = False
        c.transport.resume_reading()  # in case the last client was slow (flow control paused it)
        self.idle.append(c)
        c.idle_since = self.loop.time()
        if c.timer is None:
            c._arm(self.loop, _UPSTREAM_IDLE)

    def forget(self, c: UpstreamConn) -> None:
        try:
            self.idle.remove(c)
        except ValueError:
            pass

    def close(self) -> None:
        for c in self.idle:
            c.abort()
        self.idle.clear()


# -- per-hostname origins (issue 17) ------------------------------------------------------------------------------
log = logging.getLogger(__name__)


def public_address(addr: str) -> bool:
    """An address the edge may connect to for a tenant's origin (checked at each connect, against DNS rebinding):
    the rule of :func:`edge.addresses.forbidden_reason`, the one the origin was checked with when it was set."""
    return forbidden_reason(addr) is None


class OriginPools:
    """One :class:`UpstreamPool` per origin URL: the global ``EDGECERT_UPSTREAM`` (``default``) and the per-hostname
    / per-tenant origins, created on first use. At most ``max_pools`` per-hostname pools are kept: the least
    recently used one beyond that is retired (its idle connections closed; those in use finish their exchange)."""

    def __init__(self, default: str | None, *, max_pools: int = 256, **pool_options: Any) -> None:
        self.options = pool_options
        self.default = UpstreamPool(default, **pool_options) if default else None
        self.max_pools = max(1, int(max_pools))
        self.pools: OrderedDict[tuple[str, bool], UpstreamPool] = OrderedDict()
        self._bad: set[str] = set()

    def for_host(self, host: str, settings: Any) -> UpstreamPool | None:
        """The pool for a request to ``host``: its per-hostname origin (the domain's, else its tenant's) from
        ``settings`` (the SNI index's ``host_settings``: memory only), else the default pool."""
        s = settings(host)
        if s is None or not s.origin:
            return self.default
        return self.get(s.origin, public_only=s.origin_public_only)

    def get(self, origin: str | None, *, public_only: bool = False) -> UpstreamPool | None:
        """The pool of ``origin`` (None: the default pool, None when there is no global upstream either). An origin
        that does not parse (never accepted by the API) is logged once and answered by the default pool."""
        if not origin:
            return self.default
        key = (origin, bool(public_only))
        pool = self.pools.get(key)
        if pool is not None:
            self.pools.move_to_end(key)
            return pool
        if origin in self._bad:
            return self.default
        try:
            pool = UpstreamPool(origin, public_only=bool(public_only), **self.options)
        except ValueError:
            if len(self._bad) < 1024:
                self._bad.add(origin)
            log.error("per-hostname origin %r is not a usable URL; using the global upstream", origin[:200])
            return self.default
        self.pools[key] = pool
        while len(self.pools) > self.max_pools:
            _, old = self.pools.popitem(last=False)
            old.retired = True
            old.close()
        return pool

    def close(self) -> None:
        if self.default is not None:
            self.default.close()
        for p in self.pools.values():
            p.retired = True
            p.close()
        self.pools.clear()
