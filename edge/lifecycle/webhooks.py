"""Outgoing webhooks: events POSTed as signed JSON to ``EDGECERT_WEBHOOK_URL``, retried with backoff, logged.

How it works:

* :meth:`WebhookSender.on_event` is an :class:`~edge.events.EventBus` subscriber. It builds the payload and puts it
  on an in-memory queue; it never waits on the network or the database, so ``emit`` is never held up.
* One managed task (:meth:`WebhookSender.start` / :meth:`WebhookSender.stop`, called from the app's cleanup_ctx)
  writes queued payloads into the ``webhook_deliveries`` table (the delivery log) and sends the rows that are due.
* A 2xx answer marks the row ``delivered``. Anything else (other status, timeout, refused connection, redirect)
  schedules the next attempt after the next delay of the retry schedule (default 10 s, 1 min, 10 min, 1 h, 6 h);
  after the last one the row is ``failed``.
* Rows survive restarts. Several processes or nodes may share the table: a row is claimed with an optimistic
  update (its ``attempts`` counter is the version), so one attempt is made by one process, and a claim of a
  process that died expires after :data:`CLAIM_SECONDS`.

The body is JSON ``{"id", "type", "hostname", "message", "data", "created_at"}``. The header
``X-Edgecert-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` signs it (the scheme Stripe
uses); :func:`verify_signature` is the receiver's side. See ``docs/webhooks.md``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any, Sequence

import aiohttp

from acme_client.retry import RetrySchedule
from store.models import WebhookDelivery, utcnow

from edge import __version__
from edge.tasks import cancel_and_wait

__all__ = ["WebhookSender", "sign", "verify_signature", "parse_retry_schedule", "list_deliveries",
           "delivery_json", "SIGNATURE_HEADER", "DEFAULT_RETRY_SCHEDULE"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Edgecert-Signature"
DEFAULT_RETRY_SCHEDULE = RetrySchedule("webhook", (10.0, 60.0, 600.0, 3600.0, 21600.0), give_up=True)
#: Seconds one attempt may take (connect + answer).
ATTEMPT_TIMEOUT = 10.0
#: A claimed row whose attempt did not finish (the process died) is retried after this many seconds.
CLAIM_SECONDS = ATTEMPT_TIMEOUT + 50.0
#: The task looks at the table at least this often (rows of a process that died, clock changes).
POLL_SECONDS = 30.0
#: Attempts in flight at once.
CONCURRENCY = 8
#: Payloads waiting to be written to the log; beyond this new events are dropped (and logged).
QUEUE_MAX = 10000


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Edgecert-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), str(int(timestamp)).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={int(timestamp)},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance: float = 300.0,
                     now: float | None = None) -> bool:
    """Receiver side: True when ``header`` is a valid signature of ``body`` made less than ``tolerance`` seconds
    ago (a replayed old request fails). Compare in constant time; never parse the JSON before this returns True.

    Args:
        secret: the shared ``EDGECERT_WEBHOOK_SECRET``.
        body: the raw request body, exactly as received.
        header: the ``X-Edgecert-Signature`` header value.
        tolerance: the largest accepted age of the timestamp, seconds.
        now: the current unix time (default: ``time.time()``).
    """
    parts: dict[str, list[str]] = {}
    for item in (header or "").split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def parse_retry_schedule(value: RetrySchedule | str | Sequence[float] | None) -> RetrySchedule:
    """``"10,60,600"`` -> retries after 10 s, 60 s and 600 s, then the delivery has failed; empty means "no retry"."""
    if value is None:
        return DEFAULT_RETRY_SCHEDULE
    return RetrySchedule.parse("webhook", value, give_up=True)


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    """One row of the delivery log as the API shows it."""
    try:
        event = json.loads(row.payload)
    except json.JSONDecodeError:
        event = None
    return {"id": row.id, "event_id": (event or {}).get("id"), "type": row.kind, "hostname": row.hostname,
            "url": row.url, "status": row.status, "attempts": row.attempts,
            "last_status_code": row.last_status_code, "last_error": row.last_error,
            "next_attempt_at": _iso(row.next_attempt_at) if row.status == "pending" else None,
            "created_at": _iso(row.created_at), "delivered_at": _iso(row.delivered_at), "event": event}


async def list_deliveries(storage, *, status: str | None = None, hostname: str | None = None,
                          type_: str | None = None, limit: int = 100, after_id: int = 0) -> list[WebhookDelivery]:
    """Rows of the delivery log, newest first (``after_id`` > 0: only rows with a larger id, oldest first)."""
    return await storage.list_webhook_deliveries(status=status, hostname=hostname, kind=type_, limit=limit,
                                                 after_id=after_id)


class WebhookSender:
    """Delivers events to one URL. Build it with the settings' values; subscribe :meth:`on_event` to the bus.

    Args:
        storage: the :class:`store.Storage` holding the delivery log.
        url: where to POST (``EDGECERT_WEBHOOK_URL``).
        secret: the HMAC key (``EDGECERT_WEBHOOK_SECRET``).
        events: ``"*"`` or comma-separated event kinds / shell-style patterns (``EDGECERT_WEBHOOK_EVENTS``).
        retry_schedule: delays between attempts, seconds (``EDGECERT_WEBHOOK_RETRY_SCHEDULE``).
        metrics: optional :class:`edge.metrics.Metrics` (counts deliveries by result).
    """

    def __init__(self, *, storage, url: str, secret: str, events: str = "*",
                 retry_schedule: RetrySchedule | Sequence[float] = DEFAULT_RETRY_SCHEDULE, metrics=None,
                 timeout: float = ATTEMPT_TIMEOUT) -> None:
        self.storage = storage
        self.url = url
        self.secret = secret
        self.patterns = [p.strip() for p in (events or "*").split(",") if p.strip()] or ["*"]
        self.retry_schedule = parse_retry_schedule(retry_schedule)
        self.metrics = metrics
        self.timeout = timeout
        self._queue: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(CONCURRENCY)

    # -- the subscriber (runs inside EventBus.emit: no I/O here) --------------------------------------------------
    def wants(self, kind: str) -> bool:
        return any(p == "*" or p == kind or fnmatch.fnmatchcase(kind, p) for p in self.patterns)

    async def on_event(self, hostname: str, kind: str, message: str, data: dict[str, Any]) -> None:
        if not self.wants(kind):
            return
        if len(self._queue) >= QUEUE_MAX:
            log.warning("webhook queue full (%d); dropping %s event of %s", QUEUE_MAX, kind, hostname)
            self._count("dropped")
            return
        payload = {"id": "evt_" + uuid.uuid4().hex, "type": kind, "hostname": hostname, "message": message,
                   "data": data or {}, "created_at": _iso(utcnow())}
        self._queue.append(payload)
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": f"edgecert/{__version__} (webhook)"})
        self._task = asyncio.create_task(self._loop(), name="webhooks")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self._persist_queued()  # what was emitted but not yet logged is delivered after the restart
        except Exception:
            log.exception("could not save %d queued webhook deliveries", len(self._queue))
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._persist_queued()
                await self.deliver_due()
                delay = await self._seconds_to_next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery loop failed; trying again shortly")
                delay = 5.0
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass

    # -- the log ------------------------------------------------------------------------------------------------
    async def _persist_queued(self) -> int:
        if not self._queue:
            return 0
        batch, self._queue = self._queue, []
        now = utcnow()
        rows = [WebhookDelivery(url=self.url, hostname=p["hostname"], kind=p["type"],
                                payload=json.dumps(p, default=str, separators=(",", ":")),
                                status="pending", attempts=0, next_attempt_at=now) for p in batch]
        try:
            return await self.storage.add_webhook_deliveries(rows)
        except BaseException:
            self._queue[:0] = batch  # keep them for the next round
            raise

    async def _seconds_to_next_due(self) -> float:
        nxt = await self.storage.next_webhook_attempt_at()
        if self._queue:
            return 0.0
        if nxt is None:
            return POLL_SECONDS
        return min(max((nxt - utcnow()).total_seconds(), 0.05), POLL_SECONDS)

    async def _claim(self, row: WebhookDelivery) -> bool:
        assert row.id is not None
        return await self.storage.claim_webhook_delivery(row.id, attempts=row.attempts,
                                                         until=utcnow() + dt.timedelta(seconds=CLAIM_SECONDS))

    async def deliver_due(self, *, limit: int = 100) -> int:
        """Send every due row once (claimed first). Returns how many attempts were made."""
        rows = await self.storage.due_webhook_deliveries(utcnow(), limit=limit)
        claimed = [r for r in rows if await self._claim(r)]
        if claimed:
            await asyncio.gather(*(self._attempt(r) for r in claimed))
        return len(claimed)

    async def _attempt(self, row: WebhookDelivery) -> None:
        async with self._sem:
            attempt = row.attempts + 1
            body = row.payload.encode()
            code, error = await self._send(row.url, body, row.kind, json.loads(row.payload).get("id", ""))
        now = utcnow()
        values: dict[str, Any] = {"last_status_code": code}
        delay = self.retry_schedule.base(attempt)
        if error is None:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None, last_error=None)
            self._count("delivered")
        elif delay is None:
            values.update(status="failed", next_attempt_at=None, last_error=error)
            self._count("failed")
            log.warning("webhook %s for %s failed for good after %d attempts: %s", row.kind, row.hostname,
                        attempt, error)
        else:
            values.update(next_attempt_at=now + dt.timedelta(seconds=delay), last_error=error)
            self._count("retry")
            log.info("webhook %s for %s: attempt %d failed (%s); next in %gs", row.kind, row.hostname, attempt,
                     error, delay)
        assert row.id is not None
        await self.storage.update_webhook_delivery(row.id, **values)

    async def _send(self, url: str, body: bytes, kind: str, event_id: str) -> tuple[int | None, str | None]:
        """POST once. Returns (HTTP status or None, error text or None when delivered)."""
        assert self._session is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
                   "X-Edgecert-Event": kind, "X-Edgecert-Event-Id": event_id}
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                text = (await r.content.read(300)).decode(errors="replace").strip()
                if 200 <= r.status < 300:
                    return r.status, None
                return r.status, f"HTTP {r.status}" + (f": {text}" if text else "")
        except TimeoutError:
            return None, f"no answer within {self.timeout:g}s"
        except aiohttp.ClientError as e:
            return None, f"{type(e).__name__}: {e}"

    def _count(self, result: str) -> None:
        if self.metrics is not None and hasattr(self.metrics, "webhook_deliveries"):
            self.metrics.webhook_deliveries.labels(result=result).inc()
