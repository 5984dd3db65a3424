"""The renewal planner's rules and its loop guards, on a fake clock (acme_client/renewal.py, docs/renewal.md)."""

from __future__ import annotations

import datetime as dt
import random
from types import SimpleNamespace

import pytest

from acme_client.renewal import (GUARD_ARI_IGNORED, GUARD_SPACING, GUARD_THRESHOLD, MIN_SPACING, plan_renewal,
                                 spacing_for)
from edge.config import Settings
from edge.lifecycle.manager import DomainManager

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def test_short_lifetimes_renew_at_half_whatever_the_threshold():
    # A 6-day certificate under "renew when under 30 days": half its lifetime, never at once.
    p = plan_renewal(T0, T0 + 6 * DAY, now=T0, renew_before=30 * DAY, issued_at=T0)
    assert p.at == T0 + 3 * DAY and p.reason == "lifetime"
    # Hours-long certificates too (the planner works in seconds).
    p = plan_renewal(T0, T0 + 12 * HOUR, now=T0, ratio=0.9, issued_at=T0)
    assert p.at == T0 + 6 * HOUR


def test_threshold_longer_than_the_certificate_is_clamped_to_half():
    # A CA that always issues 15-day certificates while renew_before says 30 days.
    p = plan_renewal(T0, T0 + 15 * DAY, now=T0, renew_before=30 * DAY, issued_at=T0)
    assert p.at == T0 + 7.5 * DAY and p.guard == GUARD_THRESHOLD
    # A renew_ratio close to 1 ("renew when 90% is left") is clamped the same way.
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, ratio=0.9, issued_at=T0)
    assert p.at == T0 + 45 * DAY and p.guard == GUARD_THRESHOLD


def test_absolute_threshold_for_long_certificates():
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, renew_before=30 * DAY, issued_at=T0)
    assert p.at == T0 + 60 * DAY and p.reason == "lifetime" and p.guard is None
    # A tiny threshold never goes past the emergency point (1/20 of the lifetime left).
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, renew_before=HOUR, issued_at=T0)
    assert p.reason == "emergency" and p.at == T0 + 90 * DAY - 4.5 * DAY


def test_ari_first_when_the_window_is_sane():
    rng = random.Random(7)
    win = (T0 + 58 * DAY, T0 + 60 * DAY)
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, ari_window=win, renew_before=30 * DAY, rng=rng, issued_at=T0)
    assert p.reason == "ari_window" and p.in_ari_window and win[0] <= p.at <= win[1]


def test_ari_window_that_ended_before_the_certificate_was_obtained_is_ignored():
    # The CA answers with a window in the past, before this certificate existed (about an older one, or absurd).
    win = (T0 - 10 * DAY, T0 - 9 * DAY)
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0 + dt.timedelta(seconds=1), ari_window=win, issued_at=T0)
    assert p.guard == GUARD_ARI_IGNORED and p.reason == "lifetime" and p.at == T0 + 60 * DAY
    # Reversed and absurd (year 1): ignored too.
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, ari_window=(T0 - 1000 * DAY, dt.datetime(1, 1, 1,
                                                                                           tzinfo=dt.timezone.utc)),
                     issued_at=T0)
    assert p.guard == GUARD_ARI_IGNORED and p.at > T0 + 30 * DAY


def test_ari_window_in_the_past_after_issuance_means_now_but_spaced():
    # The CA changed its mind after issuance (e.g. a revocation incident): renew now...
    issued = T0
    now = T0 + 10 * DAY
    win = (T0 + 5 * DAY, T0 + 6 * DAY)
    p = plan_renewal(T0, T0 + 90 * DAY, now=now, ari_window=win, issued_at=issued)
    assert p.at == now and p.reason == "ari_window"
    # ...but a window right after a renewal never makes the renewed certificate due at once: the next renewal of
    # the name waits for the minimum spacing.
    win = (T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=2))
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0 + dt.timedelta(seconds=3), ari_window=win, issued_at=T0,
                     renewed_at=T0)
    assert p.at == T0 + MIN_SPACING and p.guard == GUARD_SPACING
    # A name's first certificate has no previous renewal: the CA's "renew now" (a revocation incident) is honoured.
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0 + dt.timedelta(seconds=3), ari_window=win, issued_at=T0)
    assert p.at == T0 + dt.timedelta(seconds=3) and p.guard is None


