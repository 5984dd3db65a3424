"""The diagnostic engine: probe one TLS endpoint from here and name its failure mode.

``diagnose()`` walks the layers in order (DNS, TCP, TLS handshake, certificate chain, the page), records every
check it made, picks ONE primary failure mode from ``modes.PRIORITY`` (the most fundamental cause) and prints an
``openssl s_client`` command that reproduces the finding from a shell.

Blocking work (sockets, ``ssl``) runs in threads through ``asyncio.to_thread``; subprocesses and HTTP fetches use
asyncio; every network step is bounded by ``timeout``.

The ``openssl_command`` choices, per mode (all run as printed under ``sh``):
- base: ``openssl s_client -connect HOST:PORT -servername NAME -verify_hostname NAME -verify_return_error
  [-CAfile PEM] -showcerts -status </dev/null``. HOST is the ``connect`` target when given, the address we
  resolved when a custom ``resolver`` was used (the local resolver may not know the name), the name otherwise.
- several certificate problems at once (e.g. a default certificate that is also self-signed): without
  ``-verify_return_error``, so OpenSSL prints every ``verify error:num=N`` instead of stopping at the first.
- ``revoked`` through a CRL: ``-crl_check -crl_download`` (OpenSSL fetches the CRL from the distribution point:
  ``verify error:num=23``); through a stapled OCSP response: ``-status`` shows ``Cert Status: revoked``.
- ``weak_key`` / ``weak_signature``: ``-auth_level 2`` so the result does not depend on the local openssl.cnf.
- ``protocol_version_mismatch``: ``-no_tls1 -no_tls1_1`` (what browsers offer): ``alert number 70``.
- ``cipher_mismatch``: ``-cipher`` with the browsers' TLS 1.2 suites: ``alert number 40``.
- ``connection_timeout`` / a stalled handshake: wrapped in ``timeout 10`` and prints ``timed out`` when it fires.
- ``dns_not_configured``: ``-connect NAME:PORT`` fails to resolve (``BIO_lookup_ex ... Name or service not known``).
- ``wrong_endpoint``: connects to the address the name resolves to, showing the certificate served there.
- ``mixed_content``: fetches the page through ``openssl s_client -quiet`` and greps the ``http://`` subresources.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import errno
import hashlib
import html.parser
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import ssl
import sys
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit

import idna
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from .modes import FAILURE_MODES, PRIORITY, get_mode

__all__ = ["diagnose", "diagnose_main", "TargetNotAllowed", "BROWSER_CIPHERS"]

#: TLS 1.2 cipher suites that current browsers offer (Chrome / Firefox / Safari, 2025): ECDHE with AES-GCM,
#: ChaCha20 or AES-CBC, plus the RSA-key-exchange AES suites kept for compatibility. No DHE, 3DES, RC4, CAMELLIA.
BROWSER_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
])
_ALL_CIPHERS = "ALL:@SECLEVEL=0"
_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_MAX_FETCH = 1 << 20  # CRLs, AIA issuers
_MAX_PAGE = 512 << 10  # the page scanned for mixed content
_VERSIONS = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_OPENSSL_VERIFY_TEXT = {
    9: "certificate is not yet valid", 10: "certificate has expired", 18: "self-signed certificate",
    19: "self-signed certificate in certificate chain", 20: "unable to get local issuer certificate",
    23: "certificate revoked", 62: "hostname mismatch", 66: "EE certificate key too weak",
    67: "CA certificate key too weak", 68: "CA signature digest algorithm too weak",
}


class TargetNotAllowed(ValueError):
    """The target resolves to (or ``connect`` names) an address that must not be probed: loopback, private,
    link-local, multicast, reserved, unspecified, or a cloud metadata address. Raised before connecting.

    Attributes:
        address: the refused address.
        reason: why it is refused (e.g. ``"loopback"``).
    """

    def __init__(self, address: str, reason: str):
        super().__init__(f"refusing to probe {address}: {reason} address")
        self.address = address
        self.reason = reason


# --------------------------------------------------------------------------------------------------- small helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_hostname(hostname: str) -> str:
    """Lower-case A-label form of ``hostname`` (an IP literal is returned in canonical form).

    Raises:
        ValueError: not a usable host name.
    """
    if not isinstance(hostname, str):
        raise ValueError("hostname must be a string")
    h = hostname.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if not h:
        raise ValueError("hostname is empty")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if h.endswith("."):
        h = h[:-1]
    if "://" in h or "/" in h or ":" in h or " " in h:
        raise ValueError(f"invalid hostname {hostname!r}: give a bare name like shop.example.com (no scheme, port "
                         "or path)")
    try:
        ascii_name = h.encode("ascii").decode().lower()
    except UnicodeEncodeError:
        try:
            ascii_name = idna.encode(h, uts46=True).decode().lower()
        except idna.IDNAError as e:
            raise ValueError(f"invalid hostname {hostname!r}: {e}") from None
    if len(ascii_name) > 253:
        raise ValueError(f"invalid hostname {hostname!r}: longer than 253 characters")
    for label in ascii_name.split("."):
        if not label:
            raise ValueError(f"invalid hostname {hostname!r}: empty label")
        if len(label) > 63:
            raise ValueError(f"invalid hostname {hostname!r}: label {label[:20]!r}... longer than 63 characters")
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?", label):
            raise ValueError(f"invalid hostname {hostname!r}: bad characters in label {label!r}")
    if re.fullmatch(r"[0-9.]+", ascii_name):
        raise ValueError(f"invalid hostname {hostname!r}: not a valid IP address or name")
    return ascii_name


def parse_hostport(value: str, *, what: str = "address", default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port).

    Raises:
        ValueError: malformed.
    """
    v = (value or "").strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%a-zA-Z0-9]+)\](?::(\d+))?", v)
    if m:
        host, port_s = m.group(1), m.group(2)
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    elif v.count(":") > 1:
        try:
            ipaddress.IPv6Address(v)
        except ValueError:
            raise ValueError(f"invalid {what} {value!r}: expected HOST:PORT") from None
        host, port_s = v, None
    else:
        host, port_s = v, None
    if not host:
        raise ValueError(f"invalid {what} {value!r}: expected HOST:PORT")
    if port_s is None:
        if default_port is None:
            raise ValueError(f"invalid {what} {value!r}: expected HOST:PORT")
        return host, default_port
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"invalid {what} {value!r}: port must be 1-65535")
    return host, int(port_s)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _forbidden_reason(addr: str) -> str | None:
    """Why ``addr`` must not be probed when private targets are disallowed (None: it may)."""
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return "unparseable"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    for attr, reason in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                         ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                         ("is_reserved", "reserved"), ("is_private", "private")):
        if getattr(ip, attr):
            return reason
    if not ip.is_global:
        return "non-global"
    return None


def _check_allowed(addresses: Iterable[str], allow_private: bool) -> None:
    if allow_private:
        return
    for a in addresses:
        reason = _forbidden_reason(a)
        if reason:
            raise TargetNotAllowed(a, reason)


def _sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _norm_fingerprint(value: str) -> str:
    v = value.strip().lower().replace(":", "")
    if v.startswith("sha256/") or v.startswith("sha256:"):
        v = v[7:]
    if not re.fullmatch(r"[0-9a-f]{64}", v):
        raise ValueError("expected_sha256 must be 64 hex digits (colons allowed)")
    return v


# --------------------------------------------------------------------------------------------------------- DNS


@dataclass
class DNSResult:
    addresses: list[str] = field(default_factory=list)
    cnames: list[str] = field(default_factory=list)
    error: str | None = None  # nxdomain | no_address | servfail | timeout | error
    detail: str = ""
    source: str = ""


