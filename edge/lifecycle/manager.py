"""The domain lifecycle: DNS check -> order -> swap -> serve -> renew, for every tenant domain.

Work is found by a periodic sweep (``next_check_at`` in the store) and by explicit wake-ups (a new domain, a renew
request), queued, and done by a bounded pool of workers. Every unit of work follows "lock, re-check, then work": take
the domain's lease in the store (so several processes/nodes never work on one name at once), read the domain again,
and only then act. Nothing here runs in the TLS handshake. Putting a certificate live (checks, files, SNI index,
reload hook, verification) is :mod:`edge.lifecycle.swap`.

One concern: deciding the next step of each domain (what is due, the order journal's recovery, retries, installing
what the CA issued). Order journal: an open entry (:class:`store.models.JournalStep`) is continued first, whatever
else is due; a certificate the CA issued is installed, never ordered again; a filesystem error while installing is
a retried ``install_failed`` state of the same certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import functools
import json
import logging
import ssl
from typing import Any, Sequence

import time

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from acme_client import errors as acme_errors
from acme_client.fairqueue import FairQueue
from acme_client.issuer import IssuedCertificate, Issuer
from acme_client.journal import crash_point, is_transient
from acme_client.ratelimit import Pacer, RateLedger, Reservation, load_limits
from acme_client.retry import RetrySchedule
from acme_client.renewal import RenewalPlan, next_ari_check, plan_renewal
from store.crypto import KeyBox
from store.protocol import NotFound, StoreUnavailable
from store.models import CertificateVersion, Domain, DomainStatus, JournalStep, utcnow

from edge.config import Settings
from edge.lifecycle.caa import CaaGate, CaaOutcome, dns_fetch
from edge.lifecycle.dnscheck import DnsChecker
from edge.events import EventBus
from edge.lifecycle.files import LiveFiles, StateWriteError
from edge.lifecycle.hooks import HookResult, ReloadHook
from edge.lifecycle.removal import RemovalReport, RemovalSnapshot, Remover, snapshot as removal_snapshot
from edge.lifecycle.methods import MethodChooser
from edge.tasks import cancel_and_wait
from edge.tls_edge.index import CertEntry, SniIndex, load_host_settings
from edge.lifecycle.swap import SwapRejected, Swapper

__all__ = ["DomainManager", "RETRY_SCHEDULE", "LEASE_TTL"]

LEASE_TTL = 60.0          # seconds a domain lease lives without a heartbeat
SCHEDULE_HORIZON = dt.timedelta(hours=6)  # APScheduler holds jobs this far ahead; the sweep adds later ones

log = logging.getLogger(__name__)

#: After a failed issuance attempt: short then long (about 1 min, 10 min, 100 min, then every 6 hours), +-10%.
RETRY_SCHEDULE = RetrySchedule("issuance", (60.0, 600.0, 6000.0, 21600.0), jitter=0.1)


def _plan_message(plan: RenewalPlan) -> str:
    guard = f"; {plan.guard.replace('_', ' ')}" if plan.guard else ""
    return f"renewal scheduled for {plan.at.isoformat()} ({plan.reason.replace('_', ' ')}{guard})"


class DomainManager:
    PRIORITY_RENEWAL = 0
    PRIORITY_NEW = 1

    def __init__(self, *, settings: Settings, storage, keybox: KeyBox, issuer: Issuer, index: SniIndex,
                 files: LiveFiles, dns: DnsChecker, events: EventBus, hook: ReloadHook,
                 retry_schedule: RetrySchedule | Sequence[float] = RETRY_SCHEDULE) -> None:
        self.s = settings
        self.storage = storage
        self.keybox = keybox
        self.issuer = issuer
        self.index = index
        self.files = files
        self.dns = dns
        self.events = events
        self.hook = hook
        self.retry_schedule = RetrySchedule.parse("issuance", retry_schedule, jitter=0.1)
        # Transient CA errors (unreachable, 5xx, bad nonce, slow) and install failures: the same order, soon.
        self.transient_schedule = RetrySchedule.parse("transient", settings.transient_retry_schedule, jitter=0.2)
        # Names that do not point at the edge yet: re-checked after dns_recheck_initial, doubling up to dns_recheck_max.
        self.dns_schedule = RetrySchedule("dns-recheck", (settings.dns_recheck_initial,), factor=2.0,
                                          cap=settings.dns_recheck_max, jitter=0.1)
        self.queue: FairQueue[str] = FairQueue()
        self.ledger = RateLedger(storage, load_limits(settings.rate_limits))
        self.pacer = Pacer(burst=settings.orders_per_10s, window=10.0)
        self.scheduler = AsyncIOScheduler(timezone=dt.timezone.utc)
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._last_sync = utcnow()
        self._ledger_pruned_at = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        self._in_flight: set[str] = set()
        resolver = getattr(dns, "resolver", None)
        self.caa = CaaGate(dns_fetch(resolver), enabled=settings.caa_check and resolver is not None)
        self.swap = Swapper(settings=settings, storage=storage, index=index, files=files, events=events, hook=hook,
                            update=self._set)
        # The challenge method of each order, the cutover and the DNS-01 delegation (edge/lifecycle/methods.py).
        self.methods = MethodChooser(settings=settings, dns=dns, publisher=getattr(issuer, "publisher", None),
                                     events=events, update=self._set)
        self.swap.live_fields = self.methods.live_fields

    @property
    def own_address(self) -> str | None:
        """The TLS listener's address (set by the server once bound): swaps are checked against it."""
        return self.swap.own_address

    @own_address.setter
    def own_address(self, value: str | None) -> None:
        self.swap.own_address = value

    @property
    def prober(self):
        """The :class:`edge.lifecycle.probes.Prober` (set by the app): a self-probe after every swap."""
        return self.swap.prober

    @prober.setter
    def prober(self, value) -> None:
        self.swap.prober = value

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        freed = await self.storage.release_dead_local_leases()
        if freed:
            log.info("released %d lease(s) left by a previous process of this host", freed)
        await self.recover()
        await self.load_index()
        await self.swap.write_exports()
        self.scheduler.start()
        self._tasks.append(asyncio.create_task(self._sweeper(), name="sweeper"))
        for i in range(self.s.max_concurrent_orders):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"worker-{i}"))

    async def recover(self) -> None:
        """After a crash: reconcile the rate ledger with what the CA did (per the order journal) and continue
        every open journal entry (any step that is not terminal) now."""
        try:
            reconcile = getattr(self.issuer, "reconcile", self.ledger.reconcile)  # per CA with several CAs
            fixed = await reconcile(utcnow(), stale_after=dt.timedelta(seconds=self.s.order_timeout + 2 * LEASE_TTL))
            if fixed:
                log.info("rate ledger reconciled with the order journal (%d change(s))", fixed)
        except Exception:
            log.exception("could not reconcile the rate ledger")
        await self._wake_open_entries(all_entries=True)

    async def _wake_open_entries(self, *, all_entries: bool) -> None:
        now = utcnow()
        for hostname, entry in await self.storage.open_journal():
            if hostname in self._in_flight:
                continue
            d = await self.storage.get_domain(hostname)
            if d is None:
                continue
            if d.next_check_at is None or (all_entries and entry.step in JournalStep.ISSUED
                                           and d.next_check_at > now):
                d = await self._set(d, next_check_at=now)
            if d.next_check_at is not None and d.next_check_at <= now:
                self.wake(hostname, tenant_id=d.tenant_id, priority=self.PRIORITY_RENEWAL)

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await asyncio.gather(*(cancel_and_wait(t) for t in self._tasks))
        self._tasks.clear()

    async def load_index(self, hostnames: list[str] | None = None, *, sync_files: bool | None = None) -> int:
        """Bring the SNI index in step with the store's current certificates (a Core query, no ORM objects; keys
        stay encrypted in memory until a context is first built). Under the swap's index lock: what is read is
        applied before any swap or removal in this process changes the index again (a read taken before a swap
        committed, applied after it, would drop the new certificate or put the old one back)."""
        async with self.swap.index_lock:
            return await self._load_index(hostnames, sync_files)

    async def _load_index(self, hostnames: list[str] | None, sync_files: bool | None) -> int:
        if sync_files is None:
            sync_files = hostnames is not None
        # Per-hostname settings (origin, min_tls_version, http2; issue 17): the routing table beside the certificates.
        await asyncio.to_thread(lambda: load_host_settings(self.index, self.storage.host_settings_rows(hostnames),
                                                           hostnames=hostnames))
        if hostnames is None and not sync_files and ":memory:" not in self.s.database_url \
                and self.s.database_url not in ("sqlite://", "sqlite:///"):
            # The full load at start: streamed, compact entries, GC off while loading (the edge workers' loader,
            # store/readonly.py; 100k names in about a second).
            from store.readonly import EdgeStore
            from edge.tls_edge.index import load_index_rows
            store = EdgeStore(self.s.database_url)
            try:
                return await asyncio.to_thread(lambda: load_index_rows(self.index, store.served_rows(), self.keybox))
            finally:
                store.close()
        rows = await asyncio.to_thread(self.storage.served_rows, hostnames)
        kb = self.keybox
        n = 0
        synced: list[str] = []
        for h, cert_id, serial, sha256, not_after, _names, cert_pem, chain_pem, key_enc in rows:
            current = self.index.get(h)
            if current is not None and current.cert_id == cert_id:
                continue
            try:
                leaf_der = ssl.PEM_cert_to_DER_cert(cert_pem)
            except ValueError:
                log.error("the stored certificate of %s does not parse; not serving it", h)
                continue
            entry = CertEntry(hostname=h, leaf_der=leaf_der, chain_pem=chain_pem.encode(),
                              key_unlock=functools.partial(kb.decrypt, key_enc, purpose=f"cert-key:{h}".encode()),
                              serial=serial, sha256=sha256, not_after=not_after, cert_id=cert_id)
            self.index.put(entry, prebuild=False)
            n += 1
            if sync_files and self.s.exports:
                # Another node obtained it: this node's files (and its local nginx/HAProxy) follow too.
                version = await asyncio.to_thread(self.files.current_version, h)
                if version is None or not version.endswith("-" + serial[:16]):
                    await asyncio.to_thread(self.files.install, h, cert_pem=cert_pem.encode(),
                                            chain_pem=chain_pem.encode(), key_pem=entry.key_pem, serial=serial)
                    synced.append(h)
        if hostnames is not None:
            have = {r[0] for r in rows}
            for h in hostnames:
                if h not in have and h in self.index:
                    self.index.remove(h)
                    await asyncio.to_thread(self.files.remove, h)
                    synced.append(h)
        if synced:
            await self.swap.write_exports()
            if self.hook.enabled:
                self.hook.notify(synced)
        return n

    def wake(self, hostname: str, *, tenant_id: int | None = None, priority: int = PRIORITY_NEW) -> None:
        """Queue work for ``hostname`` now (deduplicated; fair across tenants; renewals first)."""
        self.queue.put_nowait(hostname, group=tenant_id, priority=priority)

    def schedule(self, hostname: str, at: dt.datetime | None, *, tenant_id: int | None = None,
                 priority: int = PRIORITY_NEW) -> None:
        """An APScheduler job that wakes ``hostname`` at ``at`` (one job per domain, replaced on change)."""
        job_id = f"check:{hostname}"
        if at is None:
            try:
                self.scheduler.remove_job(job_id)
            except Exception:
                pass
            return
        if at > utcnow() + SCHEDULE_HORIZON or not self.scheduler.running:
            return  # the sweep schedules it when it comes within the horizon
        self.scheduler.add_job(self.wake, "date", run_date=at, id=job_id, replace_existing=True,
                               args=[hostname], kwargs={"tenant_id": tenant_id, "priority": priority},
                               misfire_grace_time=None, coalesce=True)

    async def _set(self, domain: Domain, **fields: Any) -> Domain:
        d = await self.storage.update_domain(domain.hostname, **fields)
        if "next_check_at" in fields:
            self.schedule(d.hostname, d.next_check_at, tenant_id=d.tenant_id,
                          priority=self.PRIORITY_RENEWAL if d.current_cert_id else self.PRIORITY_NEW)
        return d

    async def _sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.s.sweep_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def sweep(self) -> None:
        now = utcnow()
        for d in await self.storage.due_domains(now + SCHEDULE_HORIZON, limit=100000):
            prio = self.PRIORITY_RENEWAL if d.current_cert_id else self.PRIORITY_NEW
            if d.next_check_at is not None and d.next_check_at <= now:
                self.wake(d.hostname, tenant_id=d.tenant_id, priority=prio)
            elif self.scheduler.get_job(f"check:{d.hostname}") is None:
                self.schedule(d.hostname, d.next_check_at, tenant_id=d.tenant_id, priority=prio)
        # Open journal entries whose domain has nothing scheduled are continued (nothing is left half-way).
        await self._wake_open_entries(all_entries=False)
        # The rate ledger only needs the longest limit period; older rows are dead weight (once an hour).
        if now - self._ledger_pruned_at > dt.timedelta(hours=1):
            keep = max(limit.period for limit in self.ledger.limits.values())
            await self.storage.ledger_prune(now - keep - dt.timedelta(days=1))
            self._ledger_pruned_at = now
        # Changes made by other processes / nodes sharing the store.
        since = self._last_sync - dt.timedelta(seconds=2)
        self._last_sync = now
        changed = await self.storage.changed_domains(since)
        if changed:
            await self.load_index([d.hostname for d in changed])

    async def _worker(self) -> None:
        while True:
            hostname = await self.queue.get()
            try:
                await self.process(hostname)
            except asyncio.CancelledError:
                raise
            except NotFound:  # deleted (DELETE /v1/domains/...) while a unit of work was on it: nothing left to do
                log.info("%s was removed while it was being worked on; dropped", hostname)
            except StoreUnavailable as e:  # an outage (or a write lock held too long): the next sweep takes it again
                log.warning("%s: the store is unavailable (%s); worked on again once it is back", hostname, e.reason)
            except Exception:
                log.exception("unexpected error while working on %s", hostname)

    # -- one unit of work ------------------------------------------------------------------------------------
    async def process(self, hostname: str) -> None:
        if hostname in self._in_flight:
            return
        # Claimed in this process before the first await: two workers of one process share the lease's owner, so
        # the lease alone would let both in.
        self._in_flight.add(hostname)
        lock_name = f"domain:{hostname}"
        try:
            locked = await self.storage.try_lock(lock_name, ttl=LEASE_TTL)
        except BaseException:
            self._in_flight.discard(hostname)
            raise
        if not locked:
            self._in_flight.discard(hostname)
            log.debug("%s is being worked on elsewhere", hostname)
            return

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(LEASE_TTL / 3)
                await self.storage.renew_lock(lock_name, ttl=LEASE_TTL)
        hb = asyncio.create_task(heartbeat(), name=f"lease:{hostname}")
        try:
            domain = await self.storage.get_domain(hostname)  # re-check under the lock
            if domain is None:
                return
            now = utcnow()
            if not domain.renew_requested and (domain.next_check_at is None or domain.next_check_at > now):
                return  # nothing due (another worker or node did it already, or it waits for an operator)
            await self._advance(domain, now)
        finally:
            hb.cancel()
            try:
                await hb
            except (asyncio.CancelledError, Exception):
                pass
            self._in_flight.discard(hostname)
            await self.storage.unlock(lock_name)

    async def _current_cert(self, domain: Domain) -> CertificateVersion | None:
        if domain.current_cert_id is None:
            return None
        return await self.storage.get_certificate(domain.current_cert_id)

    def renewal_plan(self, cert: CertificateVersion, now: dt.datetime, *,
                     ari_window: tuple[dt.datetime, dt.datetime] | None = None,
                     is_renewal: bool = True) -> RenewalPlan:
        """:func:`acme_client.renewal.plan_renewal` with this process's settings (ratio, threshold, spacing);
        ``is_renewal``: ``cert`` replaced an earlier certificate of the name (the spacing counts from it)."""
        issued = cert.created_at if cert.created_at is not None else now
        if issued.tzinfo is None:
            issued = issued.replace(tzinfo=dt.timezone.utc)
        issued = min(issued, now)
        return plan_renewal(cert.not_before, cert.not_after, now=now, ari_window=ari_window,
                            ratio=self.s.renew_ratio, issued_at=issued, renewed_at=issued if is_renewal else None,
                            renew_before=dt.timedelta(seconds=self.s.renew_before) if self.s.renew_before else None,
                            min_spacing=dt.timedelta(seconds=self.s.renew_min_spacing))

    async def _from_renewal(self, cert: CertificateVersion) -> bool:
        """Did ``cert`` replace an earlier certificate of its name (its order says so; unknown: yes)?"""
        if cert.order_id is None:
            return True
        order = await self.storage.get_order(cert.order_id)
        return order is None or bool(order.is_renewal)

    async def _plan(self, domain: Domain, cert: CertificateVersion, now: dt.datetime
                    ) -> tuple[RenewalPlan, Domain]:
        """Decide when to renew: ask the CA's ARI window when due (lock held), else the lifetime ratio."""
        lifetime = cert.not_after - cert.not_before
        fields: dict[str, Any] = {}
        window = (domain.ari_window_start, domain.ari_window_end) if domain.ari_window_start else None
        if cert.ari_cert_id and (domain.ari_next_check_at is None or domain.ari_next_check_at <= now):
            try:
                res = await (self.issuer.renewal_window(cert.ari_cert_id, directory=cert.issuer_directory,
                                                        on_event=self._event_sink(domain.hostname))
                             if getattr(self.issuer, "manages_limits", False) else
                             self.issuer.renewal_window(cert.ari_cert_id))
            except acme_errors.AcmeError as e:
                log.warning("%s: ARI check failed: %s", domain.hostname, e)
                res = None
                fields["ari_next_check_at"] = now + min(dt.timedelta(hours=1), max(lifetime / 20,
                                                                                   dt.timedelta(seconds=5)))
            else:
                if res is None:
                    window = None
                    fields.update(ari_window_start=None, ari_window_end=None,
                                  ari_next_check_at=next_ari_check(now, retry_after=None, lifetime=lifetime))
                else:
                    start, end, retry_after = res
                    window = (start, end)
                    fields.update(ari_window_start=start, ari_window_end=end,
                                  ari_next_check_at=next_ari_check(now, retry_after=retry_after, lifetime=lifetime))
        same_window = window is not None and domain.ari_window_start == window[0] and domain.ari_window_end == window[1]
        if same_window and domain.renewal_reason == "ari_window" and domain.next_renewal_at is not None:
            plan = RenewalPlan(domain.next_renewal_at, "ari_window", True)  # keep the random draw stable
        else:
            plan = self.renewal_plan(cert, now, ari_window=window, is_renewal=await self._from_renewal(cert))
        if plan.at != domain.next_renewal_at or plan.reason != domain.renewal_reason:
            fields.update(next_renewal_at=plan.at, renewal_reason=plan.reason)
            await self.events.emit(domain.hostname, "renewal_scheduled", _plan_message(plan), plan.to_dict())
        if fields:
            domain = await self.storage.update_domain(domain.hostname, **fields)
        return plan, domain

    async def _advance(self, domain: Domain, now: dt.datetime) -> None:
        h = domain.hostname
        cert = await self._current_cert(domain)
        has_valid = cert is not None and cert.not_after > now
        if cert is not None and not has_valid and domain.status == DomainStatus.ACTIVE:
            domain = await self._set(domain, status=DomainStatus.EXPIRED,
                                     last_error=f"the certificate expired at {cert.not_after.isoformat()}")
            await self.events.emit(h, "certificate_expired", "the served certificate has expired")
        # 0. The order journal first: an open entry continues from its last durable step. A certificate the CA
        #    issued is installed (never ordered again); an order the CA has is continued by its URL.
        entry = await self.storage.open_order(domain.id)
        if entry is not None and entry.step in (JournalStep.DOWNLOADED, JournalStep.INSTALLED):
            asked, current_before = domain.renew_requested, domain.current_cert_id
            try:
                issued = await self.issuer.issue(domain_id=domain.id, names=json.loads(entry.names),
                                                 key_type=domain.key_type or self.s.key_type,
                                                 is_renewal=cert is not None, on_event=self._event_sink(h))
            except acme_errors.AcmeError as e:
                await self._failed(domain, e, has_valid=has_valid)
                return
            await self.methods.expect_resumed(domain, issued)  # a certificate from before the cutover stays so
            await self._install(domain, issued, has_valid=has_valid)
            after = await self.storage.get_domain(h)
            await self.methods.installed(after or domain)
            if asked and after is not None and after.status == DomainStatus.ACTIVE \
                    and after.current_cert_id == current_before:
                # A renewal was asked for while this entry was open, and finishing it changed nothing (its
                # certificate was current already, step "installed"): the request would be lost with the flag the
                # swap cleared. It stands: a new order follows at once.
                await self.request_renewal(h)
                await self.events.emit(h, "renewal_requested", "the renewal asked for is still to come: the "
                                       "certificate put in place now was ordered before the request",
                                       {"serial": issued.info.serial})
            return
        resuming = entry is not None and entry.url is not None
        in_window = False
        if has_valid and not domain.renew_requested and not resuming:
            assert cert is not None
            plan, domain = await self._plan(domain, cert, now)
            domain, watch_at = await self.methods.watch(domain, cert, now)  # cutover, DNS-01 delegation
            if plan.at > now:
                nxt = min(x for x in (plan.at, domain.ari_next_check_at, watch_at) if x is not None)
                await self._set(domain, next_check_at=nxt)
                return
            in_window = plan.in_ari_window

        # 0. Ownership before binding: a tenant's claim waits for its TXT proof (edge/lifecycle/dnscheck.py).
        if domain.ownership_pending:
            tenant = await self.storage.get_tenant_by_id(domain.tenant_id)
            proof = await self.dns.check_ownership(h, tenant.name if tenant else "")
            if not proof.ok:
                attempts = domain.dns_attempts + 1
                delay = self.dns_schedule.base(attempts)
                await self._set(domain, status=DomainStatus.PENDING_OWNERSHIP, last_error=proof.message,
                                last_error_code=f"ownership_{proof.reason}", dns_attempts=attempts,
                                renew_requested=False,
                                next_check_at=utcnow() + dt.timedelta(seconds=self.dns_schedule.spread(delay)))
                await self.events.emit(h, "ownership_checked", proof.message,
                                       {"ok": False, "reason": proof.reason, "retry_in_s": round(delay, 1)})
                return
            domain = await self._set(domain, ownership_verified_at=utcnow(), status=DomainStatus.PENDING_DNS,
                                     dns_attempts=0, last_error=None, last_error_code=None)
            await self.events.emit(h, "ownership_verified", proof.message, {"record": proof.record["name"]})

        # 1. Does the name point at the edge, or is its _acme-challenge delegated (DNS-01, also before the cutover
        #    and for a wildcard)? Which method then (edge/lifecycle/methods.py)? Never ask the CA otherwise.
        result = await self.methods.decide(domain)
        observed = result.observed()
        if not result.ok:
            attempts = domain.dns_attempts + 1
            delay = self.dns_schedule.base(attempts)
            recheck_at = utcnow() + dt.timedelta(seconds=self.dns_schedule.spread(delay))
            fields: dict[str, Any] = dict(last_error=result.message, last_error_code=result.code,
                                          dns_attempts=attempts, dns_observed=observed, next_check_at=recheck_at)
            if not has_valid:
                fields["status"] = DomainStatus.PENDING_DNS
            await self._set(domain, **fields)
            await self.events.emit(h, "dns_checked", result.message,
                                   {"ok": False, "reason": result.reason, "retry_in_s": round(delay, 1)})
            return
        if domain.dns_attempts or domain.status == DomainStatus.PENDING_DNS or not domain.dns_observed:
            await self.events.emit(h, "dns_checked", result.message, {"ok": True})

        # 1b. CAA (RFC 8659, edge/lifecycle/caa.py): no order when no configured CA may issue for the name.
        caa = await self._caa_gate(domain, resuming=resuming, has_valid=has_valid, observed=observed)
        if caa is None:
            return

        # 2. Our own copy of the CA's rate limits (an order being resumed was counted already). The reservation
        #    becomes the CA's actions as they happen (order created, certificate issued) and is released otherwise.
        names = [h]
        reservation = Reservation()
        chain = getattr(self.issuer, "manages_limits", False)  # acme_client/issuers.py: ledger/pacing per CA
        try:
            acct = await self.issuer.account() if hasattr(self.issuer, "account") and not chain else None
        except acme_errors.AcmeError as e:  # no account yet and the CA is down: the CA's problem, not the tenant's
            await self._failed(domain, e, has_valid=has_valid, dns_observed=observed)
            return
        account_id = acct.id if acct is not None else 0
        if not resuming and not chain:
            hold, reservation = await self.ledger.check_and_reserve(names, account_id, now=utcnow(),
                                                                    exempt=in_window)
            if hold is not None:
                fields = dict(retry_at=hold.retry_at, next_check_at=hold.retry_at, last_error=hold.message(),
                              last_error_code="rate_limited", dns_attempts=0, dns_observed=observed)
                if not has_valid:
                    fields["status"] = DomainStatus.RATE_LIMITED
                await self._set(domain, **fields)
                await self.events.emit(h, "rate_limited", hold.message(),
                                       {"limit": hold.limit, "retry_at": hold.retry_at.isoformat(), "source": "ledger"})
                return
        fields = dict(dns_attempts=0, dns_observed=observed)
        if not has_valid:
            fields["status"] = DomainStatus.ISSUING
        domain = await self._set(domain, **fields)

        # 3. Order (paced per CA account).
        is_renewal = cert is not None
        key_type = domain.key_type or self.s.key_type
        replaces = cert.ari_cert_id if (cert is not None and domain.ari_window_start is not None) else None
        if not resuming and not chain:
            await self.pacer.wait()

        emit = self._event_sink(h)

        async def on_event(kind: str, message: str, data: dict[str, Any]) -> None:
            # The ledger counts what the CA did, when it did it.
            if kind in ("order_placed", "order_downloaded") and not chain:
                try:
                    await self.ledger.confirm("order" if kind == "order_placed" else "certificate", reservation,
                                              names, account_id, order_id=data.get("order_id"), now=utcnow())
                except Exception:
                    log.exception("%s: could not record %s in the rate ledger", h, kind)
            await emit(kind, message, data)
        # The method (edge/lifecycle/methods.py), the CAs CAA allows, the profile; ARI exemption: the chain's pacing.
        how: dict[str, Any] = dict(challenges=result.challenges, directories=caa.directories, profile=domain.profile,
                                   **({"ari_exempt": in_window} if chain else {}))
        started = time.monotonic()
        try:
            try:
                issued = await self.issuer.issue(domain_id=domain.id, names=names, key_type=key_type,
                                                 replaces=replaces, is_renewal=is_renewal, on_event=on_event, **how)
            except acme_errors.FinalError as e:
                if replaces and (e.problem_type or "").endswith("alreadyReplaced"):
                    await self.events.emit(h, "order_retried", "the CA says this certificate was already replaced; "
                                           "ordering again without 'replaces'", {})
                    issued = await self.issuer.issue(domain_id=domain.id, names=names, key_type=key_type,
                                                     replaces=None, is_renewal=is_renewal, on_event=on_event, **how)
                else:
                    raise
        except acme_errors.AcmeError as e:
            if isinstance(e, acme_errors.ChallengeFailed) and not chain:  # the CA's verdict on an authorization
                await self.ledger.record_failed_validation(names, account_id, now=utcnow())
            await self._failed(domain, e, has_valid=has_valid)
            return
        finally:
            await self.ledger.release(reservation)
        self.last_issuance_seconds = time.monotonic() - started
        self.methods.expect(domain, issued, result)  # fields that go live with it (method, pre-cutover status)
        await self._install(domain, issued, has_valid=has_valid)
        await self.methods.installed(await self.storage.get_domain(h) or domain)

    async def _caa_gate(self, domain: Domain, *, resuming: bool, has_valid: bool, observed: str) -> CaaOutcome | None:
        """CAA before an order (docs/caa.md): the outcome, or None when the domain is held (no order now)."""
        if resuming:
            return CaaOutcome("unchecked")  # the order exists at the CA already
        caa = await self.caa.check(domain.hostname, self.issuer)
        if not caa.proceed:
            await self._caa_hold(domain, caa, has_valid=has_valid, observed=observed)
            return None
        if caa.outcome == "allowed" and ((domain.last_error_code or "").startswith("caa_") or caa.directories):
            await self.events.emit(domain.hostname, "caa_checked", "Your domain's CAA records allow our "
                                   "certificate authority" + (" (some of them)" if caa.directories else "") + ".",
                                   {"ok": True, "outcome": caa.outcome, "directories": caa.directories, **caa.data})
        return caa

    async def _caa_hold(self, domain: Domain, caa: CaaOutcome, *, has_valid: bool, observed: str) -> None:
        """CAA forbids every configured CA, or could not be read: no order; checked again on the DNS re-check
        schedule (or at once by a renew request). A certificate still valid keeps being served."""
        attempts = (domain.dns_attempts if (domain.last_error_code or "").startswith("caa_") else 0) + 1
        delay = self.dns_schedule.base(attempts)
        fields: dict[str, Any] = dict(last_error=caa.message, last_error_code=caa.code, dns_attempts=attempts,
                                      dns_observed=observed, renew_requested=False, retry_at=None,
                                      next_check_at=utcnow() + dt.timedelta(seconds=self.dns_schedule.spread(delay)))
        if not has_valid:
            fields["status"] = DomainStatus.PENDING_ISSUANCE
        await self._set(domain, **fields)
        await self.events.emit(domain.hostname, "caa_checked", caa.message or caa.outcome,
                               {"ok": False, "outcome": caa.outcome, "retry_in_s": round(delay, 1), **caa.data})

    def _event_sink(self, hostname: str):
        async def emit(kind: str, message: str, data: dict[str, Any]) -> None:
            await self.events.emit(hostname, kind, message, data)
        return emit

    async def _failed(self, domain: Domain, e: acme_errors.AcmeError, *, has_valid: bool,
                      dns_observed: str | None = None) -> None:
        h = domain.hostname
        now = utcnow()
        attempts = domain.attempts + 1
        fields: dict[str, Any] = dict(attempts=attempts, last_error=acme_errors.plain_reason(e),
                                      last_error_code=e.code, renew_requested=False)
        if dns_observed is not None:
            fields.update(dns_attempts=0, dns_observed=dns_observed)
        if isinstance(e, acme_errors.RateLimited) or (e.retry_after is not None and e.retry_after > now):
            retry_at = e.retry_after or (now + dt.timedelta(seconds=self.retry_schedule.delay(1)))
            detail = (e.detail or "").lower()
            if e.retry_after is not None and (isinstance(e, acme_errors.ServerUnavailable) or "new orders" in detail
                                              or "account" in detail):
                # Account-wide limit or an overloaded CA: every order waits, not just this name.
                self.pacer.pause_until(time.monotonic() + (e.retry_after - now).total_seconds())
            # Never earlier than the CA said; never earlier than our own schedule either.
            own = now + dt.timedelta(seconds=self.retry_schedule.delay(attempts))
            if not isinstance(e, (acme_errors.RateLimited, acme_errors.ServerUnavailable)):
                retry_at = max(retry_at, own)  # the CA's 429/503 Retry-After is exact; otherwise our schedule too
            fields.update(retry_at=retry_at, next_check_at=retry_at)
            if not has_valid:
                fields["status"] = DomainStatus.RATE_LIMITED if isinstance(e, acme_errors.RateLimited) \
                    else DomainStatus.PENDING_ISSUANCE
            await self._set(domain, **fields)
            await self.events.emit(h, "rate_limited" if isinstance(e, acme_errors.RateLimited) else "issuance_failed",
                                   f"{e} (next attempt not before {retry_at.isoformat()})",
                                   {"error": e.to_dict(), "retry_at": retry_at.isoformat()})
            return
        if is_transient(e):
            # The CA was unreachable, overloaded, refused a nonce or was slow: the same order is tried again soon.
            delay = self.transient_schedule.delay(attempts) or 0.0
            retry_at = now + dt.timedelta(seconds=delay)
            fields.update(retry_at=retry_at, next_check_at=retry_at)
            if not has_valid:
                fields["status"] = DomainStatus.PENDING_ISSUANCE
            await self._set(domain, **fields)
            await self.events.emit(h, "issuance_failed", f"{e} (the same order is tried again in {delay:.0f}s)",
                                   {"error": e.to_dict(), "retry_at": retry_at.isoformat(), "attempt": attempts,
                                    "transient": True})
            return
        if not e.retryable:
            fields.update(next_check_at=None, retry_at=None)
            if not has_valid:
                fields["status"] = DomainStatus.FAILED
            await self._set(domain, **fields)
            await self.events.emit(h, "issuance_failed", f"{e} (final: an operator must act)",
                                   {"error": e.to_dict(), "final": True})
            return
        delay = self.retry_schedule.delay(attempts)
        retry_at = now + dt.timedelta(seconds=delay)
        fields.update(retry_at=retry_at, next_check_at=retry_at)
        if not has_valid:
            fields["status"] = DomainStatus.PENDING_ISSUANCE
        await self._set(domain, **fields)
        await self.events.emit(h, "issuance_failed", f"{e} (retry in {delay:.0f}s)",
                               {"error": e.to_dict(), "retry_at": retry_at.isoformat(), "attempt": attempts})

    async def _install(self, domain: Domain, issued: IssuedCertificate, *, has_valid: bool = True) -> None:
        """Store (journal step ``installed``), write files, swap into the SNI index, then mark active, schedule the
        renewal and close the journal entry (``current``). A filesystem error (ENOSPC, EIO, ...) leaves the entry
        open: the SAME certificate is installed again later, with backoff; never a new order."""
        h = domain.hostname
        info = issued.info
        key_enc = self.keybox.encrypt(issued.key_pem, purpose=f"cert-key:{h}".encode())
        cv = CertificateVersion(
            domain_id=domain.id, names=json.dumps(list(issued.names)), serial=info.serial,
            not_before=info.not_before, not_after=info.not_after, issuer=info.issuer, sha256=info.sha256,
            cert_pem=issued.cert_pem, chain_pem=issued.chain_pem, key_enc=key_enc, key_type=issued.key_type,
            source="acme", order_id=issued.order_id, ari_cert_id=info.ari_cert_id,
            issuer_directory=getattr(issued, "directory", None), profile=getattr(issued, "profile", None),
            challenge=getattr(issued, "challenge", None))
        if issued.order_id is not None:
            before = await self.storage.get_order(issued.order_id)
            version = await self.storage.install_from_journal(issued.order_id, cv)
            crash_point(JournalStep.INSTALLED)
            first = before is None or before.cert_id is None
        else:
            version = await self.storage.add_certificate(cv, make_current=False)
            first = True
        if first:
            await self.events.emit(h, "certificate_obtained",
                                   f"certificate {info.serial} obtained, valid until {info.not_after.isoformat()}",
                                   {"serial": info.serial, "not_after": info.not_after.isoformat(),
                                    "acme_requests": issued.acme_requests,
                                    "seconds": round(getattr(self, "last_issuance_seconds", 0.0), 3)})
        try:
            await self.swap_in(domain, version, issued.key_pem)
        except OSError as e:
            await self._install_failed(domain, e, has_valid=has_valid)
            return
        except SwapRejected as e:
            # The CA's certificate does not load or cover the name: this order is over (a new one later).
            if issued.order_id is not None:
                await self._end_entry(issued.order_id, JournalStep.INVALID, e.problem)
            await self._failed(domain, acme_errors.OrderFailed(e.problem), has_valid=has_valid)
            return
        if issued.order_id is not None:
            await self._end_entry(issued.order_id, JournalStep.CURRENT, None)

    async def _end_entry(self, order_id: int, step: str, error: str | None) -> None:
        entry = await self.storage.get_order(order_id)
        if entry is not None and entry.step not in JournalStep.TERMINAL:
            entry.step = step
            entry.error = error
            await self.storage.save_order(entry)

    async def _install_failed(self, domain: Domain, e: OSError, *, has_valid: bool) -> None:
        """The certificate is issued but could not be put in place (disk full, I/O error): step ``installing``
        retried with backoff, a reason on the domain (``state_write_failed``) and an ``install_failed`` event (metric)."""
        h = domain.hostname
        d = await self.storage.get_domain(h) or domain
        attempts = d.attempts + 1
        delay = self.transient_schedule.delay(attempts) or 0.0
        retry_at = utcnow() + dt.timedelta(seconds=delay)
        what = errno.errorcode.get(e.errno or 0, "error") if e.errno else "error"
        cause = e.reason() if isinstance(e, StateWriteError) else f"{e.strerror or 'file system error'} ({what})"
        reason = (f"the new certificate is issued but could not be written on this server: {cause}; the operator "
                  f"must free space or fix the disk; installing it again in {delay:.0f}s (no new order)")
        # The same code as the swap's own record of the failed write (edge/lifecycle/swap.py): one name per condition.
        fields: dict[str, Any] = dict(attempts=attempts, last_error=reason, last_error_code="state_write_failed",
                                      retry_at=retry_at, next_check_at=retry_at)
        if not has_valid:
            fields["status"] = DomainStatus.PENDING_ISSUANCE
        await self._set(d, **fields)
        await self.events.emit(h, "install_failed", reason, {"errno": what, "retry_at": retry_at.isoformat(),
                                                            "attempt": attempts})

    async def swap_in(self, domain: Domain, version: CertificateVersion, key_pem: bytes, *,
                      schedule_renewal: bool = True) -> None:
        """Make ``version`` the served certificate: check it, write the files, flip the SNI index, check what is
        served, then plan the renewal and hand over to the reload hook (:mod:`edge.lifecycle.swap`). A certificate
        that does not load, does not match its key or does not cover the name never goes live
        (:class:`~edge.lifecycle.swap.SwapRejected`; the previous one keeps being served)."""
        first = self.renewal_plan(version, utcnow(), is_renewal=domain.current_cert_id is not None) \
            if schedule_renewal else None
        d = await self.swap.go_live(domain, version, key_pem, next_renewal_at=first.at if first else None,
                                    renewal_reason=first.reason if first else None,
                                    next_check_at=utcnow() if schedule_renewal else None)
        if first is not None:
            await self.events.emit(d.hostname, "renewal_scheduled", _plan_message(first), first.to_dict())
            # Then ask the CA's ARI window, when it has one (the plan moves into the window).
            plan, d = await self._plan(d, version, utcnow())
            await self._set(d, next_check_at=min(x for x in (plan.at, d.ari_next_check_at) if x is not None))
        await self.swap.hand_over(d.hostname)

    async def on_hook_result(self, result: HookResult) -> None:
        """The reload hook's outcome (the app wires it): :meth:`Swapper.on_hook_result`."""
        await self.swap.on_hook_result(result)

    # -- operator actions ------------------------------------------------------------------------------------
    async def request_renewal(self, hostname: str) -> None:
        d = await self.storage.update_domain(hostname, renew_requested=True, next_check_at=utcnow(), attempts=0)
        self.wake(hostname, tenant_id=d.tenant_id, priority=self.PRIORITY_RENEWAL)

    async def removal_snapshot(self, domain: Domain) -> RemovalSnapshot:
        """Before the store deletes ``domain`` (under its lock): what the cleanup needs; the open order closed."""
        return await removal_snapshot(self, domain)

    async def removed(self, hostname: str, *, snapshot: RemovalSnapshot | None = None,
                      revoke: bool = False) -> RemovalReport:
        """The name is gone from the store: clean up everything else (:mod:`edge.lifecycle.removal`), each step an
        event; a failed step is in the report, never raised."""
        snap = snapshot or RemovalSnapshot(domain=Domain(hostname=hostname, tenant_id=0))
        return await Remover(self).run(snap, revoke=revoke)

    async def install_uploaded(self, domain: Domain, valid) -> CertificateVersion:
        """Swap in an operator-supplied certificate (already validated by :mod:`edge.upload`)."""
        info = valid.info
        version = await self.storage.add_certificate(CertificateVersion(
            domain_id=domain.id, names=json.dumps(list(info.names)), serial=info.serial,
            not_before=info.not_before, not_after=info.not_after, issuer=info.issuer, sha256=info.sha256,
            cert_pem=valid.cert_pem, chain_pem=valid.chain_pem,
            key_enc=self.keybox.encrypt(valid.key_pem, purpose=f"cert-key:{domain.hostname}".encode()),
            key_type=info.key_type, source="upload", ari_cert_id=None), make_current=False)
        await self.events.emit(domain.hostname, "certificate_uploaded",
                               f"operator uploaded certificate {info.serial} (valid until {info.not_after.isoformat()})",
                               {"serial": info.serial, "issuer": info.issuer})
        await self.swap_in(domain, version, valid.key_pem, schedule_renewal=False)
        return version