def test_ari_window_after_expiry_is_overridden_by_the_emergency_point():
    win = (dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(9999, 1, 2, tzinfo=dt.timezone.utc))
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, ari_window=win, issued_at=T0)
    assert p.reason == "emergency" and p.at == T0 + 90 * DAY - 4.5 * DAY


def test_backdated_certificate_is_not_due_at_once():
    # A CA that backdates so far that the emergency point has passed when the certificate arrives.
    nb, na = T0 - 89 * DAY, T0 + DAY
    p = plan_renewal(nb, na, now=T0, issued_at=T0, renewed_at=T0)
    assert p.at == T0 + spacing_for(na - nb) and p.guard == GUARD_SPACING and p.at > T0


def test_spacing_scales_with_short_lifetimes():
    assert spacing_for(90 * DAY) == MIN_SPACING
    assert spacing_for(6 * DAY) == 0.6 * DAY
    assert spacing_for(dt.timedelta(seconds=40)) == dt.timedelta(seconds=4)
    assert spacing_for(90 * DAY, dt.timedelta(0)) == dt.timedelta(0)


@pytest.mark.parametrize("lifetime,window", [
    (6 * DAY, lambda nb: (nb - DAY, nb - DAY / 2)),              # windows always before issuance
    (6 * DAY, lambda nb: (nb + dt.timedelta(seconds=1), nb + dt.timedelta(seconds=2))),  # "renew at once"
    (15 * DAY, None),                                              # always shorter than renew_before
    (dt.timedelta(hours=2), lambda nb: (nb - 5 * DAY, nb - 4 * DAY)),
])
def test_no_renewal_loop_over_two_months_with_a_hostile_ca(lifetime, window):
    """A simulated CA issues each renewal at once; the fake clock jumps to each planned renewal. The number of
    renewals stays bounded by the lifetime rules and the spacing, never a loop."""
    now = T0
    renewals = []
    nb = now
    for _ in range(10_000):
        na = nb + lifetime
        p = plan_renewal(nb, na, now=now, ari_window=window(nb) if window else None, renew_before=30 * DAY,
                         issued_at=nb, renewed_at=nb if renewals else None)
        assert p.at > nb or not renewals, "a renewed certificate was due at once"
        now = max(now, p.at)
        if now > T0 + 60 * DAY:
            break
        renewals.append(now)
        nb = now  # the CA issues the renewal now
    gaps = [b - a for a, b in zip(renewals, renewals[1:])]
    assert min(gaps) >= spacing_for(lifetime)
    if lifetime >= DAY:
        assert len(renewals) <= 60 * DAY / spacing_for(lifetime) + 2
    if window is None:  # 15-day certificates renew at half their lifetime: 8 times in 60 days
        assert len(renewals) == 8


def test_manager_plan_uses_the_settings():
    s = Settings(renew_before=30 * 86400.0, renew_min_spacing=3600.0)
    cert = SimpleNamespace(not_before=T0, not_after=T0 + 6 * DAY, created_at=T0.replace(tzinfo=None))
    p = DomainManager.renewal_plan(SimpleNamespace(s=s), cert, T0)
    assert p.at == T0 + 3 * DAY
    cert = SimpleNamespace(not_before=T0, not_after=T0 + 90 * DAY, created_at=T0)
    win = (T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=2))
    p = DomainManager.renewal_plan(SimpleNamespace(s=s), cert, T0, ari_window=win)
    assert p.at == T0 + HOUR and p.guard == GUARD_SPACING
    p = DomainManager.renewal_plan(SimpleNamespace(s=s), cert, T0, ari_window=win, is_renewal=False)
    assert win[0] <= p.at <= win[1] and p.guard is None
