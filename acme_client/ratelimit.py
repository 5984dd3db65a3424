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
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .identifiers import registered_domain

__all__ = ["Limit", "DEFAULT_LIMITS", "Hold", "RateLedger", "Pacer", "bucket_retry_at", "load_limits"]


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
    """Defaults, with ``{"name": {"capacity": N, "period": seconds}}`` overrides (settings ``rate_limits``)."""
    limits = dict(DEFAULT_LIMITS)
    for name, spec in (overrides or {}).items():
        if name not in limits:
            raise ValueError(f"unknown rate limit {name!r}; known: {', '.join(limits)}")
        base = limits[name]
        cap = int(spec.get("capacity", base.capacity))
        period = dt.timedelta(seconds=float(spec.get("period", base.period.total_seconds())))
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


@dataclass(frozen=True)
class Hold:
    limit: str
    retry_at: dt.datetime
    scope: str

    def message(self) -> str:
        return (f"held by our own copy of the CA's {self.limit.replace('_', ' ')} limit ({self.scope}) until "
                f"{self.retry_at.isoformat()}")


class RateLedger:
    """Consult before an order; record what the CA counts. ``check_and_reserve`` is atomic across nodes (it holds
    a lease per scope in the store), so twelve workers cannot all see the last free token."""

    def __init__(self, storage, limits: dict[str, Limit] | None = None) -> None:
        self.storage = storage
        self.limits = limits or dict(DEFAULT_LIMITS)

    def _scopes(self, names: list[str], account_id: int) -> list[tuple[Limit, str]]:
        regs = sorted({registered_domain(n.lstrip("*.")) or n for n in names})
        out = [(self.limits["new_orders_per_account"], f"account:{account_id}")]
        out += [(self.limits["certificates_per_registered_domain"], f"regdom:{r}") for r in regs]
        out.append((self.limits["duplicate_certificates"], "names:" + ",".join(sorted(names))))
        out += [(self.limits["failed_validations_per_name"], f"failed:{account_id}:{n}") for n in names]
        return out

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
                                exempt: bool = False) -> tuple[Hold | None, list[int]]:
        """Atomically: if no limit holds, count one order and reserve one certificate (returned ids let
        :meth:`release` undo the certificate reservation if the order fails)."""
        if exempt:
            return None, []
        regs = sorted({registered_domain(n.lstrip("*.")) or n for n in names})
        lock = "ratelimit:" + ",".join(regs)
        async with self.storage.lock(lock, ttl=30, timeout=60):
            hold = await self.check(names, account_id, now=now)
            if hold is not None:
                return hold, []
            await self.storage.ledger_add("order", f"account:{account_id}", account_id=account_id, at=now)
            cert_ids = [await self.storage.ledger_add("certificate", f"regdom:{r}", account_id=account_id, at=now)
                        for r in regs]
            cert_ids.append(await self.storage.ledger_add("certificate", "names:" + ",".join(sorted(names)),
                                                          account_id=account_id, at=now))
            return None, cert_ids

    async def release(self, reservation: list[int]) -> None:
        """The order produced no certificate: give the certificate tokens back (the order stays counted)."""
        for i in reservation:
            await self.storage.ledger_delete(i)

    async def record_failed_validation(self, names: list[str], account_id: int, *, now: dt.datetime) -> None:
        for n in names:
            await self.storage.ledger_add("failed_authz", f"failed:{account_id}:{n}", account_id=account_id, at=now)


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
