"""Post-swap verification: a real TLS handshake, with SNI, against an address that should now serve the new
certificate; returns what is actually served."""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from .config import parse_hostport

__all__ = ["served_certificate", "ServedCertificate"]


class ServedCertificate:
    def __init__(self, serial: str | None, error: str | None) -> None:
        self.serial, self.error = serial, error


async def served_certificate(address: str, hostname: str, *, timeout: float = 5.0) -> ServedCertificate:
    """The serial of the leaf served at ``address`` (host:port) for SNI ``hostname`` (no trust check: we compare
    serials, not trust)."""
    host, port = parse_hostport(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), port, ssl=ctx, server_hostname=hostname), timeout)
    except (OSError, ssl.SSLError, TimeoutError) as e:
        return ServedCertificate(None, f"{address}: {type(e).__name__}: {e}")
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj else None
        if not der:
            return ServedCertificate(None, f"{address}: no certificate")
        return ServedCertificate(format(x509.load_der_x509_certificate(der).serial_number, "x"), None)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, ssl.SSLError, TimeoutError):
            pass
