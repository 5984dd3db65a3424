"""The TLS layer of a diagnosis: one handshake with chosen versions/ciphers/SNI (``ssl``, blocking: run in a
thread), the ``openssl s_client -status`` transcript (stapled OCSP), and naming the failure of a browser-like
handshake from the permissive probes."""

from __future__ import annotations

import asyncio
import errno
import re
import shutil
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import Any

from edge.names import format_hostport

__all__ = ["BROWSER_CIPHERS", "ALL_CIPHERS", "TLS_VERSIONS", "Handshake", "client_context", "tls_handshake",
           "openssl_status", "classify_handshake", "chain_of", "ALERTS_BY_REASON"]

#: TLS 1.2 cipher suites that current browsers offer (Chrome / Firefox / Safari, 2025): ECDHE with AES-GCM,
#: ChaCha20 or AES-CBC, plus the RSA-key-exchange AES suites kept for compatibility. No DHE, 3DES, RC4, CAMELLIA.
BROWSER_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
])
ALL_CIPHERS = "ALL:@SECLEVEL=0"
TLS_VERSIONS = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


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
    alpn: str | None = None
    #: ms since the start at which each phase was reached (``phases.PHASES``), and the phase that did not complete
    phases: dict[str, int] = field(default_factory=dict)
    stopped_at: str | None = None
    http_status: str | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    post_error: "Handshake | None" = None  # a failure after the handshake (first HTTP read), e.g. TLS 1.3 alert 116


_ALERTS = {
    "SSLV3_ALERT_HANDSHAKE_FAILURE": 40, "TLSV1_ALERT_PROTOCOL_VERSION": 70, "TLSV1_UNRECOGNIZED_NAME": 112,
    "TLSV1_ALERT_INTERNAL_ERROR": 80, "TLSV1_ALERT_ACCESS_DENIED": 49, "SSLV3_ALERT_ILLEGAL_PARAMETER": 47,
    "TLSV1_ALERT_DECODE_ERROR": 50, "TLSV1_ALERT_INSUFFICIENT_SECURITY": 71, "SSLV3_ALERT_BAD_CERTIFICATE": 42,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": 116, "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": 120,
    "SSLV3_ALERT_UNEXPECTED_MESSAGE": 10, "TLSV1_ALERT_DECRYPT_ERROR": 51, "SSLV3_ALERT_CLOSE_NOTIFY": 0,
    "TLSV1_ALERT_UNKNOWN_CA": 48, "TLSV1_ALERT_INAPPROPRIATE_FALLBACK": 86,
}
ALERTS_BY_REASON = _ALERTS
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG",
                    "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "RECORD_LENGTH_MISMATCH"}
_VERSION_REASONS = {"UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "VERSION_TOO_LOW", "VERSION_TOO_HIGH",
                    "WRONG_SSL_VERSION", "TLSV1_ALERT_PROTOCOL_VERSION", "LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED"}
_CIPHER_REASONS = {"SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE", "DH_KEY_TOO_SMALL",
                   "NO_SUITABLE_SIGNATURE_ALGORITHM", "TLSV1_ALERT_INSUFFICIENT_SECURITY", "NO_SHARED_GROUPS",
                   "WRONG_CURVE", "BAD_DH_VALUE"}


def client_context(min_v: ssl.TLSVersion, max_v: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
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


def chain_of(tls: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent (DER, leaf first), unverified."""
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


def tls_handshake(address: str, port: int, sni: str | None, ctx: ssl.SSLContext, timeout: float,
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
                         chain=chain_of(tls))
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


async def openssl_status(address: str, port: int, sni: str | None, timeout: float) -> str | None:
    """``openssl s_client -status -showcerts`` output (the stapled OCSP response), or None."""
    exe = shutil.which("openssl")
    if not exe:
        return None
    args = [exe, "s_client", "-connect", format_hostport(address, port), "-status", "-showcerts",
            "-cipher", ALL_CIPHERS]
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


def classify_handshake(main: Handshake, hs: dict[str, Handshake], plain: Any,
                       cert_request: bool = False) -> tuple[str, str]:
    """The failure mode of a browser-like handshake that failed, using the permissive probes (``cert_request``: a
    replayed handshake saw the server ask for a client certificate)."""
    legacy_ok = [v for v in ("TLSv1.0", "TLSv1.1") if hs.get(v) and hs[v].ok]
    modern_ok = [v for v in ("TLSv1.2", "TLSv1.3") if hs.get(v) and hs[v].ok]
    what = main.text or main.kind or "failed"
    if main.kind == "wrong_version":
        if isinstance(plain, str):
            return "plain_http_on_tls_port", f"the port answers plain HTTP ({plain!r}), not TLS: {what}"
        return "plain_http_on_tls_port", f"the port does not speak TLS (wrong version number): {what}"
    if main.alert == 120 or main.reason == "TLSV1_ALERT_NO_APPLICATION_PROTOCOL":
        return "alpn_mismatch", (f"the server accepts none of the application protocols browsers offer (h2, "
                                 f"http/1.1): no_application_protocol alert (120): {what}")
    if main.alert == 116 or (cert_request and main.alert in (40, 42, 116)):
        return "client_certificate_required", (f"the server asked for a client certificate (CertificateRequest) "
                                               f"and ended the handshake without one: {what}")
    if main.kind == "timeout":
        where = {"first_server_byte": "never answered the ClientHello",
                 "handshake_complete": "stopped answering before the handshake completed"}.get(
            main.stopped_at or "", "did not complete the handshake")
        return "handshake_timeout", f"the server accepted the TCP connection but {where} ({what})"
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
