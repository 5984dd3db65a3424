"""SQLStorage: the :class:`~store.protocol.Storage` contract over SQLAlchemy/SQLModel, SQLite or PostgreSQL.

One concern: every query of the service lives here (and in :mod:`store.notify` for LISTEN); callers above see only
the methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import uuid
from typing import Any, AsyncIterator, Callable, Sequence, TypeVar

from sqlalchemy import delete, func, or_, text, update
from sqlalchemy.engine import Engine

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session, select

from .models import (AcmeAccount, AcmeOrder, ApiToken, CertificateVersion, ChallengeToken, Domain, DomainEvent,
                     JournalStep, Lease, RateLedgerEntry, Tenant, WebhookDelivery, natural_key, utcnow)
from .notify import CHANNEL
from .protocol import Conflict, LockTimeout, NotFound, Storage, StoreUnavailable

__all__ = ["Storage", "SQLStorage", "NotFound", "Conflict", "LockTimeout", "StoreUnavailable", "token_hash",
           "metadata_text"]

log = logging.getLogger(__name__)
T = TypeVar("T")


#: SQLSTATEs of a server that is going away or not there yet: admin_shutdown, crash_shutdown, cannot_connect_now.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})
#: SQLite primary result codes of a database that cannot be used right now, whatever the statement: another process
#: held its write lock past the busy timeout (BUSY, LOCKED), the disk is full or failing (FULL, IOERR), the file
#: cannot be opened or written (CANTOPEN, READONLY). The transaction is rolled back: nothing changed.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 8, 10, 13, 14})


def _connection_level(e: DBAPIError) -> bool:
    """True when ``e`` says the database cannot be reached (not that a statement failed)."""
    if e.connection_invalidated:
        return True
    orig = e.orig
    state = getattr(orig, "sqlstate", None)
    if state is not None:
        return state.startswith("08") or state in _UNAVAILABLE_STATES  # class 08: connection exception
    if type(orig).__module__.startswith("psycopg"):
        # psycopg raises OperationalError (or a subclass such as ConnectionTimeout) without a SQLSTATE when it
        # cannot connect or the connection broke (refused, reset, timeout).
        return any(k.__name__ == "OperationalError" for k in type(orig).__mro__)
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE  # extended codes keep the primary in the low byte


@contextlib.contextmanager
def _typed_outage() -> Any:
    """Turn connection-level driver errors into :class:`StoreUnavailable`; everything else passes unchanged."""
    try:
        yield
    except DBAPIError as e:
        if _connection_level(e):
            raise StoreUnavailable(str(e.orig).strip().splitlines()[0] if e.orig else type(e).__name__) from e
        raise
    except PoolTimeout as e:  # every pooled connection is stuck on a dead server
        raise StoreUnavailable(f"no database connection available: {e}") from e
    except StaleDataError as e:  # the row was deleted by another unit of work between our read and our write
        raise NotFound(f"removed concurrently ({e})") from e


def _naive(t: dt.datetime | None) -> dt.datetime | None:
    """A timestamp without its zone (PostgreSQL hands them back aware, SQLite naive; both are UTC here)."""
    return t.replace(tzinfo=None) if t is not None and t.tzinfo is not None else t


def metadata_text(metadata: dict | str | None) -> str | None:
    """A domain's ``custom_metadata`` as stored: canonical JSON (sorted keys, no spaces, ASCII), which the
    ``metadata`` filter of :meth:`SQLStorage.list_domains` relies on; None or an empty object: None."""
    if metadata is None or metadata == {}:
        return None
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


def _domain_fields(fields: dict) -> dict:
    if "custom_metadata" in fields:
        fields = {**fields, "custom_metadata": metadata_text(fields["custom_metadata"])}
    return fields


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SQLStorage:
    """:class:`Storage` over SQLAlchemy/SQLModel: SQLite for one machine, PostgreSQL for several.

    Each call is one unit of work (one session, one transaction) run in a worker thread, so the event loop never
    waits on the database.
    """

    def __init__(self, engine: Engine, *, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local_locks: dict[str, asyncio.Lock] = {}

    # -- plumbing --------------------------------------------------------------------------------------------
    def _tx(self, fn: Callable[[Session], T]) -> T:
        with _typed_outage(), Session(self.engine, expire_on_commit=False) as s:
            try:
                out = fn(s)
                s.commit()
                return out
            except BaseException:
                s.rollback()
                raise

    async def _run(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.to_thread(self._tx, fn)

    def close(self) -> None:
        self.engine.dispose()

    # -- tenants -----------------------------------------------------------------------------------------------
    async def ensure_tenant(self, name: str) -> Tenant:
        def fn(s: Session) -> Tenant:
            t = s.exec(select(Tenant).where(Tenant.name == name)).first()
            if t:
                return t
            t = Tenant(name=name)
            s.add(t)
            try:
                s.flush()
            except IntegrityError:
                s.rollback()
                t2 = s.exec(select(Tenant).where(Tenant.name == name)).first()
                assert t2 is not None
                return t2
            return t
        return await self._run(fn)

    async def get_tenant(self, name: str) -> Tenant | None:
        return await self._run(lambda s: s.exec(select(Tenant).where(Tenant.name == name)).first())

    async def get_tenant_by_id(self, tenant_id: int) -> Tenant | None:
        return await self._run(lambda s: s.get(Tenant, tenant_id))

    async def list_tenants(self) -> list[Tenant]:
        return await self._run(lambda s: list(s.exec(select(Tenant).order_by(Tenant.name))))

    async def set_tenant_origin(self, name: str, origin: str | None) -> Tenant:
        def fn(s: Session) -> Tenant:
            t = s.exec(select(Tenant).where(Tenant.name == name)).first()
            if t is None:
                raise NotFound(name)
            t.origin = origin
            s.add(t)
            # Its domains' routing changed: every process following updated_at reloads them.
            s.exec(update(Domain).where(Domain.tenant_id == t.id).values(updated_at=utcnow()))
            return t
        return await self._run(fn)

    async def add_token(self, tenant_id: int, token: str) -> ApiToken:
        def fn(s: Session) -> ApiToken:
            t = ApiToken(tenant_id=tenant_id, token_hash=token_hash(token), prefix=token[:8])
            s.add(t)
            s.flush()
            return t
        return await self._run(fn)

    async def revoke_tokens(self, tenant_id: int) -> int:
        def fn(s: Session) -> int:
            r = s.exec(update(ApiToken).where(ApiToken.tenant_id == tenant_id, ApiToken.revoked_at.is_(None))
                       .values(revoked_at=utcnow()))
            return r.rowcount or 0
        return await self._run(fn)

    async def tenant_for_token(self, token: str) -> Tenant | None:
        h = token_hash(token)

        def fn(s: Session) -> Tenant | None:
            row = s.exec(select(ApiToken).where(ApiToken.token_hash == h, ApiToken.revoked_at.is_(None))).first()
            return s.get(Tenant, row.tenant_id) if row else None
        return await self._run(fn)

    # -- domains -----------------------------------------------------------------------------------------------
    async def add_domain(self, hostname: str, tenant_id: int, **fields: Any) -> Domain:
        def fn(s: Session) -> Domain:
            d = Domain(hostname=hostname, tenant_id=tenant_id, sort_key=natural_key(hostname),
                       **_domain_fields(fields))
            s.add(d)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(hostname) from None
            return d
        return await self._run(fn)

    async def supersede_unproven_claim(self, hostname: str, tenant_id: int, **fields: Any) -> tuple[Domain, int]:
        """Replace another tenant's unproven claim on ``hostname`` (``ownership_pending``) by a new domain row of
        ``tenant_id``, in one transaction; returns (the new row, the tenant id whose claim was dropped).
        Raises :class:`Conflict` when the name is held otherwise (proven, operator-added, or the same tenant), and
        :class:`NotFound` when nobody holds it (the caller then adds it)."""
        def fn(s: Session) -> tuple[Domain, int]:
            old = s.exec(select(Domain).where(Domain.hostname == hostname)).first()
            if old is None:
                raise NotFound(hostname)
            if not old.ownership_pending or old.tenant_id == tenant_id:
                raise Conflict(hostname)
            dropped = old.tenant_id
            s.exec(delete(CertificateVersion).where(CertificateVersion.domain_id == old.id))
            s.exec(delete(AcmeOrder).where(AcmeOrder.domain_id == old.id))
            s.exec(delete(ChallengeToken).where(ChallengeToken.hostname == hostname))
            s.delete(old)
            s.flush()
            d = Domain(hostname=hostname, tenant_id=tenant_id, sort_key=natural_key(hostname),
                       **_domain_fields(fields))
            s.add(d)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(hostname) from None
            return d, dropped
        return await self._run(fn)

    async def get_domain(self, hostname: str) -> Domain | None:
        return await self._run(lambda s: s.exec(select(Domain).where(Domain.hostname == hostname)).first())

    def _domain_filters(self, q, status: str | None = None, tenant_id: int | None = None, search: str | None = None,
                        prefix: str | None = None, issuer: str | None = None,
                        expiring_before: dt.datetime | None = None, probe: str | None = None,
                        metadata: tuple[str, str] | None = None):
        if status:
            q = q.where(Domain.status == status)
        if tenant_id is not None:
            q = q.where(Domain.tenant_id == tenant_id)
        if search:
            q = q.where(Domain.hostname.contains(search.lower(), autoescape=True))
        if prefix:
            q = q.where(Domain.hostname.startswith(prefix.lower(), autoescape=True))
        if issuer or expiring_before is not None:
            c = select(CertificateVersion.id)
            if issuer:
                c = c.where(or_(CertificateVersion.issuer_directory == issuer,
                                func.lower(CertificateVersion.issuer).contains(issuer.lower(), autoescape=True)))
            if expiring_before is not None:
                c = c.where(CertificateVersion.not_after < expiring_before)
            q = q.where(Domain.current_cert_id.in_(c))
        if probe == "failing":
            q = q.where(Domain.last_probe_ok.is_(False))
        elif probe == "ok":
            q = q.where(Domain.last_probe_ok.is_(True))
        elif probe == "unknown":
            q = q.where(Domain.last_probe_ok.is_(None))
        if metadata is not None:
            # custom_metadata is canonical JSON (metadata_text: sorted keys, no spaces, strings only), where a
            # quote inside a string is always escaped: the pair's exact text occurs iff the object holds the pair.
            # An exact (case-sensitive) substring test, the same on SQLite (instr) and PostgreSQL (strpos).
            pair = json.dumps(metadata[0]) + ":" + json.dumps(metadata[1])
            find = func.strpos if self.engine.dialect.name == "postgresql" else func.instr
            q = q.where(Domain.custom_metadata.is_not(None), find(Domain.custom_metadata, pair) > 0)
        return q

    async def list_domains(self, *, limit: int = 1000, offset: int = 0, after: tuple[str, str] | None = None,
                           **filters: Any) -> list[Domain]:
        def fn(s: Session) -> list[Domain]:
            q = self._domain_filters(select(Domain), **filters)
            key = func.coalesce(Domain.sort_key, Domain.hostname)
            if after is not None:
                k, h = after
                q = q.where(or_(key > k, (key == k) & (Domain.hostname > h)))
            return list(s.exec(q.order_by(key, Domain.hostname).offset(offset).limit(limit)))
        return await self._run(fn)

    async def count_domains(self, **filters: Any) -> int:
        def fn(s: Session) -> int:
            q = self._domain_filters(select(func.count()).select_from(Domain), **filters)
            return int(s.exec(q).one())
        return await self._run(fn)

    async def update_domain(self, hostname: str, **fields: Any) -> Domain:
        def fn(s: Session) -> Domain:
            d = s.exec(select(Domain).where(Domain.hostname == hostname)).first()
            if d is None:
                raise NotFound(hostname)
            for k, v in _domain_fields(fields).items():
                if not hasattr(d, k):
                    raise AttributeError(k)
                setattr(d, k, v)
            d.updated_at = utcnow()
            s.add(d)
            return d
        return await self._run(fn)

    async def delete_domain(self, hostname: str) -> None:
        def fn(s: Session) -> None:
            d = s.exec(select(Domain).where(Domain.hostname == hostname)).first()
            if d is None:
                raise NotFound(hostname)
            s.exec(delete(CertificateVersion).where(CertificateVersion.domain_id == d.id))
            s.exec(delete(AcmeOrder).where(AcmeOrder.domain_id == d.id))
            s.exec(delete(ChallengeToken).where(ChallengeToken.hostname == hostname))
            s.delete(d)
        await self._run(fn)

    async def due_domains(self, now: dt.datetime, *, limit: int = 500) -> list[Domain]:
        def fn(s: Session) -> list[Domain]:
            q = (select(Domain).where(Domain.next_check_at.is_not(None), Domain.next_check_at <= now)
                 .order_by(Domain.next_check_at).limit(limit))
            return list(s.exec(q))
        return await self._run(fn)

    async def count_domains_by_status(self) -> dict[str, int]:
        def fn(s: Session) -> dict[str, int]:
            rows = s.exec(select(Domain.status, func.count()).group_by(Domain.status)).all()
            return {status: n for status, n in rows}
        return await self._run(fn)

    async def changed_domains(self, since: dt.datetime) -> list[Domain]:
        return await self._run(lambda s: list(s.exec(select(Domain).where(Domain.updated_at >= since))))

    # -- events --------------------------------------------------------------------------------------------------
    async def add_event(self, hostname: str, kind: str, message: str, data: dict | None = None) -> DomainEvent:
        def fn(s: Session) -> DomainEvent:
            e = DomainEvent(hostname=hostname, kind=kind, message=message,
                            data=json.dumps(data, default=str) if data else None)
            s.add(e)
            s.flush()
            return e
        return await self._run(fn)

    async def list_events(self, hostname: str, *, limit: int = 100, after_id: int = 0) -> list[DomainEvent]:
        def fn(s: Session) -> list[DomainEvent]:
            q = (select(DomainEvent).where(DomainEvent.hostname == hostname, DomainEvent.id > after_id)
                 .order_by(DomainEvent.id.desc()).limit(limit))
            return list(reversed(list(s.exec(q))))
        return await self._run(fn)

    # -- challenges ----------------------------------------------------------------------------------------------
    async def put_challenge(self, token: str, key_authorization: str, hostname: str, *, kind: str = "http-01",
                            ttl: float = 3600) -> None:
        def fn(s: Session) -> None:
            c = s.get(ChallengeToken, token) or ChallengeToken(token=token, key_authorization="", hostname=hostname,
                                                               expires_at=utcnow())
            c.key_authorization = key_authorization
            c.hostname = hostname
            c.kind = kind
            c.expires_at = utcnow() + dt.timedelta(seconds=ttl)
            s.add(c)
        await self._run(fn)

    async def get_challenge(self, token: str) -> ChallengeToken | None:
        def fn(s: Session) -> ChallengeToken | None:
            c = s.get(ChallengeToken, token)
            if c is not None and c.expires_at < utcnow():
                return None
            return c
        return await self._run(fn)

    async def delete_challenge(self, token: str) -> None:
        await self._run(lambda s: s.exec(delete(ChallengeToken).where(ChallengeToken.token == token)))

    # -- accounts and orders ---------------------------------------------------------------------------------
    async def get_account(self, directory_url: str, name: str = "default") -> AcmeAccount | None:
        return await self._run(lambda s: s.exec(select(AcmeAccount).where(
            AcmeAccount.directory_url == directory_url, AcmeAccount.name == name)).first())

    async def save_account(self, account: AcmeAccount) -> AcmeAccount:
        def fn(s: Session) -> AcmeAccount:
            merged = s.merge(account)
            s.flush()
            return merged
        return await self._run(fn)

    async def save_order(self, order: AcmeOrder) -> AcmeOrder:
        """Insert or update a journal entry. :class:`NotFound` when its domain was removed meanwhile (the entry went
        with it): an update never re-creates a removed entry (nor overwrites a newer one that reused its id, as
        SQLite reuses the highest rowid), an insert never dangles."""
        def fn(s: Session) -> AcmeOrder:
            order.updated_at = utcnow()
            if order.id is not None:
                current = s.get(AcmeOrder, order.id)
                if current is None or current.domain_id != order.domain_id or \
                        _naive(current.created_at) != _naive(order.created_at):
                    raise NotFound(f"order journal entry {order.id} (its domain was removed)")
            elif s.get(Domain, order.domain_id) is None:
                raise NotFound(f"domain id {order.domain_id} (removed)")
            merged = s.merge(order)
            s.flush()
            return merged
        return await self._run(fn)

    async def open_order(self, domain_id: int) -> AcmeOrder | None:
        """The domain's open order journal entry (any step that is not terminal), the newest."""
        return await self._run(lambda s: s.exec(
            select(AcmeOrder).where(AcmeOrder.domain_id == domain_id, AcmeOrder.step.in_(JournalStep.OPEN))
            .order_by(AcmeOrder.id.desc())).first())

    async def open_journal(self) -> list[tuple[str, AcmeOrder]]:
        def fn(s: Session) -> list[tuple[str, AcmeOrder]]:
            q = (select(Domain.hostname, AcmeOrder).join(Domain, Domain.id == AcmeOrder.domain_id)
                 .where(AcmeOrder.step.in_(JournalStep.OPEN)).order_by(AcmeOrder.id))
            return [(h, o) for h, o in s.exec(q).all()]
        return await self._run(fn)

    async def get_order(self, order_id: int) -> AcmeOrder | None:
        return await self._run(lambda s: s.get(AcmeOrder, order_id))

    async def install_from_journal(self, order_id: int, cert: CertificateVersion) -> CertificateVersion:
        def fn(s: Session) -> CertificateVersion:
            o = s.get(AcmeOrder, order_id)
            if o is None:
                raise NotFound(f"order {order_id}")
            if o.cert_id is not None:
                existing = s.get(CertificateVersion, o.cert_id)
                if existing is not None:
                    return existing
            cert.order_id = order_id
            s.add(cert)
            s.flush()
            o.cert_id = cert.id
            o.step = JournalStep.INSTALLED
            o.updated_at = utcnow()
            s.add(o)
            return cert
        return await self._run(fn)

    # -- certificates ------------------------------------------------------------------------------------------
    async def add_certificate(self, cert: CertificateVersion, *, make_current: bool = True) -> CertificateVersion:
        def fn(s: Session) -> CertificateVersion:
            s.add(cert)
            s.flush()
            if make_current:
                s.exec(update(Domain).where(Domain.id == cert.domain_id)
                       .values(current_cert_id=cert.id, updated_at=utcnow()))
            return cert
        return await self._run(fn)

    async def get_certificate(self, cert_id: int) -> CertificateVersion | None:
        return await self._run(lambda s: s.get(CertificateVersion, cert_id))

    def served_rows(self, hostnames: Sequence[str] | None = None) -> list[tuple]:
        """Fast path for loading the SNI index (no ORM objects): (hostname, cert_id, serial, sha256, not_after,
        names, cert_pem, chain_pem, key_enc) for every domain's current certificate. Runs in the calling thread."""
        from sqlalchemy import select as sa_select
        d, c = Domain.__table__, CertificateVersion.__table__
        q = (sa_select(d.c.hostname, c.c.id, c.c.serial, c.c.sha256, c.c.not_after, c.c.names, c.c.cert_pem,
                       c.c.chain_pem, c.c.key_enc).select_from(d.join(c, c.c.id == d.c.current_cert_id)))
        if hostnames is not None:
            q = q.where(d.c.hostname.in_(list(hostnames)))
        with _typed_outage(), self.engine.connect() as conn:
            return conn.execute(q).all()

    def host_settings_rows(self, hostnames: Sequence[str] | None = None) -> list[tuple]:
        """(hostname, origin, min_tls_version, http2, origin_public_only) of every domain (or of ``hostnames``) with a
        per-hostname setting; ``origin`` is the domain's, else its tenant's. Blocking: call it from a worker
        thread."""
        from sqlalchemy import select as sa_select
        d, t = Domain.__table__, Tenant.__table__
        q = (sa_select(d.c.hostname, func.coalesce(d.c.origin, t.c.origin), d.c.min_tls_version, d.c.http2,
                       d.c.origin_public_only)
             .select_from(d.join(t, t.c.id == d.c.tenant_id))
             .where(or_(d.c.origin.is_not(None), t.c.origin.is_not(None), d.c.min_tls_version.is_not(None),
                        d.c.http2.is_not(None))))
        if hostnames is not None:
            q = q.where(d.c.hostname.in_(list(hostnames)))
        with _typed_outage(), self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(q).all()]

    async def current_certificates(self, hostnames: Sequence[str] | None = None
                                   ) -> list[tuple[Domain, CertificateVersion]]:
        def fn(s: Session) -> list[tuple[Domain, CertificateVersion]]:
            q = select(Domain, CertificateVersion).join(
                CertificateVersion, CertificateVersion.id == Domain.current_cert_id)
            if hostnames is not None:
                q = q.where(Domain.hostname.in_(list(hostnames)))
            return [(d, c) for d, c in s.exec(q).all()]
        return await self._run(fn)

    # -- rate-limit ledger -------------------------------------------------------------------------------------
    async def ledger_add(self, kind: str, scope: str, *, account_id: int | None = None,
                         at: dt.datetime | None = None, order_id: int | None = None, reserved: bool = False) -> int:
        def fn(s: Session) -> int:
            e = RateLedgerEntry(kind=kind, scope=scope, account_id=account_id, created_at=at or utcnow(),
                                order_id=order_id, reserved=reserved, owner=self.owner if reserved else None)
            s.add(e)
            s.flush()
            assert e.id is not None
            return e.id
        return await self._run(fn)

    async def ledger_delete(self, entry_id: int) -> None:
        await self._run(lambda s: s.exec(delete(RateLedgerEntry).where(RateLedgerEntry.id == entry_id)))

    async def ledger_confirm(self, entry_ids: Sequence[int], *, order_id: int | None,
                             at: dt.datetime | None = None) -> int:
        if not entry_ids:
            return 0
        values: dict[str, Any] = dict(reserved=False, order_id=order_id)
        if at is not None:
            values["created_at"] = at
        return await self._run(lambda s: s.exec(
            update(RateLedgerEntry).where(RateLedgerEntry.id.in_(list(entry_ids)), RateLedgerEntry.reserved.is_(True))
            .values(**values)).rowcount or 0)

    async def ledger_release(self, entry_ids: Sequence[int]) -> int:
        if not entry_ids:
            return 0
        return await self._run(lambda s: s.exec(
            delete(RateLedgerEntry).where(RateLedgerEntry.id.in_(list(entry_ids)),
                                          RateLedgerEntry.reserved.is_(True))).rowcount or 0)

    async def ledger_drop_reservations(self, before: dt.datetime) -> int:
        def fn(s: Session) -> int:
            n = s.exec(delete(RateLedgerEntry).where(RateLedgerEntry.reserved.is_(True),
                                                     RateLedgerEntry.created_at < before)).rowcount or 0
            owners = {o for o in s.exec(select(RateLedgerEntry.owner).where(
                RateLedgerEntry.reserved.is_(True)).distinct()).all() if o}
            dead = [o for o in owners if self._dead_local_owner(o)]
            if dead:
                n += s.exec(delete(RateLedgerEntry).where(RateLedgerEntry.reserved.is_(True),
                                                          RateLedgerEntry.owner.in_(dead))).rowcount or 0
            return n
        return await self._run(fn)

    async def ledger_counted_orders(self, kind: str, order_ids: Sequence[int]) -> set[int]:
        if not order_ids:
            return set()
        return set(await self._run(lambda s: list(s.exec(
            select(RateLedgerEntry.order_id).where(RateLedgerEntry.kind == kind,
                                                   RateLedgerEntry.reserved.is_(False),
                                                   RateLedgerEntry.order_id.in_(list(order_ids)))))))

    async def journal_since(self, since: dt.datetime) -> list[AcmeOrder]:
        return await self._run(lambda s: list(s.exec(
            select(AcmeOrder).where(AcmeOrder.created_at >= since, AcmeOrder.url.is_not(None)))))

    async def ledger_prune(self, before: dt.datetime) -> int:
        def fn(s: Session) -> int:
            return s.exec(delete(RateLedgerEntry).where(RateLedgerEntry.created_at < before)).rowcount or 0
        return await self._run(fn)

    async def ledger_times(self, kind: str, scope: str, since: dt.datetime) -> list[dt.datetime]:
        def fn(s: Session) -> list[dt.datetime]:
            q = (select(RateLedgerEntry.created_at).where(RateLedgerEntry.kind == kind, RateLedgerEntry.scope == scope,
                                                          RateLedgerEntry.created_at >= since)
                 .order_by(RateLedgerEntry.created_at))
            return list(s.exec(q))
        return await self._run(fn)

    # -- webhook delivery log --------------------------------------------------------------------------------
    async def add_webhook_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> int:
        def fn(s: Session) -> int:
            s.add_all(deliveries)
            return len(deliveries)
        return await self._run(fn)

    async def due_webhook_deliveries(self, now: dt.datetime, *, limit: int = 100) -> list[WebhookDelivery]:
        return await self._run(lambda s: list(s.exec(
            select(WebhookDelivery).where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.id).limit(limit))))

    async def next_webhook_attempt_at(self) -> dt.datetime | None:
        nxt = await self._run(lambda s: s.exec(select(func.min(WebhookDelivery.next_attempt_at))
                                               .where(WebhookDelivery.status == "pending")).first())
        if nxt is not None and nxt.tzinfo is None:
            nxt = nxt.replace(tzinfo=dt.timezone.utc)  # SQLite returns an aggregate's time naive
        return nxt

    async def claim_webhook_delivery(self, delivery_id: int, *, attempts: int, until: dt.datetime) -> bool:
        def fn(s: Session) -> bool:
            r = s.exec(update(WebhookDelivery)
                       .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                              WebhookDelivery.attempts == attempts)
                       .values(attempts=attempts + 1, next_attempt_at=until))
            return (r.rowcount or 0) == 1
        return await self._run(fn)

    async def update_webhook_delivery(self, delivery_id: int, **fields: Any) -> None:
        await self._run(lambda s: s.exec(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                                         .values(**fields)))

    async def list_webhook_deliveries(self, *, status: str | None = None, hostname: str | None = None,
                                      kind: str | None = None, limit: int = 100,
                                      after_id: int = 0) -> list[WebhookDelivery]:
        def fn(s: Session) -> list[WebhookDelivery]:
            q = select(WebhookDelivery)
            if status:
                q = q.where(WebhookDelivery.status == status)
            if hostname:
                q = q.where(WebhookDelivery.hostname == hostname)
            if kind:
                q = q.where(WebhookDelivery.kind == kind)
            if after_id:
                q = q.where(WebhookDelivery.id > after_id).order_by(WebhookDelivery.id)
            else:
                q = q.order_by(WebhookDelivery.id.desc())
            return list(s.exec(q.limit(limit)))
        return await self._run(fn)

    # -- change announcements ----------------------------------------------------------------------------------
    @property
    def notifies(self) -> bool:
        """True when :meth:`notify_change` reaches other processes (PostgreSQL); False on SQLite."""
        return self.engine.dialect.name == "postgresql"

    async def notify_change(self, hostname: str) -> None:
        if not self.notifies:
            return

        def fn() -> None:
            with _typed_outage(), self.engine.begin() as conn:
                conn.execute(text("SELECT pg_notify(:c, :h)"), {"c": CHANNEL, "h": hostname})
        await asyncio.to_thread(fn)

    # -- leases (locks) ----------------------------------------------------------------------------------------
    def _try_lease(self, name: str, ttl: float) -> bool:
        now = utcnow()
        exp = now + dt.timedelta(seconds=ttl)

        def fn(s: Session) -> bool:
            r = s.exec(update(Lease).where(Lease.name == name, or_(Lease.expires_at < now, Lease.owner == self.owner))
                       .values(owner=self.owner, expires_at=exp))
            if r.rowcount:
                return True
            s.add(Lease(name=name, owner=self.owner, expires_at=exp))
            try:
                s.flush()
            except IntegrityError:
                s.rollback()
                return False
            return True
        try:
            return self._tx(fn)
        except IntegrityError:
            return False

    async def try_lock(self, name: str, *, ttl: float = 600) -> bool:
        return await asyncio.to_thread(self._try_lease, name, ttl)

    async def unlock(self, name: str) -> None:
        await self._run(lambda s: s.exec(delete(Lease).where(Lease.name == name, Lease.owner == self.owner)))

    async def renew_lock(self, name: str, *, ttl: float = 600) -> bool:
        return await self.try_lock(name, ttl=ttl)

    async def release_dead_local_leases(self) -> int:
        """Drop leases held by earlier processes of this host that are gone (a crash must not block a name until
        the lease expires). Leases of live processes and of other hosts are untouched."""
        def fn(s: Session) -> int:
            n = 0
            for lease in s.exec(select(Lease)).all():
                if not self._dead_local_owner(lease.owner):
                    continue
                s.delete(lease)
                n += 1
            return n
        return await self._run(fn)

    def _dead_local_owner(self, owner: str) -> bool:
        """``owner`` (``host:pid:nonce``) is an earlier process of this host that is gone."""
        parts = owner.split(":")
        if len(parts) < 3 or parts[0] != socket.gethostname() or owner == self.owner:
            return False
        try:
            pid = int(parts[1])
        except ValueError:
            return False
        try:
            os.kill(pid, 0)
            return False  # still alive
        except ProcessLookupError:
            return True
        except PermissionError:
            return False

    @contextlib.asynccontextmanager
    async def lock(self, name: str, *, ttl: float = 600, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the named lease (in-process waiters queue on an asyncio.Lock first, so one process does not
        poll the database against itself)."""
        local = self._local_locks.setdefault(name, asyncio.Lock())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await asyncio.wait_for(local.acquire(), timeout)
        except TimeoutError:
            raise LockTimeout(name) from None
        try:
            delay = 0.05
            while not await self.try_lock(name, ttl=ttl):
                if deadline is not None and loop.time() >= deadline:
                    raise LockTimeout(name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            try:
                yield
            finally:
                await self.unlock(name)
        finally:
            local.release()
            if not local.locked() and not getattr(local, "_waiters", None):
                self._local_locks.pop(name, None)