def _make_resolver(resolver: str | None, timeout: float):
    import dns.asyncresolver

    if resolver:
        host, port = parse_hostport(resolver, what="resolver", default_port=53)
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [host]
        r.port = port
        r.lifetime = timeout
    else:
        # system case: getaddrinfo decides; dnspython only adds the CNAME chain, so it gets a short leash
        r = dns.asyncresolver.Resolver()
        r.lifetime = min(timeout, 2.0)
    r.timeout = min(timeout, 2.0)
    return r


async def _dns_lookup(name: str, resolver: str | None, timeout: float) -> DNSResult:
    """A/AAAA (and the CNAME chain) for ``name`` through dnspython; without ``resolver``, the system's addresses
    (getaddrinfo: /etc/hosts included) decide whether the name resolves."""
    import dns.exception
    import dns.resolver

    res = DNSResult(source=f"resolver {resolver}" if resolver else "system resolver")
    errors: list[str] = []
    seen_nx = False
    try:
        r = _make_resolver(resolver, timeout)
    except Exception as e:  # no resolv.conf: the system path below still answers
        r = None
        errors.append(f"resolver unavailable: {e}")
    if r is not None:
        async def one(rdtype: str):
            return await r.resolve(name + ".", rdtype, raise_on_no_answer=False, search=False)

        results = await asyncio.gather(one("A"), one("AAAA"), return_exceptions=True)
        for rdtype, out in zip(("A", "AAAA"), results):
            if isinstance(out, dns.resolver.NXDOMAIN):
                seen_nx = True
                errors.append("NXDOMAIN")
                for cn in _nx_cnames(out):
                    if cn not in res.cnames:
                        res.cnames.append(cn)
            elif isinstance(out, dns.resolver.NoNameservers):
                errors.append(f"{rdtype}: SERVFAIL / no answering name server")
            elif isinstance(out, dns.exception.Timeout):
                errors.append(f"{rdtype}: timed out")
            elif isinstance(out, BaseException):
                errors.append(f"{rdtype}: {type(out).__name__}: {out}")
            else:
                for rrset in out.response.answer:
                    if rrset.rdtype == dns.rdatatype.CNAME:
                        for rd in rrset:
                            t = rd.target.to_text().rstrip(".").lower()
                            if t not in res.cnames:
                                res.cnames.append(t)
                    elif rrset.rdtype == dns.rdatatype.from_text(rdtype):
                        for rd in rrset:
                            if rd.address not in res.addresses:
                                res.addresses.append(rd.address)
    if not resolver:
        # What the OS (and so the browser) resolves: /etc/hosts, nsswitch. Authoritative for the system case.
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), timeout)
            sys_addrs = []
            for fam, *_rest, sockaddr in infos:
                if sockaddr[0] not in sys_addrs:
                    sys_addrs.append(sockaddr[0])
            v4 = [a for a in sys_addrs if ":" not in a]
            res.addresses = v4 + [a for a in sys_addrs if ":" in a]
        except socket.gaierror as e:
            if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                seen_nx = seen_nx or e.errno == socket.EAI_NONAME
                errors.append(f"getaddrinfo: {e.strerror}")
            else:
                errors.append(f"getaddrinfo: {e.strerror}")
            res.addresses = []
        except (asyncio.TimeoutError, OSError) as e:
            errors.append(f"getaddrinfo: {type(e).__name__} {e}")
            res.addresses = []
    if res.addresses:
        return res
    if seen_nx:
        res.error, res.detail = "nxdomain", "NXDOMAIN: the name does not exist in DNS"
    elif any("timed out" in e or "Timeout" in e for e in errors):
        res.error, res.detail = "timeout", "; ".join(errors)
    elif any("SERVFAIL" in e for e in errors):
        res.error, res.detail = "servfail", "; ".join(errors)
    elif errors and any("getaddrinfo" in e for e in errors) and not resolver:
        res.error, res.detail = "no_address", "; ".join(errors)
    else:
        res.error = "no_address"
        res.detail = "the name exists but has no A or AAAA record" + (f" ({'; '.join(errors)})" if errors else "")
    return res


def _nx_cnames(exc) -> list[str]:
    try:
        canonical = exc.canonical_name
        return [] if canonical is None else [canonical.to_text().rstrip(".").lower()]
    except Exception:
        return []


async def _resolve_host(host: str, resolver: str | None, timeout: float) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    r = await _dns_lookup(normalize_hostname(host), resolver, timeout)
    return r.addresses


# ---------------------------------------------------------------------------------------------------- TLS probes


@dataclass
class Handshake:
    ok: bool
    label: str = ""
    version: str | None = None
    cipher: str | None = None
    chain: list[bytes] = field(default_factory=list)  # DER, as served (leaf first)
    kind: str | None = None  # failure kind: eof reset timeout refused wrong_version alert ssl oserror
    reason: str | None = None  # OpenSSL reason (e.g. TLSV1_UNRECOGNIZED_NAME)
    alert: int | None = None
    text: str = ""


_ALERTS = {
    "SSLV3_ALERT_HANDSHAKE_FAILURE": 40, "TLSV1_ALERT_PROTOCOL_VERSION": 70, "TLSV1_UNRECOGNIZED_NAME": 112,
    "TLSV1_ALERT_INTERNAL_ERROR": 80, "TLSV1_ALERT_ACCESS_DENIED": 49, "SSLV3_ALERT_ILLEGAL_PARAMETER": 47,
    "TLSV1_ALERT_DECODE_ERROR": 50, "TLSV1_ALERT_INSUFFICIENT_SECURITY": 71, "SSLV3_ALERT_BAD_CERTIFICATE": 42,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": 116, "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": 120,
    "SSLV3_ALERT_UNEXPECTED_MESSAGE": 10, "TLSV1_ALERT_DECRYPT_ERROR": 51, "SSLV3_ALERT_CLOSE_NOTIFY": 0,
    "TLSV1_ALERT_UNKNOWN_CA": 48, "TLSV1_ALERT_INAPPROPRIATE_FALLBACK": 86,
}
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG",
                    "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "RECORD_LENGTH_MISMATCH"}
_VERSION_REASONS = {"UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "VERSION_TOO_LOW", "VERSION_TOO_HIGH",
                    "WRONG_SSL_VERSION", "TLSV1_ALERT_PROTOCOL_VERSION", "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED"}
_CIPHER_REASONS = {"SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE", "DH_KEY_TOO_SMALL",
                   "NO_SUITABLE_SIGNATURE_ALGORITHM", "TLSV1_ALERT_INSUFFICIENT_SECURITY", "NO_SHARED_GROUPS",
                   "WRONG_CURVE", "BAD_DH_VALUE"}


