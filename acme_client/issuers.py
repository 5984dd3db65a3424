"""Several CAs in order: :class:`IssuerChain`, an :class:`~acme_client.issuer.Issuer` over one
:class:`~acme_client.issuer.AcmeIssuer` per ACME directory.

Rules (docs/issuers.md):

* A NEW order goes to the first issuer that can take it, in the configured order. An issuer is skipped for this
  attempt when it is down (no answer within its wait, connection refused, 5xx: it is then left alone for
  ``down_cooldown`` seconds, no request at all), rate-limits the name (the CA's 429, or edgecert's own copy of its
  limits: each issuer has its own ledger scope, limits and pacing), refuses the name (``rejectedIdentifier``,
  ``unsupportedIdentifier``, ``caa``, a paused identifier), does not offer the profile asked for, refuses the
  account (External Account Binding wrong), or is not among the caller's ``directories``.
* Exactly one order per name: an order OPEN at a CA (journal entry with its URL, :class:`store.models.AcmeOrder`
  ``directory_url``) is continued at that CA and nowhere else, whatever happens meanwhile (a crash, an outage); the
  next CA is tried only once that order is over (a verdict, or its expiry at the CA).
* A failed validation (the CA's verdict on our answer) is not a reason to try another CA: it would fail there too
  and burn that CA's failed-validation limit.
* Renewals start again at the first issuer: once it works again, it issues again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from store.models import JournalStep

from . import errors
from .issuer import AcmeIssuer, EventSink, IssuedCertificate
from .ratelimit import Limit, Pacer, RateLedger, Reservation

__all__ = ["IssuerChain", "IssuerSlot", "FALLBACK_ERRORS", "DOWN_ERRORS"]

log = logging.getLogger(__name__)

#: The CA did not answer usefully: skipped, and left alone for a while.
DOWN_ERRORS: tuple[type[errors.AcmeError], ...] = (errors.NetworkError, errors.ServerUnavailable,
                                                   errors.OrderTimeout, errors.BadNonce)
#: The CA will not issue this name now (or ever): the next CA is tried for it.
FALLBACK_ERRORS: tuple[type[errors.AcmeError], ...] = (errors.RateLimited, errors.RejectedIdentifier,
                                                       errors.CAARefused, errors.IdentifierPaused,
                                                       errors.ProfileUnknown, errors.AccountProblem,
                                                       errors.Unauthorized, errors.NoIssuer)


async def _noop(kind: str, message: str, data: dict[str, Any]) -> None:
    return None


@dataclass(eq=False)
class IssuerSlot:
    """One issuer of the chain with what is its own: the rate ledger (scope and limits), pacing, and whether it is
    considered down (until ``down_until``, monotonic)."""

    issuer: AcmeIssuer
    ledger: RateLedger
    pacer: Pacer
    down_until: float = 0.0
    down_error: errors.AcmeError | None = None
    skipped: int = 0      #: names sent on to the next issuer (for the benchmark and the metrics)
    issued: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directory_url(self) -> str:
        return self.issuer.directory_url


class IssuerChain:
    """:class:`~acme_client.issuer.Issuer` over several CAs in order (see the module docstring).

    Args:
        issuers: one :class:`AcmeIssuer` per CA, in order of preference.
        storage: the store (order journal, rate ledger).
        limits: per directory URL, that CA's limits (:func:`acme_client.ratelimit.load_limits`); default the
            ``default_limits``.
        orders_per_10s: pacing of new orders, per CA; ``pacing``: per directory URL, overrides.
        down_cooldown: seconds an issuer found down is skipped without a request before it is tried again.
        on_skip: ``(directory, code)`` callback when a name goes on to the next issuer (metrics).
    """

    #: The manager leaves rate ledger, pacing and account lookup to this issuer (it has one of each per CA).
    manages_limits = True

    def __init__(self, issuers: Sequence[AcmeIssuer], *, storage, limits: dict[str, dict[str, Limit]] | None = None,
                 default_limits: dict[str, Limit] | None = None, orders_per_10s: int = 10,
                 pacing: dict[str, int] | None = None, down_cooldown: float = 60.0, on_skip=None) -> None:
        if not issuers:
            raise ValueError("an IssuerChain needs at least one issuer")
        self.storage = storage
        self.down_cooldown = down_cooldown
        self.on_skip = on_skip
        several = len(issuers) > 1
        self.slots = [IssuerSlot(issuer=i, ledger=RateLedger(storage, (limits or {}).get(i.directory_url)
                                                             or default_limits,
                                                             ca=i.directory_url if several else None),
                                 pacer=Pacer(burst=(pacing or {}).get(i.directory_url, orders_per_10s), window=10.0))
                      for i in issuers]
        self._ari_home: dict[str, str] = {}  # ARI certID -> the directory that issued it (bounded)

    # -- what others read ------------------------------------------------------------------------------------
    @property
    def issuers(self) -> list[AcmeIssuer]:
        """The issuers, in order (each with ``.directory_url``)."""
        return [s.issuer for s in self.slots]

    @property
    def directory_url(self) -> str:
        """The first issuer's directory."""
        return self.slots[0].directory_url

    @property
    def publisher(self):
        """Where challenge answers are published (one publisher, shared by every issuer of the chain)."""
        return self.slots[0].issuer.publisher

    def slot(self, directory_url: str | None) -> IssuerSlot | None:
        for s in self.slots:
            if s.directory_url == directory_url:
                return s
        return None

    async def caa_identities(self) -> dict[str, list[str]]:
        """Directory URL -> the CAA issuer domain names of that CA (the issuer's ``caa_identities`` setting, else
        the directory's ``meta.caaIdentities``; an empty list when the CA cannot be read now or names none)."""
        out: dict[str, list[str]] = {}
        for s in self.slots:
            try:
                out[s.directory_url] = await s.issuer.caa_identities()
            except errors.AcmeError as e:
                log.warning("CAA identities of %s unknown now: %s", s.directory_url, e)
                out[s.directory_url] = list(s.issuer.caa_override or [])
        return out

    async def account(self):
        """The first issuer's account (compatibility with callers of a single :class:`AcmeIssuer`)."""
        return await self.slots[0].issuer.account()

    def close(self) -> None:
        for s in self.slots:
            s.issuer.close()

    async def reconcile(self, now: dt.datetime, *, stale_after: dt.timedelta) -> int:
        """Each CA's ledger reconciled with the order journal (see :meth:`RateLedger.reconcile`)."""
        return sum([await s.ledger.reconcile(now, stale_after=stale_after) for s in self.slots])

    async def renewal_window(self, cert_id: str, *, directory: str | None = None, on_event: EventSink | None = None
                             ) -> tuple[dt.datetime, dt.datetime, dt.datetime | None] | None:
        """The ARI window, asked of the CA that issued the certificate (``directory``; default the first)."""
        slot = self.slot(directory) or self.slots[0]
        if directory:
            self._remember_home(cert_id, slot.directory_url)
        return await slot.issuer.renewal_window(cert_id, on_event=on_event)

    def _remember_home(self, cert_id: str | None, directory: str) -> None:
        if not cert_id:
            return
        if len(self._ari_home) > 100000:
            self._ari_home.clear()
        self._ari_home[cert_id] = directory

    # -- issuance --------------------------------------------------------------------------------------------
    async def issue(self, *, domain_id: int, names: list[str], key_type: str, replaces: str | None = None,
                    is_renewal: bool = False, on_event: EventSink | None = None,
                    challenges: tuple[str, ...] | None = None, directories: list[str] | None = None,
                    profile: str | None = None, ari_exempt: bool | None = None) -> IssuedCertificate:
        """Issue at the first CA that can (module docstring). ``ari_exempt``: a renewal inside the CA's ARI window
        (neither checked against nor counted in the ledger, as at Let's Encrypt); None: when ``replaces`` is sent."""
        sink = on_event or _noop
        entry = await self.storage.open_order(domain_id)
        if entry is not None and entry.url:
            # An entry of an earlier version (no directory recorded) was made at the one CA of that time: the first.
            home = self.slot(entry.directory_url) if entry.directory_url else \
                (self._slot_of_account(entry.account_id) or self.slots[0])
            expired = entry.expires_at is not None and _aware(entry.expires_at) < dt.datetime.now(dt.timezone.utc)
            if entry.step in (JournalStep.DOWNLOADED, JournalStep.INSTALLED):
                home = home or self.slots[0]  # the certificate is held already: any issuer hands it over
            if home is not None and (not expired or entry.step in (JournalStep.DOWNLOADED, JournalStep.INSTALLED)):
                # Exactly one order per name: continued at its CA, never placed again elsewhere.
                return await self._attempt(home, domain_id=domain_id, names=names, key_type=key_type,
                                           replaces=replaces, is_renewal=is_renewal, on_event=sink,
                                           challenges=challenges, profile=entry.profile, resuming=True,
                                           ari_exempt=ari_exempt)
            entry.step = JournalStep.ABANDONED
            entry.error = ("the order expired at its CA" if expired else
                           f"its CA ({entry.directory_url}) is no longer configured")
            await self.storage.save_order(entry)
            await sink("order_abandoned", f"order {entry.url} abandoned: {entry.error}",
                       {"order_url": entry.url, "order_id": entry.id, "directory": entry.directory_url})

        candidates = [s for s in self.slots if directories is None or s.directory_url in directories]
        if not candidates:
            raise errors.NoIssuer(f"none of the directories asked for is configured: {', '.join(directories or [])}"
                                  f" (configured: {', '.join(s.directory_url for s in self.slots)})")
        home_dir = self._ari_home.get(replaces) if replaces else None
        if replaces and home_dir is None and len(self.slots) == 1:
            home_dir = self.slots[0].directory_url
        failures: list[tuple[IssuerSlot, errors.AcmeError]] = []
        for slot in candidates:
            now = time.monotonic()
            if now < slot.down_until and slot.down_error is not None:
                failures.append((slot, slot.down_error))
                continue  # found down a moment ago: no request before its cool-down is over
            try:
                return await self._attempt(slot, domain_id=domain_id, names=names, key_type=key_type,
                                           replaces=replaces if slot.directory_url == home_dir else None,
                                           is_renewal=is_renewal, on_event=sink, challenges=challenges,
                                           profile=profile or slot.issuer.profile, resuming=False,
                                           ari_exempt=ari_exempt)
            except errors.AcmeError as e:
                if not isinstance(e, DOWN_ERRORS + FALLBACK_ERRORS):
                    raise  # a validation verdict or an unknown failure: not another CA's business
                if isinstance(e, DOWN_ERRORS) and len(self.slots) > 1:
                    # Left alone for a while (a single CA is retried on the manager's own schedule instead).
                    slot.down_until = time.monotonic() + self.down_cooldown
                    slot.down_error = e
                open_now = await self.storage.open_order(domain_id)
                if open_now is not None and open_now.url:
                    raise  # the order exists at this CA: it is continued there, never a second one elsewhere
                failures.append((slot, e))
                slot.skipped += 1
                rest = [s.directory_url for s in candidates[candidates.index(slot) + 1:]]
                log.warning("issuer %s could not take %s (%s: %s)%s", slot.directory_url, ", ".join(names), e.code,
                            e, f"; trying {rest[0]}" if rest else "")
                if self.on_skip is not None:
                    try:
                        self.on_skip(slot.directory_url, e.code)
                    except Exception:  # noqa: BLE001 - metrics never break issuance
                        log.exception("on_skip hook failed")
                if len(self.slots) > 1:
                    data = {"directory": slot.directory_url, "error": e.to_dict(), "next": rest[0] if rest else None}
                    await sink("issuer_skipped", f"{slot.directory_url} could not issue now ({e.code}: {e})"
                               + (f"; trying {rest[0]}" if rest else "; no other issuer left"), data)
        raise self._worst(failures)

    def _slot_of_account(self, account_id: int) -> IssuerSlot | None:
        for s in self.slots:
            acct = s.issuer.current_account
            if acct is not None and acct.id == account_id:
                return s
        return None

    @staticmethod
    def _worst(failures: list[tuple[IssuerSlot, errors.AcmeError]]) -> errors.AcmeError:
        """The error the caller gets when no issuer took the name: one that is tried again later if any issuer
        may work later (the earliest the CAs allow), else the first final one (an operator must act)."""
        retryable = [e for _, e in failures if e.retryable]
        if retryable:
            timed = [e for e in retryable if e.retry_after is not None]
            if timed and len(timed) == len(retryable):
                return min(timed, key=lambda e: e.retry_after)  # type: ignore[arg-type, return-value]
            untimed = [e for e in retryable if e.retry_after is None]
            return untimed[0]
        return failures[0][1]

    async def _attempt(self, slot: IssuerSlot, *, domain_id: int, names: list[str], key_type: str,
                       replaces: str | None, is_renewal: bool, on_event: EventSink,
                       challenges: tuple[str, ...] | None, profile: str | None, resuming: bool,
                       ari_exempt: bool | None = None) -> IssuedCertificate:
        """One issuer: account, its own ledger and pacing, then the order (continued or new)."""
        issuer = slot.issuer
        if profile and not resuming:
            offered = await issuer.profiles()
            if not offered or profile not in offered:
                raise errors.ProfileUnknown(
                    f"profile {profile!r} is not offered by the CA at {issuer.directory_url} (it offers: "
                    f"{', '.join(sorted(offered)) if offered else 'none'})")
        acct = await issuer.account()
        reservation = Reservation()
        if not resuming:
            hold, reservation = await slot.ledger.check_and_reserve(names, acct.id, now=_now(),
                                                                    exempt=replaces is not None if ari_exempt is None
                                                                    else (ari_exempt and replaces is not None))
            if hold is not None:
                raise errors.LocalLimit(hold.message(), retry_after=hold.retry_at)
            await slot.pacer.wait()

        async def events(kind: str, message: str, data: dict[str, Any]) -> None:
            if kind in ("order_placed", "order_downloaded"):
                try:  # the CA's actions, counted when they happen, in this CA's scope
                    await slot.ledger.confirm("order" if kind == "order_placed" else "certificate", reservation,
                                              names, acct.id, order_id=data.get("order_id"), now=_now())
                except Exception:  # noqa: BLE001 - the ledger must not end an order the CA has
                    log.exception("could not record %s in the rate ledger", kind)
                data = {**data, "directory": issuer.directory_url}
            await on_event(kind, message, data)
        try:
            issued = await issuer.issue(domain_id=domain_id, names=names, key_type=key_type, replaces=replaces,
                                        is_renewal=is_renewal, on_event=events, challenges=challenges,
                                        profile=profile)
        except errors.ChallengeFailed:
            await slot.ledger.record_failed_validation(names, acct.id, now=_now())
            raise
        except errors.RateLimited as e:
            detail = (e.detail or "").lower()
            if e.retry_after is not None and ("new orders" in detail or "account" in detail):
                # An account-wide limit at this CA: every new order there waits, not just this name.
                slot.pacer.pause_until(time.monotonic() + max(0.0, (e.retry_after - _now()).total_seconds()))
            raise
        finally:
            await slot.ledger.release(reservation)
        slot.down_until = 0.0
        slot.down_error = None
        slot.issued += 1
        self._remember_home(issued.info.ari_cert_id, issuer.directory_url)
        return issued


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
