"""Unit tests: renewal decisions, the token-bucket ledger math, the fair queue, Retry-After, error types."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest

from acme_client import errors
from acme_client.client import parse_retry_after
from acme_client.fairqueue import FairQueue
from acme_client.identifiers import covers, name_matches, registered_domain
from acme_client.ratelimit import DEFAULT_LIMITS, Limit, Pacer, bucket_retry_at, load_limits
from acme_client.renewal import ARI_MAX_RECHECK, next_ari_check, plan_renewal
from acme_client.retry import RetrySchedule

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


def test_retry_schedules_short_then_long_capped_and_finite():
    issuance = RetrySchedule("issuance", (60, 600, 6000, 21600), jitter=0.1)
    assert [issuance.base(n) for n in (1, 2, 3, 4, 5, 50)] == [60, 600, 6000, 21600, 21600, 21600]
    assert issuance.retries is None
    for n in (1, 4, 9):
        assert 0.9 * issuance.base(n) <= issuance.delay(n) <= 1.1 * issuance.base(n)
    dns = RetrySchedule("dns", (30,), factor=2, cap=3600)
    assert [dns.base(n) for n in (1, 2, 3, 7, 8, 10_000)] == [30, 60, 120, 1920, 3600, 3600]
    webhook = RetrySchedule.parse("webhook", "10, 60,,600", give_up=True)
    assert webhook.delays == (10, 60, 600) and webhook.retries == 3
    assert [webhook.base(n) for n in (1, 3, 4)] == [10, 600, None]
    assert RetrySchedule.parse("webhook", "", give_up=True).base(1) is None  # empty: no retry
    assert RetrySchedule.parse("x", webhook) is webhook
    with pytest.raises(ValueError):
        RetrySchedule("hook", ())


def test_name_cover_and_registered_domain():
    assert name_matches("*.Example.com.", "shop.example.com")
    assert not name_matches("*.example.com", "example.com")
    assert not name_matches("*.example.com", "a.shop.example.com")
    assert covers("shop.example.com", ("www.example.com", "shop.example.com"))
    assert not covers("shop.example.com", ())
    assert registered_domain("a.b.shop.co.uk") == "shop.co.uk"
    assert registered_domain("co.uk") is None


def test_ari_cert_id_round_trip():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from acme_client.keys import ari_cert_id, generate_private_key, parse_ari_cert_id
    key = generate_private_key()
    name = x509.Name([])
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x80FF).not_valid_before(T0).not_valid_after(T0 + DAY)
            .add_extension(aki, critical=False).sign(key, hashes.SHA256()))
    cid = ari_cert_id(cert)
    assert cid.endswith(".AID_")  # DER INTEGER content: a leading zero keeps 0x80FF positive
    assert parse_ari_cert_id(cid) == (aki.key_identifier, 0x80FF)
    with pytest.raises(ValueError):
        parse_ari_cert_id("no-dot")


# -- order journal: transient vs final, the same order retried, the ledger counts what the CA did -----------------

class _FakeIssuer:
    """What :class:`acme_client.issuer.OrderAttempt` uses of its issuer: the protocol thread and the store."""

    def __init__(self, storage=None) -> None:
        self.storage = storage

    async def _in_thread(self, fn):
        return fn()


def _attempt(*, seconds: float = 30.0, expires: dt.datetime | None = None):
    from acme_client.issuer import OrderAttempt
    from store.models import AcmeOrder
    import time
    order = AcmeOrder(id=1, domain_id=1, account_id=1, names='["a.test"]', url="https://ca/order/1",
                      expires_at=expires)
    return OrderAttempt(_FakeIssuer(), order, deadline=time.monotonic() + seconds)


def _failing(errs, result="ok"):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errs):
            raise errs[len(calls) - 1]
        return result
    return fn, calls


async def test_bad_nonces_are_retried_at_once_several_times_on_the_same_call():
    from acme_client.journal import BAD_NONCE_RETRIES
    fn, calls = _failing([errors.BadNonce("badNonce")] * BAD_NONCE_RETRIES)
    assert await _attempt().call(fn) == "ok"
    assert len(calls) == BAD_NONCE_RETRIES + 1
    fn, calls = _failing([errors.BadNonce("badNonce")] * (BAD_NONCE_RETRIES + 1))
    with pytest.raises(errors.BadNonce):
        await _attempt().call(fn)


async def test_transport_errors_and_5xx_retry_the_same_call_with_backoff(monkeypatch):
    slept = []

    async def fake_sleep(s):
        slept.append(s)
    monkeypatch.setattr("acme_client.issuer.asyncio.sleep", fake_sleep)
    fn, calls = _failing([errors.NetworkError("refused"), errors.ServerUnavailable("503", status=503),
                          errors.NetworkError("reset")])
    assert await _attempt().call(fn) == "ok"
    assert len(calls) == 4 and len(slept) == 3
    assert 0.3 <= slept[0] <= 0.7 and slept[2] > slept[0]  # 0.5 s doubling, +-30%


async def test_verdicts_and_rate_limits_are_not_retried_within_an_attempt():
    for e in (errors.ChallengeFailed("invalid"), errors.RateLimited("429"), errors.CAARefused("caa")):
        fn, calls = _failing([e])
        with pytest.raises(type(e)):
            await _attempt().call(fn)
        assert len(calls) == 1


async def test_transient_retries_stop_at_the_orders_expiry():
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    fn, calls = _failing([errors.NetworkError("refused")])
    with pytest.raises(errors.NetworkError):
        await _attempt(expires=past).call(fn)
    assert len(calls) == 1


def test_transient_by_type():
    from acme_client.journal import is_transient
    assert all(is_transient(e) for e in (errors.NetworkError("x"), errors.ServerUnavailable("x"),
                                         errors.BadNonce("x"), errors.OrderTimeout("x")))
    assert not any(is_transient(e) for e in (errors.ChallengeFailed("x"), errors.OrderFailed("x"),
                                             errors.RateLimited("x"), errors.Unauthorized("x")))
    assert isinstance(errors.from_problem("urn:ietf:params:acme:error:badNonce", "x", status=400), errors.BadNonce)


async def test_ledger_counts_the_cas_actions_and_releases_the_rest(tmp_path):
    from acme_client.ratelimit import RateLedger
    from store import open_storage
    from store.models import AcmeOrder, JournalStep
    st = open_storage(f"sqlite:///{tmp_path}/l.db")
    ledger = RateLedger(st)
    now = dt.datetime.now(dt.timezone.utc)

    async def rows():
        out = {}
        for kind, scope in (("order", "account:1"), ("certificate", "names:a.example.com")):
            out[kind] = len(await st.ledger_times(kind, scope, now - DAY))
        return out
    # The order was created at the CA, then failed: the order counts, the certificate reservation goes.
    hold, res = await ledger.check_and_reserve(["a.example.com"], 1, now=now)
    assert hold is None and res.order and res.certificate
    await ledger.confirm("order", res, ["a.example.com"], 1, order_id=7, now=now)
    await ledger.release(res)
    await ledger.release(res)  # on every path, any number of times
    assert await rows() == {"order": 1, "certificate": 0}
    # The CA never answered: nothing at all is counted.
    hold, res = await ledger.check_and_reserve(["a.example.com"], 1, now=now)
    await ledger.release(res)
    assert await rows() == {"order": 1, "certificate": 0}
    # A crash after the CA issued (the ledger missed both): reconciled from the journal at start-up; a stale
    # reservation is dropped.
    hold, res = await ledger.check_and_reserve(["a.example.com"], 1, now=now - dt.timedelta(hours=1))
    dom = await st.add_domain("a.example.com", (await st.ensure_tenant("t")).id)
    order = await st.save_order(AcmeOrder(domain_id=dom.id, account_id=1, names='["a.example.com"]',
                                          url="https://ca/order/9", step=JournalStep.DOWNLOADED,
                                          fullchain_pem="x"))
    changed = await ledger.reconcile(now, stale_after=dt.timedelta(minutes=10))
    assert changed == 3 + 3  # 3 stale reserved rows dropped; order + 2 certificate rows added
    assert await rows() == {"order": 2, "certificate": 1}
    assert await ledger.reconcile(now, stale_after=dt.timedelta(minutes=10)) == 0  # idempotent
    assert order.id in await st.ledger_counted_orders("certificate", [order.id])
