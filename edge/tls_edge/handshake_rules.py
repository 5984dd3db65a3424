"""What the TLS handshake decides per name besides the certificate, kept in step with the store: TLS-ALPN-01 answers
(RFC 8737) and per-hostname TLS floors (``domains.min_tls_version``).

Both end up in memory, in :class:`edge.tls_edge.index.SniIndex` (``challenges``, ``min_tls``), where the C engine's
ClientHello callback and the ``ssl`` fallback read them: no I/O in the handshake. This module does the I/O and the
CPU work around them, off the event loop:

- **TLS-ALPN-01 answers.** The node that orders publishes the key authorization through
  :class:`edge.app.StorePublisher`, which calls :meth:`HandshakeRules.publish` (the challenge certificate is made and
  built in a thread, then installed here: this process answers at once) and stores the answer in
  ``challenge_tokens`` (kind ``tls-alpn-01``), like an HTTP-01 token. Every other process (edge workers, other
  nodes) polls that small table every :data:`ANSWER_POLL_SECONDS` and builds its own challenge certificate from the
  key authorization (the private key never leaves the process). :meth:`HandshakeRules.settle` then makes the
  publisher wait, bounded, for those polls before the CA is told to validate.
- **TLS floors.** Loaded in full at start, then for the domains whose ``updated_at`` moved (the same
  ``changed_since`` look as the edge worker's certificate sweep) every ``floors_interval`` seconds (the
  ``sweep_interval`` setting). :meth:`HandshakeRules.wake` makes the next look happen now.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Iterable

from store.readonly import EdgeStore

from edge.tasks import cancel_and_wait
from edge.tls_edge.certificates import make_challenge_certificate
from edge.tls_edge.index import SniIndex, load_min_tls_rows

__all__ = ["HandshakeRules", "ANSWER_POLL_SECONDS", "SETTLE_SECONDS"]

log = logging.getLogger(__name__)

#: How often every process looks for TLS-ALPN-01 answers published by another one (a query on a table holding only
#: the answers of orders in flight).
ANSWER_POLL_SECONDS = 1.0
#: How long a publish waits for the other processes / nodes to have looked (two polls and their work): the bound.
SETTLE_SECONDS = 2 * ANSWER_POLL_SECONDS + 0.5
_OVERLAP = dt.timedelta(seconds=2)


def _readable(database_url: str | None) -> bool:
    return bool(database_url) and ":memory:" not in database_url and database_url not in ("sqlite://", "sqlite:///")


class HandshakeRules:
    """This process's TLS-ALPN-01 answers and TLS floors: published locally, followed from the store.

    Args:
        index: the SNI index whose ``challenges`` / ``min_tls`` the handshake reads.
        database_url: the store to follow (None or an in-memory SQLite: local answers only, no following).
        floors_interval: seconds between two looks at changed domains' ``min_tls_version``.
        peers: other processes or nodes serve the same names (``workers`` > 1, a shared PostgreSQL): a publish
            then waits :data:`SETTLE_SECONDS` for them.
        ttl: seconds a locally published answer is served at most (the store's row has the same TTL).
    """

    def __init__(self, index: SniIndex, *, database_url: str | None, floors_interval: float = 30.0,
                 peers: bool = False, ttl: float = 3600.0, poll_interval: float = ANSWER_POLL_SECONDS) -> None:
        self.index = index
        self.store = EdgeStore(database_url) if _readable(database_url) else None  # type: ignore[arg-type]
        self.floors_interval = max(0.2, float(floors_interval))
        self.poll_interval = poll_interval
        self.peers = peers
        self.ttl = ttl
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[str, str]] = {}      # hostname -> (token, key authorization) installed
        self._pinned: dict[str, tuple[str, float]] = {}     # hostname -> (token, expiry): published by this process
        self._floors_at: dt.datetime | None = None
        self._floors_next = 0.0
        self._task: asyncio.Task | None = None
        self._failing = False

    # -- this process's own answers (edge.app.StorePublisher) ----------------------------------------------------
    async def publish(self, *, hostname: str, token: str, key_authorization: str) -> None:
        """Answer TLS-ALPN-01 for ``hostname`` in this process from now on (until :meth:`withdraw` or ``ttl``)."""
        await asyncio.to_thread(self._install, hostname, token, key_authorization)
        with self._lock:
            self._pinned[hostname] = (token, time.monotonic() + self.ttl)

    async def settle(self) -> None:
        """Wait (bounded: :data:`SETTLE_SECONDS`) until the other processes / nodes have looked at the store."""
        if self.peers:
            await asyncio.sleep(SETTLE_SECONDS)

    def withdraw(self, *, hostname: str, token: str) -> None:
        with self._lock:
            pin = self._pinned.get(hostname)
            if pin is not None and pin[0] == token:
                del self._pinned[hostname]
            cur = self._answers.get(hostname)
            if cur is not None and cur[0] == token:
                del self._answers[hostname]
                self.index.remove_challenge(hostname)

    def answering(self) -> dict[str, str]:
        """hostname -> token of the answers installed now."""
        with self._lock:
            return {h: t for h, (t, _ka) in self._answers.items()}

    def _install(self, hostname: str, token: str, key_authorization: str) -> None:
        """Make and build the challenge certificate (CPU: run in a thread), then serve it."""
        with self._lock:
            if self._answers.get(hostname) == (token, key_authorization):
                return
        cert_pem, key_pem = make_challenge_certificate(hostname, key_authorization)
        self.index.put_challenge(hostname, cert_pem, key_pem)
        with self._lock:
            self._answers[hostname] = (token, key_authorization)

    # -- following the store ---------------------------------------------------------------------------------------
    def sync_answers(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Serve exactly the store's answers (``store.readonly.EdgeStore.tls_alpn_answers`` rows) plus this
        process's own (pinned until withdrawn or expired). Builds: run in a thread."""
        want: dict[str, tuple[str, str]] = {}
        for token, hostname, key_authorization in rows:
            want[hostname] = (token, key_authorization)
        now = time.monotonic()
        with self._lock:
            for h, (_t, expires) in list(self._pinned.items()):
                if expires < now:
                    del self._pinned[h]
            pinned = dict(self._pinned)
            gone = [h for h in self._answers if h not in want and h not in pinned]
            for h in gone:
                del self._answers[h]
                self.index.remove_challenge(h)
        for h, (token, ka) in want.items():
            if h in pinned and pinned[h][0] != token:
                continue  # this process's own answer for the name wins
            try:
                self._install(h, token, ka)
            except Exception:  # noqa: BLE001 - one bad row (a name the certificate builder refuses) is skipped
                log.exception("cannot build the TLS-ALPN-01 answer of %s", h)

    def sync_floors(self) -> int:
        """Apply ``min_tls_version`` from the store: everything the first time, then the domains changed since the
        last look. Returns how many rows were applied. I/O: run in a thread."""
        assert self.store is not None
        now = dt.datetime.now(dt.timezone.utc)
        if self._floors_at is None:
            n = load_min_tls_rows(self.index, self.store.min_tls_rows())
        else:
            changed = self.store.changed_since(self._floors_at - _OVERLAP)
            n = load_min_tls_rows(self.index, self.store.min_tls_rows(changed), hostnames=changed) if changed else 0
        self._floors_at = now
        return n

    def wake(self) -> None:
        """Look at the changed domains' TLS floors at the next poll (e.g. right after an API change)."""
        self._floors_next = 0.0

    async def poll_once(self) -> None:
        """One look at the store: the answers; the floors when due."""
        if self.store is None:
            await asyncio.to_thread(self.sync_answers, ())
            return
        rows = await asyncio.to_thread(self.store.tls_alpn_answers)
        await asyncio.to_thread(self.sync_answers, rows)
        if time.monotonic() >= self._floors_next:
            await asyncio.to_thread(self.sync_floors)
            self._floors_next = time.monotonic() + self.floors_interval

    async def start(self) -> None:
        """One look now (TLS floors in place before the first handshake, if the store answers), then every
        :data:`ANSWER_POLL_SECONDS` in a task."""
        await self._poll_logged()
        self._task = asyncio.create_task(self._run(), name="handshake-rules")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self._poll_logged()

    async def _poll_logged(self) -> None:
        try:
            await self.poll_once()
            if self._failing:
                log.info("handshake rules: reading the store works again")
            self._failing = False
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the store may be briefly unavailable: keep what is in memory
            if not self._failing:
                log.warning("handshake rules: cannot read the store (%s); serving what is in memory", e)
            self._failing = True
