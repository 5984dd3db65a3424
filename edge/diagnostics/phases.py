"""A TLS connection in phases, each with its own timeout: TCP connect, ClientHello sent, first server byte,
handshake complete, first HTTP byte. Blocking (run it in a thread).

The handshake runs over memory BIOs (``ssl.MemoryBIO``) so that every byte is ours to time: the ClientHello is
written to the socket by us, the first answer byte is awaited with its own bound, and so on. A server that accepts
and never answers the ClientHello stops at ``first_server_byte`` (``handshake_timeout``); a TLS 1.3 server that
demands a client certificate completes the handshake, then ends the connection at the first HTTP read (alert 116).
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import time

from .handshake import ALERTS_BY_REASON, Handshake, chain_of

__all__ = ["PHASES", "phased_probe"]

PHASES = ("connect", "client_hello_sent", "first_server_byte", "handshake_complete", "first_http_byte")


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)


def _ssl_failure(hs: Handshake, e: ssl.SSLError) -> None:
    reason = getattr(e, "reason", None) or ""
    text = str(e)
    hs.ok = False
    hs.reason, hs.text = reason, text
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or reason == "UNEXPECTED_EOF_WHILE_READING" \
            or "EOF occurred" in text:
        hs.kind, hs.reason = "eof", reason or "UNEXPECTED_EOF_WHILE_READING"
        return
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG",
                  "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "RECORD_LENGTH_MISMATCH"):
        hs.kind = "wrong_version"
        return
    alert = ALERTS_BY_REASON.get(reason)
    m = re.search(r"alert number (\d+)", text)
    if alert is None and m:
        alert = int(m.group(1))
    hs.alert = alert
    hs.kind = "alert" if alert is not None else "ssl"


def phased_probe(address: str, port: int, sni: str | None, ctx: ssl.SSLContext, timeout: float, label: str,
                 *, host_header: str | None = None, request: bool = True) -> Handshake:
    """One connection, phase by phase (each phase bounded by ``timeout`` seconds). ``Handshake.phases`` holds the
    milliseconds at which each phase was reached; ``stopped_at`` the phase that did not complete. With
    ``request``, a ``GET /`` follows (headers read only) the handshake: ``http_status`` / ``http_headers`` (or ``post_error``: a
    failure after the handshake, e.g. TLS 1.3 alert 116)."""
    hs = Handshake(False, label)
    t0 = time.monotonic()
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except (TimeoutError, socket.timeout):
        hs.kind, hs.text, hs.stopped_at = "timeout", f"TCP connect timed out after {timeout:g} s", "connect"
        return hs
    except ConnectionRefusedError as e:
        hs.kind, hs.text, hs.stopped_at = "refused", str(e), "connect"
        return hs
    except OSError as e:
        hs.kind, hs.text, hs.stopped_at = "oserror", str(e), "connect"
        return hs
    hs.phases["connect"] = _ms(t0)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
        phase = "client_hello_sent"
        deadline = None
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.settimeout(timeout)
                    sock.sendall(pending)
                    if "client_hello_sent" not in hs.phases:
                        hs.phases["client_hello_sent"] = _ms(t0)
                        phase = "first_server_byte"
                if phase == "first_server_byte":
                    sock.settimeout(timeout)
                else:
                    deadline = deadline or time.monotonic() + timeout
                    sock.settimeout(max(0.05, deadline - time.monotonic()))
                data = sock.recv(65536)
                if phase == "first_server_byte":
                    hs.phases["first_server_byte"] = _ms(t0)
                    phase = "handshake_complete"
                if not data:
                    incoming.write_eof()
                else:
                    incoming.write(data)
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)
        hs.phases["handshake_complete"] = _ms(t0)
        hs.ok = True
        hs.version = obj.version()
        c = obj.cipher()
        hs.cipher = c[0] if c else None
        hs.alpn = obj.selected_alpn_protocol()
        hs.chain = chain_of(obj)
    except ssl.SSLError as e:
        _ssl_failure(hs, e)
        hs.stopped_at = phase if phase != "client_hello_sent" else "client_hello_sent"
        if phase == "first_server_byte":
            hs.stopped_at = "handshake_complete"  # the server answered the ClientHello with an alert
        _close(sock)
        return hs
    except (TimeoutError, socket.timeout):
        hs.kind = "timeout"
        hs.stopped_at = phase
        hs.text = (f"no answer to the ClientHello within {timeout:g} s" if phase == "first_server_byte"
                   else f"the handshake did not complete within {timeout:g} s")
        _close(sock)
        return hs
    except (ConnectionResetError, BrokenPipeError) as e:
        hs.kind, hs.text, hs.stopped_at = "reset", f"{type(e).__name__}: {e}", phase
        _close(sock)
        return hs
    except OSError as e:
        hs.kind = "reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else "oserror"
        hs.text, hs.stopped_at = str(e), phase
        _close(sock)
        return hs
    if request:
        _http_phase(hs, obj, sock, incoming, outgoing, host_header or sni or address, timeout, t0)
    _close(sock)
    return hs


def _http_phase(hs: Handshake, obj: ssl.SSLObject, sock: socket.socket, incoming: ssl.MemoryBIO,
                outgoing: ssl.MemoryBIO, host: str, timeout: float, t0: float) -> None:
    try:
        if hs.alpn == "h2":
            # HTTP/2: the connection preface and an empty SETTINGS frame; the server's SETTINGS is the first byte
            obj.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        else:
            obj.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgecert-diagnose\r\n"
                      "Connection: close\r\n\r\n".encode())
        sock.settimeout(timeout)
        sock.sendall(outgoing.read())
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < 16384 and b"\r\n\r\n" not in data:
            try:
                chunk = obj.read(16384)
                if not chunk:
                    break
                if not data:
                    hs.phases["first_http_byte"] = _ms(t0)
                data += chunk
                if hs.alpn == "h2":
                    break
                continue
            except ssl.SSLWantReadError:
                pass
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            raw = sock.recv(65536)
            if not raw:
                incoming.write_eof()
            else:
                incoming.write(raw)
        if hs.alpn != "h2" and data:
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1", "replace").split("\r\n")
            hs.http_status = head[0]
            hs.http_headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:])}
        elif data:
            hs.http_status = "HTTP/2 (SETTINGS received)"
        if "first_http_byte" not in hs.phases:
            hs.stopped_at = "first_http_byte"
    except ssl.SSLError as e:
        post = Handshake(False, hs.label)
        _ssl_failure(post, e)
        hs.post_error = post
        hs.stopped_at = "first_http_byte"
    except (TimeoutError, socket.timeout):
        hs.stopped_at = "first_http_byte"
    except OSError as e:
        hs.post_error = Handshake(False, hs.label, kind="reset", text=str(e))
        hs.stopped_at = "first_http_byte"


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
