"""The storage seam on SQLite and on PostgreSQL (a throwaway cluster or $EDGECERT_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from store import Conflict, NotFound, SQLStorage, make_engine, migrate, open_storage
from store.models import CertificateVersion, utcnow


async def test_domains_tenants_tokens_events(database_url):
    st = open_storage(database_url)
    try:
        t = await st.ensure_tenant("acme")
        assert (await st.ensure_tenant("acme")).id == t.id
        d = await st.add_domain("shop.example.com", t.id, next_check_at=utcnow())
        with pytest.raises(Conflict):
            await st.add_domain("shop.example.com", t.id)
        assert (await st.get_domain("shop.example.com")).tenant_id == t.id
        assert await st.get_domain("nope.example.com") is None
        await st.update_domain("shop.example.com", status="active", last_error=None)
        with pytest.raises(NotFound):
            await st.update_domain("nope.example.com", status="x")
        assert [x.hostname for x in await st.list_domains(status="active")] == ["shop.example.com"]
        assert await st.count_domains_by_status() == {"active": 1}
        due = await st.due_domains(utcnow() + dt.timedelta(seconds=1))
        assert [x.hostname for x in due] == ["shop.example.com"]
        await st.add_token(t.id, "ect_secret")
        assert (await st.tenant_for_token("ect_secret")).name == "acme"
        assert await st.tenant_for_token("ect_other") is None
        assert await st.revoke_tokens(t.id) == 1
        assert await st.tenant_for_token("ect_secret") is None
        for i in range(5):
            await st.add_event("shop.example.com", "k", f"m{i}", {"i": i})
        evs = await st.list_events("shop.example.com", limit=3)
        assert [e.message for e in evs] == ["m2", "m3", "m4"]
        assert json.loads(evs[0].data) == {"i": 2}
        c = await st.add_certificate(CertificateVersion(
            domain_id=d.id, names='["shop.example.com"]', serial="ab", not_before=utcnow(),
            not_after=utcnow() + dt.timedelta(days=90), issuer="CN=x", sha256="00" * 32, cert_pem="c",
            chain_pem="", key_enc=b"EC1" + b"\0" * 40, key_type="ecdsa-p256"))
        pairs = await st.current_certificates()
        assert [(x.hostname, y.id) for x, y in pairs] == [("shop.example.com", c.id)]
        assert pairs[0][1].not_after.tzinfo is not None
        await st.put_challenge("tok", "tok.thumb", "shop.example.com", ttl=60)
        assert (await st.get_challenge("tok")).key_authorization == "tok.thumb"
        await st.put_challenge("old", "x", "shop.example.com", ttl=-1)
        assert await st.get_challenge("old") is None
        await st.delete_challenge("tok")
        assert await st.get_challenge("tok") is None
        await st.delete_domain("shop.example.com")
        assert await st.get_domain("shop.example.com") is None
    finally:
        st.close()


async def test_leases_exclude_other_owners_and_expire(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    a, b = SQLStorage(engine, owner="node-a"), SQLStorage(engine, owner="node-b")
    try:
        assert await a.try_lock("domain:x", ttl=30)
        assert not await b.try_lock("domain:x", ttl=30)
        await a.unlock("domain:x")
        assert await b.try_lock("domain:x", ttl=0.2)
        await asyncio.sleep(0.4)
        assert await a.try_lock("domain:x", ttl=30)  # b's lease expired

        # Concurrent contenders: exactly one wins each round.
        results = await asyncio.gather(*[SQLStorage(engine, owner=f"n{i}").try_lock("race", ttl=30)
                                         for i in range(8)])
        assert sum(results) == 1

        order: list[str] = []

        async def worker(s: SQLStorage, tag: str) -> None:
            async with s.lock("serial", ttl=10, timeout=10):
                order.append(tag + "+")
                await asyncio.sleep(0.05)
                order.append(tag + "-")
        await asyncio.gather(worker(a, "a"), worker(b, "b"))
        assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    finally:
        engine.dispose()


def test_migrations_upgrade_a_populated_0001_database(database_url):
    """Schema changes go through alembic: a database at 0001 with rows upgrades to head, rows intact."""
    from alembic import command
    from sqlalchemy import inspect, text

    from store.database import alembic_config
    engine = make_engine(database_url)
    try:
        cfg = alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (name, created_at) VALUES ('t', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO domains (hostname, tenant_id, status, attempts, dns_attempts, "
                              "renew_requested, created_at, updated_at) VALUES ('old.example.com', "
                              "(SELECT id FROM tenants WHERE name = 't'), 'active', 0, 0, false, CURRENT_TIMESTAMP, "
                              "CURRENT_TIMESTAMP)"))
        migrate(engine)
        cols = {c["name"] for c in inspect(engine).get_columns("domains")}
        assert {"ari_window_start", "hook_pending", "last_probe"} <= cols
        assert "webhook_deliveries" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            row = conn.execute(text("SELECT hostname, hook_pending FROM domains")).one()
        assert row[0] == "old.example.com" and not row[1]
    finally:
        engine.dispose()


async def test_rate_ledger_rows_are_counted_released_and_pruned(database_url):
    st = open_storage(database_url)
    try:
        now = utcnow()
        old = await st.ledger_add("certificate", "regdom:example.com", at=now - dt.timedelta(days=10))
        recent = await st.ledger_add("certificate", "regdom:example.com", at=now - dt.timedelta(days=1))
        released = await st.ledger_add("certificate", "regdom:example.com", at=now)
        await st.ledger_delete(released)
        since = now - dt.timedelta(days=30)
        assert len(await st.ledger_times("certificate", "regdom:example.com", since)) == 2
        assert await st.ledger_prune(now - dt.timedelta(days=8)) == 1
        times = await st.ledger_times("certificate", "regdom:example.com", since)
        assert len(times) == 1 and abs((times[0] - (now - dt.timedelta(days=1))).total_seconds()) < 1
        assert old != recent
    finally:
        st.close()


async def test_webhook_delivery_log_claims_once_and_notify_is_safe(database_url):
    from store import Storage
    from store.models import WebhookDelivery
    st = open_storage(database_url)
    try:
        assert isinstance(st, Storage)
        now = utcnow()
        assert await st.next_webhook_attempt_at() is None
        assert await st.add_webhook_deliveries([WebhookDelivery(url="http://x", hostname=f"h{i}.example.com",
                                                                kind="swapped", payload="{}", next_attempt_at=now)
                                                for i in range(2)]) == 2
        nxt = await st.next_webhook_attempt_at()
        assert nxt.tzinfo is not None and abs((nxt - now).total_seconds()) < 1
        due = await st.due_webhook_deliveries(now + dt.timedelta(seconds=1))
        assert [d.hostname for d in due] == ["h0.example.com", "h1.example.com"]
        first = due[0]
        until = now + dt.timedelta(seconds=60)
        claims = await asyncio.gather(*(st.claim_webhook_delivery(first.id, attempts=0, until=until)
                                        for _ in range(3)))
        assert sorted(claims) == [False, False, True]
        await st.update_webhook_delivery(first.id, status="delivered", next_attempt_at=None)
        assert [d.id for d in await st.list_webhook_deliveries(status="delivered")] == [first.id]
        assert [d.hostname for d in await st.list_webhook_deliveries(after_id=first.id)] == ["h1.example.com"]
        assert [d.hostname for d in await st.list_webhook_deliveries(hostname="h1.example.com", kind="swapped")] \
            == ["h1.example.com"]
        await st.notify_change("h0.example.com")  # NOTIFY on PostgreSQL, nothing on SQLite
        assert st.notifies == database_url.startswith("postgresql")
    finally:
        st.close()


def test_a_new_sqlite_database_is_owner_only_with_its_wal(tmp_path, caplog):
    """Created 0600 whatever the umask, and SQLite's -wal/-shm files follow the database file's mode."""
    import os
    import stat
    old = os.umask(0o022)
    try:
        db = tmp_path / "sub" / "edgecert.db"
        engine = make_engine(f"sqlite:///{db}")
        migrate(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        for f in (db, tmp_path / "sub" / "edgecert.db-wal", tmp_path / "sub" / "edgecert.db-shm"):
            assert f.exists() and stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
        engine.dispose()
        shared = tmp_path / "shared.db"
        shared.touch(mode=0o644)
        with caplog.at_level("WARNING"):
            make_engine(f"sqlite:///{shared}").dispose()
        assert "readable by other users" in caplog.text
        assert stat.S_IMODE(shared.stat().st_mode) == 0o644  # left as the operator made it
    finally:
        os.umask(old)


async def test_a_journal_entry_of_a_removed_domain_is_never_written_again(database_url):
    """DELETE /v1/domains/... while an order is in flight: the entry went with the domain; the in-flight step's save is
    NotFound (the manager drops the name quietly), it never re-creates the entry nor overwrites a newer entry that
    took its id (SQLite reuses the highest rowid: here the new domain and its entry get the removed ones' ids), and
    no entry is inserted for a domain that is not there."""
    from store.models import AcmeAccount, AcmeOrder
    st = open_storage(database_url)
    try:
        t = await st.ensure_tenant("racer")
        acct = await st.save_account(AcmeAccount(directory_url="https://ca.test/dir", key_enc=b"k", uri="u"))
        d1 = await st.add_domain("gone.example.com", t.id)
        stale = await st.save_order(AcmeOrder(domain_id=d1.id, account_id=acct.id, names='["gone.example.com"]',
                                              step="ordered", status="pending"))
        stale = await st.save_order(stale)  # an ordinary update works
        await st.delete_domain("gone.example.com")
        d2 = await st.add_domain("new.example.com", t.id)
        newer = await st.save_order(AcmeOrder(domain_id=d2.id, account_id=acct.id, names='["new.example.com"]',
                                              step="ordered", status="pending"))
        stale.step, stale.error = "invalid", "the CA could not validate"
        with pytest.raises(NotFound):
            await st.save_order(stale)
        with pytest.raises(NotFound):
            await st.save_order(AcmeOrder(domain_id=d2.id + 1000, account_id=acct.id, names='["gone.example.com"]',
                                          step="intent", status="creating"))
        assert (await st.open_order(d2.id)).id == newer.id
        got = await st.get_order(newer.id)
        assert got.domain_id == d2.id and got.step == "ordered" and got.error is None
    finally:
        st.close()
