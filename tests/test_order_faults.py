"""Fault injection over the real Pebble and a real ``edgecert serve``: SIGKILL at each step of the order journal,
Pebble refusing 30% of nonces, the CA unreachable for a while then back. Every assertion is made from the CA's side
(Pebble's own log: orders created, certificates issued): exactly one order and one certificate per name, every name
active and served. The kill uses the documented test hook ``EDGECERT_TEST_CRASH_AT=<step>`` (the process exits with
137, as after a SIGKILL, right after the step is journaled; see :mod:`acme_client.journal`)."""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.request

import pytest

from acme_client.journal import CRASH_ENV, NEW_ORDER_ANSWERED
from tests.helpers import EdgeProcess, served_leaf
from tests.support.acmeproxy import ProxyThread

pytestmark = pytest.mark.real

STEPS = ("intent", "ordered", "authorizing", "finalizing", "downloaded", "installed")


def ledger_rows(edge: EdgeProcess) -> dict[tuple[str, bool], int]:
    """{(kind, reserved): rows} of edgecert's rate ledger (read from its SQLite file)."""
    with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
        return {(k, bool(r)): n for k, r, n in db.execute(
            "SELECT kind, reserved, count(*) FROM rate_ledger GROUP BY kind, reserved")}


def journal_steps(edge: EdgeProcess) -> list[str]:
    with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
        return [s for (s,) in db.execute("SELECT step FROM acme_orders ORDER BY id")]


def challenge_tokens(edge: EdgeProcess) -> int:
    with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
        return db.execute("SELECT count(*) FROM challenge_tokens").fetchone()[0]


def assert_one_each(edge: EdgeProcess, pebble, names: list[str], timeout: float = 120) -> None:
    for n in names:
        d = edge.wait_status(n, "active", timeout=timeout)
        leaf = served_leaf(edge.https_port, n)
        assert format(leaf.serial_number, "x") == d["certificate"]["serial"]
    assert pebble.order_count() == len(names), (pebble.order_count(), edge.log_tail())
    assert pebble.issued_count() == len(names), (pebble.issued_count(), edge.log_tail())


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_journal_step_continues_the_same_order(step, pebble_factory, dns, tmp_path):
    pebble = pebble_factory(f"pebble-{step}")
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={CRASH_ENV: step})
    host = f"crash-{step}.journal.test"
    try:
        edge.start()
        edge.add_domain(host)
        assert edge.proc is not None
        assert edge.proc.wait(timeout=90) == 137, edge.log_tail()  # killed right after the step was journaled
        assert journal_steps(edge)[-1] == step
        del edge.env[CRASH_ENV]
        edge.start()
        assert_one_each(edge, pebble, [host])
        edge.wait_for(lambda: journal_steps(edge) == ["current"], timeout=30, what="the journal entry closed")
        assert challenge_tokens(edge) == 0  # no answer left published once the order is over
        # The ledger counts what the CA did: one order, one certificate (registered domain + exact set), nothing
        # left reserved.
        rows = ledger_rows(edge)
        assert rows == {("order", False): 1, ("certificate", False): 2}, rows
        if step in ("downloaded", "installed"):
            kinds = [e["kind"] for e in edge.events(host)]
            assert "order_resumed" in kinds
    finally:
        edge.stop()


def _adopted(edge: EdgeProcess, host: str) -> bool:
    return any(e["kind"] == "order_placed" and "open orders" in e["message"] for e in edge.events(host))


@pytest.mark.slow
def test_sigkill_between_the_cas_new_order_answer_and_the_journal_continues_that_order(pebble_factory, dns,
                                                                                        tmp_path):
    """The CA created the order, the process died before the journal had its URL: the restart finds it among the
    account's open orders and continues it; the CA never sees a second newOrder for the name."""
    pebble = pebble_factory("pebble-orphan")
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={CRASH_ENV: NEW_ORDER_ANSWERED})
    host = "orphan.journal.test"
    try:
        edge.start()
        edge.add_domain(host)
        assert edge.proc is not None
        assert edge.proc.wait(timeout=90) == 137, edge.log_tail()
        assert journal_steps(edge) == ["intent"] and pebble.order_count() == 1
        del edge.env[CRASH_ENV]
        edge.start()
        assert_one_each(edge, pebble, [host])
        assert _adopted(edge, host), [e["message"] for e in edge.events(host)]
        edge.wait_for(lambda: journal_steps(edge) == ["current"], timeout=30, what="the journal entry closed")
        assert ledger_rows(edge) == {("order", False): 1, ("certificate", False): 2}
    finally:
        edge.stop()


