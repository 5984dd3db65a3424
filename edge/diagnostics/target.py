"""What diagnostics may probe: the target name (the one hostname parser, permissive) and the SSRF guard.

``allow_private=False`` refuses what :func:`edge.addresses.forbidden_reason` refuses (loopback, private, link-local,
cloud metadata, ... also when carried inside an IPv6 address) with :class:`TargetNotAllowed`, before anything
connects to it.
"""

from __future__ import annotations

from typing import Iterable

from edge.addresses import forbidden_reason
from edge.names import InvalidHostname, validate_hostname

__all__ = ["TargetNotAllowed", "normalize_hostname", "check_allowed"]

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


def check_allowed(addresses: Iterable[str], allow_private: bool) -> None:
    if allow_private:
        return
    for a in addresses:
        reason = forbidden_reason(a)
        if reason:
            raise TargetNotAllowed(a, reason)
