"""A renewal asked for while an interrupted order is being finished is not lost: the process stopped after the
certificate was installed and swapped in (journal step ``installed``: it is current, the entry still open), and a
renewal was requested before the restart. On restart the entry is finished (the same certificate, no new order for it), and the
renewal then follows with exactly one new order: a new serial is served. Before, finishing the entry cleared the
request and the API's 202 led to nothing (seen as ``edgecert demo`` re-runs waiting 300 s under load)."""

from __future__ import annotations

import sqlite3

import pytest

from acme_client.journal import CRASH_ENV
from tests.helpers import EdgeProcess, served_leaf

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _steps(edge: EdgeProcess) -> list[str]:
    with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
        return [s for (s,) in db.execute("SELECT step FROM acme_orders ORDER BY id")]


def test_a_renewal_asked_while_an_order_is_finished_still_happens_once(pebble_factory, dns, tmp_path):
    pebble = pebble_factory("pebble-renew-resume")
    host = "renew-resume.journal.test"
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={CRASH_ENV: "installed"})
    try:
        edge.start()
        edge.add_domain(host)
        assert edge.proc is not None and edge.proc.wait(timeout=90) == 137, edge.log_tail()
        assert _steps(edge) == ["installed"]
        with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
            # The swap had also happened (the certificate current, the domain active) when the process died: what a
            # stop between the swap and the entry's close leaves (the last write of _install).
            (cert_id, serial) = db.execute("SELECT c.id, c.serial FROM acme_orders o JOIN certificates c "
                                           "ON c.id = o.cert_id").fetchone()
            db.execute("UPDATE domains SET current_cert_id = ?, status = 'active' WHERE hostname = ?",
                       (cert_id, host))
            # What POST /v1/domains/{host}/renew stores (Manager.request_renewal), while the process is down: the
            # request reaches the store while the entry is open (another node's API, or this one before its sweep).
            db.execute("UPDATE domains SET renew_requested = 1, next_check_at = CURRENT_TIMESTAMP, attempts = 0 "
                       "WHERE hostname = ?", (host,))
        assert pebble.order_count() == 1
        del edge.env[CRASH_ENV]
        edge.start()
        d = edge.wait_for(lambda: (lambda d: d if d["status"] == "active" and d["certificate"]["serial"] != serial
                                   else None)(edge.domain(host)), timeout=90, what="the renewed certificate")
        assert format(served_leaf(edge.https_port, host).serial_number, "x") == d["certificate"]["serial"]
        edge.wait_for(lambda: _steps(edge) == ["current", "current"], timeout=30, what="both entries closed")
        assert pebble.order_count() == 2 and pebble.issued_count() == 2  # the interrupted one, then the renewal
        kinds = [e["kind"] for e in edge.events(host)]
        assert "order_resumed" in kinds and kinds.count("renewal_requested") == 1, kinds
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()
