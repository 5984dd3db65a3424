"""CAA checked before ordering (RFC 8659; docs/caa.md): may one of the configured CAs issue for a name?

The relevant record set is found through the one DNS stack (``edge.dns``, so ``EDGECERT_DNS_RESOLVER`` applies):
a CAA query for the name (the resolver follows CNAMEs, RFC 8659 §3), then for each parent toward the top-level
domain, until a non-empty set answers. Climbing always continues from the parents of the *queried* name, never
from those of an alias target. A wildcard ``*.customer.com`` is checked at ``customer.com`` (``issuewild`` first).
The decision per CA is :func:`acme_client.caa.evaluate` with the CA's identities (its directory's
``meta.caaIdentities``).

Outcomes (:class:`CaaGate`): ``allowed`` (some configured CA may issue: only those are asked), ``forbidden`` (none
may: no order; the domain says which record to add), ``lookup_failed`` (SERVFAIL, timeout: no order now, checked
again later; never a CA attempt spent on it, never final).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import dns.exception
import dns.resolver

from acme_client.caa import CaaRecord, CaaVerdict, evaluate, suggested_record

__all__ = ["CaaLookupError", "CaaGate", "CaaOutcome", "relevant_caa_set", "dns_fetch"]

log = logging.getLogger(__name__)

#: ``fetch(name)`` -> the CAA records answered for ``name`` (aliases followed; each record's ``owner`` is the name
#: that holds it) and the alias chain; raises :class:`CaaLookupError` when the DNS did not answer.
Fetch = Callable[[str], Awaitable[tuple[list[CaaRecord], list[str]]]]


class CaaLookupError(Exception):
    """The CAA lookup of ``name`` failed (SERVFAIL, timeout, refused): nothing can be concluded now."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(f"CAA lookup of {name} failed: {cause}")
        self.name, self.cause = name, cause


def dns_fetch(resolver) -> Fetch:
    """A :data:`Fetch` over a dnspython async resolver (``edge.dns.make_resolver``)."""

    async def fetch(name: str) -> tuple[list[CaaRecord], list[str]]:
        try:
            ans = await resolver.resolve(name.rstrip(".") + ".", "CAA", raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], []  # no such name / no CAA there: climb on
        except dns.resolver.NoNameservers as e:
            raise CaaLookupError(name, "the DNS servers answered SERVFAIL or refused") from e
        except dns.exception.Timeout as e:
            raise CaaLookupError(name, "the DNS servers did not answer in time") from e
        except dns.exception.DNSException as e:
            raise CaaLookupError(name, type(e).__name__) from e
        chain: list[str] = []
        if ans.chaining_result is not None:
            for rrset in ans.chaining_result.cnames:
                for rr in rrset:
                    chain.append(rr.target.to_text().rstrip(".").lower())
        out: list[CaaRecord] = []
        if ans.rrset is not None:
            owner = ans.rrset.name.to_text().rstrip(".").lower()
            for rr in ans.rrset:
                out.append(CaaRecord(int(rr.flags), rr.tag.decode("ascii", "replace"),
                                     rr.value.decode("utf-8", "replace"), owner))
        return out, chain
    return fetch


def _climb(name: str) -> list[str]:
    labels = name.rstrip(".").lower().split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    return [".".join(labels[i:]) for i in range(len(labels))]  # the name ... the TLD (never the root)


async def relevant_caa_set(hostname: str, fetch: Fetch) -> tuple[list[CaaRecord], str | None, list[str]]:
    """RFC 8659 §3: the first non-empty CAA set climbing from ``hostname`` (a wildcard: from its base), the name it
    was queried at (None when no set anywhere), and the alias chain followed there. Raises
    :class:`CaaLookupError`."""
    for name in _climb(hostname):
        records, chain = await fetch(name)
        if records:
            return records, name, chain
    return [], None, []


