"""When to renew a certificate (documented constants, one pure function).

* Without ARI: with ``RENEWAL_RATIO`` (1/3) of the lifetime left; 1/2 for lifetimes of 10 days or less.
* With ARI (RFC 9773): a uniformly random time inside the CA's suggested window (now, if the window started
  already); the window is asked again at least twice a day (``ARI_MAX_RECHECK``) or when the CA's Retry-After says.
* Always: an emergency renewal at ``EMERGENCY_RATIO`` (1/20) of the lifetime left, whatever ARI says.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

__all__ = ["RENEWAL_RATIO", "SHORT_LIFETIME", "SHORT_RENEWAL_RATIO", "EMERGENCY_RATIO", "ARI_MAX_RECHECK",
           "RenewalPlan", "plan_renewal", "next_ari_check"]

RENEWAL_RATIO = 1 / 3
SHORT_LIFETIME = dt.timedelta(days=10)
SHORT_RENEWAL_RATIO = 1 / 2
EMERGENCY_RATIO = 1 / 20
ARI_MAX_RECHECK = dt.timedelta(hours=12)
ARI_MIN_RECHECK = dt.timedelta(seconds=5)


@dataclass(frozen=True)
class RenewalPlan:
    at: dt.datetime
    reason: str          # "ari_window" | "lifetime" | "emergency"
    in_ari_window: bool  # the renewal falls inside the CA's window (exempt from rate limits at Let's Encrypt)

    def to_dict(self) -> dict:
        return {"at": self.at.isoformat(), "reason": self.reason, "in_ari_window": self.in_ari_window}


def plan_renewal(not_before: dt.datetime, not_after: dt.datetime, *, now: dt.datetime,
                 ari_window: tuple[dt.datetime, dt.datetime] | None = None, ratio: float = RENEWAL_RATIO,
                 rng: random.Random | None = None) -> RenewalPlan:
    """The time to renew a certificate valid from ``not_before`` to ``not_after``."""
    lifetime = not_after - not_before
    emergency = not_after - lifetime * EMERGENCY_RATIO
    if ari_window is not None:
        start, end = ari_window
        if end < start:
            start, end = end, start
        r = rng or random
        if end <= now:
            at = now
        else:
            lo = max(start, now)
            at = lo + (end - lo) * r.random()
        if emergency < at:
            return RenewalPlan(emergency, "emergency", False)
        return RenewalPlan(at, "ari_window", True)
    if lifetime <= SHORT_LIFETIME:
        ratio = max(ratio, SHORT_RENEWAL_RATIO)
    at = not_after - lifetime * ratio
    return RenewalPlan(min(at, emergency) if at > emergency else at, "lifetime", False)


def next_ari_check(now: dt.datetime, *, retry_after: dt.datetime | None, lifetime: dt.timedelta) -> dt.datetime:
    """When to ask for the ARI window again: the CA's Retry-After, but at least twice a day (and, for very short
    test certificates, at least ten times per lifetime)."""
    cap = min(ARI_MAX_RECHECK, max(lifetime / 10, ARI_MIN_RECHECK))
    if retry_after is None or retry_after <= now:
        return now + cap
    return min(retry_after, now + cap)
