"""Shared fixtures. Real components (Pebble, its DNS, PostgreSQL, openssl, curl, nginx, chromium) are started for
real; under CI (CI=true) a missing component FAILS the test instead of skipping it.

The suite runs in two phases (scripts/test.sh): ``--phase parallel`` (every test not marked ``serial``, spread over
pytest-xdist workers) then ``--phase serial`` (timing-sensitive or CPU-hungry tests, alone on the machine). Every
worker has its own session fixtures (Pebble, its DNS, a PostgreSQL cluster) on free ports in its own temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import EdgeProcess, require_binary

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]

# Subprocesses the tests start (``python -m edge serve``, the CLI, ...) import THIS tree's packages, not whatever an
# editable install of the shared venv points at (another checkout or worktree): the code under test is the one here.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)])

# Each xdist worker draws the ports of the servers it starts (free_port) from its own part of the range: a port one
# worker drew (say Pebble's HTTP-01 port, bound only later by the edge) is never drawn by another in the meantime.
def _partition_ports() -> None:
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return
    from edge.demo.process import port_range
    os.environ.pop("EDGECERT_DEMO_PORT_RANGE", None)
    bottom, top = port_range()
    size = (top - bottom + 1) // int(count)
    lo = bottom + int(worker[2:]) * size
    os.environ["EDGECERT_DEMO_PORT_RANGE"] = f"{lo}-{lo + size - 1}"


_partition_ports()

# Built once per xdist worker that uses them, so the tests using them are kept on one worker (--dist loadgroup):
# session fixtures that are expensive to build (by name), and every module-scoped fixture (its module's tests).
_GROUPED_SESSION_FIXTURES = {"corpus": "diagnostics-corpus"}


def _xdist_group(item) -> str | None:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        if name in _GROUPED_SESSION_FIXTURES:
            return _GROUPED_SESSION_FIXTURES[name]
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if defs and defs[-1].scope == "module":
            return item.module.__name__ if getattr(item, "module", None) else item.nodeid.split("::")[0]
    return None


def pytest_addoption(parser):
    parser.addoption("--phase", choices=("all", "parallel", "serial"), default="all",
                     help="all (default): every test; parallel: the tests not marked 'serial' (run them with -n N); "
                          "serial: only the tests marked 'serial'. scripts/test.sh runs parallel, then serial.")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    phase = config.getoption("--phase")
    if phase != "all":
        want_serial = phase == "serial"
        keep = [i for i in items if (i.get_closest_marker("serial") is not None) == want_serial]
        if len(keep) != len(items):
            kept = set(map(id, keep))
            config.hook.pytest_deselected(items=[i for i in items if id(i) not in kept])
            items[:] = keep
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = _xdist_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # The tests marked slow (and the groups holding one) are handed out first, so that no long test starts last
        # and runs alone while the other workers idle. A stable sort: a group's tests keep their order (they share a
        # fixture and may build on each other's state; the group is one unit for xdist), and every worker collects
        # the same order.
        def group(i):
            m = i.get_closest_marker("xdist_group")
            return None if m is None else str(m.args[0] if m.args else m.kwargs.get("name", "default"))
        slow_groups = {group(i) for i in items if i.get_closest_marker("slow") is not None} - {None}
        items.sort(key=lambda i: not (i.get_closest_marker("slow") is not None or group(i) in slow_groups))


class _LoadgroupIds:
    """pytest-xdist 3.8 groups ``--dist loadgroup`` tests by a ``@group`` suffix it appends to ``item._nodeid``; on
    pytest >= 9.2 node ids are structured (``item._id``) and that write is lost, so every test is scheduled alone
    (pytest-dev/pytest-xdist#1386). After xdist's hook, put the suffix where pytest reads the id from. A no-op when
    xdist did it (older pytest, a fixed xdist)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        if not config.getoption("loadgroup", default=False):
            return
        from _pytest.nodeid import NodeId
        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            suffix = "@" + "_".join(names)
            if names and not item.nodeid.endswith(suffix):
                item._id = NodeId.parse(item.nodeid + suffix)


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        try:
            import _pytest.nodeid  # noqa: F401  (pytest >= 9.2: structured node ids)
        except ImportError:
            return
        config.pluginmanager.register(_LoadgroupIds(), "edgecert-loadgroup-ids")


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
