"""Removing a domain cleans up (docs/api.md "Removing a domain"): every step is an event, and a step that fails (the
CA is down, a disk error) never blocks the removal; it is reported in the answer.

Two phases. :func:`snapshot`, under the domain's lock and before the store forgets the name: what the cleanup
needs later (the current certificate and its key, the open order and its account), and the journal entry closed
(``abandoned``). Then, the name deleted from the store, :class:`Remover` runs the steps:

1. ``serving_stopped``: out of the SNI index at once; ``renewal_stopped``: its timer removed (nothing is due for a
   name the store no longer has);
2. ``files_removed``: ``$STATE_DIR/live/<host>/`` and its archive; ``exports_updated``: the nginx/HAProxy exports
   rewritten without it; ``reload_requested``: the reload hook runs for the other servers;
3. ``authorizations_deactivated``: an order left open has its pending/valid authorizations deactivated at the CA
   (RFC 8555 §7.5.2); ``order_abandoned``: its journal entry closed;
4. ``certificate_revoked`` (only when asked): RFC 8555 §7.6, reason cessationOfOperation (5), signed with the
   certificate's key (else the account key). Uploaded certificates are not edgecert's to revoke (skipped).

Events are ``removal_<step>`` (data: ``status`` done | failed | skipped, ``detail``), then ``domain_removed`` with
the whole report.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from acme_client import errors as acme_errors
from acme_client.revocation import CESSATION_OF_OPERATION, deactivate_authorizations, revoke_certificate
from store.models import AcmeAccount, AcmeOrder, CertificateVersion, Domain, JournalStep, utcnow

__all__ = ["RemovalSnapshot", "RemovalReport", "Remover", "snapshot"]

log = logging.getLogger(__name__)


@dataclass
class RemovalSnapshot:
    """What the cleanup needs once the store has forgotten the name."""

    domain: Domain
    cert: CertificateVersion | None = None
    cert_key_pem: bytes | None = None
    order: AcmeOrder | None = None
    order_account: AcmeAccount | None = None


@dataclass
class RemovalReport:
    hostname: str
    revoke_requested: bool = False
    revoked: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, status: str, detail: str) -> dict[str, Any]:
        item = {"step": step, "status": status, "detail": detail}
        self.steps.append(item)
        return item

    @property
    def failed(self) -> list[str]:
        return [s["step"] for s in self.steps if s["status"] == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "removed": True, "revoke_requested": self.revoke_requested,
                "revoked": self.revoked, "cleanup": list(self.steps), "failed_steps": self.failed}


async def snapshot(manager, domain: Domain) -> RemovalSnapshot:
    """Read what the cleanup needs and close the open journal entry (call under the domain's lock, before the
    store deletes the name)."""
    storage = manager.storage
    snap = RemovalSnapshot(domain=domain)
    if domain.current_cert_id is not None:
        snap.cert = await storage.get_certificate(domain.current_cert_id)
        if snap.cert is not None:
            try:
                snap.cert_key_pem = manager.keybox.decrypt(snap.cert.key_enc,
                                                           purpose=f"cert-key:{domain.hostname}".encode())
            except Exception:  # noqa: BLE001 - a key that cannot be read: revocation falls back to the account key
                log.warning("%s: the certificate key could not be decrypted", domain.hostname)
    entry = await storage.open_order(domain.id)
    if entry is not None:
        snap.order = entry
        directory = entry.directory_url or manager.s.acme_directory
        snap.order_account = await storage.get_account(directory)  # the CA's current account for edgecert
        entry.step = JournalStep.ABANDONED
        entry.error = "abandoned: the domain was removed"
        entry.updated_at = utcnow()
        await storage.save_order(entry)
    return snap


class Remover:
    """Runs the cleanup steps of a removed name on this node (see the module docstring)."""

    def __init__(self, manager) -> None:
        self.m = manager

    async def _step(self, report: RemovalReport, step: str, status: str, detail: str) -> None:
        report.add(step, status, detail)
        await self.m.events.emit(report.hostname, f"removal_{step}", detail, {"status": status})
        if status == "failed":
            log.warning("%s: removal step %s failed: %s", report.hostname, step, detail)

    def _ca(self, directory: str | None) -> tuple[str, str | None]:
        """(directory URL, CA bundle) for a CA edgecert uses."""
        issuer = self.m.issuer
        directory = directory or getattr(issuer, "directory_url", None) or self.m.s.acme_directory
        more = [c for attr in ("issuers", "chain") for c in (getattr(issuer, attr, None) or ())
                if isinstance(getattr(issuer, attr, None), (list, tuple))]
        for cand in (*more, issuer):  # the chain's own CAs first: the chain itself has no ca_bundle
            if getattr(cand, "directory_url", None) == directory:
                return directory, getattr(cand, "ca_bundle", None)
        return directory, self.m.s.acme_ca_bundle

    def _account_key(self, acct: AcmeAccount | None) -> tuple[bytes | None, str | None]:
        if acct is None or not acct.uri:
            return None, None
        try:
            return self.m.keybox.decrypt(acct.key_enc, purpose=b"acme-account"), acct.uri
        except Exception:  # noqa: BLE001
            return None, None

    async def _in_thread(self, fn, **kwargs):
        timeout = float(self.m.s.removal_ca_timeout)
        return await asyncio.wait_for(asyncio.to_thread(fn, timeout=max(1, int(timeout)), **kwargs), timeout + 5)

    async def run(self, snap: RemovalSnapshot, *, revoke: bool) -> RemovalReport:
        m = self.m
        h = snap.domain.hostname
        report = RemovalReport(h, revoke_requested=revoke)
        # 1. Not served any more, nothing scheduled.
        async with m.swap.index_lock:  # not while a reload applies what it read before the domain was deleted
            was_served = h in m.index
            m.index.remove(h)
        await self._step(report, "serving_stopped", "done", "removed from the edge's certificate index"
                         if was_served else "it was not being served")
        m.schedule(h, None)
        await self._step(report, "renewal_stopped", "done", "no renewal or re-check is scheduled any more")
        # 2. Files for this node and for other servers.
        try:
            existed = await asyncio.to_thread(m.files.remove, h)
            await self._step(report, "files_removed", "done", f"live/{h}/ and its archive deleted" if existed
                             else f"there were no files for {h}")
        except (OSError, ValueError) as e:
            await self._step(report, "files_removed", "failed",
                             f"the certificate files could not be deleted ({type(e).__name__}: "
                             f"{getattr(e, 'strerror', None) or e}); the operator must delete live/{h}/")
        if m.s.exports:
            ok = await m.swap.write_exports()
            await self._step(report, "exports_updated", "done" if ok is not False else "failed",
                             "nginx and HAProxy exports rewritten without it" if ok is not False else
                             "the nginx/HAProxy exports could not be rewritten (see the log); they are rewritten "
                             "again at the next certificate change")
        else:
            await self._step(report, "exports_updated", "skipped", "exports are off")
        if m.hook.enabled:
            m.hook.notify([h])
            await self._step(report, "reload_requested", "done", "the reload hook runs for the other servers")
        else:
            await self._step(report, "reload_requested", "skipped", "no reload hook is configured")
        # 3. The order left open, at the CA and in the journal.
        await self._abandon(report, snap)
        # 4. Revocation, when asked.
        if revoke:
            await self._revoke(report, snap)
        await m.storage.notify_change(h)  # other nodes drop it too (their index, files, exports, hook)
        return report

    async def _abandon(self, report: RemovalReport, snap: RemovalSnapshot) -> None:
        order = snap.order
        if order is None:
            await self._step(report, "order_abandoned", "skipped", "no order was open")
            return
        if order.url and order.step not in JournalStep.ISSUED:
            directory, bundle = self._ca(order.directory_url)
            key, uri = self._account_key(snap.order_account)
            if key is None:
                await self._step(report, "authorizations_deactivated", "failed",
                                 "the ACME account of the order is not available")
            else:
                try:
                    done, left = await self._in_thread(deactivate_authorizations, directory_url=directory,
                                                       order_url=order.url, account_key_pem=key, account_uri=uri,
                                                       ca_bundle=bundle)
                    await self._step(report, "authorizations_deactivated", "done",
                                     f"{len(done)} authorization(s) deactivated at the CA"
                                     + (f"; {len(left)} already final" if left else ""))
                except (acme_errors.AcmeError, TimeoutError, OSError) as e:
                    await self._step(report, "authorizations_deactivated", "failed",
                                     f"the CA's authorizations could not be deactivated: {_ca_reason(e)}; "
                                     "they expire on their own")
        else:
            await self._step(report, "authorizations_deactivated", "skipped",
                             "the open order had not reached the CA" if not order.url
                             else "the CA had already issued the order's certificate")
        await self._step(report, "order_abandoned", "done", f"order journal entry {order.id} closed (abandoned)")

    async def _revoke(self, report: RemovalReport, snap: RemovalSnapshot) -> None:
        cert = snap.cert
        if cert is None:
            await self._step(report, "certificate_revoked", "skipped", "there was no certificate to revoke")
            return
        if cert.source != "acme":
            await self._step(report, "certificate_revoked", "skipped",
                             f"certificate {cert.serial} was uploaded, not issued through edgecert: revoke it "
                             "with its own CA")
            return
        if cert.not_after <= utcnow():
            await self._step(report, "certificate_revoked", "skipped", f"certificate {cert.serial} has expired")
            return
        directory, bundle = self._ca(getattr(cert, "issuer_directory", None))
        acct = await self.m.storage.get_account(directory)
        key, uri = self._account_key(acct)
        try:
            res = await self._in_thread(revoke_certificate, directory_url=directory, cert_pem=cert.cert_pem,
                                        cert_key_pem=snap.cert_key_pem, account_key_pem=key, account_uri=uri,
                                        reason=CESSATION_OF_OPERATION, ca_bundle=bundle)
        except (acme_errors.AcmeError, TimeoutError, OSError, ValueError) as e:
            await self._step(report, "certificate_revoked", "failed",
                             f"certificate {cert.serial} was not revoked: {_ca_reason(e)}; it stays valid until "
                             f"{cert.not_after.isoformat()} (nothing serves it any more)")
            return
        report.revoked = True
        await self._step(report, "certificate_revoked", "done",
                         f"certificate {cert.serial} " + ("was already revoked" if res.already else
                                                          "revoked (reason cessationOfOperation)"))


def _ca_reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "the certificate authority did not answer in time"
    if isinstance(e, (acme_errors.NetworkError, acme_errors.ServerUnavailable)):
        return "the certificate authority could not be reached"
    if isinstance(e, acme_errors.AcmeError):
        short = (e.problem_type or e.code or "").rsplit(":", 1)[-1]
        return f"the certificate authority refused ({short})"
    return type(e).__name__