@pytest.mark.slow
def test_a_new_order_whose_answer_is_lost_is_continued_not_placed_again(pebble_factory, dns, tmp_path):
    """newOrder reaches the CA (which creates the order) but the answer is lost on the way back: the retry looks
    at the account's open orders first and continues that one."""
    pebble = pebble_factory("pebble-lost")
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls) as proxy:
        edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                           env={"EDGECERT_ACME_DIRECTORY": proxy.directory_url,
                                "EDGECERT_ACME_CA_BUNDLE": proxy.ca_bundle})
        names = ["l0.lost.test", "l1.lost.test"]
        try:
            edge.start()
            proxy.inject_lost_answer(kind="newOrder", times=2)
            for n in names:
                edge.add_domain(n)
            assert_one_each(edge, pebble, names, timeout=120)
            assert proxy.count("newOrder", status=-201) == 2  # both answers were lost, both orders existed
            assert all(_adopted(edge, n) for n in names)
        finally:
            edge.stop()


@pytest.mark.slow
@pytest.mark.serial
def test_nonces_refused_30_percent_every_name_active_with_one_order(pebble_factory, dns, tmp_path):
    pebble = pebble_factory("pebble-nonce", env={"PEBBLE_WFE_NONCEREJECT": "30"})
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns)
    names = [f"n{i}.nonce.test" for i in range(6)]
    try:
        edge.start()
        for n in names:
            edge.add_domain(n)
        assert_one_each(edge, pebble, names, timeout=180)
        with urllib.request.urlopen(edge.api + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'edgecert_acme_requests_total{kind="newOrder",status="400"}' in metrics or \
            'status="400"' in metrics  # nonces were refused indeed
    finally:
        edge.stop()


@pytest.mark.slow
@pytest.mark.serial
def test_ca_unreachable_mid_order_then_back_one_order_each(pebble_factory, dns, tmp_path):
    pebble = pebble_factory("pebble-outage")
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls) as proxy:
        edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                           env={"EDGECERT_ACME_DIRECTORY": proxy.directory_url,
                                "EDGECERT_ACME_CA_BUNDLE": proxy.ca_bundle})
        names = [f"o{i}.outage.test" for i in range(4)]
        stop = threading.Event()

        def outage() -> None:
            # Down as soon as the first challenge is answered (orders are in flight), for 8 seconds.
            while not stop.is_set() and proxy.count("challenge") < 1:
                time.sleep(0.005)
            proxy.set_unreachable(True)
            stop.wait(8)
            proxy.set_unreachable(False)
        t = threading.Thread(target=outage, daemon=True)
        try:
            edge.start()
            # A 5xx on a poll and on finalize too: retried on the same order, never the end of it.
            proxy.inject(kind="order", status=503, times=3, skip=1)
            proxy.inject(kind="finalize", status=500, times=1)
            t.start()
            for n in names:
                edge.add_domain(n)
            assert_one_each(edge, pebble, names, timeout=120)
            assert proxy.count(status=0) > 0  # the outage did hit requests
            assert proxy.count("newOrder", status=201) == len(names)
        finally:
            stop.set()
            proxy.set_unreachable(False)
            t.join(10)
            edge.stop()


@pytest.mark.slow
@pytest.mark.serial
def test_a_failed_install_is_retried_with_the_same_certificate_never_a_new_order(pebble_factory, dns, tmp_path):
    pebble = pebble_factory("pebble-install")
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_TRANSIENT_RETRY_SCHEDULE": "1"})
    host = "disk.journal.test"
    try:
        edge.start()
        # A real filesystem error: the certificate's archive directory cannot be created (a file is in the way).
        blocker = edge.work_dir / "state" / "archive" / host
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("in the way")
        edge.add_domain(host)
        d = edge.wait_for(lambda: (lambda d: d if d["last_error_code"] == "state_write_failed" else None)(
            edge.domain(host)), timeout=60, what="state_write_failed on the domain")
        assert d["status"] == "pending_issuance"
        assert "no new order" in d["last_error"] and "Traceback" not in d["last_error"]
        edge.wait_for(lambda: sum(e["kind"] == "install_failed" for e in edge.events(host)) >= 2, timeout=30,
                      what="install retried")
        assert pebble.order_count() == 1 and pebble.issued_count() == 1
        assert journal_steps(edge) == ["installed"]
        with urllib.request.urlopen(edge.api + "/metrics", timeout=10) as r:
            assert 'edgecert_events_total{kind="install_failed"}' in r.read().decode()
        blocker.unlink()  # the operator frees the way: the same certificate goes live
        assert_one_each(edge, pebble, [host], timeout=30)
        edge.wait_for(lambda: journal_steps(edge) == ["current"], timeout=30, what="the journal entry closed")
        assert ledger_rows(edge) == {("order", False): 1, ("certificate", False): 2}
    finally:
        edge.stop()
