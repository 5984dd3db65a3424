"""The page layer of a diagnosis: a bounded hand-written HTTP/1.0 GET (also used for AIA issuers and CRLs) and
the mixed-content scan of the HTML a browser would load."""

from __future__ import annotations

import asyncio
import html.parser
import re
import ssl
from typing import Any
from urllib.parse import urljoin, urlsplit

from .dns import resolve_host
from .handshake import BROWSER_CIPHERS, client_context
from .target import check_allowed

__all__ = ["http_get", "fetch_page", "scan_mixed_content"]

_MAX_PAGE = 512 << 10  # the page scanned for mixed content


async def http_get(url: str, *, timeout: float, limit: int, allow_private: bool, resolver: str | None,
                   ssl_ctx: ssl.SSLContext | None = None, connect: tuple[str, int] | None = None,
                   host_header: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """A minimal bounded HTTP/1.0 GET (no redirects followed). Refuses private targets when not allowed.

    Raises:
        TargetNotAllowed, OSError, asyncio.TimeoutError, ValueError.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme in {url!r}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if connect:
        address, port = connect
    else:
        addrs = await resolve_host(host, resolver, timeout)
        if not addrs:
            raise OSError(f"cannot resolve {host}")
        address = addrs[0]
    check_allowed([address], allow_private)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    async def run():
        kw: dict[str, Any] = {}
        if parts.scheme == "https":
            kw = {"ssl": ssl_ctx, "server_hostname": host_header or host}
        reader, writer = await asyncio.open_connection(address, port, **kw)
        try:
            writer.write(
                f"GET {path} HTTP/1.0\r\nHost: {host_header or parts.netloc}\r\n"
                f"User-Agent: edgecert-diagnose\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = b""
            while len(data) < limit + 65536:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            writer.close()
        return data

    data = await asyncio.wait_for(run(), timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/\d(?:\.\d)?\s+(\d{3})", lines[0] if lines else "")
    if not m:
        raise ValueError("not an HTTP response")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers, body[:limit]


async def fetch_page(host: str, address: str, port: int, timeout: float):
    ctx = client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, BROWSER_CIPHERS + ":@SECLEVEL=0")
    ctx.set_alpn_protocols(["http/1.1"])
    url = f"https://{host}:{port}/" if port != 443 else f"https://{host}/"
    pages = []
    for _ in range(3):
        try:
            status, headers, body = await http_get(url, timeout=timeout, limit=_MAX_PAGE, allow_private=True,
                                                   resolver=None, ssl_ctx=ctx, connect=(address, port),
                                                   host_header=host)
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}", "pages": pages}
        pages.append((url, status))
        if status in (301, 302, 303, 307, 308) and headers.get("location"):
            nxt = urljoin(url, headers["location"])
            p = urlsplit(nxt)
            if p.scheme == "https" and p.hostname == host and (p.port or 443) == port:
                url = nxt
                continue
            return {"status": status, "headers": headers, "body": b"", "url": url, "redirect": nxt, "pages": pages}
        return {"status": status, "headers": headers, "body": body, "url": url, "pages": pages}
    return {"error": "too many redirects", "pages": pages}


class _SubresourceParser(html.parser.HTMLParser):
    ACTIVE = {("script", "src"), ("iframe", "src"), ("frame", "src"), ("object", "data"), ("embed", "src"),
              ("form", "action")}
    PASSIVE = {("img", "src"), ("audio", "src"), ("video", "src"), ("source", "src"), ("track", "src"),
               ("input", "src"), ("video", "poster")}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []  # (kind, tag, url)
        self.upgrade = False

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy" and \
                "upgrade-insecure-requests" in a.get("content", "").lower():
            self.upgrade = True
        if tag == "link":
            rel = a.get("rel", "").lower()
            href = a.get("href", "")
            if href.lower().startswith("http://") and any(
                    r in rel.split() for r in ("stylesheet", "preload", "modulepreload", "icon", "manifest")):
                self.found.append(("active" if "icon" not in rel else "passive", "link", href))
            return
        for attr, value in a.items():
            if (tag, attr) in self.ACTIVE and value.strip().lower().startswith("http://"):
                self.found.append(("active", tag, value.strip()))
            elif (tag, attr) in self.PASSIVE and value.strip().lower().startswith("http://"):
                self.found.append(("passive", tag, value.strip()))
            elif attr == "srcset" and "http://" in value.lower():
                self.found.append(("passive", tag, value.strip()))


def scan_mixed_content(body: bytes, headers: dict[str, str] | None = None) -> tuple[list[tuple[str, str, str]], bool]:
    """(insecure subresources, upgrade-insecure-requests in force)."""
    p = _SubresourceParser()
    try:
        p.feed(body.decode("utf-8", "replace"))
        p.close()
    except Exception:
        pass
    csp = (headers or {}).get("content-security-policy", "").lower()
    return p.found, p.upgrade or "upgrade-insecure-requests" in csp
