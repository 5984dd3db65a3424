"""A throwaway PostgreSQL cluster for the tests (``initdb`` + ``pg_ctl``), or the server named by
``EDGECERT_TEST_DATABASE_URL``, with per-test databases. Test tooling: not part of the installed package."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from edge.demo.process import DevEnvError, free_port, make_work_dir, tail_log

__all__ = ["PostgresServer", "find_postgres_bin_dir", "TEST_DATABASE_URL_ENV"]

TEST_DATABASE_URL_ENV = "EDGECERT_TEST_DATABASE_URL"


def find_postgres_bin_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Find a directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Order: ``explicit``; ``$EDGECERT_PG_BIN``; ``initdb`` on PATH; ``pg_config --bindir``;
    the newest ``/usr/lib/postgresql/<ver>/bin`` (Debian/Ubuntu); ``/usr/pgsql-<ver>/bin``
    (RHEL); ``/usr/local/pgsql/bin``; Homebrew's ``/opt/homebrew/opt/postgresql*/bin``.
    """
    needed = ("initdb", "pg_ctl", "postgres")

    def ok(d: Path) -> bool:
        return all(os.access(d / n, os.X_OK) for n in needed)

    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("EDGECERT_PG_BIN"):
        candidates.append(Path(os.environ["EDGECERT_PG_BIN"]))
    if explicit or os.environ.get("EDGECERT_PG_BIN"):
        for d in candidates:
            if ok(d):
                return d
        raise DevEnvError(f"PostgreSQL: {candidates[0]} lacks one of {needed}")
    w = shutil.which("initdb")
    if w:
        candidates.append(Path(w).parent)
        candidates.append(Path(os.path.realpath(w)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(Exception):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version_key(p: Path) -> tuple:
        nums = re.findall(r"\d+", p.as_posix())
        return tuple(int(n) for n in nums) if nums else (0,)

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql*/bin",
                    "/usr/local/opt/postgresql*/bin"):
        import glob

        candidates += sorted((Path(p) for p in glob.glob(pattern)), key=version_key, reverse=True)
    candidates += [Path("/usr/local/pgsql/bin"), Path("/usr/bin")]
    for d in candidates:
        if ok(d):
            return d
    raise DevEnvError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; on Debian/Ubuntu: "
        "apt-get install -y postgresql (they land in /usr/lib/postgresql/<ver>/bin), or set "
        "EDGECERT_PG_BIN, or set EDGECERT_TEST_DATABASE_URL to use an existing server"
    )


