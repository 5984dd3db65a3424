"""Several nodes on one PostgreSQL: certificate changes are announced with NOTIFY and applied by every node's SNI
index at once (LISTEN). The periodic sweep (``changed_domains``) remains the safety net, and is all SQLite needs.
Coordination itself (who works on a name) is the store's leases; there is no cluster protocol of our own."""

from __future__ import annotations

import asyncio
import logging

from edge.tasks import cancel_and_wait

__all__ = ["CHANNEL", "ChangeListener", "notify_change"]

log = logging.getLogger(__name__)
CHANNEL = "edgecert_changes"


def _libpq_url(sqlalchemy_url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://"):
        if sqlalchemy_url.startswith(prefix):
            return "postgresql://" + sqlalchemy_url[len(prefix):]
    raise ValueError("not a PostgreSQL URL")


def notify_change(storage, hostname: str) -> None:
    """Announce that ``hostname``'s served certificate changed (PostgreSQL only; a no-op on SQLite)."""
    if storage.engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text
    with storage.engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:c, :h)"), {"c": CHANNEL, "h": hostname})


class ChangeListener:
    """A managed task that LISTENs and reloads the named hostnames into the local SNI index."""

    def __init__(self, *, database_url: str, on_change) -> None:
        self.url = _libpq_url(database_url)
        self.on_change = on_change
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listen")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        import psycopg
        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 1.0
                    async for n in conn.notifies():
                        try:
                            await self.on_change([n.payload])
                        except Exception:
                            log.exception("could not apply a change notification for %s", n.payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("LISTEN connection lost (%s); retrying in %.0fs (the sweep keeps nodes in step)", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
