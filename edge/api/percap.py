"""A per-address connection cap for the aiohttp listeners (the API and the plain-HTTP port 80 listener).

The TLS edge caps open connections per client address itself (``edge_max_conns_per_ip``); aiohttp has no such cap, so
one client opening connections without end could take every file descriptor of the process -- and with them the
TLS edge and every other tenant. :func:`capped_site` returns the listener's site with the protocol of each accepted
connection wrapped: over ``cap`` open connections from one address, a new one is closed at once (before aiohttp sees
it); otherwise the wrapper counts it and hands every protocol call to aiohttp's own handler.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Callable

from aiohttp import web

__all__ = ["capped_site", "PerAddressCap"]

log = logging.getLogger(__name__)


class PerAddressCap:
    """Open connections per client address of one listener, and how many were refused."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}
        self.refused = 0

    def factory(self, inner: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guard(self, inner())


class _Guard(asyncio.Protocol):
    __slots__ = ("cap", "inner", "ip")

    def __init__(self, cap: PerAddressCap, inner: Any) -> None:
        self.cap = cap
        self.inner = inner
        self.ip: str | None = None

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else ""
        c = self.cap
        n = c.open.get(ip, 0)
        if n >= c.cap:
            c.refused += 1
            if c.refused & (c.refused - 1) == 0:  # 1, 2, 4, 8 ...: a flood is said, not logged line by line
                log.warning("%s has %d connections open to this listener (listener_max_conns_per_ip); new ones "
                            "are closed (%d so far)", ip or "a client", n, c.refused)
            transport.abort()
            return
        c.open[ip] = n + 1
        self.ip = ip
        self.inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        ip = self.ip
        if ip is None:
            return  # refused: aiohttp never saw it
        self.ip = None
        c = self.cap
        n = c.open.get(ip, 1) - 1
        if n > 0:
            c.open[ip] = n
        else:
            c.open.pop(ip, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.ip is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.ip is not None else None

    def pause_writing(self) -> None:
        if self.ip is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.ip is not None:
            self.inner.resume_writing()


async def _serve(site: web.BaseSite, cap: PerAddressCap, **where: Any) -> asyncio.AbstractServer:
    """What TCPSite/SockSite.start do, with each connection's protocol behind ``cap``."""
    await web.BaseSite.start(site)
    server = site._runner.server
    assert server is not None
    return await asyncio.get_running_loop().create_server(cap.factory(server), backlog=site._backlog, **where)


class _CappedTCPSite(web.TCPSite):
    def __init__(self, runner: web.BaseRunner, host: str, port: int, cap: PerAddressCap, **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.cap = cap

    async def start(self) -> None:
        self._server = await _serve(self, self.cap, host=self._host, port=self._port,
                                    reuse_address=self._reuse_address)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


class _CappedSockSite(web.SockSite):
    def __init__(self, runner: web.BaseRunner, sock: socket.socket, cap: PerAddressCap, **kw: Any) -> None:
        super().__init__(runner, sock, **kw)
        self.cap = cap

    async def start(self) -> None:
        self._server = await _serve(self, self.cap, sock=self._sock)


def capped_site(runner: web.BaseRunner, *, host: str, port: int, sock: socket.socket | None, cap: int,
                backlog: int = 1024) -> web.BaseSite:
    """The site of a listener at ``host:port`` (or on the handed-over ``sock``), with at most ``cap`` open
    connections per client address (``cap`` 0: aiohttp's own sites, no cap)."""
    if cap <= 0:
        return (web.SockSite(runner, sock, backlog=backlog) if sock is not None else
                web.TCPSite(runner, host, port, backlog=backlog, reuse_address=True))
    if sock is not None:
        return _CappedSockSite(runner, sock, PerAddressCap(cap), backlog=backlog)
    return _CappedTCPSite(runner, host, port, PerAddressCap(cap), backlog=backlog, reuse_address=True)