def _client_context(min_v: ssl.TLSVersion, max_v: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers(ciphers)
        ctx.minimum_version = min_v
        ctx.maximum_version = max_v
    try:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    except (NotImplementedError, ssl.SSLError):
        pass
    return ctx


def _chain_of(tls: ssl.SSLSocket) -> list[bytes]:
    sslobj = getattr(tls, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None) or getattr(tls, "get_unverified_chain", None)
    if getter is not None:
        try:
            out = []
            for c in getter() or []:
                out.append(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore
            if out:
                return out
        except Exception:
            pass
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _handshake(address: str, port: int, sni: str | None, ctx: ssl.SSLContext, timeout: float,
               label: str) -> Handshake:
    """One TLS handshake (blocking: run it in a thread)."""
    sock = None
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except (TimeoutError, socket.timeout):
        return Handshake(False, label, kind="timeout", text="TCP connect timed out")
    except ConnectionRefusedError as e:
        return Handshake(False, label, kind="refused", text=str(e))
    except OSError as e:
        return Handshake(False, label, kind="oserror", text=str(e))
    try:
        sock.settimeout(timeout)
        tls = ctx.wrap_socket(sock, server_hostname=sni, do_handshake_on_connect=False)
        sock = tls
        tls.do_handshake()
        cipher = tls.cipher()
        return Handshake(True, label, version=tls.version(), cipher=cipher[0] if cipher else None,
                         chain=_chain_of(tls))
    except ssl.SSLError as e:
        reason = getattr(e, "reason", None) or ""
        text = str(e)
        if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or reason in (
                "UNEXPECTED_EOF_WHILE_READING",) or "EOF occurred" in text:
            return Handshake(False, label, kind="eof", reason=reason or "UNEXPECTED_EOF_WHILE_READING", text=text)
        if reason in _NOT_TLS_REASONS:
            return Handshake(False, label, kind="wrong_version", reason=reason, text=text)
        alert = _ALERTS.get(reason)
        m = re.search(r"alert number (\d+)", text)
        if alert is None and m:
            alert = int(m.group(1))
        return Handshake(False, label, kind="alert" if alert is not None else "ssl", reason=reason, alert=alert,
                         text=text)
    except (TimeoutError, socket.timeout):
        return Handshake(False, label, kind="timeout", text=f"no TLS answer within {timeout:g} s")
    except (ConnectionResetError, BrokenPipeError) as e:
        return Handshake(False, label, kind="reset", text=f"{type(e).__name__}: {e}")
    except OSError as e:
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            return Handshake(False, label, kind="reset", text=str(e))
        return Handshake(False, label, kind="oserror", text=str(e))
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _plain_probe(address: str, port: int, host: str, timeout: float) -> str | None:
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


async def _tcp_connect(address: str, port: int, timeout: float) -> tuple[str | None, str]:
    """(error kind or None, detail)."""
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except asyncio.TimeoutError:
        return "timeout", f"no answer from {_hostport(address, port)} within {timeout:g} s"
    except ConnectionRefusedError:
        return "refused", f"{_hostport(address, port)} refused the connection (nothing listens)"
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT):
            return "timeout", f"{_hostport(address, port)} unreachable: {e.strerror}"
        if e.errno == errno.ECONNREFUSED:
            return "refused", f"{_hostport(address, port)} refused the connection (nothing listens)"
        return "error", f"{_hostport(address, port)}: {e}"
    w.close()
    try:
        await asyncio.wait_for(w.wait_closed(), 1)
    except Exception:
        pass
    return None, f"connected to {_hostport(address, port)}"


async def _openssl_status(address: str, port: int, sni: str | None, timeout: float) -> str | None:
    """``openssl s_client -status -showcerts`` output (the stapled OCSP response), or None."""
    exe = shutil.which("openssl")
    if not exe:
        return None
    args = [exe, "s_client", "-connect", _hostport(address, port), "-status", "-showcerts",
            "-cipher", _ALL_CIPHERS]
    args += ["-servername", sni] if sni else ["-noservername"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 1)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out.decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------------- bounded HTTP


async def _http_get(url: str, *, timeout: float, limit: int, allow_private: bool, resolver: str | None,
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
        addrs = await _resolve_host(host, resolver, timeout)
        if not addrs:
            raise OSError(f"cannot resolve {host}")
        address = addrs[0]
    _check_allowed([address], allow_private)
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


# ------------------------------------------------------------------------------------------------- certificates


@lru_cache(maxsize=8)
def _load_store(cafile: str | None) -> tuple[x509.Certificate, ...]:
    """Trust anchors: ``cafile`` or the system bundle."""
    paths: list[str] = []
    if cafile:
        paths = [cafile]
    else:
        vp = ssl.get_default_verify_paths()
        for p in (vp.cafile, vp.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
            if p and os.path.isfile(p):
                paths = [p]
                break
        if not paths and vp.capath and os.path.isdir(vp.capath):
            paths = [os.path.join(vp.capath, f) for f in os.listdir(vp.capath)
                     if f.endswith((".pem", ".crt")) or re.fullmatch(r"[0-9a-f]{8}\.\d+", f)]
    out: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for p in paths:
        try:
            data = open(p, "rb").read()
        except OSError:
            continue
        for block in re.findall(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----.+?-----END (?:TRUSTED )?CERTIFICATE-----",
                                data, re.S):
            block = block.replace(b"TRUSTED CERTIFICATE", b"CERTIFICATE")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # old roots with negative serials
                    c = x509.load_pem_x509_certificate(block)
            except Exception:
                continue
            der = c.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(c)
    return tuple(out)


def _validate_cafile(cafile: str) -> None:
    if not os.path.isfile(cafile):
        raise ValueError(f"cafile {cafile!r} does not exist")
    _load_store.cache_clear()
    if not _load_store(cafile):
        raise ValueError(f"cafile {cafile!r} holds no PEM certificate")


def _der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def _name(n: x509.Name) -> str:
    try:
        return n.rfc4514_string()
    except Exception:
        return str(n)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (ValueError, TypeError, NotImplementedError):  # names match; an algorithm cryptography will not check
        return True
    except Exception:  # InvalidSignature
        return False


def _self_signed(c: x509.Certificate) -> bool:
    return c.subject == c.issuer and _issued_by(c, c)


def _key_desc(c: x509.Certificate) -> tuple[str, int, bool]:
    """(description, bits, weak)."""
    try:
        k = c.public_key()
    except Exception:
        return "unknown key", 0, False
    if isinstance(k, rsa.RSAPublicKey):
        return f"RSA {k.key_size}", k.key_size, k.key_size < 2048
    if isinstance(k, dsa.DSAPublicKey):
        return f"DSA {k.key_size}", k.key_size, k.key_size < 2048
    if isinstance(k, ec.EllipticCurvePublicKey):
        return f"EC {k.curve.name}", k.curve.key_size, k.curve.key_size < 224
    if isinstance(k, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, False
    if isinstance(k, ed448.Ed448PublicKey):
        return "Ed448", 456, False
    return type(k).__name__, 0, False


def _sig_desc(c: x509.Certificate) -> tuple[str, bool]:
    try:
        h = c.signature_hash_algorithm
        hname = h.name if h else None
    except Exception:
        hname = None
    try:
        oid_name = c.signature_algorithm_oid._name  # type: ignore[attr-defined]
    except Exception:
        oid_name = c.signature_algorithm_oid.dotted_string
    weak = (hname or "").lower() in ("md5", "sha1", "md2", "md4") or any(
        w in oid_name.lower() for w in ("md5", "md2", "sha1"))
    return oid_name, weak


def _dns_sans(c: x509.Certificate) -> tuple[list[str], list[str], bool]:
    """(DNS names, IP addresses, has SAN extension)."""
    try:
        ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], False
    except Exception:
        return [], [], False
    names = [n.lower() for n in ext.get_values_for_type(x509.DNSName)]
    ips = [str(i) for i in ext.get_values_for_type(x509.IPAddress)]
    return names, ips, True


def _cn(c: x509.Certificate) -> str | None:
    try:
        attrs = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else None
    except Exception:
        return None


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[2:]
        if "." not in suffix:  # "*.com": never
            return False
        head, _, rest = host.partition(".")
        return bool(head) and rest == suffix
    return False


def name_coverage(c: x509.Certificate, host: str) -> str:
    """``san`` (a SAN covers the name), ``cn_only`` (no SAN; only the legacy CN matches: OpenSSL accepts,
    browsers refuse) or ``none``."""
    names, ips, _has_san = _dns_sans(c)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if any(ipaddress.ip_address(i) == ip for i in ips):
            return "san"
    elif any(_dns_match(n, host) for n in names):
        return "san"
    if not names and not ips:
        cn = _cn(c)
        if cn and (_dns_match(cn, host) if ip is None else cn == str(ip)):
            return "cn_only"
    return "none"


def _cert_info(c: x509.Certificate) -> dict:
    names, ips, _ = _dns_sans(c)
    key, bits, _ = _key_desc(c)
    sig, _ = _sig_desc(c)
    return {
        "subject": _name(c.subject),
        "issuer": _name(c.issuer),
        "serial": format(c.serial_number, "x"),
        "not_before": _iso(c.not_valid_before_utc),
        "not_after": _iso(c.not_valid_after_utc),
        "sha256": _sha256_hex(_der(c)),
        "san": names + ips,
        "key": key,
        "signature_algorithm": sig,
        "self_signed": _self_signed(c),
    }


def _ext_urls(c: x509.Certificate, kind: str) -> list[str]:
    urls: list[str] = []
    try:
        if kind == "crl":
            for dp in c.extensions.get_extension_for_class(x509.CRLDistributionPoints).value:
                for n in dp.full_name or []:
                    if isinstance(n, x509.UniformResourceIdentifier):
                        urls.append(n.value)
        else:
            for ad in c.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value:
                if ad.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS and isinstance(
                        ad.access_location, x509.UniformResourceIdentifier):
                    urls.append(ad.access_location.value)
    except x509.ExtensionNotFound:
        pass
    except Exception:
        pass
    return [u for u in urls if u.lower().startswith(("http://", "https://"))]


def _load_any_certs(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in data:
        try:
            return list(x509.load_pem_x509_certificates(data))
        except Exception:
            return []
    try:
        return [x509.load_der_x509_certificate(data)]
    except Exception:
        pass
    try:  # PKCS#7 "certs-only" (.p7c)
        from cryptography.hazmat.primitives.serialization import pkcs7

        return list(pkcs7.load_der_pkcs7_certificates(data))
    except Exception:
        return []


@dataclass
class ChainReport:
    path: list[x509.Certificate]
    trusted: bool
    status: str  # trusted | self_signed | untrusted_root | incomplete_chain
    detail: str
    served_order_ok: bool
    unused: list[x509.Certificate]
    aia_detail: str = ""


def _build_chain(served: list[x509.Certificate], store: tuple[x509.Certificate, ...],
                 extra_issuers: list[x509.Certificate] = ()) -> ChainReport:  # type: ignore[assignment]
    """Build leaf -> ... -> anchor like OpenSSL (trusted store first, then the served certificates)."""
    leaf = served[0]
    store_ders = {_der(c) for c in store}
    by_subject: dict[x509.Name, list[x509.Certificate]] = {}
    for c in store:
        by_subject.setdefault(c.subject, []).append(c)
    path = [leaf]
    cur = leaf
    trusted = False
    for _ in range(12):
        if _self_signed(cur):
            trusted = _der(cur) in store_ders
            break
        issuer = next((c for c in by_subject.get(cur.issuer, []) if _issued_by(cur, c)), None)
        if issuer is None:
            issuer = next((c for c in list(served[1:]) + list(extra_issuers)
                           if all(c is not p for p in path) and _issued_by(cur, c)), None)
        if issuer is None:
            break
        path.append(issuer)
        cur = issuer
    order_ok = all(served[i].issuer == served[i + 1].subject for i in range(len(served) - 1))
    used = {_der(c) for c in path}
    unused = [c for c in served[1:] if _der(c) not in used]
    if trusted:
        return ChainReport(path, True, "trusted", "chains to a trusted root: "
                           + " -> ".join(_cn(c) or _name(c.subject) for c in path), order_ok, unused)
    top = path[-1]
    if len(path) == 1 and _self_signed(leaf):
        return ChainReport(path, False, "self_signed", "the certificate is self-signed and not trusted", order_ok,
                           unused)
    if _self_signed(top):
        return ChainReport(path, False, "untrusted_root",
                           f"the chain ends at the root {_name(top.subject)!s}, which is not trusted", order_ok, unused)
    if len(path) == 1:
        return ChainReport(path, False, "incomplete_chain",
                           f"the server sent no certificate for the issuer {_name(leaf.issuer)} and it is not a "
                           "trusted root: the intermediate is missing", order_ok, unused)
    return ChainReport(path, False, "untrusted_root",
                       f"the chain stops at {_name(top.subject)}, issued by {_name(top.issuer)}, which is neither "
                       "sent nor trusted", order_ok, unused)


# ------------------------------------------------------------------------------------------------- mixed content


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


# ------------------------------------------------------------------------------------------------------- engine


@dataclass
class _State:
    hostname: str
    port: int
    checks: list[dict] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str, **extra) -> None:
        d = {"name": name, "ok": bool(ok), "detail": detail}
        d.update(extra)
        self.checks.append(d)

    def fail(self, mode: str) -> None:
        if mode not in self.modes:
            self.modes.append(mode)

    def primary(self) -> str:
        if not self.modes:
            return "ok"
        return min(self.modes, key=lambda m: PRIORITY.index(m) if m in PRIORITY else len(PRIORITY))


async def diagnose(
    hostname: str,
    *,
    connect: str | None = None,
    cafile: str | None = None,
    resolver: str | None = None,
    allow_private: bool = True,
    expected_sha256: str | None = None,
    edge_targets: list[str] | None = None,
    timeout: float = 5.0,
    port: int = 443,
) -> dict:
    """Probe ``hostname`` over TLS and name what is wrong.

    Args:
        hostname: the name a visitor types (IDNA allowed; an IP literal is probed without SNI).
        connect: ``HOST:PORT`` to connect to instead of the resolved address (like curl ``--resolve``).
        cafile: PEM bundle replacing the system trust store.
        resolver: ``HOST:PORT`` of the DNS server to ask (default: the system resolver).
        allow_private: when False, refuse loopback/private/link-local/multicast/reserved/metadata targets.
        expected_sha256: SHA-256 of the leaf the edge should serve for the name.
        edge_targets: names or addresses of the edge: a name resolving elsewhere is ``wrong_endpoint``.
        timeout: bound of each network step, in seconds.
        port: TLS port when ``connect`` is not given.

    Returns:
        The diagnosis object (see docs/interface.md): ``hostname, ok, failure_mode, summary, fix, who_acts,
        browser_errors, checks, certificate, openssl_command`` plus ``connect``, ``port``, ``checked_at``,
        ``failure_modes`` (every mode found, primary first), ``tls``, ``dns``.

    Raises:
        ValueError: a malformed hostname, ``connect``, ``resolver``, ``cafile`` or fingerprint.
        TargetNotAllowed: ``allow_private`` is False and the target is a private/special address.
    """
    host = normalize_hostname(hostname)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    if not 0 < int(port) < 65536:
        raise ValueError("port must be 1-65535")
    port = int(port)
    connect_hp = parse_hostport(connect, what="connect target") if connect else None
    if resolver:
        parse_hostport(resolver, what="resolver", default_port=53)
    if cafile:
        _validate_cafile(cafile)
    expected = _norm_fingerprint(expected_sha256) if expected_sha256 else None
    try:
        ip_literal = str(ipaddress.ip_address(host))
    except ValueError:
        ip_literal = None
    st = _State(hostname=host, port=connect_hp[1] if connect_hp else port)
    started = _now()

    # ---- DNS
    dns_res = DNSResult(addresses=[ip_literal]) if ip_literal else await _dns_lookup(host, resolver, timeout)
    dns_info: dict[str, Any] = {"addresses": dns_res.addresses, "cnames": dns_res.cnames, "source": dns_res.source}
    wrong_endpoint_detail = None
    if ip_literal:
        st.check("dns", True, f"{host} is an IP address: no DNS lookup")
    elif dns_res.error:
        detail = f"{host} does not resolve ({dns_res.source}): {dns_res.detail}"
        if connect_hp:
            st.check("dns", False, detail + f"; connecting to {connect} as asked", fatal=False)
        else:
            st.check("dns", False, detail)
            st.fail("dns_not_configured")
    else:
        chain = " -> ".join([host] + dns_res.cnames)
        st.check("dns", True, f"{chain} -> {', '.join(dns_res.addresses)} ({dns_res.source})")
    if edge_targets and not ip_literal and not dns_res.error:
        edge_names, edge_addrs = set(), set()
        for t in edge_targets:
            t = t.strip()
            if not t:
                continue
            try:
                edge_addrs.add(str(ipaddress.ip_address(t)))
            except ValueError:
                n = normalize_hostname(t)
                edge_names.add(n)
                edge_addrs.update(await _resolve_host(n, resolver, timeout))
        via_cname = [c for c in dns_res.cnames if c in edge_names]
        outside = [a for a in dns_res.addresses if a not in edge_addrs]
        if via_cname or not outside:
            st.check("dns_points_to_edge", True,
                     f"{host} points at the edge" + (f" (CNAME {via_cname[0]})" if via_cname else
                                                     f" ({', '.join(dns_res.addresses)})"))
        else:
            where = ", ".join(outside) + (f" via CNAME {' -> '.join(dns_res.cnames)}" if dns_res.cnames else "")
            wrong_endpoint_detail = (f"{host} resolves to {where}, not to the edge "
                                     f"({', '.join(sorted(edge_names | edge_addrs))})")
            if connect_hp:
                st.check("dns_points_to_edge", False, wrong_endpoint_detail + f"; connecting to {connect} as asked",
                         fatal=False)
            else:
                st.check("dns_points_to_edge", False, wrong_endpoint_detail)
                st.fail("wrong_endpoint")
                dns_info["points_to"] = outside

    # ---- where to connect
    if connect_hp:
        targets = await _resolve_host(connect_hp[0], resolver, timeout)
        if not targets:
            raise ValueError(f"connect target {connect!r} does not resolve")
        target_port = connect_hp[1]
    else:
        targets = list(dns_res.addresses)
        target_port = port
    _check_allowed(targets, allow_private)

    address: str | None = None
    hs_main: Handshake | None = None
    handshakes: dict[str, Handshake] = {}
    cert_obj: dict | None = None
    tls_info: dict[str, Any] = {}
    cmd_hint: dict[str, Any] = {}
    sni = None if ip_literal else host

    if targets:
        # ---- TCP
        tcp_err = None
        tcp_details = []
        for a in targets[:3]:
            kind, detail = await _tcp_connect(a, target_port, timeout)
            tcp_details.append(detail)
            if kind is None:
                address, tcp_err = a, None
                break
            if tcp_err is None or (tcp_err == "timeout" and kind == "refused"):
                tcp_err = kind
        if address is None:
            st.check("tcp", False, "; ".join(tcp_details))
            st.fail("connection_refused" if tcp_err == "refused" else
                    "connection_timeout" if tcp_err == "timeout" else "connection_refused")
            cmd_hint["address"] = targets[0]
        else:
            st.check("tcp", True, tcp_details[-1])

    if address is not None:
        # ---- TLS: a browser-like handshake first
        browser_ctx = _client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3,
                                      BROWSER_CIPHERS + ":@SECLEVEL=0")
        hs_main = await asyncio.to_thread(_handshake, address, target_port, sni, browser_ctx, timeout, "browser")
        handshakes["browser"] = hs_main

        probe_jobs: dict[str, Any] = {}
        for vname, v in _VERSIONS.items():
            ctx = _client_context(v, v, _ALL_CIPHERS)
            probe_jobs[vname] = asyncio.to_thread(_handshake, address, target_port, sni, ctx, timeout, vname)
        any_ctx = _client_context(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3, _ALL_CIPHERS)
        probe_jobs["no_sni"] = asyncio.to_thread(_handshake, address, target_port, None, any_ctx, timeout, "no_sni")
        if hs_main.ok and not ip_literal:
            bogus = f"edgecert-probe-{secrets.token_hex(4)}.invalid"
            probe_jobs["bogus_sni"] = asyncio.to_thread(_handshake, address, target_port, bogus, any_ctx, timeout,
                                                        "bogus_sni")
            probe_jobs["openssl"] = _openssl_status(address, target_port, sni, timeout)
        if hs_main.ok:
            probe_jobs["page"] = _fetch_page(host, address, target_port, timeout)
        if hs_main.kind == "wrong_version":
            probe_jobs["plain"] = asyncio.to_thread(_plain_probe, address, target_port, host, timeout)
        results = dict(zip(probe_jobs, await asyncio.gather(*probe_jobs.values(), return_exceptions=True)))
        for k, v in results.items():
            if isinstance(v, Handshake):
                handshakes[k] = v

        accepted = {v: handshakes[v] for v in _VERSIONS if handshakes.get(v) and handshakes[v].ok}
        tls_info = {
            "versions": {v: bool(handshakes.get(v) and handshakes[v].ok) for v in _VERSIONS},
            "ciphers": {v: h.cipher for v, h in accepted.items()},
        }
        versions_txt = ", ".join(f"{v} {'yes' if ok else 'no'}" for v, ok in tls_info["versions"].items())

        if hs_main.ok:
            tls_info.update({"version": hs_main.version, "cipher": hs_main.cipher})
            st.check("tls_handshake", True, f"{hs_main.version} {hs_main.cipher} (SNI {sni or 'none'})")
            legacy = [v for v in ("TLSv1.0", "TLSv1.1") if tls_info["versions"].get(v)]
            st.check("tls_versions", True, versions_txt + (
                f"; legacy {' and '.join(legacy)} still enabled (harmless for browsers)" if legacy else ""))
        else:
            mode, detail = _classify_handshake(hs_main, handshakes, results.get("plain"))
            st.check("tls_handshake", False, detail)
            st.check("tls_versions", False, versions_txt)
            st.fail(mode)
            cmd_hint["stalled"] = hs_main.kind == "timeout"

        # ---- certificate
        if hs_main.ok and hs_main.chain:
            cert_obj = await _certificate_checks(
                st, hs_main, handshakes, results, cafile=cafile, expected=expected, allow_private=allow_private,
                resolver=resolver, timeout=timeout, cmd_hint=cmd_hint)
            cert_obj.pop("_certs", None)  # internal: the parsed chain, not part of the answer
        elif hs_main.ok:
            st.check("certificate", False, "the server sent no certificate")
            st.fail("handshake_failure")
        if hs_main.ok and not any(m for m in st.modes if FAILURE_MODES[m].phase == "certificate"):
            _page_check(st, results.get("page"), cmd_hint)

    primary = st.primary()
    mode = get_mode(primary)
    command = _openssl_command(
        primary, st, host=host, ip_literal=ip_literal, connect=connect, address=address or cmd_hint.get("address"),
        target_port=target_port if (targets or connect_hp) else port, cafile=cafile, resolver=resolver,
        hint=cmd_hint, wrong_endpoint_addr=(dns_info.get("points_to") or [None])[0])
    summary = mode.summary
    if primary == "wrong_endpoint" and wrong_endpoint_detail:
        summary = f"{mode.summary} Here: {wrong_endpoint_detail}."
    return {
        "hostname": host,
        "ok": primary == "ok",
        "failure_mode": primary,
        "summary": summary,
        "fix": mode.fix,
        "who_acts": mode.who_acts,
        "browser_errors": dict(mode.browser_errors),
        "checks": st.checks,
        "certificate": cert_obj,
        "openssl_command": command,
        "failure_modes": sorted(st.modes, key=lambda m: PRIORITY.index(m)) or ["ok"],
        "connect": _hostport(address, target_port) if address else (connect or None),
        "port": target_port if (targets or connect_hp) else port,
        "dns": dns_info,
        "tls": tls_info,
        "checked_at": _iso(started),
    }


def _classify_handshake(main: Handshake, hs: dict[str, Handshake], plain: Any) -> tuple[str, str]:
    """The failure mode of a browser-like handshake that failed, using the permissive probes."""
    legacy_ok = [v for v in ("TLSv1.0", "TLSv1.1") if hs.get(v) and hs[v].ok]
    modern_ok = [v for v in ("TLSv1.2", "TLSv1.3") if hs.get(v) and hs[v].ok]
    what = main.text or main.kind or "failed"
    if main.kind == "wrong_version":
        if isinstance(plain, str):
            return "plain_http_on_tls_port", f"the port answers plain HTTP ({plain!r}), not TLS: {what}"
        return "plain_http_on_tls_port", f"the port does not speak TLS (wrong version number): {what}"
    if main.alert == 112 or main.reason == "TLSV1_UNRECOGNIZED_NAME":
        return "sni_unrecognized", f"the server answered the SNI name with an unrecognized_name alert (112): {what}"
    if modern_ok:
        v = modern_ok[0]
        return "cipher_mismatch", (f"no cipher suite in common with browsers ({what}); the server only accepts "
                                   f"{hs[v].cipher} over {v}")
    if legacy_ok:
        return "protocol_version_mismatch", (f"the server only speaks {' and '.join(legacy_ok)} "
                                             f"(browsers need TLS 1.2 or 1.3): {what}")
    if main.kind == "timeout":
        return "handshake_failure", f"the server accepted the TCP connection but never answered the ClientHello " \
                                    f"({what})"
    if main.reason in _VERSION_REASONS or main.alert == 70:
        return "protocol_version_mismatch", f"no TLS version in common: {what}"
    if main.reason in _CIPHER_REASONS or main.alert in (40, 71):
        nosni = hs.get("no_sni")
        if nosni is not None and nosni.ok:
            return "sni_unrecognized", (f"the server refuses the name with a handshake_failure alert but completes "
                                        f"a handshake without SNI: it has no site for this name ({what})")
        return "cipher_mismatch", f"no cipher suite or key exchange in common: {what}"
    if main.kind in ("eof", "reset"):
        return "handshake_failure", f"the server cut the handshake ({main.kind}): {what}"
    return "handshake_failure", f"the handshake failed: {what}"


async def _fetch_page(host: str, address: str, port: int, timeout: float):
    ctx = _client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, BROWSER_CIPHERS + ":@SECLEVEL=0")
    ctx.set_alpn_protocols(["http/1.1"])
    url = f"https://{host}:{port}/" if port != 443 else f"https://{host}/"
    pages = []
    for _ in range(3):
        try:
            status, headers, body = await _http_get(url, timeout=timeout, limit=_MAX_PAGE, allow_private=True,
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


def _page_check(st: _State, page: Any, hint: dict) -> None:
    if not isinstance(page, dict) or "error" in page or page.get("redirect"):
        detail = "page not checked"
        if isinstance(page, dict) and page.get("redirect"):
            detail = f"/ redirects to {page['redirect']}: not followed"
            if page["redirect"].lower().startswith("http://"):
                st.check("page", False, f"the HTTPS page redirects to plain http: {page['redirect']}")
                return
        elif isinstance(page, dict) and page.get("error"):
            detail = f"page not fetched: {page['error']}"
        st.check("page", True, detail)
        return
    ctype = page["headers"].get("content-type", "")
    if "html" not in ctype.lower() and not page["body"].lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        st.check("page", True, f"{page['url']} answered {page['status']} ({ctype or 'no content type'}): no HTML")
        return
    found, upgraded = scan_mixed_content(page["body"], page["headers"])
    if not found:
        st.check("mixed_content", True, f"{page['url']} ({page['status']}) loads no http:// subresource")
        return
    listing = ", ".join(f"<{tag}> {url}" for _k, tag, url in found[:5]) + (" ..." if len(found) > 5 else "")
    if upgraded:
        st.check("mixed_content", True, f"http:// subresources ({listing}) are upgraded by "
                                        "Content-Security-Policy: upgrade-insecure-requests")
        return
    active = [f for f in found if f[0] == "active"]
    st.check("mixed_content", False, f"{page['url']} loads {len(found)} http:// subresource(s)"
                                     f"{' (' + str(len(active)) + ' active, blocked by browsers)' if active else ''}: "
                                     f"{listing}")
    st.fail("mixed_content")
    hint["page_path"] = urlsplit(page["url"]).path or "/"


async def _certificate_checks(st: _State, main: Handshake, hs: dict[str, Handshake], results: dict, *,
                              cafile: str | None, expected: str | None, allow_private: bool, resolver: str | None,
                              timeout: float, cmd_hint: dict) -> dict:
    host = st.hostname
    served: list[x509.Certificate] = []
    for der in main.chain:
        try:
            served.append(x509.load_der_x509_certificate(der))
        except Exception:
            pass
    if not served:
        st.check("certificate", False, "the certificate sent by the server cannot be parsed")
        st.fail("handshake_failure")
        return {}
    leaf = served[0]
    now = _now()
    store = _load_store(cafile)
    trust_label = f"CA file {cafile}" if cafile else "the system trust store"
    report = _build_chain(served, store)

    # The missing issuer may be fetchable (AIA caIssuers): tells a missing intermediate from an unknown root.
    if not report.trusted and report.status in ("incomplete_chain", "untrusted_root") and \
            not _self_signed(report.path[-1]):
        fetched: list[x509.Certificate] = []
        for url in _ext_urls(report.path[-1], "aia")[:2]:
            try:
                status, _h, body = await _http_get(url, timeout=timeout, limit=_MAX_FETCH,
                                                   allow_private=allow_private, resolver=resolver)
                if status == 200:
                    fetched += _load_any_certs(body)
            except Exception as e:
                report.aia_detail = f"AIA fetch of {url} failed: {type(e).__name__}: {e}"
        if fetched:
            again = _build_chain(served, store, fetched)
            if again.trusted:
                report.status = "incomplete_chain"
                report.detail = ("the server does not send the intermediate "
                                 f"({_name(again.path[len(report.path)].subject)}); it is downloadable from the "
                                 "AIA URL and chains to a trusted root")
                report.path = again.path
            elif _self_signed(again.path[-1]):
                report.status = "untrusted_root"
                report.detail = f"the chain ends at the root {_name(again.path[-1].subject)}, which is not trusted"

    path = report.path
    served_ders = [_der(c) for c in served]
    chain_desc = "; ".join(
        f"{i}: {_cn(c) or _name(c.subject)} (issuer {_cn_of_name(c.issuer)})" for i, c in enumerate(served))
    st.check("chain_sent", report.served_order_ok and not report.unused,
             f"{len(served)} certificate(s) sent: {chain_desc}"
             + ("" if report.served_order_ok else "; not in issuing order")
             + (f"; {len(report.unused)} unrelated certificate(s)" if report.unused else ""))

    cov = name_coverage(leaf, host)
    leaf_sha = _sha256_hex(served_ders[0])
    is_expected = expected is not None and leaf_sha == expected
    bogus = hs.get("bogus_sni")
    nosni = hs.get("no_sni")
    same_for_unknown = bool(bogus and bogus.ok and bogus.chain and bogus.chain[0] == served_ders[0])
    nosni_same = bool(nosni and nosni.ok and nosni.chain and nosni.chain[0] == served_ders[0])
    if nosni is not None and nosni.ok and nosni.chain:
        st.check("no_sni", True, "clients without SNI get " + (
            "the same certificate" if nosni_same else
            f"a different certificate ({_cn(x509.load_der_x509_certificate(nosni.chain[0])) or 'no CN'})"))
    elif nosni is not None:
        st.check("no_sni", True, f"a handshake without SNI fails ({nosni.text or nosni.kind})")

    problems: list[str] = []

    # default certificate
    default_cert = False
    if cov == "none":
        if expected is not None and not is_expected:
            default_cert = True
        elif not report.trusted and same_for_unknown:
            default_cert = True
    if expected is not None:
        if is_expected:
            st.check("expected_certificate", True, f"the served leaf is the expected one (sha256 {leaf_sha[:16]}...)")
        elif default_cert:
            st.check("expected_certificate", False,
                     f"the edge served its default/fallback certificate ({_cn(leaf) or _name(leaf.subject)}, "
                     f"sha256 {leaf_sha[:16]}...) instead of the one for {host} (sha256 {expected[:16]}...)")
        else:
            st.check("expected_certificate", False,
                     f"the served leaf (sha256 {leaf_sha[:16]}...) is not the expected one ({expected[:16]}...)",
                     fatal=False)
    elif default_cert:
        st.check("default_certificate", False,
                 f"the server sends the same certificate ({_cn(leaf) or _name(leaf.subject)}) for unknown names: "
                 "its fallback, not one for this name")
    if default_cert:
        st.fail("default_certificate")
        problems.append("default")

    # validity window of every certificate on the path
    expired_c, future_c = [], []
    for i, c in enumerate(path):
        label = "leaf" if i == 0 else ("root" if _self_signed(c) else "intermediate")
        if c.not_valid_after_utc < now:
            expired_c.append(f"{label} {_cn(c) or _name(c.subject)} expired {_iso(c.not_valid_after_utc)}")
        if c.not_valid_before_utc > now:
            future_c.append(f"{label} {_cn(c) or _name(c.subject)} valid only from {_iso(c.not_valid_before_utc)}")
    if expired_c or future_c:
        st.check("validity", False, "; ".join(expired_c + future_c))
        if expired_c:
            st.fail("expired")
            problems.append("expired")
        if future_c:
            st.fail("not_yet_valid")
            problems.append("not_yet_valid")
    else:
        days = (leaf.not_valid_after_utc - now).days
        st.check("validity", True, f"valid {_iso(leaf.not_valid_before_utc)} to {_iso(leaf.not_valid_after_utc)} "
                                   f"({days} days left)" + ("" if len(path) == 1 else "; issuers valid"))

    # trust
    if report.trusted:
        st.check("trust", True, f"{report.detail} ({trust_label})")
    else:
        st.check("trust", False, f"{report.detail} ({trust_label})" + (
            f"; {report.aia_detail}" if report.aia_detail else ""))
        if not default_cert:
            st.fail(report.status)
        problems.append(report.status)

    # signatures and keys
    weak_sigs, weak_keys = [], []
    for i, c in enumerate(path):
        sig, weak = _sig_desc(c)
        if weak and not (_self_signed(c) and i == len(path) - 1 and i > 0):
            weak_sigs.append(f"{_cn(c) or _name(c.subject)}: {sig}")
        kd, _bits, kweak = _key_desc(c)
        if kweak:
            weak_keys.append(f"{_cn(c) or _name(c.subject)}: {kd}")
    st.check("signature", not weak_sigs, "; ".join(weak_sigs) + " (SHA-1/MD5 rejected by clients)" if weak_sigs
             else "signature algorithms: " + ", ".join(sorted({_sig_desc(c)[0] for c in path})))
    st.check("key", not weak_keys, "; ".join(weak_keys) + " (under 2048 bits)" if weak_keys
             else "keys: " + ", ".join(_key_desc(c)[0] for c in path))
    if weak_sigs:
        st.fail("weak_signature")
        problems.append("weak_signature")
    if weak_keys:
        st.fail("weak_key")
        problems.append("weak_key")

    # revocation: stapled OCSP, then CRLs
    revoked_how = None
    ossl = results.get("openssl")
    staple_detail = "no OCSP response stapled"
    if isinstance(ossl, str):
        m = re.search(r"Cert Status: (\w+)", ossl)
        if m:
            staple_detail = f"stapled OCSP response: {m.group(1)}"
            if m.group(1).lower() == "revoked":
                revoked_how = "ocsp"
                rr = re.search(r"Revocation Reason: ([^\n]+)", ossl)
                staple_detail += f" ({rr.group(1).strip()})" if rr else ""
    elif ossl is None:
        staple_detail = "stapled OCSP not checked (openssl unavailable)"
    crl_notes = []
    for i, c in enumerate(path[:-1] if len(path) > 1 else path):
        issuer = path[i + 1] if i + 1 < len(path) else None
        for url in _ext_urls(c, "crl")[:2]:
            try:
                status, _h, body = await _http_get(url, timeout=timeout, limit=_MAX_FETCH * 8,
                                                   allow_private=allow_private, resolver=resolver)
                if status != 200:
                    crl_notes.append(f"CRL {url}: HTTP {status}")
                    continue
                crl = (x509.load_pem_x509_crl(body) if body.lstrip().startswith(b"-----")
                       else x509.load_der_x509_crl(body))
                if issuer is not None and not crl.is_signature_valid(issuer.public_key()):
                    crl_notes.append(f"CRL {url}: bad signature, ignored")
                    continue
                entry = crl.get_revoked_certificate_by_serial_number(c.serial_number)
                if entry is not None:
                    reason = ""
                    try:
                        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
                    except Exception:
                        pass
                    crl_notes.append(f"{'leaf' if i == 0 else 'intermediate'} {_cn(c)} serial "
                                     f"{format(c.serial_number, 'x')} is REVOKED in {url}"
                                     f"{' (' + reason + ')' if reason else ''}")
                    revoked_how = revoked_how or ("crl" if i == 0 else "crl_all")
                else:
                    crl_notes.append(f"{_cn(c) or 'certificate'} not in CRL {url}")
                break
            except TargetNotAllowed as e:
                crl_notes.append(f"CRL {url} not fetched: {e}")
            except Exception as e:
                crl_notes.append(f"CRL {url} not fetched: {type(e).__name__}: {e}")
    st.check("revocation", revoked_how is None, "; ".join([staple_detail] + (crl_notes or ["no CRL distribution "
                                                                                             "point"])))
    if revoked_how:
        st.fail("revoked")
        problems.append("revoked")
        cmd_hint["revoked_via"] = revoked_how

    # the name
    names, ips, _ = _dns_sans(leaf)
    if cov == "san":
        st.check("hostname", True, f"{host} is covered by the certificate ({', '.join((names + ips)[:6])})")
    elif cov == "cn_only":
        st.check("hostname", False, f"the certificate has no subjectAltName; only its CN {_cn(leaf)!r} matches "
                                    f"{host}: browsers ignore the CN (OpenSSL still accepts it)")
        if not default_cert:
            st.fail("hostname_mismatch")
        problems.append("hostname_cn_only")
        cmd_hint["cn_only"] = True
    else:
        st.check("hostname", False, f"{host} is not covered by the certificate "
                                    f"(SAN: {', '.join((names + ips)[:8]) or 'none'}; CN {_cn(leaf)!r})")
        if not default_cert:
            st.fail("hostname_mismatch")
        problems.append("hostname")

    cmd_hint["cert_problems"] = problems
    info = _cert_info(leaf)
    info.update({
        "chain": [_cert_info(c) for c in path],
        "served_chain_length": len(served),
        "trusted": report.trusted,
        "trust_store": cafile or "system",
        "names_cover_hostname": cov == "san",
        "expected": is_expected if expected is not None else None,
        "same_without_sni": nosni_same if nosni is not None and nosni.ok else None,
        "ocsp_staple": staple_detail,
        "_certs": path,
    })
    return info


def _cn_of_name(n: x509.Name) -> str:
    try:
        attrs = n.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else _name(n)
    except Exception:
        return _name(n)


def _openssl_command(mode: str, st: _State, *, host: str, ip_literal: str | None, connect: str | None,
                     address: str | None, target_port: int, cafile: str | None, resolver: str | None, hint: dict,
                     wrong_endpoint_addr: str | None) -> str:
    """ONE shell line that reproduces the finding (see the module docstring for the choices)."""
    port = target_port
    if mode == "dns_not_configured":
        hostport = _hostport(host, port)
    elif mode == "wrong_endpoint" and wrong_endpoint_addr:
        hostport = _hostport(wrong_endpoint_addr, port)
    elif connect:
        hostport = connect.strip()
    elif ip_literal:
        hostport = _hostport(ip_literal, port)
    elif resolver and address:
        hostport = _hostport(address, port)
    else:
        hostport = _hostport(host, port)

    args = ["openssl", "s_client", "-connect", hostport]
    if not ip_literal:
        args += ["-servername", host, "-verify_hostname", host]
    else:
        args += ["-verify_ip", ip_literal]
    problems = [p for p in hint.get("cert_problems", []) if p != "hostname_cn_only"]
    return_error = not (len(problems) > 1 or mode in ("default_certificate", "wrong_endpoint"))
    if return_error:
        args.append("-verify_return_error")
    if cafile:
        args += ["-CAfile", cafile]
    args += ["-showcerts", "-status"]
    if mode == "revoked" and hint.get("revoked_via", "").startswith("crl"):
        args += ["-crl_check_all" if hint["revoked_via"] == "crl_all" else "-crl_check", "-crl_download"]
    elif mode in ("weak_key", "weak_signature"):
        args += ["-auth_level", "2"]
    elif mode == "protocol_version_mismatch":
        args += ["-no_tls1", "-no_tls1_1"]
    elif mode == "cipher_mismatch":
        args += ["-cipher", BROWSER_CIPHERS]
    line = shlex.join(args) + " </dev/null"
    if mode == "connection_timeout" or (mode == "handshake_failure" and hint.get("stalled")):
        line = (f"timeout 10 {line}; [ $? -ne 124 ] || echo "
                + shlex.quote(f"timed out: no answer from {hostport} within 10 s"))
    elif mode == "mixed_content":
        path = hint.get("page_path", "/")
        req = f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"
        q = ["openssl", "s_client", "-connect", hostport, "-quiet"]
        if not ip_literal:
            q += ["-servername", host]
        if cafile:
            q += ["-CAfile", cafile]
        pattern = "<[a-z]+[^>]*(src|href|action|data|srcset)=[\"']?http://[^\"' >]*"
        line = (f"printf {shlex.quote(req)} | {shlex.join(q)} 2>/dev/null | grep -Eio {shlex.quote(pattern)}")
    return line


# ----------------------------------------------------------------------------------------------------------- CLI


def _human(result: dict) -> str:
    out = []
    verdict = "OK" if result["ok"] else result["failure_mode"].upper()
    out.append(f"{result['hostname']}: {verdict}")
    out.append(f"  {result['summary']}")
    if not result["ok"]:
        out.append(f"  fix: {result['fix']}")
        out.append(f"  who acts: {result['who_acts']}")
        be = result["browser_errors"]
        out.append(f"  browsers: Chrome {be['chrome']} | Firefox {be['firefox']} | Safari {be['safari']}")
        if len(result.get("failure_modes", [])) > 1:
            out.append(f"  also found: {', '.join(m for m in result['failure_modes'][1:])}")
    out.append("")
    out.append("checks:")
    for c in result["checks"]:
        mark = "ok  " if c["ok"] else ("warn" if c.get("fatal") is False else "FAIL")
        out.append(f"  [{mark}] {c['name']}: {c['detail']}")
    cert = result.get("certificate")
    if cert:
        out.append("")
        out.append(f"certificate: {cert['subject']} issued by {cert['issuer']}")
        out.append(f"  valid {cert['not_before']} .. {cert['not_after']}; SAN {', '.join(cert['san'][:6]) or '-'}; "
                   f"{cert['key']}; {cert['signature_algorithm']}")
        out.append(f"  sha256 {cert['sha256']}")
    out.append("")
    out.append("reproduce:")
    out.append(f"  {result['openssl_command']}")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgecert diagnose",
        description="Probe a TLS endpoint from here and name what is wrong. Exit 0 when ok, 1 when a failure mode "
                    "was found, 2 on bad usage.")
    p.add_argument("hostname", help="the name visitors use, e.g. shop.example.com")
    p.add_argument("--connect", metavar="HOST:PORT", help="connect here instead of the resolved address")
    p.add_argument("--cafile", metavar="PEM", help="trust these roots instead of the system store")
    p.add_argument("--resolver", metavar="HOST:PORT", help="DNS server to ask (default: the system resolver)")
    p.add_argument("--port", type=int, default=443, help="TLS port when --connect is not given (default 443)")
    p.add_argument("--edge-target", action="append", metavar="NAME_OR_IP", dest="edge_targets",
                   help="the edge's name or address (repeatable): a name pointing elsewhere is wrong_endpoint")
    p.add_argument("--expected-sha256", metavar="HEX", help="SHA-256 of the leaf the edge should serve")
    p.add_argument("--deny-private", action="store_true", help="refuse private, loopback and metadata targets")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="bound of each network step (default 5)")
    p.add_argument("--json", action="store_true", help="print the diagnosis object as JSON")
    return p


def diagnose_main(argv: list[str]) -> int:
    """``edgecert diagnose HOSTNAME [--connect HOST:PORT] [--cafile PEM] [--resolver HOST:PORT] [--json]
    [--timeout S]``: 0 when ok, 1 when a failure mode was found, 2 on bad usage."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    if args.timeout <= 0:
        parser.print_usage(sys.stderr)
        print("edgecert diagnose: error: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(diagnose(
            args.hostname, connect=args.connect, cafile=args.cafile, resolver=args.resolver,
            allow_private=not args.deny_private, expected_sha256=args.expected_sha256,
            edge_targets=args.edge_targets, timeout=args.timeout, port=args.port))
    except TargetNotAllowed as e:
        print(f"edgecert diagnose: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"edgecert diagnose: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_human(result))
    return 0 if result["ok"] else 1