def _to_sqlalchemy_url(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    u = u.set(drivername="postgresql+psycopg")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _to_libpq_url(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServer:
    """A PostgreSQL server for tests: a throwaway cluster, or an existing one.

    ``PostgresServer.for_tests(work_dir)`` uses ``$EDGECERT_TEST_DATABASE_URL`` if set
    (never stopped by us), otherwise creates a cluster with ``initdb`` in ``work_dir`` and
    starts it with ``pg_ctl`` on a free 127.0.0.1 port: trust authentication, superuser
    ``postgres``, Unix socket in the cluster directory, fsync off.  When running as root
    (initdb/postgres refuse to), the cluster runs as the ``postgres`` system user (created
    with ``useradd --system`` if missing) via ``runuser``/``setpriv``; if that user cannot
    reach ``work_dir`` (e.g. pytest's 0700 temp root), the cluster goes into a private
    directory under the system temp dir instead, removed again by :meth:`stop`.

    ``url`` is the SQLAlchemy URL (``postgresql+psycopg://...``) of the maintenance
    database ``postgres``; :meth:`create_database` gives a fresh database's URL.
    """

    def __init__(
        self,
        *,
        work_dir: str | os.PathLike | None = None,
        port: int | None = None,
        bin_dir: str | os.PathLike | None = None,
        url: str | None = None,
        run_as: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.work_dir = make_work_dir(work_dir, "edgecert-pg-")
        self.external = url is not None
        self._url = _to_sqlalchemy_url(url) if url else None
        self._fixed_port = port
        self.port = port or 0
        self._bin_dir = bin_dir
        self._run_as = run_as
        self.start_timeout = start_timeout
        self.cluster_dir: Path | None = None
        self._owned_tmp: Path | None = None
        self._started = False
        self._created: set[str] = set()
        self._finalizer: weakref.finalize | None = None

    # -- construction for tests
    @classmethod
    def for_tests(
        cls, work_dir: str | os.PathLike, *, env_var: str = TEST_DATABASE_URL_ENV, **kwargs: Any
    ) -> "PostgresServer":
        """A started server: the one in ``$EDGECERT_TEST_DATABASE_URL`` if set, else a
        throwaway cluster in ``work_dir``.  Call :meth:`stop` when done (or use ``with``)."""
        url = os.environ.get(env_var, "").strip()
        server = cls(work_dir=work_dir, url=url or None, **kwargs)
        return server.start()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the maintenance database (``postgresql+psycopg://...``)."""
        if self._url is None:
            raise DevEnvError("PostgresServer is not started")
        return self._url

    @property
    def log_path(self) -> Path | None:
        return self.cluster_dir / "postgres.log" if self.cluster_dir else None

    # -- lifecycle
    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "PostgresServer":
        if self._started:
            return self
        if self.external:
            self._check_connect(self.url, what=f"${TEST_DATABASE_URL_ENV}")
            self._started = True
            return self
        bin_dir = find_postgres_bin_dir(self._bin_dir)
        user = self._pick_user()
        self.cluster_dir = self._make_cluster_dir(user)
        data = self.cluster_dir / "data"
        sock = self.cluster_dir / "sock"
        sock.mkdir(exist_ok=True)
        self._chown(self.cluster_dir, user)
        self._run(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--locale=C", "--no-sync"], what="initdb", timeout=120)
        pg_ctl = str(bin_dir / "pg_ctl")
        attempts = 1 if self._fixed_port else 4
        for attempt in range(attempts):
            self.port = self._fixed_port or free_port()
            conf = (
                "\n# edgecert devenv\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{sock}'\n"
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
            (data / "postgresql.auto.conf").write_text(conf)
            self._chown(data / "postgresql.auto.conf", user)
            try:
                self._run(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.log_path),
                                 "-w", "-t", str(int(self.start_timeout)), "start"],
                          what="pg_ctl start", timeout=self.start_timeout + 10)
                break
            except DevEnvError:
                # pg_ctl -w may give up while the postmaster still runs: make sure it is gone.
                _pg_stop(pg_ctl, str(data), user, None)
                log = tail_log(self.log_path, 200)
                if attempt + 1 < attempts and ("could not bind" in log or "already in use" in log.lower()):
                    continue
                raise
        self._url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._started = True
        self._finalizer = weakref.finalize(
            self, _pg_stop, pg_ctl, str(data), user, self._owned_tmp, self.work_dir
        )
        self._bin = bin_dir
        self._user = user
        self._check_connect(self.url, what="throwaway PostgreSQL")
        return self

    def stop(self) -> None:
        """Stop the throwaway cluster (fast shutdown, then SIGKILL); no-op for an external one."""
        if not self._started:
            return
        self._started = False
        if self.external:
            return
        if self._finalizer is not None:
            self._finalizer()  # runs _pg_stop once
            self._finalizer = None

    # -- databases
    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its ``postgresql+psycopg://`` URL."""
        import psycopg

        if name is None:
            name = f"edgecert_test_{os.getpid()}_{int(time.time() * 1000) % 10**9}_{len(self._created)}"
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME_RE.pattern}")
        with psycopg.connect(_to_libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.add(name)
        return _to_sqlalchemy_url(self.url, name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database (by name or by the URL :meth:`create_database` returned)."""
        import psycopg

        name = name_or_url
        if "://" in name_or_url:
            from sqlalchemy.engine import make_url

            name = make_url(name_or_url).database or ""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"bad database name {name!r}")
        with psycopg.connect(_to_libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # PostgreSQL >= 13
            except psycopg.errors.SyntaxError:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self._created.discard(name)

    # -- internals
    @staticmethod
    def _check_connect(url: str, *, what: str) -> None:
        import psycopg

        try:
            with psycopg.connect(_to_libpq_url(url), connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            raise DevEnvError(f"{what}: cannot connect to {url}: {exc}") from exc

    def _pick_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        user = self._run_as or "postgres"
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            res = subprocess.run(
                [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", user],
                capture_output=True, text=True,
            )
            if res.returncode != 0:
                raise DevEnvError(f"PostgreSQL: cannot create system user {user!r} to run the "
                                  f"cluster as (we are root): {res.stderr.strip()}")
        return user

    def _as_user(self, user: str | None, argv: list[str]) -> list[str]:
        if user is None:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if os.access(runuser, os.X_OK):
            return [runuser, "-u", user, "--", *argv]
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
        raise DevEnvError("PostgreSQL: running as root but neither runuser nor setpriv is available")

    def _user_can_use(self, user: str, path: Path) -> bool:
        res = subprocess.run(self._as_user(user, ["test", "-w", str(path), "-a", "-x", str(path)]),
                             capture_output=True)
        return res.returncode == 0

    def _make_cluster_dir(self, user: str | None) -> Path:
        # Unix socket paths are limited to ~107 bytes: keep the directory short.
        candidate = self.work_dir / "pg"
        n = 1
        while candidate.exists() and any(candidate.iterdir()):  # an earlier cluster's leftovers
            candidate = self.work_dir / f"pg-{n}"
            n += 1
        sock_path_len = len(str(candidate / "sock" / ".s.PGSQL.65535"))
        if user is None and sock_path_len < 100:
            candidate.mkdir(parents=True, exist_ok=True)
            return candidate
        if user is not None and sock_path_len < 100:
            candidate.mkdir(parents=True, exist_ok=True)
            if not any(candidate.iterdir()):
                self._chown(candidate, user)
                if self._user_can_use(user, candidate):
                    return candidate
            with contextlib.suppress(OSError):
                candidate.rmdir()
        d = Path(tempfile.mkdtemp(prefix="edgecert-pg-"))
        self._owned_tmp = d
        # Leave a pointer in the work dir so the logs are easy to find.
        with contextlib.suppress(OSError):
            (self.work_dir / "pg-cluster-dir").write_text(str(d) + "\n")
        return d

    @staticmethod
    def _chown(path: Path, user: str | None) -> None:
        if user is None:
            return
        shutil.chown(path, user, user if _group_exists(user) else None)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                for n in dirs + files:
                    with contextlib.suppress(OSError):
                        shutil.chown(os.path.join(root, n), user, user if _group_exists(user) else None)

    def _run(self, user: str | None, argv: list[str], *, what: str, timeout: float) -> None:
        cmd = self._as_user(user, argv)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 cwd=str(self.cluster_dir), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise DevEnvError(f"PostgreSQL {what} timed out after {timeout}s; log:\n{tail_log(self.log_path)}") from exc
        if res.returncode != 0:
            raise DevEnvError(
                f"PostgreSQL {what} failed (exit {res.returncode}): {' '.join(cmd)}\n"
                f"{(res.stdout + res.stderr).strip()[-3000:]}\nserver log {self.log_path}:\n{tail_log(self.log_path)}"
            )


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _pg_stop(
    pg_ctl: str, data: str, user: str | None, owned_tmp: Path | None, keep_log_in: Path | None = None
) -> None:
    """Stop a cluster started by PostgresServer (also run at interpreter exit)."""
    argv = [pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "20", "stop"]
    if user is not None:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        argv = [runuser, "-u", user, "--", *argv] if os.access(runuser, os.X_OK) else \
            [shutil.which("setpriv") or "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=30, cwd="/", stdin=subprocess.DEVNULL)
        ok = res.returncode == 0
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        # Kill the postmaster we started, by the pid it recorded.
        pidfile = Path(data) / "postmaster.pid"
        with contextlib.suppress(Exception):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
    if owned_tmp is not None:
        if keep_log_in is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(Path(owned_tmp) / "postgres.log", Path(keep_log_in) / "postgres.log")
        shutil.rmtree(owned_tmp, ignore_errors=True)
