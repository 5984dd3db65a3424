"""CAA (RFC 8659): may a CA issue for a name, given the relevant CAA record set? Pure logic, no DNS.

The DNS side (finding the relevant record set: climbing the tree, following aliases) is
``edge.lifecycle.caa``; this module decides from the records it found:

* the relevant set is the first non-empty CAA RRset found climbing from the name toward the root (RFC 8659 §3);
  an empty (or absent) set everywhere means any CA may issue;
* a record with the critical flag (128) and a tag this module does not know forbids issuance (§4.1);
* for a wildcard name, the ``issuewild`` records decide when there is at least one; else ``issue`` (§4.3);
* without any ``issue`` (or, for a wildcard, ``issuewild``) record in the set, any CA may issue (§4.2: e.g. a set
  with only ``iodef``);
* an ``issue`` value is ``issuer-domain-name [; parameters]``: the domain is compared case-insensitively with the
  CA's identities (its ``caaIdentities``); parameters are ignored for that comparison; an empty domain
  (``issue ";"``) allows no CA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = ["CaaRecord", "CaaVerdict", "KNOWN_TAGS", "CRITICAL", "evaluate", "issuer_domain", "record_text",
           "suggested_record"]

#: Tags whose meaning is known (RFC 8659, RFC 8657, RFC 9495, RFC 9615-era mail/vmc tags). Unknown critical tags
#: forbid issuance.
KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "contactemail", "contactphone", "issuemail", "issuevmc"})
#: The Issuer Critical flag bit (RFC 8659 §4.1: bit 0, value 128).
CRITICAL = 128


@dataclass(frozen=True)
class CaaRecord:
    """One CAA resource record: ``flags tag "value"``, and the owner name it was found at (no final dot)."""

    flags: int
    tag: str
    value: str
    owner: str = ""

    @property
    def critical(self) -> bool:
        return bool(self.flags & CRITICAL)

    def text(self) -> str:
        """As in a zone file: ``customer.com. CAA 0 issue "letsencrypt.org"``."""
        return record_text(self.owner, self.flags, self.tag, self.value)


def record_text(owner: str, flags: int, tag: str, value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{owner.rstrip(".")}. CAA {flags} {tag} "{value}"'


def issuer_domain(value: str) -> str:
    """The issuer domain name of an ``issue``/``issuewild`` value (parameters after ``;`` dropped), lower case;
    ``""`` when the value names no CA."""
    return value.split(";", 1)[0].strip().rstrip(".").lower()


@dataclass(frozen=True)
class CaaVerdict:
    """The decision for one CA.

    ``allowed``: True (may issue), False (forbidden), None (cannot tell: the CA's identities are not known and the
    set names specific CAs). ``record``: the record that forbids (the critical unknown one, or the first
    ``issue``/``issuewild`` record of the set) when forbidden. ``tag``: the property that decided
    (``issue``/``issuewild``), None when nothing restricts."""

    allowed: bool | None
    tag: str | None = None
    record: CaaRecord | None = None
    reason: str = ""
    records: tuple[CaaRecord, ...] = field(default=())


def evaluate(records: Sequence[CaaRecord], identities: Iterable[str], *, wildcard: bool = False) -> CaaVerdict:
    """May the CA with ``identities`` (its CAA issuer domain names; empty: unknown) issue, given the relevant
    record set ``records`` (empty: no CAA anywhere up the tree)?"""
    ids = {i.strip().rstrip(".").lower() for i in identities if i and i.strip()}
    recs = tuple(records)
    if not recs:
        return CaaVerdict(True, reason="no CAA record restricts issuance", records=recs)
    for r in recs:
        if r.critical and r.tag.lower() not in KNOWN_TAGS:
            return CaaVerdict(False, tag=r.tag.lower(), record=r, records=recs,
                              reason=f"a critical CAA record with an unknown tag ({r.tag}) forbids every CA")
    tag = "issue"
    chosen = [r for r in recs if r.tag.lower() == "issue"]
    if wildcard:
        wild = [r for r in recs if r.tag.lower() == "issuewild"]
        if wild:
            tag, chosen = "issuewild", wild
    if not chosen:
        return CaaVerdict(True, reason=f"the CAA records have no {tag} property", records=recs)
    named = [issuer_domain(r.value) for r in chosen]
    if not any(named):
        return CaaVerdict(False, tag=tag, record=chosen[0], records=recs,
                          reason=f"the CAA {tag} record(s) allow no certificate authority")
    if not ids:
        return CaaVerdict(None, tag=tag, records=recs,
                          reason="the CA's CAA identities are unknown; the CA checks CAA itself")
    if ids & set(named):
        return CaaVerdict(True, tag=tag, records=recs, reason=f"a CAA {tag} record names this CA")
    return CaaVerdict(False, tag=tag, record=chosen[0], records=recs,
                      reason=f"the CAA {tag} records name other certificate authorities only "
                             f"({', '.join(sorted({n for n in named if n}))})")


def suggested_record(owner: str, identity: str, *, tag: str = "issue") -> str:
    """The record a domain owner adds to allow the CA ``identity``: ``customer.com. CAA 0 issue "letsencrypt.org"``."""
    return record_text(owner, 0, tag, identity)
