"""Does a tenant's hostname point at the edge? Checked through ``EDGECERT_DNS_RESOLVER`` before any CA order.

The name points at the edge when its CNAME chain reaches ``EDGECERT_EDGE_TARGET``, or when its A/AAAA addresses
are among the edge's addresses (the target's own addresses, or the target itself when it is a list of IPs).

Ownership before binding (``tenant_claims_require_proof``): a tenant proves control of a name with the TXT record
``_edgecert-verify.<name>`` = ``edgecert-verify=<HMAC(key, tenant:name)>``; the value is stable, differs per tenant
and cannot be computed by another tenant (the key derives from the service's secret key). :meth:`DnsChecker.dns_records`
lists every record a tenant must create (``pointing``, while unproven ``ownership``, and with DNS-01 configured the
``acme-challenge`` delegation).

DNS-01 delegation (``EDGECERT_DNS01_ZONE``, :mod:`edge.lifecycle.dns01`): :meth:`DnsChecker.check_delegation` asks
the resolver whether ``_acme-challenge.<name>`` is a CNAME to ``<label>.<zone>`` (a wildcard's base name).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from edge.dns import lookup, lookup_txt, make_resolver
from edge.lifecycle.dns01 import CHALLENGE_PREFIX, challenge_target

__all__ = ["plain_dns_error", "PointingResult", "OwnershipResult", "DelegationResult", "DnsChecker", "local_addresses",
           "OWNERSHIP_LABEL"]

#: The label under the claimed name that carries the ownership TXT record.
OWNERSHIP_LABEL = "_edgecert-verify"
_OWNERSHIP_PREFIX = "edgecert-verify="


def plain_dns_error(error: str) -> str:
    """What went wrong with a DNS lookup, in words a tenant can act on (``error``: dnspython's exception class name,
    which tenants read nowhere: last_error, events and the status page show this instead)."""
    if error == "NoNameservers":
        return "the name's DNS servers answered with an error (SERVFAIL) or refused to answer"
    if error in ("Timeout", "LifetimeTimeout"):
        return "no DNS server answered in time"
    return "the DNS servers could not be asked"


def local_addresses() -> set[str]:
    """The IPv4/IPv6 addresses configured on this machine's interfaces (Linux /proc), loopback included."""
    out = {"127.0.0.1", "::1"}
    try:
        lines = open("/proc/net/fib_trie").read().splitlines()
        for i, line in enumerate(lines):
            if "/32 host LOCAL" in line and i > 0:
                out.add(lines[i - 1].split()[-1])
    except OSError:
        pass
    try:
        for line in open("/proc/net/if_inet6"):
            h = line.split()[0]
            out.add(str(ipaddress.ip_address(bytes.fromhex(h))))
    except (OSError, ValueError):
        pass
    return out


@dataclass
class PointingResult:
    ok: bool
    hostname: str
    reason: str                       # ok | nxdomain | no_address | wrong_cname | wrong_address | dns_error
    message: str                      # one sentence a tenant can act on
    cname_chain: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    expected: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "message": self.message, "cname_chain": self.cname_chain,
                "addresses": self.addresses, "expected": self.expected}


@dataclass
class OwnershipResult:
    ok: bool
    hostname: str
    reason: str                       # ok | missing | wrong_value | dns_error
    message: str                      # one sentence a tenant can act on
    record: dict = field(default_factory=dict)   # the record expected ({"name", "type", "value", "purpose"})

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "message": self.message, "record": self.record}


@dataclass
class DelegationResult:
    ok: bool
    hostname: str
    reason: str                       # ok | missing | wrong_target | dns_error | not_configured
    message: str                      # one sentence a tenant can act on
    record: dict = field(default_factory=dict)   # the record expected ({"name", "type", "value", "purpose"})
    found: str | None = None          # the CNAME target seen, if any

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "message": self.message, "record": self.record,
                "found": self.found}


