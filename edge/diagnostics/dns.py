"""The DNS layer of a diagnosis: the name's A/AAAA addresses and CNAME chain, through one server or the system's
resolver (whose answer, like a browser's, comes from ``getaddrinfo``: ``/etc/hosts`` included)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from edge.dns import lookup, make_resolver, nxdomain_name
from edge.names import parse_hostport

from .target import normalize_hostname

__all__ = ["DNSResult", "dns_lookup", "resolve_host"]


@dataclass
class DNSResult:
    addresses: list[str] = field(default_factory=list)
    cnames: list[str] = field(default_factory=list)
    error: str | None = None  # nxdomain | no_address | servfail | timeout | error
    detail: str = ""
    source: str = ""


def _make_resolver(resolver: str | None, timeout: float):
    if resolver:
        return make_resolver(parse_hostport(resolver, what="resolver", default_port=53), lifetime=timeout,
                             timeout=min(timeout, 2.0))
    # system case: getaddrinfo decides; dnspython only adds the CNAME chain, so it gets a short leash
    return make_resolver(None, lifetime=min(timeout, 2.0), timeout=min(timeout, 2.0))


async def dns_lookup(name: str, resolver: str | None, timeout: float) -> DNSResult:
    """A/AAAA (and the CNAME chain) for ``name`` through dnspython; without ``resolver``, the system's addresses
    (getaddrinfo: /etc/hosts included) decide whether the name resolves."""
    res = DNSResult(source=f"resolver {resolver}" if resolver else "system resolver")
    errors: list[str] = []
    seen_nx = False
    try:
        r = _make_resolver(resolver, timeout)
    except Exception as e:  # no resolv.conf: the system path below still answers
        r = None
        errors.append(f"resolver unavailable: {e}")
    if r is not None:
        for ans in await lookup(r, name):
            out = ans.error
            if isinstance(out, dns.resolver.NXDOMAIN):
                seen_nx = True
                errors.append("NXDOMAIN")
                cn = nxdomain_name(out)
                if cn is not None and cn not in res.cnames:
                    res.cnames.append(cn)
            elif isinstance(out, dns.resolver.NoNameservers):
                errors.append(f"{ans.rdtype}: SERVFAIL / no answering name server")
            elif isinstance(out, dns.exception.Timeout):
                errors.append(f"{ans.rdtype}: timed out")
            elif out is not None:
                errors.append(f"{ans.rdtype}: {type(out).__name__}: {out}")
            else:
                res.cnames += [c for c in ans.cnames if c not in res.cnames]
                res.addresses += [a for a in ans.addresses if a not in res.addresses]
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


async def resolve_host(host: str, resolver: str | None, timeout: float) -> list[str]:
    """The addresses of ``host`` (a name or an IP literal)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    r = await dns_lookup(normalize_hostname(host), resolver, timeout)
    return r.addresses
