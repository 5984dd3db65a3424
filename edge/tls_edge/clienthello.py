"""What the Python ``ssl`` fallback cannot see from its SNI callback: the ClientHello's ALPN offer and TLS versions.

Python's ``sni_callback`` gets the server name only, and runs after OpenSSL has chosen the TLS version. Two per-name
decisions need more (the C engine makes them in its ClientHello callback, ``_edgetls.c``):

- TLS-ALPN-01 (RFC 8737): a ClientHello offering exactly ALPN ``acme-tls/1`` for a name with a pending answer gets
  the challenge certificate;
- ``min_tls_version = "1.3"``: a client that does not offer TLS 1.3 gets a ``protocol_version`` alert.

So, while the index has such answers or floors, the HTTP layer holds a new connection's first bytes until the whole
ClientHello is in (:func:`peek`), parses it here (memory only, no I/O), leaves the result on the ``SSLObject``
(``edgecert_hello``) for :meth:`edge.tls_edge.index.SniIndex._sni_callback`, and only then hands the bytes to TLS.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Hello", "parse", "peek", "UNPARSEABLE", "HOLD_MAX"]

#: At most this many bytes are held for one ClientHello (a real one, even with post-quantum key shares, is < 4 KiB);
#: beyond that the hello counts as unparseable.
HOLD_MAX = 32 * 1024

_ACME_ONLY = b"\x00\x0b\x0aacme-tls/1"


class Hello(NamedTuple):
    ok: bool            # the bytes were a ClientHello this parser could read
    acme_only: bool     # ALPN offers exactly one protocol: acme-tls/1
    max_version: int    # the highest TLS version offered (0x0304 = TLS 1.3; 0 when unparseable)
    server_name: str | None = None  # the SNI host_name, lower-cased, without a trailing dot


UNPARSEABLE = Hello(False, False, 0)


def parse(data: bytes) -> Hello | None:
    """The :class:`Hello` of the first TLS records of a connection; None while more bytes are needed;
    :data:`UNPARSEABLE` when they are not a ClientHello (OpenSSL then refuses them itself)."""
    # Reassemble the handshake message from as many handshake records as it spans.
    body = bytearray()
    pos = 0
    need = -1
    while need < 0 or len(body) < need:
        if len(data) < pos + 5:
            return None
        if data[pos] != 22 or data[pos + 1] != 3:
            return UNPARSEABLE
        rlen = (data[pos + 3] << 8) | data[pos + 4]
        if rlen == 0 or len(data) < pos + 5 + rlen:
            return None if rlen else UNPARSEABLE
        body += data[pos + 5:pos + 5 + rlen]
        pos += 5 + rlen
        if need < 0 and len(body) >= 4:
            if body[0] != 1:  # not a ClientHello
                return UNPARSEABLE
            need = 4 + ((body[1] << 16) | (body[2] << 8) | body[3])
    try:
        return _parse_body(bytes(body[4:need]))
    except IndexError:
        return UNPARSEABLE


def _parse_body(b: bytes) -> Hello:
    legacy = (b[0] << 8) | b[1]
    i = 34                                    # legacy_version (2) + random (32)
    i += 1 + b[i]                             # session id
    i += 2 + ((b[i] << 8) | b[i + 1])         # cipher suites
    i += 1 + b[i]                             # compression methods
    if i == len(b):                           # no extensions at all
        return Hello(True, False, legacy)
    end = i + 2 + ((b[i] << 8) | b[i + 1])
    if end != len(b):
        return UNPARSEABLE
    i += 2
    acme_only = False
    max_version = legacy
    server_name = None
    while i < end:
        typ = (b[i] << 8) | b[i + 1]
        n = (b[i + 2] << 8) | b[i + 3]
        ext = b[i + 4:i + 4 + n]
        if len(ext) != n:
            return UNPARSEABLE
        i += 4 + n
        if typ == 16:                         # application_layer_protocol_negotiation
            acme_only = ext == _ACME_ONLY
        elif typ == 0 and n >= 5 and ext[2] == 0:  # server_name: list length, then host_name (0), length, name
            k = (ext[3] << 8) | ext[4]
            if 0 < k <= n - 5:
                server_name = ext[5:5 + k].decode("latin-1").lower().rstrip(".")
        elif typ == 43 and n >= 3:            # supported_versions: length (1), then 2-byte versions
            versions = [(ext[k] << 8) | ext[k + 1] for k in range(1, min(1 + ext[0], n) - 1, 2)]
            known = [v for v in versions if 0x0300 <= v <= 0x0304]  # GREASE and drafts ignored
            max_version = max(known) if known else 0
    return Hello(True, acme_only, max_version, server_name)


def peek(obj, data: bytes) -> bytes | None:
    """Hold ``data`` (a new connection's first bytes) on ``obj`` (the ``SSLObject``) until its ClientHello is whole;
    then set ``obj.edgecert_hello`` and return every byte held, for TLS. None while more bytes are needed."""
    held = getattr(obj, "edgecert_held", b"") + data
    hello = parse(held)
    if hello is None and len(held) < HOLD_MAX:
        obj.edgecert_held = held
        return None
    obj.edgecert_held = b""
    obj.edgecert_hello = hello if hello is not None else UNPARSEABLE
    return held