class DnsChecker:
    """Resolve names through one resolver (host, port) or the system's, with bounded time.

    ``dns01_zone``: the challenge zone tenants delegate ``_acme-challenge`` to (None: DNS-01 is off)."""

    def __init__(self, *, resolver: tuple[str, int] | None, edge_target: str | None, timeout: float = 4.0,
                 ownership_key: bytes | None = None, dns01_zone: str | None = None) -> None:
        self._ownership_key = ownership_key
        self.dns01_zone = dns01_zone.strip().rstrip(".").lower() if dns01_zone else None
        self.resolver = make_resolver(resolver, lifetime=timeout, timeout=timeout / 2)
        self.edge_target = edge_target.strip().rstrip(".").lower() if edge_target else None
        self._target_names: list[str] = []
        if self.edge_target:
            parts = [p.strip() for p in self.edge_target.split(",") if p.strip()]
            ips, names = set(), []
            for p in parts:
                try:
                    ips.add(str(ipaddress.ip_address(p)))
                except ValueError:
                    names.append(p.rstrip("."))
            self._static_ips = ips
            self._target_names = names
        else:
            self._static_ips = set()

    def expected_record(self, hostname: str) -> dict:
        """The DNS record the tenant must create, exactly."""
        if self._target_names:
            return {"type": "CNAME", "name": hostname + ".", "value": self._target_names[0] + ".",
                    "text": f"{hostname}. CNAME {self._target_names[0]}."}
        if self._static_ips:
            ips = sorted(self._static_ips)
            rtype = "A" if ":" not in ips[0] else "AAAA"
            return {"type": rtype, "name": hostname + ".", "value": ips[0],
                    "text": "; ".join(f"{hostname}. {'AAAA' if ':' in ip else 'A'} {ip}" for ip in ips)}
        return {"type": "any", "name": hostname + ".", "value": None,
                "text": f"{hostname} must resolve to this edge (EDGECERT_EDGE_TARGET is not configured)"}

    def pointing_records(self, hostname: str) -> list[dict]:
        """The pointing record(s) of ``hostname`` as ``{"name", "type", "value", "purpose"}`` (no trailing dots);
        none when the edge's target is not configured (nothing exact to tell)."""
        if self._target_names:
            return [{"name": hostname, "type": "CNAME", "value": self._target_names[0], "purpose": "pointing"}]
        return [{"name": hostname, "type": "AAAA" if ":" in ip else "A", "value": ip, "purpose": "pointing"}
                for ip in sorted(self._static_ips)]

    def ownership_record(self, hostname: str, tenant: str) -> dict:
        """The TXT record by which ``tenant`` proves control of ``hostname`` (stable; another tenant's differs)."""
        if self._ownership_key is None:
            raise RuntimeError("DnsChecker was built without an ownership key")
        mac = hmac.new(self._ownership_key, f"{tenant}:{hostname}".encode(), hashlib.sha256).digest()[:20]
        value = _OWNERSHIP_PREFIX + base64.b32encode(mac).decode().lower()
        base = hostname[2:] if hostname.startswith("*.") else hostname  # a wildcard's proof sits at its base name
        return {"name": f"{OWNERSHIP_LABEL}.{base}", "type": "TXT", "value": value, "purpose": "ownership"}

    def acme_challenge_record(self, hostname: str) -> dict | None:
        """The ``_acme-challenge`` CNAME delegation of ``hostname`` (a wildcard's base name), or None when DNS-01
        is not configured."""
        if not self.dns01_zone:
            return None
        base = hostname[2:] if hostname.startswith("*.") else hostname
        return {"name": f"{CHALLENGE_PREFIX}.{base}", "type": "CNAME",
                "value": challenge_target(base, self.dns01_zone), "purpose": "acme-challenge"}

    def dns_records(self, hostname: str, tenant: str, *, ownership: bool) -> list[dict]:
        """Every record the tenant must create for ``hostname``: the ownership TXT first when it is still needed,
        then the pointing record(s), then the ``_acme-challenge`` delegation when DNS-01 is configured (it lets
        the certificate be obtained before the cutover, and is the only way for a wildcard)."""
        out = [self.ownership_record(hostname, tenant)] if ownership else []
        out += self.pointing_records(hostname)
        rec = self.acme_challenge_record(hostname)
        return out + ([rec] if rec is not None else [])

    async def check_delegation(self, hostname: str) -> DelegationResult:
        """Is ``_acme-challenge.<hostname>`` a CNAME to its label in the challenge zone? (one bounded lookup of
        type CNAME through the resolver)"""
        rec = self.acme_challenge_record(hostname)
        if rec is None:
            return DelegationResult(False, hostname, "not_configured", "DNS-01 is not configured on this edge")
        text = f"{rec['name']}. CNAME {rec['value']}."
        try:
            ans = await self.resolver.resolve(rec["name"] + ".", "CNAME", raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            ans = None
        except Exception as e:  # noqa: BLE001 - Timeout, NoNameservers, ...: the resolver's trouble, retried
            return DelegationResult(False, hostname, "dns_error",
                                    f"DNS lookup of {rec['name']} failed: {plain_dns_error(type(e).__name__)}; "
                                    f"will retry. The record it needs: {text}", rec)
        targets = [rr.target.to_text().rstrip(".").lower() for rr in ans.rrset] \
            if ans is not None and ans.rrset is not None else []
        if rec["value"] in targets:
            return DelegationResult(True, hostname, "ok", f"{rec['name']} is delegated to {rec['value']}", rec,
                                    rec["value"])
        if targets:
            return DelegationResult(False, hostname, "wrong_target",
                                    f"{rec['name']} is a CNAME to {targets[0]}, not to this service's challenge "
                                    f"zone. Replace it with this record: {text}", rec, targets[0])
        return DelegationResult(False, hostname, "missing",
                                f"To get a certificate through DNS (before switching your traffic, or for a "
                                f"wildcard), create this DNS record once: {text}", rec)

    async def check_ownership(self, hostname: str, tenant: str) -> OwnershipResult:
        """Is ``tenant``'s ownership TXT record published for ``hostname``? (one bounded lookup)"""
        rec = self.ownership_record(hostname, tenant)
        text = f'{rec["name"]}. TXT "{rec["value"]}"'
        values, err = await lookup_txt(self.resolver, rec["name"])
        if rec["value"] in values:
            return OwnershipResult(True, hostname, "ok", f"the ownership record {rec['name']} is in place", rec)
        if err is not None and not isinstance(err, (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)):
            return OwnershipResult(False, hostname, "dns_error",
                                   f"DNS lookup of {rec['name']} failed: {plain_dns_error(type(err).__name__)}; "
                                   f"will retry. The record it needs: {text}", rec)
        if any(v.startswith(_OWNERSHIP_PREFIX) for v in values):
            return OwnershipResult(False, hostname, "wrong_value",
                                   f"{rec['name']} has a TXT record, but not the one for your account. Add this "
                                   f"record to prove you control {hostname}: {text}", rec)
        return OwnershipResult(False, hostname, "missing",
                               f"Prove you control {hostname}: create this DNS record at your DNS provider: {text}. "
                               f"Nothing is ordered or served for {hostname} until it is seen; we check again "
                               f"automatically.", rec)

    async def _addresses(self, name: str) -> tuple[list[str], list[str], str | None]:
        """(cname chain, addresses, error reason) for ``name``."""
        chain: list[str] = []
        addrs: list[str] = []
        nx = False
        for ans in await lookup(self.resolver, name):
            e = ans.error
            if isinstance(e, dns.resolver.NXDOMAIN):
                nx = True
                continue
            if isinstance(e, (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.NoAnswer)):
                if ans.rdtype == "A":
                    return chain, addrs, f"dns_error:{type(e).__name__}"
                continue
            if e is not None:
                raise e
            chain += [c for c in ans.cnames if c not in chain]
            addrs += ans.addresses
        if nx and not addrs:
            return chain, addrs, "nxdomain"
        return chain, addrs, None

    async def edge_addresses(self) -> set[str]:
        ips = set(self._static_ips)
        for n in self._target_names:
            _, addrs, _ = await self._addresses(n)
            ips.update(addrs)
        return ips

    async def check(self, hostname: str) -> PointingResult:
        expected = self.expected_record(hostname)
        chain, addrs, err = await self._addresses(hostname)
        if err == "nxdomain":
            return PointingResult(False, hostname, "nxdomain",
                                  f"{hostname} does not exist in DNS yet. Create this record: {expected['text']}",
                                  chain, addrs, expected)
        if err:
            return PointingResult(False, hostname, "dns_error",
                                  f"DNS lookup of {hostname} failed: {plain_dns_error(err.split(':', 1)[1])}; will "
                                  f"retry. The record it needs: {expected['text']}", chain, addrs, expected)
        if not addrs:
            return PointingResult(False, hostname, "no_address",
                                  f"{hostname} has no A/AAAA address. Create this record: {expected['text']}",
                                  chain, addrs, expected)
        if not self.edge_target:
            # No target configured: the edge is this machine; accept its own interface addresses only.
            mine = local_addresses()
            if set(addrs) <= mine:
                return PointingResult(True, hostname, "ok", f"{hostname} resolves to this machine "
                                      f"({', '.join(addrs)})", chain, addrs, expected)
            return PointingResult(False, hostname, "wrong_address",
                                  f"{hostname} points at {', '.join(addrs)}, which is not an address of this machine. "
                                  f"Point it at this edge; if the edge's public address is not on this machine "
                                  f"(NAT, load balancer), the operator sets EDGECERT_EDGE_TARGET to it.",
                                  chain, addrs, expected)
        if any(c in self._target_names for c in chain):
            return PointingResult(True, hostname, "ok",
                                  f"{hostname} is a CNAME to {self._target_names[0]}", chain, addrs, expected)
        edge_ips = await self.edge_addresses()
        if edge_ips and set(addrs) <= edge_ips:
            return PointingResult(True, hostname, "ok",
                                  f"{hostname} resolves to the edge's address(es) {', '.join(sorted(addrs))}",
                                  chain, addrs, expected)
        where = (f"a CNAME to {chain[-1]}, which resolves to {', '.join(addrs)}" if chain
                 else f"{', '.join(addrs)}")
        reason = "wrong_cname" if chain else "wrong_address"
        return PointingResult(False, hostname, reason,
                              f"{hostname} points at {where}, not at this edge. "
                              f"Replace it with this record: {expected['text']}", chain, addrs, expected)
