"""The one DNS stack (dnspython): a resolver for one server ``(host, port)`` or the system's, and the A/AAAA
lookup of a name with its CNAME chain. Used by the pointing check (``lifecycle.dnscheck``) and by diagnostics.

Callers decide what a failure means: :func:`lookup` returns, per record type, the addresses, the CNAME chain and
the exception dnspython raised (``NXDOMAIN``, ``NoNameservers``, ``Timeout``, ``NoAnswer``, or any other).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.resolver

__all__ = ["make_resolver", "lookup", "lookup_txt", "Answer", "nxdomain_name"]


def make_resolver(server: tuple[str, int] | None, *, lifetime: float, timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver asking ``server`` only, or the system's (``/etc/resolv.conf``) when None.

    Args:
        lifetime: bound of one whole lookup, in seconds.
        timeout: bound of one query to one server, in seconds.

    Raises:
        dns.resolver.NoResolverConfiguration: no server given and no usable system configuration.
        ValueError: ``server`` is not an address dnspython accepts.
    """
    r = dns.asyncresolver.Resolver(configure=server is None)
    if server is not None:
        r.nameservers = [server[0]]
        r.port = server[1]
    r.lifetime = lifetime
    r.timeout = timeout
    return r


@dataclass
class Answer:
    """What one record-type query of a name gave."""

    rdtype: str
    addresses: list[str] = field(default_factory=list)
    cnames: list[str] = field(default_factory=list)  # the chain followed, lowercased, without the final dot
    error: BaseException | None = None


def _cname_chain(chaining_result) -> list[str]:
    chain: list[str] = []
    if chaining_result is not None:
        for rrset in chaining_result.cnames:
            for rr in rrset:
                t = rr.target.to_text().rstrip(".").lower()
                if t not in chain:
                    chain.append(t)
    return chain


async def _one(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> Answer:
    try:
        ans = await resolver.resolve(name.rstrip(".") + ".", rdtype, raise_on_no_answer=False, search=False)
    except Exception as e:
        return Answer(rdtype, error=e)
    out = Answer(rdtype, cnames=_cname_chain(ans.chaining_result))
    if ans.rrset is not None:
        for rr in ans.rrset:
            if rr.address not in out.addresses:
                out.addresses.append(rr.address)
    return out


async def lookup(resolver: dns.asyncresolver.Resolver, name: str) -> tuple[Answer, Answer]:
    """The A and the AAAA answers for ``name`` (asked at the same time; the resolver's lifetime bounds each)."""
    a, aaaa = await asyncio.gather(_one(resolver, name, "A"), _one(resolver, name, "AAAA"))
    return a, aaaa


async def lookup_txt(resolver: dns.asyncresolver.Resolver, name: str) -> tuple[list[str], BaseException | None]:
    """The TXT strings of ``name`` (each record's strings joined, as RFC 7208 does) and the exception dnspython
    raised, if any (``NXDOMAIN`` and ``NoAnswer`` come back as an empty list with the exception)."""
    try:
        ans = await resolver.resolve(name.rstrip(".") + ".", "TXT", raise_on_no_answer=False, search=False)
    except Exception as e:
        return [], e
    out: list[str] = []
    if ans.rrset is not None:
        for rr in ans.rrset:
            out.append(b"".join(rr.strings).decode("utf-8", "replace"))
    return out, None


def nxdomain_name(exc: BaseException) -> str | None:
    """The name an ``NXDOMAIN`` is about, after following CNAMEs (the queried name when there were none)."""
    if not isinstance(exc, dns.resolver.NXDOMAIN):
        return None
    try:
        canonical = exc.canonical_name
        return None if canonical is None else canonical.to_text().rstrip(".").lower()
    except Exception:
        return None
