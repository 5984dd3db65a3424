"""Which IP addresses edgecert may connect to on someone else's behalf: the SSRF rule, in one place.

Used when a tenant's origin is set and when diagnostics probe a target (``edge.diagnostics.target``), and again each
time the TLS edge connects to an origin (``edge.tls_edge.upstream``, against DNS rebinding). Light on purpose (only
``ipaddress``): the TLS edge workers import it. Refused: loopback, private, link-local, multicast, reserved,
unspecified, non-global and cloud metadata addresses. An IPv6 address that carries an IPv4 one (IPv4-mapped
``::ffff:a.b.c.d``, 6to4 ``2002:AABB:CCDD::/48``, NAT64 ``64:ff9b::a.b.c.d``) is judged by the IPv4 address it reaches;
the local-use NAT64 prefix ``64:ff9b:1::/48`` is refused outright.
"""

from __future__ import annotations

import ipaddress

__all__ = ["forbidden_reason"]

_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def forbidden_reason(addr: str) -> str | None:
    """Why ``addr`` must not be connected to (e.g. ``"loopback"``, ``"6to4 of a private"``); None: it may."""
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return "unparseable"
    via = ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return "local-use NAT64"
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip.sixtofour:
            ip, via = ip.sixtofour, "6to4 of a "
        elif ip in _NAT64:
            ip, via = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64 of a "
    reason = _reason_of(ip)
    return via + reason if reason else None


def _reason_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
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
