"""A database blip on SQLite: another process holds the write lock past the busy timeout. Every write then fails
with :class:`store.protocol.StoreUnavailable` (nothing changed), reads go on (WAL), and the layers above report it
in one line -- no traceback, no 500 -- and carry on once the lock is gone."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from sqlalchemy import create_engine, event

from edge.events import EventBus
from store import SQLStorage, migrate
from store.protocol import StoreUnavailable


def _storage(path) -> SQLStorage:
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 0.2})

    @event.listens_for(engine, "connect")
    def _wal(conn, _record):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=200")
    migrate(engine)
    return SQLStorage(engine)


async def test_a_held_write_lock_is_store_unavailable_and_writes_resume_after(tmp_path):
    st = _storage(tmp_path / "e.db")
    t = await st.ensure_tenant("acme")
    await st.add_domain("before.example.com", t.id)
    holder = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process's long write transaction
    try:
        with pytest.raises(StoreUnavailable) as e:
            await st.add_domain("during.example.com", t.id)
        assert "locked" in e.value.reason
        with pytest.raises(StoreUnavailable):
            await st.add_event("before.example.com", "k", "m", {})
        assert (await st.get_domain("before.example.com")) is not None  # readers are not blocked (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await st.get_domain("during.example.com") is None  # the failed write changed nothing
    await st.add_domain("during.example.com", t.id)
    assert (await st.get_domain("during.example.com")) is not None
    st.close()


async def test_an_event_that_cannot_be_stored_is_one_warning_and_still_reaches_subscribers(tmp_path, caplog):
    st = _storage(tmp_path / "e.db")
    bus = EventBus(st)
    seen = []

    async def sub(hostname, kind, message, data):
        seen.append(kind)
    bus.subscribe(sub)
    holder = sqlite3.connect(tmp_path / "e.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.INFO, logger="edgecert.events"):
            await bus.emit("shop.example.com", "challenge_valid", "the CA validated shop.example.com")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert seen == ["challenge_valid"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(r.exc_info is None for r in warnings), [r.getMessage() for r in warnings]
    assert "could not store event challenge_valid" in warnings[0].getMessage()
    st.close()
