"""The TCP layer of a diagnosis: does the port accept a connection, and does it answer plain HTTP."""

from __future__ import annotations

import asyncio
import errno
import socket

from edge.names import format_hostport

__all__ = ["tcp_connect", "plain_http_probe"]


async def tcp_connect(address: str, port: int, timeout: float) -> tuple[str | None, str]:
    """(error kind or None, detail)."""
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except asyncio.TimeoutError:
        return "timeout", f"no answer from {format_hostport(address, port)} within {timeout:g} s"
    except ConnectionRefusedError:
        return "refused", f"{format_hostport(address, port)} refused the connection (nothing listens)"
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT):
            return "timeout", f"{format_hostport(address, port)} unreachable: {e.strerror}"
        if e.errno == errno.ECONNREFUSED:
            return "refused", f"{format_hostport(address, port)} refused the connection (nothing listens)"
        return "error", f"{format_hostport(address, port)}: {e}"
    w.close()
    try:
        await asyncio.wait_for(w.wait_closed(), 1)
    except Exception:
        pass
    return None, f"connected to {format_hostport(address, port)}"


def plain_http_probe(address: str, port: int, host: str, timeout: float) -> str | None:
    """Send a plain HTTP request; return the status line if the port answers HTTP."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"HEAD / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: edgecert-diagnose\r\n\r\n".encode())
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].strip().decode("latin-1", "replace")
    return line if line.startswith("HTTP/") else None
