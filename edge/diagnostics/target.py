"""What diagnostics may probe: the target name (the one hostname parser, permissive) and the SSRF guard.

``allow_private=False`` refuses loopback, private, link-local, multicast, reserved, unspecified and cloud metadata
addresses (:class:`TargetNotAllowed`) before anything connects to them. An IPv6 address that carries an IPv4 one
(IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002:AABB:CCDD::/48``, NAT64 ``64:ff9b::a.b.c.d``) is judged by the IPv4
address it reaches; the local-use NAT64 prefix ``64:ff9b:1::/48`` is refused outright.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from edge.names import InvalidHostname, validate_hostname

__all__ = ["TargetNotAllowed", "normalize_hostname", "check_allowed"]

_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


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


def normalize_hostname(hostname: str) -> str:
    """Lower-case A-label form of ``hostname`` (an IP literal is returned in canonical form): any name a client
    could connect to, not only a registrable one (``edge.names.validate_hostname(registrable=False)``).

    Raises:
        ValueError: not a usable host name.
    """
    try:
        return validate_hostname(hostname, registrable=False).ascii
    except InvalidHostname as e:
        if e.message in ("hostname must be a string", "hostname is empty"):
            raise
        raise InvalidHostname(e.code, f"invalid hostname {hostname!r}: {e.message}") from None


def _forbidden_reason(addr: str) -> str | None:
    """Why ``addr`` must not be probed when private targets are disallowed (None: it may)."""
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


def check_allowed(addresses: Iterable[str], allow_private: bool) -> None:
    if allow_private:
        return
    for a in addresses:
        reason = _forbidden_reason(a)
        if reason:
            raise TargetNotAllowed(a, reason)
