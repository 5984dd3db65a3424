"""When to renew a certificate (documented constants, one pure function; see docs/renewal.md).

Everything works in seconds, so certificates of hours or days are planned as precisely as 90-day ones.

* ARI first (RFC 9773): a uniformly random time inside the CA's suggested window (now, if the window started
  already); the window is asked again at least twice a day (``ARI_MAX_RECHECK``) or when the CA's Retry-After says.
* Without ARI: with ``RENEWAL_RATIO`` (1/3, setting ``renew_ratio``) of the lifetime left, or ``renew_before``
  (an absolute threshold such as "30 days") when the operator sets one. Lifetimes of 10 days or less
  (``SHORT_LIFETIME``) renew at half their lifetime, whatever the threshold.
* Always: an emergency renewal at ``EMERGENCY_RATIO`` (1/20) of the lifetime left, whatever ARI says.

Never a renewal loop. A freshly issued certificate is never due at once, whatever the rules and the CA say:

* a threshold longer than the certificate (a 6-day certificate under "renew when under 30 days", a CA that always
  issues certificates shorter than ``renew_before``) is clamped to half the lifetime (``MAX_LEFT_RATIO``);
* an ARI window that ended before the certificate was obtained (about an older certificate, or absurd) is ignored;
* no renewal is planned earlier than ``min_spacing`` after the previous renewal of the name (``renewed_at``: when
  the current certificate was obtained, if it came from a renewal), capped at a tenth of the lifetime
  (``SPACING_RATIO``): the minimum spacing between two renewals of one name. A name's first certificate has no
  previous renewal: a CA that moves its ARI window to "now" right after issuance (a revocation incident) gets its
  renewal at once, and the renewal after that waits for the spacing.

Each guard that changed the plan is named in :attr:`RenewalPlan.guard`.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

__all__ = ["RENEWAL_RATIO", "SHORT_LIFETIME", "SHORT_RENEWAL_RATIO", "EMERGENCY_RATIO", "MAX_LEFT_RATIO",
           "SPACING_RATIO", "MIN_SPACING", "ARI_MAX_RECHECK", "RenewalPlan", "plan_renewal", "next_ari_check",
           "spacing_for"]

RENEWAL_RATIO = 1 / 3
SHORT_LIFETIME = dt.timedelta(days=10)
SHORT_RENEWAL_RATIO = 1 / 2
EMERGENCY_RATIO = 1 / 20
#: At most this share of the lifetime may be left when a threshold says renew: a certificate is used at least half
#: its lifetime (without ARI).
MAX_LEFT_RATIO = 1 / 2
#: The minimum spacing between two renewals of one name is at most this share of the certificate's lifetime.
SPACING_RATIO = 1 / 10
#: Default minimum spacing between two renewals of one name (setting ``renew_min_spacing``).
MIN_SPACING = dt.timedelta(days=1)
ARI_MAX_RECHECK = dt.timedelta(hours=12)
ARI_MIN_RECHECK = dt.timedelta(seconds=5)

#: Guards (:attr:`RenewalPlan.guard`).
GUARD_THRESHOLD = "threshold_clamped"      # the threshold left more than half the lifetime: half it is
GUARD_ARI_IGNORED = "ari_window_ignored"   # the CA's window ended before this certificate was obtained
GUARD_SPACING = "min_spacing"              # the plan was earlier than the minimum spacing after issuance


@dataclass(frozen=True)
class RenewalPlan:
    at: dt.datetime
    reason: str          # "ari_window" | "lifetime" | "emergency"
    in_ari_window: bool  # the renewal falls inside the CA's window (exempt from rate limits at Let's Encrypt)
    guard: str | None = None  # which loop guard changed the plan, if any (see the module docstring)

    def to_dict(self) -> dict:
        out = {"at": self.at.isoformat(), "reason": self.reason, "in_ari_window": self.in_ari_window}
        if self.guard:
            out["guard"] = self.guard
        return out


def spacing_for(lifetime: dt.timedelta, min_spacing: dt.timedelta = MIN_SPACING) -> dt.timedelta:
    """The minimum time between obtaining a certificate and renewing it: ``min_spacing``, but at most a tenth of
    the lifetime (so that 10-minute test certificates and 6-day ones keep a proportionate spacing)."""
    return max(dt.timedelta(0), min(min_spacing, lifetime * SPACING_RATIO))


def plan_renewal(not_before: dt.datetime, not_after: dt.datetime, *, now: dt.datetime,
                 ari_window: tuple[dt.datetime, dt.datetime] | None = None, ratio: float = RENEWAL_RATIO,
                 rng: random.Random | None = None, renew_before: dt.timedelta | None = None,
                 issued_at: dt.datetime | None = None, renewed_at: dt.datetime | None = None,
                 min_spacing: dt.timedelta = MIN_SPACING) -> RenewalPlan:
    """The time to renew a certificate valid from ``not_before`` to ``not_after``.

    Args:
        now: the clock (a fake one in tests).
        ari_window: the CA's suggested window (RFC 9773), if it has one for this certificate.
        ratio: share of the lifetime left at which to renew without ARI (``renew_ratio``).
        renew_before: an absolute "renew when less than this is left" threshold (``renew_before``); wins over
            ``ratio`` for lifetimes over 10 days.
        issued_at: when edgecert obtained the certificate (default ``not_before``): ARI windows that ended before
            it are ignored.
        renewed_at: when the name was last renewed (the current certificate's ``issued_at`` when it came from a
            renewal; None for a name's first certificate): the minimum spacing counts from it.
        min_spacing: the minimum spacing between two renewals of one name (``renew_min_spacing``).
    """
    lifetime = max(not_after - not_before, dt.timedelta(0))
    obtained = issued_at or not_before
    earliest = renewed_at + spacing_for(lifetime, min_spacing) if renewed_at is not None else None
    emergency = not_after - lifetime * EMERGENCY_RATIO
    guard: str | None = None

    def spaced(plan: RenewalPlan) -> RenewalPlan:
        if earliest is not None and plan.at < earliest:
            return RenewalPlan(earliest, plan.reason, plan.in_ari_window, GUARD_SPACING)
        return plan

    if ari_window is not None:
        start, end = ari_window
        if end < start:
            start, end = end, start
        if end < obtained:
            guard = GUARD_ARI_IGNORED  # a window about an older certificate (or absurd): the lifetime rules apply
        else:
            r = rng or random
            if end <= now:
                at = now
            else:
                lo = max(start, now)
                at = lo + (end - lo) * r.random()
            if emergency < at:
                return spaced(RenewalPlan(emergency, "emergency", False))
            return spaced(RenewalPlan(at, "ari_window", True))
    if lifetime <= SHORT_LIFETIME:
        left = lifetime * SHORT_RENEWAL_RATIO
    else:
        left = renew_before if renew_before is not None else lifetime * ratio
        if left > lifetime * MAX_LEFT_RATIO:
            left = lifetime * MAX_LEFT_RATIO
            guard = guard or GUARD_THRESHOLD
    at = not_after - left
    if at > emergency:
        return spaced(RenewalPlan(emergency, "emergency", False, guard))
    return spaced(RenewalPlan(at, "lifetime", False, guard))


def next_ari_check(now: dt.datetime, *, retry_after: dt.datetime | None, lifetime: dt.timedelta) -> dt.datetime:
    """When to ask for the ARI window again: the CA's Retry-After, but at least twice a day (and, for very short
    test certificates, at least ten times per lifetime)."""
    cap = min(ARI_MAX_RECHECK, max(lifetime / 10, ARI_MIN_RECHECK))
    if retry_after is None or retry_after <= now:
        return now + cap
    return min(retry_after, now + cap)
