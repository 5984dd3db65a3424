"""The TLS edge's lean, read-only view of the store: the served certificates and the names that changed.

The edge's start-up load and its worker processes read through this module: it imports neither the ORM (sqlmodel)
nor alembic, and SQLite goes through the standard library's ``sqlite3`` (importing SQLAlchemy costs ~0.2 s and
~15 MB, a tenth of the 2 s / 250 MB budget of an edge worker at 100k names); other databases through SQLAlchemy Core.
The full service owns the schema (:mod:`store.database` migrates it); this module only reads the ``domains``,
``certificates``, ``challenge_tokens`` and (for the per-hostname origin) ``tenants`` tables. The key box comes from :func:`store.crypto.load_keybox` (``store``'s ``__init__`` is lazy, so
importing it does not pull in the ORM either).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Iterator

__all__ = ["EdgeStore", "SERVED_ROW"]

# The one row shape of a served certificate, as :meth:`EdgeStore.served_rows` yields it (plain tuples: 100k of them
# are read at start). The key stays encrypted (purpose ``cert-key:<hostname>``).
SERVED_ROW = ("hostname", "cert_id", "cert_pem", "chain_pem", "key_enc")


class EdgeStore:
    """Read-only access to what the edge serves: the ``domains`` and ``certificates`` tables.

    Two queries: the served rows (every domain's current certificate) and the hostnames whose ``updated_at`` moved.
    SQLite stores SQLAlchemy DateTimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` text (naive UTC), which compares as text."""

    _ROWS = ("SELECT d.hostname, c.id, c.cert_pem, c.chain_pem, c.key_enc FROM domains d "
             "JOIN certificates c ON c.id = d.current_cert_id")

    def __init__(self, url: str) -> None:
        self._sqlite: str | None = None
        self.engine = None
        if url.startswith("sqlite:///"):
            self._sqlite = url[len("sqlite:///"):].split("?", 1)[0]
            return
        from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table, Text, create_engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
        md = MetaData()
        self.domains = Table("domains", md, Column("id", Integer), Column("hostname", String),
                             Column("current_cert_id", Integer), Column("updated_at", DateTime(timezone=True)))
        self.certs = Table("certificates", md, Column("id", Integer), Column("cert_pem", Text),
                           Column("chain_pem", Text), Column("key_enc", LargeBinary))
        # TLS-handshake rules kept apart from the served rows: per-name TLS floors, TLS-ALPN-01 answers.
        self.floors = Table("domains", MetaData(), Column("hostname", String), Column("min_tls_version", String))
        self.tokens = Table("challenge_tokens", md, Column("token", String), Column("hostname", String),
                            Column("kind", String), Column("key_authorization", Text),
                            Column("expires_at", DateTime(timezone=True)))

    def _connect_sqlite(self):
        import sqlite3
        conn = sqlite3.connect(f"file:{self._sqlite}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def has_domains(self) -> bool:
        try:
            if self._sqlite is not None:
                conn = self._connect_sqlite()
                try:
                    return conn.execute("SELECT 1 FROM domains LIMIT 1").fetchone() is not None
                finally:
                    conn.close()
            from sqlalchemy import select
            with self.engine.connect() as conn:  # type: ignore[union-attr]
                return conn.execute(select(self.domains.c.id).limit(1)).first() is not None
        except Exception:  # noqa: BLE001 - no file, no table: not set up yet
            return False

    def served_rows(self, hostnames: Iterable[str] | None = None, *, batch: int = 5000) -> Iterator[tuple]:
        """The :data:`SERVED_ROW` tuples of every domain with a current certificate (or of ``hostnames``),
        streamed in batches."""
        names = None if hostnames is None else list(hostnames)
        if self._sqlite is not None:
            conn = self._connect_sqlite()
            try:
                if names is None:
                    cur = conn.execute(self._ROWS)
                    while True:
                        part = cur.fetchmany(batch)
                        if not part:
                            break
                        yield from part
                else:
                    for i in range(0, len(names), 500):
                        chunk = names[i:i + 500]
                        yield from conn.execute(self._ROWS + " WHERE d.hostname IN (%s)" % ",".join("?" * len(chunk)),
                                                chunk).fetchall()
            finally:
                conn.close()
            return
        from sqlalchemy import select
        d, c = self.domains, self.certs
        q = select(d.c.hostname, c.c.id, c.c.cert_pem, c.c.chain_pem, c.c.key_enc).select_from(
            d.join(c, c.c.id == d.c.current_cert_id))
        if names is not None:
            q = q.where(d.c.hostname.in_(names))
        with self.engine.connect() as conn:  # type: ignore[union-attr]
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
            for part in result.partitions(batch):
                yield from part

    # -- per-hostname settings (origin, min_tls_version, http2): the edge's routing table ------------------------
    _SETTINGS = ("SELECT d.hostname, COALESCE(d.origin, t.origin), d.min_tls_version, d.http2, "
                 "d.origin_public_only FROM domains d "
                 "JOIN tenants t ON t.id = d.tenant_id WHERE (d.origin IS NOT NULL OR t.origin IS NOT NULL OR "
                 "d.min_tls_version IS NOT NULL OR d.http2 IS NOT NULL)")

    def host_settings_rows(self, hostnames: Iterable[str] | None = None) -> list[tuple]:
        """(hostname, origin, min_tls_version, http2, origin_public_only) of every (or the named) domain with a
        per-hostname setting;
        ``origin`` is the domain's, else its tenant's (see ``edge.tls_edge.index.load_host_settings``)."""
        names = None if hostnames is None else list(hostnames)
        if self._sqlite is not None:
            conn = self._connect_sqlite()
            try:
                if names is None:
                    return [(h, o, v, None if h2 is None else bool(h2), None if p is None else bool(p))
                            for h, o, v, h2, p in conn.execute(self._SETTINGS)]
                out = []
                for i in range(0, len(names), 500):
                    chunk = names[i:i + 500]
                    out += [(h, o, v, None if h2 is None else bool(h2), None if p is None else bool(p))
                            for h, o, v, h2, p in conn.execute(
                        self._SETTINGS + " AND d.hostname IN (%s)" % ",".join("?" * len(chunk)), chunk)]
                return out
            finally:
                conn.close()
        from sqlalchemy import text
        with self.engine.connect() as conn:  # type: ignore[union-attr]
            if names is None:
                return [tuple(r) for r in conn.execute(text(self._SETTINGS))]
            out = []
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                params = {f"h{j}": h for j, h in enumerate(chunk)}
                out += [tuple(r) for r in conn.execute(text(
                    self._SETTINGS + " AND d.hostname IN (%s)" % ",".join(f":h{j}" for j in range(len(chunk)))),
                    params)]
            return out

    def changed_since(self, since: dt.datetime) -> list[str]:
        """The hostnames whose ``updated_at`` is at or after ``since``."""
        if self._sqlite is not None:
            naive = since.astimezone(dt.timezone.utc).replace(tzinfo=None)
            conn = self._connect_sqlite()
            try:
                return [r[0] for r in conn.execute("SELECT hostname FROM domains WHERE updated_at >= ?",
                                                   (naive.strftime("%Y-%m-%d %H:%M:%S.%f"),))]
            finally:
                conn.close()
        from sqlalchemy import select
        d = self.domains
        with self.engine.connect() as conn:  # type: ignore[union-attr]
            return [r[0] for r in conn.execute(select(d.c.hostname).where(d.c.updated_at >= since))]

    def min_tls_rows(self, hostnames: Iterable[str] | None = None) -> list[tuple[str, str | None]]:
        """``(hostname, min_tls_version)`` of every domain that has one (or of ``hostnames``, None included)."""
        names = None if hostnames is None else list(hostnames)
        if self._sqlite is not None:
            conn = self._connect_sqlite()
            try:
                if names is None:
                    return conn.execute("SELECT hostname, min_tls_version FROM domains "
                                        "WHERE min_tls_version IS NOT NULL").fetchall()
                out: list[tuple[str, str | None]] = []
                for i in range(0, len(names), 500):
                    chunk = names[i:i + 500]
                    out += conn.execute("SELECT hostname, min_tls_version FROM domains WHERE hostname IN (%s)"
                                        % ",".join("?" * len(chunk)), chunk).fetchall()
                return out
            finally:
                conn.close()
        from sqlalchemy import select
        f = self.floors
        q = select(f.c.hostname, f.c.min_tls_version)
        q = q.where(f.c.min_tls_version.is_not(None)) if names is None else q.where(f.c.hostname.in_(names))
        with self.engine.connect() as conn:  # type: ignore[union-attr]
            return [tuple(r) for r in conn.execute(q)]

    def tls_alpn_answers(self, now: dt.datetime | None = None) -> list[tuple[str, str, str]]:
        """``(token, hostname, key_authorization)`` of every TLS-ALPN-01 answer not expired (a handful at most)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        if self._sqlite is not None:
            naive = now.astimezone(dt.timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
            conn = self._connect_sqlite()
            try:
                return conn.execute("SELECT token, hostname, key_authorization FROM challenge_tokens "
                                    "WHERE kind = 'tls-alpn-01' AND expires_at > ?", (naive,)).fetchall()
            finally:
                conn.close()
        from sqlalchemy import select
        t = self.tokens
        q = select(t.c.token, t.c.hostname, t.c.key_authorization).where(t.c.kind == "tls-alpn-01",
                                                                         t.c.expires_at > now)
        with self.engine.connect() as conn:  # type: ignore[union-attr]
            return [tuple(r) for r in conn.execute(q)]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
