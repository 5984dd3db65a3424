"""systemd socket activation (edge/listenfds.py): the service manager owns the listening sockets and hands them to
``edgecert serve``; they outlive the process, so a client that connects while it restarts (after a SIGKILL) waits in
the backlog and is answered by the next process instead of being refused -- a CA's validator fetching an HTTP-01
answer, a browser. The test process plays the service manager (tests/helpers.py, ``hand_over_sockets``)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import pytest

from edge.listenfds import pick, take_inherited
from tests.helpers import EdgeProcess, served_leaf

pytestmark = pytest.mark.real


def _close(edge: EdgeProcess) -> None:
    for _, s in edge.listen_sockets:
        s.close()


def test_a_client_connecting_while_the_process_restarts_is_answered_by_the_next_one(tmp_path, pebble, dns):
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns).hand_over_sockets()
    try:
        edge.start()
        assert "matches no listener" not in edge.log_text()
        edge.kill()  # SIGKILL: nothing is closed gracefully; the sockets stay open here (the service manager)
        answers: dict[str, object] = {}

        def http01_fetch() -> None:  # what a CA's validator does, while nobody serves the port
            with socket.create_connection(("127.0.0.1", edge.http_port), timeout=20) as c:
                c.sendall(b"GET /.well-known/acme-challenge/some-token HTTP/1.1\r\nHost: shop.example.com\r\n"
                          b"Connection: close\r\n\r\n")
                data = b""
                while chunk := c.recv(4096):
                    data += chunk
                answers["http"] = data

        def tls_handshake() -> None:  # a browser opening the site meanwhile
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", edge.https_port), timeout=20) as c:
                with ctx.wrap_socket(c, server_hostname="shop.example.com") as t:
                    answers["https"] = t.version()

        threads = [threading.Thread(target=f) for f in (http01_fetch, tls_handshake)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both are connected (the kernel accepted them into the backlog) and waiting
        assert not answers
        edge.start()
        for t in threads:
            t.join(30)
        assert answers.get("https") in ("TLSv1.2", "TLSv1.3"), answers
        head = bytes(answers.get("http", b""))
        assert head.startswith(b"HTTP/1.1 404") or head.startswith(b"HTTP/1.1 2"), head[:200]
        # The new process serves the same addresses from the same sockets, and says where they came from.
        assert edge.log_text().count("handed over by the service manager") >= 2
    finally:
        edge.stop()
        _close(edge)


def test_tls_edge_workers_accept_on_the_handed_over_socket(tmp_path, pebble, dns):
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_WORKERS": "2"}).hand_over_sockets()
    try:
        edge.start()
        for _ in range(20):  # every connection is served, whichever process accepts it
            served_leaf(edge.https_port, "whatever.example.com")
        assert "Traceback" not in edge.log_text() and "address already in use" not in edge.log_text()
    finally:
        edge.stop()
        _close(edge)


def test_only_this_processs_sockets_are_taken_and_matched_by_name_or_address():
    # Variables meant for another process (LISTEN_PID differs) or not numbers: nothing taken, variables removed.
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "3", "LISTEN_FDNAMES": "api:http:https"}
    assert take_inherited(env) == [] and env == {}
    env = {"LISTEN_PID": "x", "LISTEN_FDS": "3"}
    assert take_inherited(env) == [] and env == {}
    a, b, c = (socket.socket() for _ in range(3))
    try:
        for s in (a, b, c):
            s.bind(("127.0.0.1", 0))
            s.listen()
        got = [("https", a), ("", b), ("", c)]
        assert pick(got, "https", "0.0.0.0", 443) is a  # by name first
        assert pick(got, "api", "127.0.0.1", c.getsockname()[1]) is c  # else by address
        assert pick(got, "http", "", b.getsockname()[1]) is b  # a wildcard host matches any address of the port
        assert got == [] and pick(got, "http", "", 80) is None
    finally:
        for s in (a, b, c):
            s.close()
