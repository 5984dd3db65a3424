"""Change announcements between processes and nodes sharing one PostgreSQL: NOTIFY on :data:`CHANNEL` (sent by
:meth:`store.sql.SQLStorage.notify_change`), LISTEN here. SQLite has no such thing: one machine's processes see each
other's changes at their next sweep."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

__all__ = ["CHANNEL", "listening", "libpq_url"]

CHANNEL = "edgecert_changes"


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's spelling) -> ``postgresql://...`` (libpq's)."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://"):
        if sqlalchemy_url.startswith(prefix):
            return "postgresql://" + sqlalchemy_url[len(prefix):]
    raise ValueError("not a PostgreSQL URL")


@contextlib.asynccontextmanager
async def listening(database_url: str) -> AsyncIterator[AsyncIterator[str]]:
    """LISTEN on :data:`CHANNEL` over a connection of its own; yields the iterator of announced payloads
    (hostnames). Connection errors propagate (the caller reconnects)."""
    import psycopg
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        await conn.execute(f"LISTEN {CHANNEL}")
        yield (n.payload async for n in conn.notifies())
