"""Hostname rules: what a tenant may register, in one canonical form; ``host:port`` values.

A valid name is lowercased, without a trailing dot, in ASCII (IDNA 2008 / UTS #46 A-labels), has at least two
labels, labels of 1-63 letters/digits/hyphens not starting or ending with a hyphen, at most 253 characters, is not an
IP literal, not a public suffix (``co.uk``, ``github.io``), and has no wildcard unless explicitly allowed.
``validate_hostname(..., registrable=False)`` is the same parser for names that are only probed (diagnostics).

``parse_hostport`` / ``format_hostport`` read and write ``host:port`` (``[v6]:port`` for IPv6).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

from acme_client.identifiers import public_suffix_list, registered_domain  # the one PSL (registered_domain re-exported)

__all__ = ["InvalidHostname", "Hostname", "validate_hostname", "registered_domain", "is_valid_sni",
           "InvalidHostPort", "parse_hostport", "format_hostport"]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ANY_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")  # registrable=False: underscores too


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


def validate_hostname(raw: object, *, allow_wildcard: bool = False, registrable: bool = True) -> Hostname:
    """Check and canonicalise a hostname: the one hostname parser.

    Args:
        raw: the name as received (str expected).
        allow_wildcard: accept ``*.example.com`` (only meaningful with DNS-01): one whole left-most ``*`` label,
            over a base that is itself a registrable name (not ``*.*``, ``*.com``, ``*.co.uk``, ``*.github.io``).
        registrable: True (a name a tenant may register, see the module docstring). False (any name a client
            could connect to, as diagnostics takes it): an IP literal (``[v6]`` too) comes back in canonical
            form; single labels, public suffixes, underscores, an all-digit top-level label (not an all-digit
            name) are accepted; an ASCII name is only lowercased and checked label by label (no IDNA checks),
            a non-ASCII one is converted with UTS #46 without the STD3 rules.

    Returns:
        The canonical :class:`Hostname`.

    Raises:
        InvalidHostname: with a ``code`` and a message a person can act on.
    """
    if not isinstance(raw, str):
        raise InvalidHostname("invalid_hostname", "hostname must be a string")
    name = raw.strip()
    if not registrable:
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        try:
            ip = str(ipaddress.ip_address(name))
            return Hostname(ascii=ip, unicode=ip, registered_domain=ip)
        except ValueError:
            pass
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
        if registrable and (_is_ip_literal(name.split("]")[0] + ("]" if name.startswith("[") else ""))
                            or _is_ip_literal(name)):
            raise InvalidHostname("ip_literal", "IP addresses cannot be registered; use a DNS name")
        raise InvalidHostname("invalid_hostname", "hostname must not contain a port or a colon")
    if registrable and _is_ip_literal(name):
        raise InvalidHostname("ip_literal", "IP addresses cannot be registered; use a DNS name")
    wildcard = False
    if name.startswith("*."):
        if not allow_wildcard:
            raise InvalidHostname("wildcard_not_allowed",
                                  "wildcard names need DNS-01 validation, which is not enabled for this edge")
        wildcard = True
        name = name[2:]
    if "*" in name:
        raise InvalidHostname("invalid_hostname", "'*' is only allowed as the whole left-most label, once "
                              "(*.customer.com; not *.*.customer.com, a.*.customer.com or x*.customer.com)")
    if wildcard and "." not in name:
        raise InvalidHostname("not_fully_qualified", f"*.{name} would cover a whole top-level domain; a wildcard "
                              f"needs a registrable base such as *.customer.{name}")
    if ".." in name or name.startswith("."):
        raise InvalidHostname("empty_label", "hostname has an empty label (two dots in a row)")
    for label in name.split("."):
        if label.isascii() and len(label) > 63:
            raise InvalidHostname("label_too_long", f"label {label[:20]!r}... is longer than 63 characters")
    if name.isascii() and len(name) > 253:
        raise InvalidHostname("hostname_too_long", f"hostname is {len(name)} characters; the limit is 253")
    if not registrable and name.isascii():
        ascii_name = name
    else:
        try:
            ascii_name = idna.encode(name, uts46=True, std3_rules=registrable, transitional=False).decode("ascii")
        except idna.IDNAError as e:
            raise InvalidHostname("invalid_idna", f"hostname is not a valid internationalised name: {e}") from None
        except UnicodeError as e:
            raise InvalidHostname("invalid_idna", f"hostname is not a valid internationalised name: {e}") from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > 253:
        raise InvalidHostname("hostname_too_long",
                              f"hostname is {len(ascii_name)} characters in ASCII form; the limit is 253")
    labels = ascii_name.split(".")
    if registrable and len(labels) < 2:
        raise InvalidHostname("not_fully_qualified", "hostname needs at least two labels, e.g. shop.example.com")
    for label in labels:
        if len(label) > 63:
            raise InvalidHostname("label_too_long", f"label {label[:20]!r}... is longer than 63 characters")
        if not (_LABEL if registrable else _ANY_LABEL).match(label):
            raise InvalidHostname("invalid_label",
                                  f"label {label!r} may only hold letters, digits and inner hyphens"
                                  + ("" if registrable else " or underscores"))
        if not registrable:
            continue
        if label[2:4] == "--" and not label.startswith("xn--"):
            raise InvalidHostname("invalid_label", f"label {label!r} has '--' in positions 3-4 (reserved)")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as e:
                raise InvalidHostname("invalid_idna", f"label {label!r} is not valid punycode: {e}") from None
    if labels[-1].isdigit() and (registrable or all(label.isdigit() for label in labels)):
        raise InvalidHostname("invalid_label", "the top-level label cannot be all digits")
    if registrable and public_suffix_list().is_public(ascii_name):
        if wildcard:
            raise InvalidHostname("public_suffix", f"*.{ascii_name} would cover every name under the public suffix "
                                  f"{ascii_name}; a wildcard needs a registrable base such as *.customer.{ascii_name}")
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


class InvalidHostPort(ValueError):
    """A ``host:port`` value that cannot be used.

    Attributes:
        value: the value as given.
        what: what it is (a setting's name, ``"connect target"``...).
        problem: what is wrong with it.
    """

    def __init__(self, value: object, what: str, problem: str) -> None:
        super().__init__(f"invalid {what} {value!r}: {problem}")
        self.value = value
        self.what = what
        self.problem = problem


def _is_ipv6(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
        return True
    except ValueError:
        return False


def parse_hostport(value: str, *, what: str = "address", default_port: int | None = None,
                   listen: bool = False) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port).

    Args:
        value: the text; surrounding whitespace is ignored.
        what: names the value in the error message.
        default_port: the port when the value has none (``host``, ``[v6]``, or a bare IPv6 address); None: a port
            is required, and in an unbracketed value with several colons the last one separates the port
            (``::1:53``).
        listen: a listening address: an empty host means every interface (``0.0.0.0``) and port 0 is allowed.

    Raises:
        InvalidHostPort: malformed, with the value.
    """
    v = (value or "").strip()
    expected = "expected HOST:PORT"
    if v.startswith("["):
        host, sep, rest = v[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidHostPort(value, what, expected)
        port_s = rest[1:] if rest else None
    elif v.count(":") > 1:
        if default_port is not None and _is_ipv6(v):
            host, port_s = v, None
        else:
            host, _, port_s = v.rpartition(":")
            if not _is_ipv6(host):
                raise InvalidHostPort(value, what, expected)
    elif ":" in v:
        host, _, port_s = v.partition(":")
    else:
        host, port_s = v, None
    if not host:
        if not listen:
            raise InvalidHostPort(value, what, expected)
        host = "0.0.0.0"
    if port_s is None:
        if default_port is None:
            raise InvalidHostPort(value, what, expected)
        return host, default_port
    lowest = 0 if listen else 1
    if not (port_s.isascii() and port_s.isdigit()) or not lowest <= int(port_s) <= 65535:
        raise InvalidHostPort(value, what, f"port must be {lowest}-65535")
    return host, int(port_s)


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
