"""Which challenge method can obtain a name's certificate now, decided from what DNS shows, before the CA is asked.

:meth:`MethodChooser.decide` (the manager calls it before every order, renewals included):

* the domain's ``validation`` (``auto`` | ``http-01`` | ``tls-alpn-01`` | ``dns-01``, set at ``POST /v1/domains``);
* a wildcard (``*.customer.com``) is DNS-01 only, and is not pointing-checked (its names are not known one by one);
* ``auto``: the method that last worked (``domains.validation_method``) while its precondition still holds; else the
  ``_acme-challenge`` delegation -> ``dns-01``; else the name points at the edge -> ``http-01`` if our own probe of
  ``http://<name>/.well-known/acme-challenge/<probe>`` through the name's real address gets our answer, else
  ``tls-alpn-01`` (so a closed port 80 costs no failed validation at the CA);
* nothing works -> hold (``pending_dns``) with the exact record(s) to create.

DNS-01 while the name does not point at the edge yet is a **certificate before the cutover**: once installed, the
domain stays ``pending_dns`` with its certificate served for that SNI (the domain object says
``dns.ready_for_cutover``); :meth:`MethodChooser.watch` re-checks the pointing and makes it ``active`` when DNS flips
(no new order: the certificate is already served). :meth:`watch` also re-checks the delegation of a domain that
depends on DNS-01 (a wildcard, ``validation: dns-01``, or not pointing yet) on a schedule tied to the certificate's
lifetime, and tells the tenant (event ``delegation_missing``, ``last_error``) long before the renewal needs it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp

from store.models import CertificateVersion, Domain, DomainStatus, utcnow

from edge.config import Settings, parse_hostport
from edge.events import EventBus
from edge.lifecycle.dnscheck import DelegationResult, DnsChecker, PointingResult

__all__ = ["MethodChooser", "Decision", "METHODS", "PROBE_TIMEOUT", "DELEGATION_WATCH_MAX"]

log = logging.getLogger(__name__)

#: The ``validation`` values of a domain.
METHODS = ("auto", "http-01", "tls-alpn-01", "dns-01")
#: Seconds the HTTP-01 reachability probe may take.
PROBE_TIMEOUT = 5.0
#: The delegation of a DNS-01 domain is re-checked every tenth of its certificate's lifetime, at most this often
#: apart (and at least 5 s apart).
DELEGATION_WATCH_MAX = dt.timedelta(days=1)
DELEGATION_WATCH_MIN = dt.timedelta(seconds=5)


@dataclass
class Decision:
    """What :meth:`MethodChooser.decide` found. ``ok``: order now with ``challenges`` (in preference order);
    otherwise ``message`` / ``code`` / ``reason`` say why not (a sentence for the tenant)."""

    ok: bool
    message: str
    reason: str
    code: str
    method: str | None = None
    challenges: tuple[str, ...] | None = None
    precutover: bool = False
    pointing: PointingResult | None = None
    delegation: DelegationResult | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def observed(self) -> str:
        """``domains.dns_observed``: the pointing result (as before), plus the delegation and the method chosen."""
        d: dict[str, Any] = self.pointing.to_dict() if self.pointing is not None else \
            {"ok": self.ok, "reason": self.reason, "message": self.message}
        if self.delegation is not None:
            d["delegation"] = self.delegation.to_dict()
        d["method"] = self.method
        if self.precutover:
            d["precutover"] = True
        return json.dumps(d)


class MethodChooser:
    """Decides the challenge method of each order and follows the cutover and the delegation (see the module).

    Args:
        settings: ``http_listen`` / ``http01_probe_port`` (where the probe connects), DNS re-check delays.
        dns: the :class:`DnsChecker` (pointing, delegation).
        publisher: where the HTTP-01 probe answer is published (the issuer's publisher; None: no probe).
        events: the event bus.
        update: ``(domain, **fields) -> Domain``, the manager's store update (which also schedules).
    """

    def __init__(self, *, settings: Settings, dns: DnsChecker, publisher, events: EventBus,
                 update: Callable[..., Awaitable[Domain]]) -> None:
        self.s = settings
        self.dns = dns
        self.publisher = publisher
        self.events = events
        self.update = update
        self._expected: dict[str, tuple[dict[str, Any], Decision]] = {}  # hostname -> go-live fields, decision

    # -- before an order -------------------------------------------------------------------------------------
    async def decide(self, domain: Domain) -> Decision:
        h = domain.hostname
        wildcard = h.startswith("*.")
        requested = domain.validation if domain.validation in METHODS else "auto"
        dns01_on = self.dns.dns01_zone is not None
        pointing = None if wildcard else await self.dns.check(h)
        delegation = await self.dns.check_delegation(h) \
            if dns01_on and (wildcard or requested in ("auto", "dns-01")) else None
        point_ok = pointing is not None and pointing.ok
        deleg_ok = delegation is not None and delegation.ok

        def go(method: str, *, why: str) -> Decision:
            pre = method == "dns-01" and not wildcard and not point_ok
            msg = why if not pre else (f"{why}; {h} does not point at this edge yet: the certificate is obtained "
                                       f"now, before the cutover")
            return Decision(True, msg, "ok", "ok", method=method, challenges=(method,), precutover=pre,
                            pointing=pointing, delegation=delegation)

        if wildcard or requested == "dns-01":
            if deleg_ok:
                return go("dns-01", why=delegation.message)  # type: ignore[union-attr]
            return self._hold_delegation(h, delegation, pointing, wildcard=wildcard)
        last = domain.validation_method
        if requested == "auto" and deleg_ok and (last in (None, "dns-01") or not point_ok):
            return go("dns-01", why=delegation.message)  # type: ignore[union-attr]
        if not point_ok:
            assert pointing is not None
            msg = pointing.message
            if delegation is not None and not delegation.ok and delegation.reason != "dns_error":
                msg += (f" Or, to get the certificate before switching: create {delegation.record['name']}. CNAME "
                        f"{delegation.record['value']}.")
            return Decision(False, msg, pointing.reason, f"dns_{pointing.reason}", pointing=pointing,
                            delegation=delegation)
        assert pointing is not None
        if requested == "tls-alpn-01" or (requested == "auto" and last == "tls-alpn-01"):
            return go("tls-alpn-01", why=pointing.message)
        reachable = await self.probe_http01(h, pointing.addresses)
        if reachable is not False:
            return go("http-01", why=pointing.message)
        port = self.probe_port()
        if requested == "http-01":
            msg = (f"{h} points at this edge, but http://{h}:{port}/.well-known/acme-challenge/ does not reach it "
                   f"(port {port} closed or answered by something in front of the edge). Open port {port} to the "
                   f"edge, or choose validation \"tls-alpn-01\" or \"auto\".")
            return Decision(False, msg, "http01_unreachable", "http01_unreachable", pointing=pointing,
                            delegation=delegation)
        if deleg_ok:
            return go("dns-01", why=f"port {port} does not reach the edge; {delegation.message}")  # type: ignore[union-attr]
        d = go("tls-alpn-01", why=pointing.message + f"; port {port} does not reach the edge, so TLS-ALPN-01 on the "
                                                     f"HTTPS port is used")
        d.notes["http01_unreachable"] = True
        return d

    def _hold_delegation(self, h: str, delegation: DelegationResult | None, pointing: PointingResult | None, *,
                         wildcard: bool) -> Decision:
        if delegation is None or delegation.reason == "not_configured":
            msg = ("this name needs DNS-01 validation, which is not configured on this edge; the operator must set "
                   "EDGECERT_DNS01_SERVER, EDGECERT_DNS01_ZONE and EDGECERT_DNS01_TSIG")
            return Decision(False, msg, "dns01_not_configured", "dns01_not_configured", pointing=pointing)
        what = "a wildcard certificate" if wildcard else "the certificate (validation \"dns-01\")"
        msg = delegation.message if delegation.reason == "dns_error" else \
            f"{what} is obtained through DNS: {delegation.message}"
        return Decision(False, msg, delegation.reason, f"dns01_delegation_{delegation.reason}", pointing=pointing,
                        delegation=delegation)

    def probe_port(self) -> int:
        p = getattr(self.s, "http01_probe_port", None)
        if p:
            return int(p)
        return parse_hostport(self.s.http_listen, setting="EDGECERT_HTTP_LISTEN")[1]

    async def probe_http01(self, hostname: str, addresses: list[str]) -> bool | None:
        """Does ``http://<hostname>/.well-known/acme-challenge/<probe>``, sent to the name's own address, reach
        this service? A probe answer is published like a real one (any node answers it) and withdrawn after.
        None: not probed (no publisher, no address, or the probe disabled with ``http01_probe_port = -1``)."""
        if self.publisher is None or not addresses or getattr(self.s, "http01_probe_port", None) == -1 \
                or not self.probe_port():  # http_listen on port 0 (tests, benchmarks): nothing to aim at
            return None
        token = secrets.token_urlsafe(32)
        value = f"{token}.edgecert-reachability-probe"
        port = self.probe_port()
        addr = addresses[0]
        host = f"[{addr}]" if ":" in addr else addr
        url = f"http://{host}:{port}/.well-known/acme-challenge/{token}"
        try:
            await self.publisher.publish(hostname=hostname, kind="http-01", token=token, key_authorization=value)
        except Exception:  # noqa: BLE001 - the store is down: no probe, the CA decides as before
            log.warning("%s: could not publish the HTTP-01 probe answer; not probing", hostname)
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url, headers={"Host": hostname if port == 80 else f"{hostname}:{port}"},
                                       allow_redirects=False) as resp:
                    body = (await resp.content.read(4096)).decode("utf-8", "replace").strip()
                    ok = resp.status == 200 and body == value
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.info("%s: HTTP-01 probe of %s failed: %s", hostname, url, type(e).__name__)
            ok = False
        finally:
            try:
                await self.publisher.withdraw(hostname=hostname, kind="http-01", token=token)
            except Exception:  # noqa: BLE001
                log.warning("%s: could not withdraw the HTTP-01 probe answer", hostname)
        if not ok:
            await self.events.emit(hostname, "http01_unreachable",
                                   f"the HTTP-01 challenge path of {hostname} does not reach this edge on port "
                                   f"{port}; no HTTP-01 validation is asked of the CA", {"port": port})
        return ok

    # -- after an order ----------------------------------------------------------------------------------------
    def expect(self, domain: Domain, issued: Any, decision: Decision) -> None:
        """``issued`` (after ``decision``) is about to go live: the fields its go-live update carries (see
        :meth:`live_fields`): the method that worked (the issuer's ``IssuedCertificate.challenge`` when it says,
        else the one asked for), when the delegation was seen, and ``pending_dns`` for a certificate obtained
        before the cutover (served, but the name does not point here yet)."""
        now = utcnow()
        fields: dict[str, Any] = {}
        method = getattr(issued, "challenge", None) or decision.method
        if method:
            fields["validation_method"] = method
        if decision.delegation is not None and decision.delegation.ok:
            fields["delegation_seen_at"] = now
        if decision.precutover:
            fields.update(status=DomainStatus.PENDING_DNS, dns_attempts=0, dns_observed=decision.observed())
        self._expected[domain.hostname] = (fields, decision)

    async def expect_resumed(self, domain: Domain, issued: Any) -> None:
        """A certificate downloaded before a restart is installed now (the decision that ordered it is gone): a
        first certificate for a name that does not point here yet, while its delegation is in place, was obtained
        before the cutover and goes live as such."""
        h = domain.hostname
        if h.startswith("*.") or domain.current_cert_id is not None or self.dns.dns01_zone is None:
            return
        pointing = await self.dns.check(h)
        if pointing.ok:
            return
        delegation = await self.dns.check_delegation(h)
        if delegation.ok:
            self.expect(domain, issued, Decision(True, delegation.message, "ok", "ok", method="dns-01",
                                                 challenges=("dns-01",), precutover=True, pointing=pointing,
                                                 delegation=delegation))

    def live_fields(self, domain: Domain) -> dict[str, Any]:
        """The extra fields of ``domain``'s go-live update (``Swapper.live_fields``), once."""
        got = self._expected.get(domain.hostname)
        return dict(got[0]) if got is not None else {}

    async def installed(self, domain: Domain) -> None:
        """After the install attempt: a certificate now served before the cutover is announced ("ready: switch
        your DNS now") and its pointing re-checked soon."""
        fields, decision = self._expected.pop(domain.hostname, ({}, None))
        if decision is None or not decision.precutover:
            return
        if domain.status != DomainStatus.PENDING_DNS or not domain.current_cert_id:
            return  # not installed (a failed write is retried with its own state)
        now = utcnow()
        rec = self.dns.expected_record(domain.hostname)
        await self.update(domain, next_check_at=min(x for x in (now + dt.timedelta(seconds=self.s.dns_recheck_initial),
                                                                domain.next_check_at) if x is not None))
        await self.events.emit(domain.hostname, "ready_for_cutover",
                               f"certificate obtained before the cutover and served for {domain.hostname}; "
                               f"ready: switch your DNS now ({rec['text']})", {"record": rec})

    # -- while a certificate is served -------------------------------------------------------------------------
    async def watch(self, domain: Domain, cert: CertificateVersion, now: dt.datetime
                    ) -> tuple[Domain, dt.datetime | None]:
        """Between renewals: the cutover of a name served before it pointed at the edge, and the delegation of a
        domain that depends on DNS-01. Returns the domain and when to look again (None: nothing to follow)."""
        h = domain.hostname
        wildcard = h.startswith("*.")
        nxt: list[dt.datetime] = []
        if domain.status == DomainStatus.PENDING_DNS and not wildcard:
            result = await self.dns.check(h)
            if result.ok:
                domain = await self.update(domain, status=DomainStatus.ACTIVE, last_error=None, last_error_code=None,
                                           dns_attempts=0, dns_observed=json.dumps(result.to_dict()))
                await self.events.emit(h, "cutover_complete", f"{h} now points at this edge; its certificate was "
                                       f"already served, so there was no gap", {"ok": True})
            else:
                attempts = domain.dns_attempts + 1
                delay = min(self.s.dns_recheck_initial * 2 ** min(attempts - 1, 20), self.s.dns_recheck_max)
                domain = await self.update(domain, dns_attempts=attempts)
                nxt.append(now + dt.timedelta(seconds=delay))
        depends = self.dns.dns01_zone is not None and (
            wildcard or domain.validation == "dns-01"
            or (domain.validation_method == "dns-01" and domain.status != DomainStatus.ACTIVE))
        if depends:
            lifetime = cert.not_after - cert.not_before
            every = max(DELEGATION_WATCH_MIN, min(DELEGATION_WATCH_MAX, lifetime / 10))
            seen = domain.delegation_seen_at
            if seen is not None and seen.tzinfo is None:
                seen = seen.replace(tzinfo=dt.timezone.utc)
            if seen is None or now - seen >= every or domain.last_error_code == "dns01_delegation_missing":
                domain = await self._check_delegation(domain, cert)
                nxt.append(now + every)
            else:
                nxt.append(seen + every)
        return domain, (min(nxt) if nxt else None)

    async def _check_delegation(self, domain: Domain, cert: CertificateVersion) -> Domain:
        h = domain.hostname
        res = await self.dns.check_delegation(h)
        if res.ok:
            if domain.last_error_code == "dns01_delegation_missing":
                domain = await self.update(domain, delegation_seen_at=utcnow(), last_error=None, last_error_code=None)
                await self.events.emit(h, "delegation_restored", res.message, {"record": res.record})
            else:
                domain = await self.update(domain, delegation_seen_at=utcnow())
            return domain
        if res.reason == "dns_error" or domain.last_error_code == "dns01_delegation_missing":
            return domain  # a lookup failure is retried; a missing delegation was told already
        expires = cert.not_after.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        rec = res.record
        now_is = f" (it is now a CNAME to {res.found})" if res.found else ""
        msg = (f"The DNS record that lets this service renew the certificate of {h} is gone{now_is}. Create it "
               f"again: {rec.get('name')}. CNAME {rec.get('value')}. The current certificate stays valid until "
               f"{expires}; without the record it cannot be renewed.")
        domain = await self.update(domain, last_error=msg, last_error_code="dns01_delegation_missing")
        await self.events.emit(h, "delegation_missing", msg, {"record": res.record, "reason": res.reason,
                                                               "not_after": cert.not_after.isoformat()})
        return domain
