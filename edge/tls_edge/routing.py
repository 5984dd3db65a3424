"""What the TLS edge answers by itself, decided once for both TLS drivers: the Host / SNI check (421), unknown
names (404), the placeholder page when no origin is configured, the edge's error pages, and their wording.

:func:`decide` returns the :class:`Page` to answer with, or None when the request goes to the origin; the HTTP layer
(:mod:`edge.tls_edge.http`) turns a page into bytes with :func:`response`.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Callable

__all__ = ["Page", "decide", "host_of", "page_html", "response", "http_date", "misdirected", "not_served",
           "placeholder", "REASONS", "NO_SNI", "BAD_GATEWAY", "BAD_REQUEST", "BAD_TARGET", "NO_CONNECT", "BAD_UPGRADE"]

REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 400: "Bad Request", 404: "Not Found",
           414: "URI Too Long", 421: "Misdirected Request", 426: "Upgrade Required",
           431: "Request Header Fields Too Large", 502: "Bad Gateway"}

_HTML = b"text/html; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Page:
    """A response the edge makes itself: status, content type and the complete body."""
    status: int
    body: bytes
    ctype: bytes = _HTML
    headers: bytes = b""  # extra header lines, each ending in CRLF


def page_html(title: str, body: str) -> str:
    """The edge's own pages (421, 404, 502, placeholder); ``body`` is HTML, already escaped."""
    return ("<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)}</title><body style='font-family:system-ui,sans-serif;max-width:40em;"
            f"margin:3em auto;padding:0 1em'><h1>{html.escape(title)}</h1><p>{body}</p></body></html>\n")


def _page(status: int, title: str, body: str) -> Page:
    return Page(status, page_html(title, body).encode())


NO_SNI = _page(421, "Misdirected request", "This edge serves tenant sites by name and needs TLS Server Name "
               "Indication (SNI); your client did not send it.")
BAD_GATEWAY = _page(502, "Bad gateway", "The edge could not reach this site's origin server. Try again shortly.")
BAD_REQUEST = {400: _page(400, REASONS[400], "The request could not be parsed."),
               414: _page(414, REASONS[414], "The request target is too long."),
               431: _page(431, REASONS[431], "The request line or headers are too long.")}
BAD_UPGRADE = {400: _page(400, "Bad request", "This edge upgrades connections only to WebSocket, with a valid "
                          "handshake (Upgrade: websocket, Connection: upgrade, a Sec-WebSocket-Key of 16 bytes, "
                          "Sec-WebSocket-Version: 13)."),
               426: Page(426, page_html("Upgrade required", "This edge speaks WebSocket version 13 only.").encode(),
                         headers=b"Sec-WebSocket-Version: 13\r\n")}
BAD_TARGET = _page(400, "Bad request", "The request target could not be parsed.")
NO_CONNECT = _page(400, "Bad request", "CONNECT is not supported by this edge.")


def misdirected(sni: str, host: str) -> Page:
    return _page(421, "Misdirected request",
                 f"This connection was opened for {html.escape(sni)} but asks for "
                 f"{html.escape(host or '(no Host)')}. Open a new connection to that name.")


def not_served(sni: str) -> Page:
    return _page(404, "No site here",
                 f"{html.escape(sni)} is not served by this edge (yet). If it is your domain, check its "
                 f"status page or ask the site operator.")


def placeholder(sni: str, text: bytes | None) -> Page:
    if text is not None:
        return Page(200, text, _TEXT)
    return _page(200, f"{html.escape(sni)} is served by edgecert",
                 "The certificate for this domain is active. No origin (EDGECERT_UPSTREAM) is configured, so this "
                 "placeholder page is shown.")


def decide(sni: str | None, host: str, lookup: Callable[[str], object | None], *, has_origin: bool,
           placeholder_text: bytes | None = None) -> Page | None:
    """The edge's own answer to a request on a connection opened for ``sni`` asking for ``host`` (see
    :func:`host_of`), or None: proxy it to the origin. ``lookup`` is the SNI index's (None: not served here)."""
    if sni is None:
        return NO_SNI
    if host != sni:
        return misdirected(sni, host)
    if lookup(sni) is None:
        return not_served(sni)
    if not has_origin:
        return placeholder(sni, placeholder_text)
    return None


def host_of(raw: bytes) -> str:
    """The name a Host header asks for: port stripped, lower-cased, no trailing dot (an IPv6 literal kept)."""
    h = raw.decode("latin-1").strip()
    if h.startswith("["):
        return h.split("]")[0] + "]"
    if ":" in h:
        h = h.rsplit(":", 1)[0]
    return h.lower().rstrip(".")


_date_cache = [0, b""]


def http_date() -> bytes:
    """The current ``Date`` header value (formatted once a second)."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]


def response(page: Page, keep_alive: bool, head_only: bool = False) -> bytes:
    """``page`` as a complete HTTP/1.1 response (the head alone for HEAD)."""
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n%s%s\r\n"
            % (page.status, REASONS.get(page.status, "Unknown").encode(), page.ctype, len(page.body), http_date(),
               page.headers, b"" if keep_alive else b"Connection: close\r\n"))
    return head if head_only else head + page.body
