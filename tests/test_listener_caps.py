"""The API and the plain-HTTP (port 80) listeners cap open connections per client address
(``listener_max_conns_per_ip``), as the TLS edge does: one client opening connections without end cannot take every
file descriptor of the process, and everyone else is still answered."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from tests.helpers import EdgeProcess

pytestmark = pytest.mark.real


def _closed_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.settimeout(10)  # generous under load; a connection over the cap is closed in milliseconds
        try:
            return c.recv(1) == b""
        except socket.timeout:
            return False  # still open, waiting for a request
        except ConnectionResetError:
            return True


def test_connections_over_the_per_address_cap_are_closed_and_others_still_served(tmp_path, pebble, dns):
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_LISTENER_MAX_CONNS_PER_IP": "5"})
    held: list[socket.socket] = []
    try:
        edge.start()
        for port in (edge.api_port, edge.http_port):
            for _ in range(5):  # idle connections, as a slow or hostile client keeps them
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.2)
            assert _closed_at_once(port), port  # the sixth from this address is closed at once
        for s in held[:5]:  # the API connections end: the address may open new ones again
            s.close()
        time.sleep(0.3)
        with urllib.request.urlopen(edge.api + "/healthz", timeout=10) as r:
            assert r.status == 200
        assert "Traceback" not in edge.log_text()
        assert "listener_max_conns_per_ip" in edge.log_text()  # the operator reads why
    finally:
        for s in held:
            s.close()
        edge.stop()
