"""DNS identifiers: which names a certificate covers, and the registered domain (eTLD+1) a name counts against.

The one implementation of both for the whole service: the lifecycle's pre-swap and upload checks, the CA rate-limit
ledger and hostname validation (``edge.names``) use these.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

from publicsuffixlist import PublicSuffixList

__all__ = ["name_matches", "covers", "registered_domain", "public_suffix_list"]


def name_matches(pattern: str, hostname: str) -> bool:
    """Does the certificate name ``pattern`` (a SAN, possibly ``*.example.com``) cover ``hostname``?

    Case-insensitive, trailing dots ignored; a wildcard stands for exactly one whole left-most label (RFC 6125
    6.4.3), so ``*.example.com`` covers ``a.example.com`` but neither ``example.com`` nor ``a.b.example.com``; a
    wildcard over a single label (``*.com``) covers nothing, as in browsers."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern == hostname:
        return True
    if pattern.startswith("*."):
        suffix = pattern[2:]
        if "." not in suffix:
            return False
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == suffix
    return False


def covers(hostname: str, names: Iterable[str]) -> bool:
    """Does any of a certificate's ``names`` cover ``hostname``?"""
    return any(name_matches(n, hostname) for n in names)


@lru_cache(maxsize=1)
def public_suffix_list() -> PublicSuffixList:
    """The Public Suffix List bundled with ``publicsuffixlist`` (loaded once)."""
    return PublicSuffixList()


def registered_domain(name: str) -> str | None:
    """The registrable domain (eTLD+1) of an ASCII name, or None when the name is itself a public suffix."""
    return public_suffix_list().privatesuffix(name.lower().rstrip("."))
