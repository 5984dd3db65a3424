"""Post-swap verification: a real TLS handshake, with SNI, against an address that should now serve the new
certificate; returns what is actually served."""

from __future__ import annotations

__all__ = ["served_certificate", "ServedCertificate"]


class ServedCertificate:
    def __init__(self, serial: str | None, error: str | None) -> None:
        self.serial, self.error = serial, error


async def served_certificate(address: str, hostname: str, *, timeout: float = 5.0) -> ServedCertificate:
    """The serial of the leaf served at ``address`` (host:port) for SNI ``hostname`` (no trust check: we compare
    serials, not trust)."""
    from edge.lifecycle.probes import probe_handshake
    res = await probe_handshake(address, hostname, timeout=timeout)
    return ServedCertificate(res.get("serial"), None if res["ok"] else f"{address}: {res['error']}")
