"""Several nodes on one PostgreSQL: certificate changes are announced with NOTIFY (``Storage.notify_change``) and
applied by every node's SNI index at once (LISTEN, :mod:`store.notify`). The periodic sweep (``changed_domains``)
remains the safety net, and is all SQLite needs. Coordination itself (who works on a name) is the store's leases;
there is no cluster protocol of our own."""

from __future__ import annotations

import asyncio
import logging

from acme_client.retry import RetrySchedule
from store.notify import listening

from edge.tasks import cancel_and_wait

__all__ = ["ChangeListener"]

log = logging.getLogger(__name__)
#: A lost LISTEN connection is opened again after 1 s, 2 s, 4 s, ... at most 30 s.
RECONNECT_SCHEDULE = RetrySchedule("listen-reconnect", (1.0,), factor=2.0, cap=30.0)


class ChangeListener:
    """A managed task that LISTENs and reloads the named hostnames into the local SNI index."""

    def __init__(self, *, database_url: str, on_change) -> None:
        self.url = database_url
        self.on_change = on_change
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listen")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with listening(self.url) as changes:
                    failures = 0
                    async for hostname in changes:
                        try:
                            await self.on_change([hostname])
                        except Exception:
                            log.exception("could not apply a change notification for %s", hostname)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                delay = RECONNECT_SCHEDULE.base(failures)
                log.warning("LISTEN connection lost (%s); retrying in %.0fs (the sweep keeps nodes in step)", e, delay)
                await asyncio.sleep(delay)
