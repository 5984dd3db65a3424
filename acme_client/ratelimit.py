"""The CA's rate limits, kept in our own ledger so we never hit them, and pacing of requests to the CA.

Limits are token buckets (as Let's Encrypt implements them): a bucket of ``capacity`` tokens refills continuously
over ``period``; each counted action takes one token. The ledger is the store's ``rate_ledger`` table: one row per
counted action, so every node sharing the store sees the same counts. Defaults are Let's Encrypt's (2026):

* ``certificates_per_registered_domain``: 50 per 7 days, per registered domain (Public Suffix List);
* ``duplicate_certificates``: 5 per 7 days, per exact set of names;
* ``new_orders_per_account``: 300 per 3 hours, per ACME account;
* ``failed_validations_per_name``: 5 per hour, per name and account.

Renewals inside the CA's ARI window are exempt (neither checked nor counted), as at Let's Encrypt.
"""

from __future__ import annotations

import asyncio
import hashlib
import datetime as dt
import time
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .identifiers import registered_domain

__all__ = ["Limit", "DEFAULT_LIMITS", "Hold", "Reservation", "RateLedger", "Pacer", "bucket_retry_at", "load_limits"]


@dataclass(frozen=True)
class Limit:
    name: str
    kind: str            # ledger kind counted: "certificate" | "order" | "failed_authz"
    capacity: int
    period: dt.timedelta

    @property
    def refill_per_second(self) -> float:
        return self.capacity / self.period.total_seconds()


DEFAULT_LIMITS: dict[str, Limit] = {
    "certificates_per_registered_domain": Limit("certificates_per_registered_domain", "certificate", 50,
                                                dt.timedelta(days=7)),
    "duplicate_certificates": Limit("duplicate_certificates", "certificate", 5, dt.timedelta(days=7)),
    "new_orders_per_account": Limit("new_orders_per_account", "order", 300, dt.timedelta(hours=3)),
    "failed_validations_per_name": Limit("failed_validations_per_name", "failed_authz", 5, dt.timedelta(hours=1)),
}


def load_limits(overrides: Mapping[str, Any] | None) -> dict[str, Limit]:
    """Defaults, with ``{"name": {"capacity": N, "period": seconds}}`` overrides (settings ``rate_limits``).

    Raises:
        ValueError: naming what is wrong (an unknown name, a value that is not a table, a capacity or period that is
            not a number or out of range) -- the one error the settings checks report as it is."""
    limits = dict(DEFAULT_LIMITS)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError("must map rate limit names to {capacity = N, period = SECONDS}")
    for name, spec in (overrides or {}).items():
        if name not in limits:
            raise ValueError(f"unknown rate limit {name!r}; known: {', '.join(limits)}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"rate limit {name}: must be a table {{capacity = N, period = SECONDS}}, "
                             f"not {str(spec)[:60]!r}")
        base = limits[name]
        try:
            cap = int(spec.get("capacity", base.capacity))
            period = dt.timedelta(seconds=float(spec.get("period", base.period.total_seconds())))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"rate limit {name}: capacity must be a whole number and period a number of seconds "
                             f"(within about 30,000 years)") from None
        if cap < 1 or period.total_seconds() <= 0:
            raise ValueError(f"rate limit {name}: capacity >= 1 and period > 0 required")
        limits[name] = Limit(name, base.kind, cap, period)
    return limits


def bucket_retry_at(times: list[dt.datetime], limit: Limit, now: dt.datetime) -> dt.datetime | None:
    """Replay the counted actions through a token bucket; None if a token is available now, else when one is."""
    rate = limit.refill_per_second
    tokens = float(limit.capacity)
    last: dt.datetime | None = None
    for t in sorted(times):
        if last is not None:
            tokens = min(limit.capacity, tokens + (t - last).total_seconds() * rate)
        tokens -= 1
        last = t
    if last is not None:
        tokens = min(limit.capacity, tokens + max(0.0, (now - last).total_seconds()) * rate)
    if tokens >= 1 - 1e-9:
        return None
    return now + dt.timedelta(seconds=(1 - tokens) / rate)


