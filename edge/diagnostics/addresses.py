"""Every address: the name's other A/AAAA records (and the edge's own address) probed like the first one.

A visitor's client picks any of the addresses (IPv6 first on most networks); one that refuses, stalls or serves
another site's certificate fails those visitors although the first address is fine. ``probe_address`` does one
browser-like handshake there and says how it compares with the main one.
"""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from edge.names import format_hostport

from .chain import display_name, name_coverage, san_names, sha256_hex
from .handshake import BROWSER_CIPHERS, classify_handshake, client_context
from .phases import phased_probe

__all__ = ["probe_address", "MAX_ADDRESSES"]

MAX_ADDRESSES = 8


async def probe_address(address: str, port: int, host: str, sni: str | None, timeout: float, *, role: str,
                        main_sha256: str | None) -> dict:
    """``{"address", "role", "ok", "failure_mode", "detail", "sha256"}`` for one address (``role``: ``dns`` for
    another address of the name, ``edge`` for the edge's own address)."""
    ctx = client_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, BROWSER_CIPHERS + ":@SECLEVEL=0")
    hs = await asyncio.to_thread(phased_probe, address, port, sni, ctx, timeout, f"address {address}",
                                 request=False)
    where = format_hostport(address, port)
    out = {"address": address, "role": role, "ok": False, "failure_mode": None, "detail": "", "sha256": None}
    if not hs.ok:
        if hs.stopped_at == "connect":
            mode = "connection_refused" if hs.kind == "refused" else "connection_timeout"
            detail = f"{where}: {hs.text or hs.kind}"
        else:
            mode, detail = classify_handshake(hs, {}, None)
            detail = f"{where}: {detail}"
        out.update(failure_mode=mode, detail=detail)
        return out
    if not hs.chain:
        out.update(failure_mode="handshake_failure", detail=f"{where} sent no certificate")
        return out
    try:
        leaf = x509.load_der_x509_certificate(hs.chain[0])
    except Exception:
        out.update(failure_mode="handshake_failure", detail=f"{where} sent a certificate that does not parse")
        return out
    sha = sha256_hex(hs.chain[0])
    out["sha256"] = sha
    cov = name_coverage(leaf, host)
    if sha == main_sha256:
        out.update(ok=True, detail=f"{where} serves the same certificate ({hs.version})")
    elif cov == "san":
        out.update(ok=True, detail=f"{where} serves another certificate that also covers {host} "
                                   f"({display_name(leaf)}, {hs.version})")
    else:
        names, ips, _ = san_names(leaf)
        out.update(failure_mode="wrong_endpoint",
                   detail=f"{where} serves another site: a certificate for {', '.join((names + ips)[:4]) or display_name(leaf)}"
                          f", not {host}")
    return out
