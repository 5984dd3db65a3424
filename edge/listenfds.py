"""Listening sockets handed over by the service manager: systemd socket activation (``sd_listen_fds(3)``).

With ``deploy/systemd/edgecert.socket`` the service manager owns the listening sockets of the three listeners and
passes them to ``edgecert serve`` (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``). They outlive the process: while
it restarts (a crash, an upgrade), clients -- a CA's validator fetching an HTTP-01 answer, a browser -- wait in the
socket's backlog instead of being refused, and are answered by the next process. A listener without a handed-over
socket binds its own address as usual.

A socket is taken for a listener by its name (``FileDescriptorName=api|http|https`` in the socket unit), else by its
address (the configured ``host:port``; a wildcard host matches any address of that port).
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["take_inherited", "pick", "SD_LISTEN_FDS_START"]

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
_WILDCARDS = ("", "0.0.0.0", "::", "*")


def take_inherited(environ: dict[str, str] | None = None) -> list[tuple[str, socket.socket]]:
    """The (name, socket) pairs handed to this process, in order; the ``LISTEN_*`` variables are removed either way
    (so that no child takes them for its own). Anything that is not a listening stream socket is left alone."""
    env = os.environ if environ is None else environ
    pid, count, names = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", ""), env.pop("LISTEN_FDNAMES", "")
    if not count:
        return []
    try:
        n = int(count)
        if int(pid) != os.getpid():
            return []  # meant for another process (the variables leaked into this one's environment)
    except ValueError:
        log.warning("socket activation: LISTEN_PID=%r LISTEN_FDS=%r are not numbers; ignored", pid, count)
        return []
    labels = names.split(":") if names else []
    out: list[tuple[str, socket.socket]] = []
    for i in range(max(0, min(n, 64))):
        fd = SD_LISTEN_FDS_START + i
        try:
            s = socket.socket(fileno=fd)
        except OSError as e:
            log.warning("socket activation: fd %d is not a socket (%s); ignored", fd, e)
            continue
        if s.type != socket.SOCK_STREAM or not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            log.warning("socket activation: fd %d is not a listening TCP socket; ignored", fd)
            s.detach()
            continue
        s.setblocking(False)
        out.append((labels[i] if i < len(labels) else "", s))
    return out


def pick(inherited: list[tuple[str, socket.socket]], role: str, host: str, port: int) -> socket.socket | None:
    """Take (remove from ``inherited``) the socket for listener ``role`` configured at ``host:port``."""
    for i, (name, s) in enumerate(inherited):
        if name == role:
            return inherited.pop(i)[1]
    for i, (name, s) in enumerate(inherited):
        if name and name in ("api", "http", "https"):
            continue  # named for another listener
        addr = s.getsockname()
        if addr[1] == port and (host in _WILDCARDS or addr[0] == host
                                or (s.family == socket.AF_INET6 and addr[0] == "::ffff:" + host)):
            return inherited.pop(i)[1]
    return None
