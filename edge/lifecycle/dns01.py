"""DNS-01 through a delegated CNAME (like acme-dns and Cloudflare's delegated DCV).

The tenant creates once ``_acme-challenge.<name>. CNAME <label>.<zone>.`` where ``<zone>`` is the operator's
challenge zone (``EDGECERT_DNS01_ZONE``) and ``<label>`` is :func:`challenge_label` of the name (a wildcard's base
name: ``*.customer.com`` and ``customer.com`` share ``_acme-challenge.customer.com``). edgecert then publishes the
TXT answers at ``<label>.<zone>`` through a :class:`DnsPublisher`, checks they are visible by asking the zone's
server directly, and only then lets the CA validate; the answer is removed once the order is over (also after a
restart: the value is journaled in the store's challenge table first).

* :class:`DnsPublisher`: the seam (publish / remove / check one TXT value). :class:`Rfc2136Publisher` implements it
  with RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP, to ``EDGECERT_DNS01_SERVER``; a provider's
  HTTP API can implement the same three methods later.
* :class:`Dns01Challenges`: a :class:`acme_client.challenges.ChallengePublisher` that handles ``kind == "dns-01"``
  itself and hands every other kind to the publisher it wraps (HTTP-01 tokens in the store, TLS-ALPN-01).
* :class:`TsigKey`: ``name:algorithm:base64secret`` parsed once; its secret never appears in ``repr`` or logs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import logging
import re
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from acme_client import errors as acme_errors
from acme_client.challenges import ChallengePublisher

__all__ = ["DnsPublisher", "Rfc2136Publisher", "Dns01Challenges", "TsigKey", "Dns01Error", "challenge_label",
           "dns01_publisher",
           "challenge_target", "CHALLENGE_PREFIX", "TXT_TTL", "TSIG_ALGORITHMS"]

log = logging.getLogger(__name__)

#: The label the CA looks up (RFC 8555 8.4): ``_acme-challenge.<name>``.
CHALLENGE_PREFIX = "_acme-challenge"
#: TTL of the published TXT records, seconds: short, so that a resolver (the CA's) does not keep an old answer.
TXT_TTL = 30
#: How long a published answer may take to show on the zone's server before the attempt gives up (seconds).
VISIBLE_TIMEOUT = 20.0
#: How long the challenge table keeps a published value (to remove it after a restart), seconds.
JOURNAL_TTL = 7 * 86400.0
_KEY_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")
#: TSIG algorithms accepted in ``EDGECERT_DNS01_TSIG`` (RFC 8945; hmac-md5 is not offered).
TSIG_ALGORITHMS = {
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}


def challenge_label(hostname: str) -> str:
    """The stable label of ``hostname``'s answers in the challenge zone: base32 (lowercase, no padding) of the
    first 10 bytes of SHA-256 of the name without a leading ``*.`` (16 characters, e.g. ``k3m2...``)."""
    base = hostname.lower().rstrip(".")
    if base.startswith("*."):
        base = base[2:]
    return base64.b32encode(hashlib.sha256(base.encode()).digest()[:10]).decode().lower().rstrip("=")


def challenge_target(hostname: str, zone: str) -> str:
    """``<label>.<zone>`` (no trailing dot): where ``_acme-challenge.<hostname>`` must point."""
    return f"{challenge_label(hostname)}.{zone.lower().strip().rstrip('.')}"


class Dns01Error(acme_errors.RetryableError):
    """The challenge zone could not take or show an answer (update refused, server unreachable, not visible in
    time). The CA was not told to validate: no failed validation is counted; the order is tried again later.

    Attributes:
        reason: ``refused`` (the server refused the update: TSIG key or zone settings), ``unreachable``,
            ``not_visible``.
    """

    code = "dns01_publish_failed"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# What a tenant reads on the domain (``last_error``, the status page) and who acts, like the CA's own error kinds.
acme_errors.PLAIN_TEXT.setdefault(
    Dns01Error.code, "The certificate could not be requested through DNS this time (the service's DNS server did not "
                     "take or show the answer). Nothing is wrong with your records; we try again automatically.")
acme_errors.WHO_ACTS.setdefault(Dns01Error.code, "nobody (the operator if it lasts)")


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: ``name:algorithm:base64secret``. ``repr`` and :meth:`redacted` never show the secret."""

    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> "TsigKey":
        """Raises ValueError with what is wrong (never echoing the secret)."""
        parts = (text or "").strip().split(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError("must be name:algorithm:base64secret, e.g. edgecert:hmac-sha256:<secret from "
                             "`keymgr -t edgecert hmac-sha256` or `tsig-keygen -a hmac-sha256 edgecert`>")
        name, alg, secret_b64 = (p.strip() for p in parts)
        alg = alg.lower()
        if alg not in TSIG_ALGORITHMS:
            raise ValueError(f"algorithm {alg[:20]!r} is not one of {', '.join(TSIG_ALGORITHMS)}")
        if not _KEY_NAME.match(name):
            raise ValueError(f"key name {name[:40]!r} is not a DNS name (letters, digits, '-', '_', '.')")
        try:
            secret = base64.b64decode(secret_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the secret is not valid base64") from None
        if len(secret) < 16:
            raise ValueError("the secret is shorter than 16 bytes; generate one with keymgr or tsig-keygen")
        return cls(name=name, algorithm=alg, secret=secret)

    def redacted(self) -> str:
        return f"{self.name}:{self.algorithm}:***"

    def keyring(self) -> dict:
        return dns.tsigkeyring.from_text({self.name: (self.algorithm, base64.b64encode(self.secret).decode())})


class DnsPublisher(Protocol):
    """Publishes TXT values in the operator's challenge zone (the seam: RFC 2136 today, a provider's API later).

    ``fqdn`` is an absolute name inside the zone, without the trailing dot. Several values may live at one name at
    once (a name and its wildcard validated together): :meth:`publish_txt` adds one value, :meth:`remove_txt`
    removes exactly that value. Both are idempotent. Failures raise :class:`Dns01Error`."""

    async def publish_txt(self, fqdn: str, value: str) -> None: ...
    async def remove_txt(self, fqdn: str, value: str) -> None: ...
    async def visible(self, fqdn: str, value: str) -> bool:
        """Does the zone's own (authoritative) server answer ``value`` at ``fqdn`` now?"""
        ...


class Rfc2136Publisher:
    """:class:`DnsPublisher` over RFC 2136 dynamic updates signed with TSIG, sent over TCP to one server.

    Args:
        server: (host, port) of the authoritative server that accepts updates for ``zone``.
        zone: the challenge zone (its apex: the update's zone section).
        key: the TSIG key (None: unsigned updates, for a server that allows them by address).
        timeout: seconds for one exchange.
    """

    def __init__(self, *, server: tuple[str, int], zone: str, key: TsigKey | None, timeout: float = 10.0) -> None:
        self.server = server
        self.zone = dns.name.from_text(zone.rstrip(".") + ".")
        self.key = key
        self.timeout = timeout
        self._keyring = key.keyring() if key is not None else None

    def _update(self) -> dns.update.UpdateMessage:
        if self.key is None:
            return dns.update.UpdateMessage(self.zone)
        return dns.update.UpdateMessage(self.zone, keyring=self._keyring,
                                        keyname=dns.name.from_text(self.key.name),
                                        keyalgorithm=TSIG_ALGORITHMS[self.key.algorithm])

    def _relative(self, fqdn: str) -> dns.name.Name:
        name = dns.name.from_text(fqdn.rstrip(".") + ".")
        if not name.is_subdomain(self.zone):
            raise Dns01Error(f"{fqdn} is not inside the challenge zone {self.zone.to_text()}", reason="refused")
        return name.relativize(self.zone)

    async def _where(self) -> str:
        """The server's address (``EDGECERT_DNS01_SERVER`` may name it: resolved by the system on each use)."""
        host, port = self.server
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return infos[0][4][0]

    async def _send(self, msg: dns.message.Message, what: str) -> None:
        host, port = self.server
        try:
            resp = await dns.asyncquery.tcp(msg, await self._where(), timeout=self.timeout, port=port)
        except dns.tsig.PeerError as e:
            raise Dns01Error(f"the DNS server {host}:{port} refused the TSIG signature of the {what} "
                             f"({type(e).__name__}): check EDGECERT_DNS01_TSIG against the key on the server",
                             reason="refused") from None
        except (OSError, EOFError, dns.exception.DNSException) as e:
            raise Dns01Error(f"the DNS server {host}:{port} did not take the {what} ({type(e).__name__}); "
                             f"will retry", reason="unreachable") from None
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = {dns.rcode.NOTAUTH: "the server does not accept this TSIG key or is not authoritative for the "
                                       "zone (EDGECERT_DNS01_TSIG, EDGECERT_DNS01_ZONE)",
                    dns.rcode.REFUSED: "the server does not allow updates to this zone with this key",
                    dns.rcode.NOTZONE: "the name is not in the zone"}.get(rcode, "see the server's log")
            raise Dns01Error(f"the DNS server {host}:{port} answered {dns.rcode.to_text(rcode)} to the {what}: "
                             f"{hint}", reason="refused")

    async def publish_txt(self, fqdn: str, value: str) -> None:
        upd = self._update()
        upd.add(self._relative(fqdn), TXT_TTL, "TXT", _quoted(value))
        await self._send(upd, f"update adding the TXT record at {fqdn}")

    async def remove_txt(self, fqdn: str, value: str) -> None:
        upd = self._update()
        upd.delete(self._relative(fqdn), "TXT", _quoted(value))
        await self._send(upd, f"update removing the TXT record at {fqdn}")

    async def visible(self, fqdn: str, value: str) -> bool:
        q = dns.message.make_query(fqdn.rstrip(".") + ".", "TXT")
        q.flags &= ~dns.flags.RD
        try:
            resp = await dns.asyncquery.tcp(q, await self._where(), timeout=self.timeout, port=self.server[1])
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        for rrset in resp.answer:
            if rrset.rdtype != dns.rdatatype.TXT:
                continue
            for rr in rrset:
                if b"".join(rr.strings).decode("ascii", "replace") == value:
                    return True
        return False


def _quoted(value: str) -> str:
    if not value or any(c in value for c in '"\\ ;') or not value.isascii():
        raise Dns01Error("a DNS-01 answer must be a base64url value", reason="refused")
    return f'"{value}"'


class Dns01Challenges:
    """:class:`ChallengePublisher` for ``dns-01`` answers (through a :class:`DnsPublisher`); every other kind goes
    to ``inner`` unchanged.

    ``publish`` journals the TXT value in the store's challenge table (kind ``dns-01``, so that any node or a
    restarted process can remove it), adds it to the zone, and returns only once the zone's server answers it
    (bounded by ``visible_timeout``; :class:`Dns01Error` otherwise, before the CA is told anything). ``withdraw``
    removes exactly the value that was published for the token; a token never published is a no-op.
    """

    def __init__(self, *, inner: ChallengePublisher, dns: DnsPublisher, zone: str, storage,
                 visible_timeout: float = VISIBLE_TIMEOUT, poll_interval: float = 0.25) -> None:
        self.inner = inner
        self.dns = dns
        self.zone = zone.lower().strip().rstrip(".")
        self.storage = storage
        self.visible_timeout = visible_timeout
        self.poll_interval = poll_interval
        self._mem: OrderedDict[str, tuple[str, str]] = OrderedDict()  # token -> (fqdn, value), this node's

    def record_name(self, hostname: str) -> str:
        return challenge_target(hostname, self.zone)

    async def publish(self, *, hostname: str, kind: str, token: str, key_authorization: str) -> None:
        if kind != "dns-01":
            await self.inner.publish(hostname=hostname, kind=kind, token=token, key_authorization=key_authorization)
            return
        fqdn = self.record_name(hostname)
        value = key_authorization
        await self.storage.put_challenge(token, value, hostname, kind="dns-01", ttl=JOURNAL_TTL)
        self._mem[token] = (fqdn, value)
        while len(self._mem) > 10000:
            self._mem.popitem(last=False)
        await self.dns.publish_txt(fqdn, value)
        deadline = time.monotonic() + self.visible_timeout
        while not await self.dns.visible(fqdn, value):
            if time.monotonic() >= deadline:
                raise Dns01Error(f"the TXT record at {fqdn} was not visible on the challenge zone's server after "
                                 f"{self.visible_timeout:.0f}s; the CA was not asked to validate", reason="not_visible")
            await asyncio.sleep(self.poll_interval)
        log.info("dns-01 answer for %s published at %s", hostname, fqdn)

    async def withdraw(self, *, hostname: str, kind: str, token: str) -> None:
        if kind != "dns-01":
            await self.inner.withdraw(hostname=hostname, kind=kind, token=token)
            return
        got = self._mem.pop(token, None)
        if got is None:
            c = await self.storage.get_challenge(token)
            if c is None or c.kind != "dns-01":
                return  # never published (the CA offered dns-01, another method answered)
            got = (self.record_name(c.hostname), c.key_authorization)
        fqdn, value = got
        await self.dns.remove_txt(fqdn, value)
        await self.storage.delete_challenge(token)
        log.info("dns-01 answer for %s removed from %s", hostname, fqdn)


def dns01_publisher(settings, storage, inner: ChallengePublisher) -> ChallengePublisher:
    """The issuer's publisher: ``inner`` wrapped in :class:`Dns01Challenges` when DNS-01 is configured
    (``EDGECERT_DNS01_SERVER`` / ``_ZONE`` / ``_TSIG``), else ``inner`` itself."""
    if not settings.dns01_enabled:
        return inner
    from edge.config import parse_hostport
    server = parse_hostport(settings.dns01_server, setting="EDGECERT_DNS01_SERVER", default_port=53)
    dnspub = Rfc2136Publisher(server=server, zone=settings.dns01_zone, key=TsigKey.parse(settings.dns01_tsig))
    return Dns01Challenges(inner=inner, dns=dnspub, zone=settings.dns01_zone, storage=storage)