@dataclass
class Reservation:
    """Ledger rows reserved for one order in flight (ids), by what they count."""

    order: list[int] = field(default_factory=list)
    certificate: list[int] = field(default_factory=list)
    exempt: bool = False  #: a renewal inside the CA's ARI window: neither checked nor counted


@dataclass(frozen=True)
class Hold:
    limit: str
    retry_at: dt.datetime
    scope: str

    def message(self) -> str:
        return (f"held by our own copy of the CA's {self.limit.replace('_', ' ')} limit ({self.scope.split('@')[0]}) until "
                f"{self.retry_at.isoformat()}")


class RateLedger:
    """Consult before an order; count what the CA did (orders created, certificates issued, failed
    authorizations), never mere intentions. ``check_and_reserve`` is atomic across nodes (it holds
    a lease per scope in the store), so twelve workers cannot all see the last free token."""

    def __init__(self, storage, limits: dict[str, Limit] | None = None, *, ca: str | None = None) -> None:
        self.storage = storage
        self.limits = limits or dict(DEFAULT_LIMITS)
        #: The CA (directory URL) whose limits this ledger keeps, when edgecert uses several: its per-name scopes
        #: carry a short tag of it (``regdom:example.com@3f2a9c1b0d4e``), so each CA has its own counts. None: the
        #: one CA (scopes as before).
        self.ca = ca
        self._tag = hashlib.sha256(ca.encode()).hexdigest()[:12] if ca else ""

    def _at(self, scope: str) -> str:
        return f"{scope}@{self._tag}" if self._tag else scope

    def _scopes(self, names: list[str], account_id: int) -> list[tuple[Limit, str]]:
        regs = sorted({registered_domain(n.lstrip("*.")) or n for n in names})
        out = [(self.limits["new_orders_per_account"], f"account:{account_id}")]
        out += [(self.limits["certificates_per_registered_domain"], self._at(f"regdom:{r}")) for r in regs]
        out.append((self.limits["duplicate_certificates"], self._at("names:" + ",".join(sorted(names)))))
        out += [(self.limits["failed_validations_per_name"], f"failed:{account_id}:{n}") for n in names]
        return out

    async def record_failed_validation(self, names: list[str], account_id: int, *, now: dt.datetime) -> None:
        """The CA's verdict on an authorization was ``invalid``: one failed validation per name (its limit)."""
        for n in names:
            await self.storage.ledger_add("failed_authz", f"failed:{account_id}:{n}", account_id=account_id, at=now)

    async def check(self, names: list[str], account_id: int, *, now: dt.datetime) -> Hold | None:
        worst: Hold | None = None
        for limit, scope in self._scopes(names, account_id):
            since = now - limit.period
            times = await self.storage.ledger_times(limit.kind, scope, since)
            at = bucket_retry_at(times, limit, now)
            if at is not None and (worst is None or at > worst.retry_at):
                worst = Hold(limit.name, at, scope.split(":", 1)[1])
        return worst

    async def check_and_reserve(self, names: list[str], account_id: int, *, now: dt.datetime,
                                exempt: bool = False) -> tuple[Hold | None, "Reservation"]:
        """Atomically: if no limit holds, reserve one order and one certificate (rows marked ``reserved``, which
        count like the CA's actions while the order is in flight). :meth:`confirm` turns them into what the CA
        did; :meth:`release` drops what is left (call it on every path); :meth:`reconcile` at start-up."""
        if exempt:
            return None, Reservation(exempt=True)
        regs = sorted({registered_domain(n.lstrip("*.")) or n for n in names})
        lock = "ratelimit:" + ",".join(regs)
        async with self.storage.lock(lock, ttl=30, timeout=60):
            hold = await self.check(names, account_id, now=now)
            if hold is not None:
                return hold, Reservation()
            res = Reservation()
            for kind, scope in self._counted(names, account_id):
                rid = await self.storage.ledger_add(kind, scope, account_id=account_id, at=now, reserved=True)
                (res.order if kind == "order" else res.certificate).append(rid)
            return None, res

    def _counted(self, names: list[str], account_id: int) -> list[tuple[str, str]]:
        """(kind, scope) of the rows one order (``order``) and its certificate (``certificate``) count."""
        regs = sorted({registered_domain(n.lstrip("*.")) or n for n in names})
        out = [("order", f"account:{account_id}")]
        out += [("certificate", self._at(f"regdom:{r}")) for r in regs]
        out.append(("certificate", self._at("names:" + ",".join(sorted(names)))))
        return out

    async def confirm(self, kind: str, reservation: "Reservation", names: list[str], account_id: int, *,
                      order_id: int | None, now: dt.datetime) -> None:
        """The CA did it (``order``: created the order; ``certificate``: issued it): the reserved rows become
        its action; without a reservation (an order resumed after a restart) the action is added."""
        if reservation.exempt:
            return
        ids = reservation.order if kind == "order" else reservation.certificate
        if ids:
            n = await self.storage.ledger_confirm(ids, order_id=order_id, at=now)
            ids.clear()
            if n:
                return
        if order_id is not None and order_id in await self.storage.ledger_counted_orders(kind, [order_id]):
            return
        for k, scope in self._counted(names, account_id):
            if k == kind:
                await self.storage.ledger_add(k, scope, account_id=account_id, at=now, order_id=order_id)

    async def release(self, reservation: "Reservation | list[int]") -> None:
        """Drop whatever is still reserved (the CA did not act): safe to call on every path, more than once."""
        if isinstance(reservation, Reservation):
            ids = reservation.order + reservation.certificate
            reservation.order.clear()
            reservation.certificate.clear()
        else:
            ids = list(reservation)
        if ids:
            await self.storage.ledger_release(ids)

    async def reconcile(self, now: dt.datetime, *, stale_after: dt.timedelta) -> int:
        """At start-up: drop reservations older than ``stale_after`` (their process is gone) and count every order
        the CA created and every certificate it issued, per the order journal, that the ledger misses (a crash
        between the CA's answer and the ledger's write). Returns how many rows changed."""
        changed = await self.storage.ledger_drop_reservations(now - stale_after)
        longest = max(limit.period for limit in self.limits.values())
        entries = [e for e in await self.storage.journal_since(now - longest) if e.id is not None
                   and (self.ca is None or getattr(e, "directory_url", None) in (None, self.ca))]
        if not entries:
            return changed
        ids = [e.id for e in entries]
        have = {k: await self.storage.ledger_counted_orders(k, ids) for k in ("order", "certificate")}
        for e in entries:
            if e.replaces:
                continue  # an ARI renewal (RFC 9773 ``replaces``): exempt, as at the CA
            names = json.loads(e.names)
            todo = ["order"] if e.id not in have["order"] else []
            if e.fullchain_pem is not None and e.id not in have["certificate"]:
                todo.append("certificate")
            for k, scope in self._counted(names, e.account_id):
                if k in todo:
                    await self.storage.ledger_add(k, scope, account_id=e.account_id, at=e.created_at,
                                                  order_id=e.id)
                    changed += 1
        return changed

class Pacer:
    """At most ``burst`` requests per ``window`` seconds (CertMagic's 10 orders / 10 s per CA account), waiting
    in the event loop (never sleeping a thread) until the next slot."""

    def __init__(self, *, burst: int = 10, window: float = 10.0) -> None:
        self.burst = max(1, burst)
        self.window = window
        self._stamps: list[float] = []
        self._lock = asyncio.Lock()
        self.paused_until: float = 0.0

    def pause_until(self, monotonic_deadline: float) -> None:
        self.paused_until = max(self.paused_until, monotonic_deadline)

    async def wait(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self._stamps = [t for t in self._stamps if t > now - self.window]
                if len(self._stamps) < self.burst:
                    self._stamps.append(now)
                    return
                await asyncio.sleep(self._stamps[0] + self.window - now)
