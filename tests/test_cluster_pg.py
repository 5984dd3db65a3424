"""Two ``edgecert serve`` nodes sharing one PostgreSQL: one order per name, both nodes serve every certificate,
either node answers HTTP-01 from the shared store, and a node that was down catches up at start."""

from __future__ import annotations

import time

from edge.demo.process import free_port
from tests.helpers import EdgeProcess, served_leaf


def test_two_nodes_share_work_and_serve_everything(tmp_path, pebble, dns, postgres):
    url = postgres.create_database()
    common = {"EDGECERT_DATABASE_URL": url, "EDGECERT_SECRET_KEY": "shared cluster passphrase 0123456789",
              "EDGECERT_SWEEP_INTERVAL": "30"}  # a long sweep: fast sync here must come from LISTEN/NOTIFY
    a = EdgeProcess(work_dir=tmp_path / "a", pebble=pebble, dns=dns, env=common).start()
    # Node B's HTTP-01 listener is elsewhere: Pebble validates against A, which answers from the shared store.
    b = EdgeProcess(work_dir=tmp_path / "b", pebble=pebble, dns=dns,
                    env={**common, "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}"}).start()
    try:
        orders = pebble.order_count()
        names = [f"c{i}.cluster.test" for i in range(6)]
        for i, n in enumerate(names):
            (a if i % 2 else b).add_domain(n, tenant="cl")
        for n in names:
            a.wait_status(n, "active", timeout=60)
        assert pebble.order_count() - orders == len(names)  # no name ordered twice
        serials = {n: a.domain(n)["certificate"]["serial"] for n in names}
        assert {n: b.domain(n)["certificate"]["serial"] for n in names} == serials
        # Both nodes serve every certificate, whichever node obtained it (LISTEN/NOTIFY, not the 30 s sweep).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = {(node.https_port, n): format(served_leaf(node.https_port, n).serial_number, "x")
                   for node in (a, b) for n in names}
            if all(got[(node.https_port, n)] == serials[n] for node in (a, b) for n in names):
                break
            time.sleep(0.2)
        for node in (a, b):
            for n in names:
                assert format(served_leaf(node.https_port, n).serial_number, "x") == serials[n], (node.api, n)
        # Every node has the live files (and exports) of every name, whichever node obtained it (written just after
        # the index is updated, so allow the same bounded wait).
        from cryptography import x509

        def exported(node) -> bool:
            path = node.work_dir / "state" / "exports" / "nginx-servers.conf"
            return path.exists() and all(f"server_name {n};" in path.read_text() for n in names)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(exported(node) for node in (a, b)):
            time.sleep(0.2)
        for node in (a, b):
            for n in names:
                pem = (node.work_dir / "state" / "live" / n / "fullchain.pem").read_bytes()
                assert format(x509.load_pem_x509_certificate(pem).serial_number, "x") == serials[n], (node.api, n)
            assert all(f"server_name {n};" in (node.work_dir / "state" / "exports" / "nginx-servers.conf").read_text()
                       for n in names)
        # A node that was down catches up from the store at start.
        b.stop()
        a.add_domain("late.cluster.test", tenant="cl")
        d = a.wait_status("late.cluster.test", "active", timeout=60)
        b.start()
        assert format(served_leaf(b.https_port, "late.cluster.test").serial_number, "x") == d["certificate"]["serial"]
        # Removal propagates too.
        st, _ = a.call("DELETE", "/v1/domains/c0.cluster.test")
        assert st == 204
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and format(served_leaf(b.https_port, "c0.cluster.test").serial_number,
                                                     "x") == serials["c0.cluster.test"]:
            time.sleep(0.2)
        assert format(served_leaf(b.https_port, "c0.cluster.test").serial_number, "x") != serials["c0.cluster.test"]
        assert not (b.work_dir / "state" / "live" / "c0.cluster.test").exists()
    finally:
        a.stop()
        b.stop()
        postgres.drop_database(url)