@dataclass
class CaaOutcome:
    """What the gate decided for one name."""

    outcome: str                              # allowed | forbidden | lookup_failed | unchecked
    directories: list[str] | None = None      # the CAs that may issue (None: no restriction to pass on)
    code: str | None = None                   # caa_forbidden | caa_lookup_failed
    message: str | None = None                # one plain sentence for the tenant (with the record to add)
    record_to_add: str | None = None
    data: dict = field(default_factory=dict)  # for the event

    @property
    def proceed(self) -> bool:
        return self.outcome in ("allowed", "unchecked")


class CaaGate:
    """Checks CAA before an order. ``fetch``: a :data:`Fetch` (:func:`dns_fetch` over the service's resolver)."""

    def __init__(self, fetch: Fetch, *, enabled: bool = True) -> None:
        self.fetch = fetch
        self.enabled = enabled

    @staticmethod
    async def identities(issuer) -> dict[str, list[str]]:
        """The configured CAs' identities (``issuer.caa_identities()``), {} when unknown or unreadable."""
        fn = getattr(issuer, "caa_identities", None)
        if fn is None:
            return {}
        try:
            got = await fn()
        except Exception as e:  # noqa: BLE001 - a CA that is down: its order fails on its own, with its own reason
            log.info("CAA identities unavailable (%s); the CA checks CAA itself", type(e).__name__)
            return {}
        return {str(k): [str(i) for i in v] for k, v in (got or {}).items()}

    async def check(self, hostname: str, issuer) -> CaaOutcome:
        if not self.enabled:
            return CaaOutcome("unchecked")
        ids = await self.identities(issuer)
        try:
            records, queried, chain = await relevant_caa_set(hostname, self.fetch)
        except CaaLookupError as e:
            return CaaOutcome("lookup_failed", code="caa_lookup_failed", data={"name": e.name, "cause": e.cause},
                              message=f"We could not read the CAA records of {e.name}: {e.cause}. Nothing is "
                                      "ordered until they can be read; we try again automatically. If this stays, "
                                      "ask your DNS provider to fix the answers for CAA queries.")
        wildcard = hostname.startswith("*.")
        data: dict[str, Any] = {"records": [r.text() for r in records], "queried": queried, "aliases": chain}
        if not records:
            return CaaOutcome("allowed", data=data)
        verdicts: dict[str, CaaVerdict] = {d: evaluate(records, i, wildcard=wildcard) for d, i in ids.items()}
        if not verdicts:  # no CA identity known: only a set that forbids every CA can be judged here
            v = evaluate(records, (), wildcard=wildcard)
            if v.allowed is False:
                verdicts = {"": v}
            else:
                return CaaOutcome("allowed", data={**data, "identities": "unknown"})
        allowed = [d for d, v in verdicts.items() if v.allowed is not False and d]
        data["verdicts"] = {d or "any": {"allowed": v.allowed, "reason": v.reason} for d, v in verdicts.items()}
        if allowed:
            restrict = allowed if len(allowed) < len(verdicts) else None
            return CaaOutcome("allowed", directories=restrict, data=data)
        first = next(iter(verdicts.values()))
        rec = first.record
        owner = rec.owner if rec is not None and rec.owner else (queried or hostname.lstrip("*."))
        tag = "issuewild" if first.tag == "issuewild" else "issue"
        identity = next((i for v in ids.values() for i in v if i), None)
        add = suggested_record(owner, identity, tag=tag) if identity else None
        what = f"add this DNS record at your DNS provider: {add}" if add else \
            "add a CAA record that names our certificate authority at your DNS provider"
        if rec is not None and rec.critical and first.tag not in ("issue", "issuewild"):
            message = (f"Your domain has a critical CAA record ({rec.text()}) that no certificate authority "
                       f"understands, so none may issue for {hostname}. Remove it or clear its critical flag, "
                       f"then {what}.")
        else:
            shown = f" ({rec.text()})" if rec is not None else ""
            message = (f"Your domain's CAA record{shown} does not allow our certificate authority to issue "
                       f"certificates for {hostname}. To allow it, {what} (or remove the restriction). "
                       "We check again automatically.")
        data.update(record_to_add=add, forbidding=rec.text() if rec is not None else None)
        return CaaOutcome("forbidden", code="caa_forbidden", message=message, record_to_add=add, data=data)
