"""Shared fixtures. Real components (Pebble, its DNS, PostgreSQL, openssl, curl, nginx, chromium) are started for
real; under CI (CI=true) a missing component FAILS the test instead of skipping it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import EdgeProcess, require_binary

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def dns(session_dir):
    """pebble-challtestsrv: the DNS server for Pebble and for edgecert's pointing checks."""
    require_binary("pebble-challtestsrv")
    from edge.demo.components import ChallTestSrv
    srv = ChallTestSrv(work_dir=session_dir / "dns").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pebble(dns, session_dir):
    """A real Pebble whose HTTP-01 validator connects to ``pebble.http_port`` (edge servers listen there)."""
    require_binary("pebble")
    from edge.demo.components import Pebble, free_port
    p = Pebble(dns_server=dns, work_dir=session_dir / "pebble", http_port=free_port(),
               authz_reuse_percent=0).start()
    p.roots_file = str(p.write_roots(session_dir / "pebble-roots.pem"))
    yield p
    p.stop()


@pytest.fixture
def pebble_factory(dns, tmp_path):
    """Start extra Pebbles with their own options (e.g. ``certificate_validity_period=30``); stopped at teardown."""
    require_binary("pebble")
    from edge.demo.components import Pebble, free_port
    started = []

    def make(name: str = "pebble-extra", **options):
        options.setdefault("authz_reuse_percent", 0)
        p = Pebble(dns_server=dns, work_dir=tmp_path / name, http_port=free_port(), **options).start()
        p.roots_file = str(p.write_roots(tmp_path / f"{name}-roots.pem"))
        started.append(p)
        return p
    yield make
    for p in started:
        p.stop()


@pytest.fixture
def edge_factory(tmp_path, pebble, dns):
    """Start ``edgecert serve`` subprocesses against the session Pebble; all are stopped at teardown."""
    procs: list[EdgeProcess] = []

    def make(name: str = "edge", **env: str) -> EdgeProcess:
        p = EdgeProcess(work_dir=tmp_path / name, pebble=pebble, dns=dns, env=env)
        procs.append(p)
        return p.start()
    yield make
    for p in procs:
        p.stop()


@pytest.fixture
def edge(edge_factory):
    return edge_factory()


@pytest.fixture(scope="session")
def postgres(session_dir):
    """A PostgreSQL server: $EDGECERT_TEST_DATABASE_URL, else a throwaway cluster (initdb + pg_ctl)."""
    if not os.environ.get("EDGECERT_TEST_DATABASE_URL"):
        from tests.support.postgres import find_postgres_bin_dir
        try:
            find_postgres_bin_dir()
        except Exception as e:  # pragma: no cover - depends on the machine
            if IN_CI:
                pytest.fail(f"PostgreSQL binaries are missing in CI: {e}")
            pytest.skip(f"PostgreSQL binaries not installed: {e}")
    from tests.support.postgres import PostgresServer
    srv = PostgresServer.for_tests(session_dir / "pg")
    yield srv
    srv.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Every storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    pg = request.getfixturevalue("postgres")
    url = pg.create_database()
    yield url
    pg.drop_database(url)
