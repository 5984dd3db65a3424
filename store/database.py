"""The engine and schema migrations (alembic), for SQLite (one machine) and PostgreSQL (several)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

__all__ = ["make_engine", "migrate", "alembic_config"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent


def _private_sqlite_file(db: Path) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does with the process umask; its -wal and -shm files
    inherit the database file's mode. Keys in it are encrypted and tokens hashed, but nothing in it is for other
    users. An existing file that others can read is left as it is (a backup user may rely on it), with a warning."""
    import os
    import stat
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        mode = db.stat().st_mode
        if mode & stat.S_IROTH:
            log.warning("%s is readable by other users (mode %o); chmod 600 it unless that is intended",
                        db, stat.S_IMODE(mode))


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create the engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            _private_sqlite_file(Path(path).expanduser().resolve())
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe to run from several processes on PostgreSQL,
    which serialises it with an advisory lock)."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(724201)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.debug("schema at head; tables: %s", sorted(inspect(engine).get_table_names()))
