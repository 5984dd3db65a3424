"""Hostname validation: what a tenant may register, in one canonical form.

A valid name is lowercased, without a trailing dot, in ASCII (IDNA 2008 / UTS #46 A-labels), has at least two
labels, labels of 1-63 letters/digits/hyphens not starting or ending with a hyphen, at most 253 characters, is not an
IP literal, not a public suffix (``co.uk``, ``github.io``), and has no wildcard unless explicitly allowed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import idna
from publicsuffixlist import PublicSuffixList

from acme_client.identifiers import registered_domain  # the one PSL-based eTLD+1 (re-exported)

__all__ = ["InvalidHostname", "Hostname", "validate_hostname", "registered_domain", "is_valid_sni"]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidHostname(ValueError):
    """The name cannot be registered. ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Hostname:
    ascii: str
    unicode: str
    registered_domain: str
    wildcard: bool = False


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def _is_ip_literal(s: str) -> bool:
    t = s.strip("[]")
    try:
        ipaddress.ip_address(t)
        return True
    except ValueError:
        pass
    # inet_aton forms like 127.1 or 0x7f.1 are still IP literals to many resolvers.
    if re.fullmatch(r"[0-9.x]+", s) and s.count(".") <= 3:
        return True
    return False


def validate_hostname(raw: object, *, allow_wildcard: bool = False) -> Hostname:
    """Check and canonicalise a hostname a tenant wants to use.

    Args:
        raw: the name as received (str expected).
        allow_wildcard: accept ``*.example.com`` (only meaningful with DNS-01).

    Returns:
        The canonical :class:`Hostname`.

    Raises:
        InvalidHostname: with a ``code`` and a message a person can act on.
    """
    if not isinstance(raw, str):
        raise InvalidHostname("invalid_hostname", "hostname must be a string")
    name = raw.strip()
    if not name:
        raise InvalidHostname("invalid_hostname", "hostname is empty")
    if len(name) > 1000:
        raise InvalidHostname("hostname_too_long", "hostname is longer than 253 characters")
    if any(c.isspace() for c in name) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidHostname("invalid_hostname", "hostname contains whitespace or control characters")
    if "://" in name or "/" in name or "@" in name or "?" in name or "#" in name:
        raise InvalidHostname("invalid_hostname",
                              "give a bare hostname such as shop.example.com, not a URL or a path")
    if name.endswith("."):
        name = name[:-1]
    if name.startswith("[") or ":" in name:
        if _is_ip_literal(name.split("]")[0] + ("]" if name.startswith("[") else "")) or _is_ip_literal(name):
            raise InvalidHostname("ip_literal", "IP addresses cannot be registered; use a DNS name")
        raise InvalidHostname("invalid_hostname", "hostname must not contain a port or a colon")
    if _is_ip_literal(name):
        raise InvalidHostname("ip_literal", "IP addresses cannot be registered; use a DNS name")
    wildcard = False
    if name.startswith("*."):
        if not allow_wildcard:
            raise InvalidHostname("wildcard_not_allowed",
                                  "wildcard names need DNS-01 validation, which is not enabled for this edge")
        wildcard = True
        name = name[2:]
    if "*" in name:
        raise InvalidHostname("invalid_hostname", "'*' is only allowed as the whole left-most label")
    if ".." in name or name.startswith("."):
        raise InvalidHostname("empty_label", "hostname has an empty label (two dots in a row)")
    for label in name.split("."):
        if label.isascii() and len(label) > 63:
            raise InvalidHostname("label_too_long", f"label {label[:20]!r}... is longer than 63 characters")
    if name.isascii() and len(name) > 253:
        raise InvalidHostname("hostname_too_long", f"hostname is {len(name)} characters; the limit is 253")
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except idna.IDNAError as e:
        raise InvalidHostname("invalid_idna", f"hostname is not a valid internationalised name: {e}") from None
    except UnicodeError as e:
        raise InvalidHostname("invalid_idna", f"hostname is not a valid internationalised name: {e}") from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > 253:
        raise InvalidHostname("hostname_too_long",
                              f"hostname is {len(ascii_name)} characters in ASCII form; the limit is 253")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidHostname("not_fully_qualified", "hostname needs at least two labels, e.g. shop.example.com")
    for label in labels:
        if len(label) > 63:
            raise InvalidHostname("label_too_long", f"label {label[:20]!r}... is longer than 63 characters")
        if not _LABEL.match(label):
            raise InvalidHostname("invalid_label",
                                  f"label {label!r} may only hold letters, digits and inner hyphens")
        if label[2:4] == "--" and not label.startswith("xn--"):
            raise InvalidHostname("invalid_label", f"label {label!r} has '--' in positions 3-4 (reserved)")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as e:
                raise InvalidHostname("invalid_idna", f"label {label!r} is not valid punycode: {e}") from None
    if labels[-1].isdigit():
        raise InvalidHostname("invalid_label", "the top-level label cannot be all digits")
    if _psl().is_public(ascii_name):
        raise InvalidHostname("public_suffix",
                              f"{ascii_name} is a public suffix (like co.uk); register a name under it")
    reg = registered_domain(ascii_name) or ascii_name
    try:
        uni = idna.decode(ascii_name)
    except (idna.IDNAError, UnicodeError):
        uni = ascii_name
    if wildcard:
        return Hostname(ascii="*." + ascii_name, unicode="*." + uni, registered_domain=reg, wildcard=True)
    return Hostname(ascii=ascii_name, unicode=uni, registered_domain=reg)


def is_valid_sni(name: str | None) -> bool:
    """Cheap check used on the handshake path: could this SNI value be a registered hostname at all?"""
    if not name or len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))
