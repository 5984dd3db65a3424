"""Unit tests: renewal decisions, the token-bucket ledger math, the fair queue, Retry-After, error types."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest

from acme_client import errors
from acme_client.client import parse_retry_after
from acme_client.fairqueue import FairQueue
from acme_client.ratelimit import DEFAULT_LIMITS, Limit, Pacer, bucket_retry_at, load_limits
from acme_client.renewal import ARI_MAX_RECHECK, next_ari_check, plan_renewal

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


@pytest.mark.parametrize("lifetime,left", [(90 * DAY, 30 * DAY), (45 * DAY, 15 * DAY), (6 * DAY, 3 * DAY),
                                           (dt.timedelta(minutes=2), dt.timedelta(minutes=1))])
def test_lifetime_ratio(lifetime, left):
    p = plan_renewal(T0, T0 + lifetime, now=T0)
    assert p.reason == "lifetime" and not p.in_ari_window
    assert p.at == T0 + lifetime - left


def test_ari_window_random_inside_and_emergency_override():
    rng = random.Random(1)
    start, end = T0 + 60 * DAY, T0 + 62 * DAY
    ats = [plan_renewal(T0, T0 + 90 * DAY, now=T0, ari_window=(start, end), rng=rng).at for _ in range(200)]
    assert all(start <= a <= end for a in ats) and len(set(ats)) > 100
    # window already open: between now and its end
    now = T0 + 61 * DAY
    p = plan_renewal(T0, T0 + 90 * DAY, now=now, ari_window=(start, end), rng=rng)
    assert now <= p.at <= end and p.in_ari_window
    # window already over: now
    assert plan_renewal(T0, T0 + 90 * DAY, now=T0 + 70 * DAY, ari_window=(start, end)).at == T0 + 70 * DAY
    # a CA window past the 1/20 emergency point is overridden
    late = (T0 + 89 * DAY, T0 + 90 * DAY)
    p = plan_renewal(T0, T0 + 90 * DAY, now=T0, ari_window=late)
    assert p.reason == "emergency" and p.at == T0 + 90 * DAY - 90 * DAY / 20


def test_ari_recheck_at_least_twice_a_day_and_scaled_for_short_certs():
    assert next_ari_check(T0, retry_after=T0 + 3 * DAY, lifetime=90 * DAY) == T0 + ARI_MAX_RECHECK
    assert next_ari_check(T0, retry_after=T0 + dt.timedelta(hours=6), lifetime=90 * DAY) == T0 + dt.timedelta(hours=6)
    assert next_ari_check(T0, retry_after=None, lifetime=dt.timedelta(minutes=2)) == T0 + dt.timedelta(seconds=12)


def test_token_bucket_matches_lets_encrypt_semantics():
    lim = Limit("x", "certificate", 10, dt.timedelta(days=7))
    assert bucket_retry_at([], lim, T0) is None
    times = [T0 + dt.timedelta(seconds=i) for i in range(9)]
    assert bucket_retry_at(times, lim, T0 + dt.timedelta(seconds=10)) is None
    times.append(T0 + dt.timedelta(seconds=9))
    at = bucket_retry_at(times, lim, T0 + dt.timedelta(seconds=10))
    # 10 taken in 10 s; ~10 s of refill done; the next token arrives 7d/10 after the bucket started draining.
    assert at is not None
    assert abs((at - T0).total_seconds() - 7 * 86400 / 10) < 30
    # After a full period everything is back.
    assert bucket_retry_at(times, lim, T0 + dt.timedelta(days=7, seconds=10)) is None
    # Steady state: one action per refill interval is always allowed.
    steady = [T0 + i * dt.timedelta(hours=16.8) for i in range(30)]
    assert bucket_retry_at(steady, lim, steady[-1] + dt.timedelta(hours=16.8)) is None


def test_limits_defaults_and_overrides():
    assert DEFAULT_LIMITS["certificates_per_registered_domain"].capacity == 50
    assert DEFAULT_LIMITS["duplicate_certificates"].capacity == 5
    assert DEFAULT_LIMITS["new_orders_per_account"].period == dt.timedelta(hours=3)
    assert DEFAULT_LIMITS["failed_validations_per_name"].capacity == 5
    lim = load_limits({"certificates_per_registered_domain": {"capacity": 10}})
    assert lim["certificates_per_registered_domain"].capacity == 10
    with pytest.raises(ValueError):
        load_limits({"nope": {}})


async def test_fair_queue_round_robin_and_renewals_first():
    q: FairQueue[str] = FairQueue()
    for i in range(5000):
        q.put_nowait(f"big-{i}", group="tenant-big", priority=1)
    q.put_nowait("small-new", group="tenant-small", priority=1)
    q.put_nowait("renewal", group="tenant-other", priority=0)
    assert not q.put_nowait("big-3", group="tenant-big", priority=1)  # deduplicated
    first = [await q.get() for _ in range(4)]
    assert first[0] == "renewal"
    assert "small-new" in first[1:3]
    assert len(q) == 5002 - 4
    # moving a queued item to renewal priority
    assert q.put_nowait("big-4000", group="tenant-big", priority=0)
    assert await q.get() == "big-4000"


async def test_fair_queue_get_waits_for_put():
    q: FairQueue[str] = FairQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0.05)
    assert not getter.done()
    q.put_nowait("x", group=1)
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_pacer_limits_burst_and_pause():
    p = Pacer(burst=3, window=0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(4):
        await p.wait()
    assert loop.time() - t0 >= 0.45
    p.pause_until(__import__("time").monotonic() + 0.3)
    t1 = loop.time()
    await p.wait()
    assert loop.time() - t1 >= 0.25


def test_retry_after_and_error_types():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_retry_after("120", now=now) == now + dt.timedelta(seconds=120)
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") == dt.datetime(2026, 10, 21, 7, 28,
                                                                             tzinfo=dt.timezone.utc)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    e = errors.from_problem("urn:ietf:params:acme:error:rateLimited", "too many", status=429,
                            retry_after=now)
    assert isinstance(e, errors.RateLimited) and e.retryable and e.retry_after == now
    for t, cls in (("rejectedIdentifier", errors.RejectedIdentifier), ("caa", errors.CAARefused),
                   ("unauthorized", errors.Unauthorized)):
        err = errors.from_problem(errors.PROBLEM_PREFIX + t, "no")
        assert isinstance(err, cls) and not err.retryable
    assert isinstance(errors.from_problem(None, "x", status=503), errors.ServerUnavailable)
    assert isinstance(errors.from_problem(errors.PROBLEM_PREFIX + "incorrectResponse", "x"), errors.ChallengeFailed)
