"""The swap: a certificate goes live. Checked (covers the name, loads with its key), written to the live files,
flipped into the SNI index, stored as current, announced to the other nodes, then handed to the reload hook and
verified by real handshakes: is it what every verification address serves?

A certificate that fails the checks never goes live (:class:`SwapRejected`; the previous one keeps being served).
When to swap and what to do next (renewal planning) is :mod:`edge.lifecycle.manager`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from acme_client.identifiers import covers
from acme_client.retry import RetrySchedule
from store.models import CertificateVersion, Domain, DomainStatus

from edge.config import Settings
from edge.events import EventBus
from edge.lifecycle.exports import write_exports
from edge.lifecycle.files import LiveFiles, StateWriteError
from edge.lifecycle.hooks import HookResult, ReloadHook
from edge.lifecycle.verify import served_certificate
from edge.tls_edge.index import CertEntry, SniIndex

__all__ = ["SwapRejected", "Swapper", "STALE_RELOAD_SCHEDULE"]

log = logging.getLogger(__name__)

#: The reload hook ran but another server still serves the old certificate: run it again after 5 s, 15 s, ... 10 min.
STALE_RELOAD_SCHEDULE = RetrySchedule("stale-reload", (5.0,), factor=3.0, cap=600.0)

#: ``update(domain, **fields)``: store fields of a domain (and schedule its next check) -> the domain as stored.
UpdateDomain = Callable[..., Awaitable[Domain]]


class SwapRejected(Exception):
    """A certificate failed the pre-swap checks and did not go live."""

    def __init__(self, problem: str, *, hostname: str, serial: str) -> None:
        super().__init__(problem)
        self.problem, self.hostname, self.serial = problem, hostname, serial


class Swapper:
    """Puts certificates live on this node and checks what is served. ``own_address`` (the TLS listener, set by the
    server once bound) and ``prober`` (a :class:`edge.lifecycle.probes.Prober`, set by the app) are optional."""

    def __init__(self, *, settings: Settings, storage, index: SniIndex, files: LiveFiles, events: EventBus,
                 hook: ReloadHook, update: UpdateDomain) -> None:
        self.s = settings
        self.storage = storage
        self.index = index
        self.files = files
        self.events = events
        self.hook = hook
        self.update = update
        self.own_address: str | None = None
        self.prober = None
        self._stale_retries = 0
        self._export_lock = threading.Lock()
        self._going_live: set[str] = set()  # staged, exported, not yet in the index
        # Held while the SNI index and the store are brought in step (a swap: index put + stored as current; a
        # removal; DomainManager.load_index: read the store's rows + apply them), so that a reload that read the
        # store before a swap committed never applies that stale read after it (dropping or downgrading the name).
        self.index_lock = asyncio.Lock()
        # Extra fields of the go-live update, by domain (edge/lifecycle/methods.py: the method that worked, and
        # ``pending_dns`` for a certificate obtained before the cutover), so that they land with the certificate.
        self.live_fields: Callable[[Domain], dict[str, Any]] | None = None

    async def go_live(self, domain: Domain, version: CertificateVersion, key_pem: bytes, **fields: Any) -> Domain:
        """Check ``version``, write the files, flip the SNI index and store it as current (with ``fields``);
        returns the stored domain. Raises :class:`SwapRejected` (after recording why) when the checks fail."""
        h = domain.hostname
        fullchain = (version.cert_pem + version.chain_pem).encode()
        entry = CertEntry(hostname=h, fullchain_pem=fullchain, key_pem=key_pem, serial=version.serial,
                          sha256=version.sha256, not_after=version.not_after, cert_id=version.id,
                          names=tuple(json.loads(version.names)))
        problem = None
        if not covers(h, entry.names):
            problem = f"certificate {version.serial} does not cover {h} (it covers {', '.join(entry.names)})"
        else:
            try:
                # Build the context first, off the handshake path: this also proves the key matches.
                await asyncio.to_thread(self.index.context_for, entry)
            except Exception as e:  # ssl.SSLError, OSError
                problem = f"certificate {version.serial} does not load with its key: {e}"
        if problem is not None:
            await self.events.emit(h, "swap_rejected", problem + "; the previous certificate stays live",
                                   {"serial": version.serial})
            await self.storage.update_domain(h, last_error=problem, last_error_code="swap_rejected")
            raise SwapRejected(problem, hostname=h, serial=version.serial)
        # Files first, completely (the new version and the exports naming it), then the flips (live link, index,
        # store). A write that fails (full disk, I/O error) changes nothing that is served: the previous version
        # stays live, the staged one is removed, and the OSError (errno kept) goes to the caller, who retries.
        version_dir = await self._write_step(h, version.serial, lambda: self.files.stage(
            h, cert_pem=version.cert_pem.encode(), chain_pem=version.chain_pem.encode(), key_pem=key_pem,
            serial=version.serial))
        self._going_live.add(h)  # every exports rewrite from now on names it (concurrent swaps included)
        try:
            try:
                if self.s.exports:
                    await self._write_step(h, version.serial, self._export)
                await self._write_step(h, version.serial, lambda: self.files.activate(h, version_dir))
            except OSError:
                self._going_live.discard(h)
                await asyncio.to_thread(self.files.discard, h, version_dir)
                if self.s.exports and h not in self.index:
                    await self.write_exports()  # take the name out of the exports again (best effort)
                raise
            live = dict(current_cert_id=version.id, status=DomainStatus.ACTIVE, last_error=None,
                        last_error_code=None, attempts=0, retry_at=None, renew_requested=False,
                        ari_window_start=None, ari_window_end=None, ari_next_check_at=None,
                        hook_pending=self.hook.enabled)
            if self.live_fields is not None:
                live.update(self.live_fields(domain))
            async with self.index_lock:  # the index flip and the store's record of it, as one step for reloads
                t_swap = time.monotonic()
                self.index.put(entry, prebuild=False)
                self._going_live.discard(h)
                d = await self.update(domain, **{**live, **fields})
        finally:
            self._going_live.discard(h)
        await self.storage.notify_change(h)  # other nodes swap now (LISTEN)
        own = await served_certificate(self.own_address, h) if self.own_address else None
        delay_ms = (time.monotonic() - t_swap) * 1000
        await self.events.emit(h, "swapped", f"now serving certificate {version.serial}",
                               {"serial": version.serial, "sha256": version.sha256, "source": version.source,
                                "served_after_ms": round(delay_ms, 2),
                                "served_serial": own.serial if own else None})
        return d

    async def hand_over(self, hostname: str) -> None:
        """After a swap: a self-probe, then the reload hook (which verifies once it ran) or, without one, verify."""
        if self.prober is not None and self.prober.interval > 0:
            await self.prober.probe(hostname)  # a self-probe right after every swap
        if self.hook.enabled:
            self.hook.notify([hostname])
        else:
            await self.verify([hostname])

    async def _write_step(self, hostname: str, serial: str, fn: Callable[[], Any]) -> Any:
        """Run one file step in a thread; when it fails, say so on the domain (reason, event, metric) and re-raise
        the OSError (the caller retries the install of the same certificate; never a new order)."""
        try:
            return await asyncio.to_thread(fn)
        except OSError as e:
            err = e if isinstance(e, StateWriteError) else StateWriteError(e.errno, e.strerror or str(e),
                                                                          str(e.filename or self.files.root))
            msg = (f"certificate {serial} is obtained but could not be written: {err.reason()}; the previous "
                   "certificate stays served and the install is retried, no new order (the operator must free "
                   "space or fix the disk)")
            log.error("%s: %s (%s)", hostname, msg, err)
            try:
                await self.storage.update_domain(hostname, last_error=msg, last_error_code="state_write_failed")
            except Exception:  # noqa: BLE001 - the store may be away too; the OSError is what the caller needs
                log.warning("could not record the write failure on %s", hostname)
            await self.events.emit(hostname, "state_write_failed", msg,
                                   {"serial": serial, "errno": err.errno_name})
            raise

    def _export(self) -> None:
        """Write the exports for the SNI index plus the names going live (blocking). One writer at a time, each
        reading the names under the lock: the last write always has the newest set."""
        with self._export_lock:
            going = list(self._going_live)
            write_exports(self.files.root, [*self.index.names(), *going], listen=self.s.nginx_listen,
                          site_include=self.s.nginx_site_include, include=going, write=self.files.write)

    async def write_exports(self) -> bool:
        """Rewrite the nginx/HAProxy exports for the names in the SNI index (unless exports are off). A failure is
        logged and counted (``edgecert_state_write_errors``); the previous exports stay in place, whole. Returns
        False when they could not be written."""
        if not self.s.exports:
            return True
        try:
            await asyncio.to_thread(self._export)
        except OSError as e:
            log.error("could not write the nginx/HAProxy exports (the previous ones stay in place): %s", e)
            return False
        return True

    async def verify(self, hostnames: list[str]) -> dict[str, bool]:
        """Real handshakes against every verification address: is the current certificate what is served?"""
        out: dict[str, bool] = {}
        addrs = list(self.s.verify_addresses) or ([self.own_address] if self.own_address else [])
        for h in hostnames:
            d = await self.storage.get_domain(h)
            if d is None or d.current_cert_id is None:
                continue
            cert = await self.storage.get_certificate(d.current_cert_id)
            if cert is None:
                continue
            stale = []
            for a in addrs:
                got = await served_certificate(a, h)
                if got.serial != cert.serial:
                    stale.append(f"{a} serves {got.serial or got.error}")
            if stale:
                msg = (f"served_certificate_stale: certificate {cert.serial} is current but "
                       + "; ".join(stale))
                await self.storage.update_domain(h, last_error=msg, last_error_code="served_certificate_stale",
                                                 hook_pending=True)
                await self.events.emit(h, "served_certificate_stale", msg, {"expected": cert.serial,
                                                                             "addresses": addrs})
                out[h] = False
            else:
                fields: dict[str, Any] = dict(hook_pending=False, served_serial=cert.serial)
                if d.last_error_code in ("served_certificate_stale", "hook_failed"):
                    fields.update(last_error=None, last_error_code=None)
                was_pending = d.hook_pending
                await self.storage.update_domain(h, **fields)
                await self.events.emit(h, "verified", f"certificate {cert.serial} is what "
                                       f"{', '.join(addrs) or 'the edge'} serve(s)", {"addresses": addrs})
                if was_pending and cert.source == "acme" and d.renewal_reason is not None:
                    await self.events.emit(h, "renewal_completed", f"certificate {cert.serial} issued, swapped, "
                                           "reloaded and verified", {"serial": cert.serial})
                out[h] = True
        return out

    async def on_hook_result(self, result: HookResult) -> None:
        """The reload hook ran: record the outcome on every name, then verify (and run it again while stale)."""
        for h in result.hostnames:
            if result.ok:
                await self.events.emit(h, "hook_succeeded", "reload hook succeeded",
                                       {"output": result.output[-1000:]})
            else:
                await self.events.emit(h, "hook_failed", (result.error or "reload hook failed") + "; will retry",
                                       {"exit_code": result.exit_code, "output": result.output[-1000:]})
                try:
                    await self.storage.update_domain(h, last_error=result.error, last_error_code="hook_failed",
                                                     hook_pending=True)
                except LookupError:
                    pass
        if result.ok:
            verdict = await self.verify(result.hostnames)
            stale = [h for h, ok in verdict.items() if not ok]
            if stale:
                # The other server still serves the old certificate: run the hook again, with backoff.
                self._stale_retries += 1
                delay = STALE_RELOAD_SCHEDULE.base(self._stale_retries)
                asyncio.get_running_loop().call_later(delay, self.hook.notify, stale)
            else:
                self._stale_retries = 0
