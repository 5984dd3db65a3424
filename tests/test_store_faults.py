"""The database goes away (a REAL PostgreSQL stopped with pg_ctl, then started again): the storage raises one typed
error, the node keeps answering the HTTP-01 challenges it published from memory, the API answers 503 with
Retry-After in the usual error shape (no 500, no traceback), and everything works again once the database is back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from edge.demo.process import free_port
from store.protocol import Conflict, StoreUnavailable
from tests.helpers import ADMIN_TOKEN, EdgeProcess, IN_CI
from tests.support.postgres import PostgresServer, find_postgres_bin_dir


class Cluster:
    """A private PostgreSQL cluster (not the session one: these tests stop it) that can be stopped and started."""

    def __init__(self, work_dir: Path) -> None:
        try:
            self.bin = find_postgres_bin_dir()
        except Exception as e:  # noqa: BLE001 - depends on the machine
            if IN_CI:
                pytest.fail(f"PostgreSQL binaries are missing in CI: {e}")
            pytest.skip(f"PostgreSQL binaries not installed: {e}")
        if os.environ.get("EDGECERT_TEST_DATABASE_URL"):
            pytest.skip("these tests stop the server: they need a throwaway cluster, not $EDGECERT_TEST_DATABASE_URL")
        self.server = PostgresServer(work_dir=work_dir, bin_dir=self.bin).start()

    def _pg_ctl(self, *args: str) -> None:
        assert self.server.cluster_dir is not None
        argv = [str(self.bin / "pg_ctl"), "-D", str(self.server.cluster_dir / "data"), "-w", "-t", "60", *args]
        if os.geteuid() == 0:  # the cluster runs as the postgres user (see PostgresServer)
            argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd="/")
        assert r.returncode == 0, r.stdout + r.stderr

    def down(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def up(self) -> None:
        self._pg_ctl("-l", str(self.server.log_path), "start")

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "pg")
    yield c
    c.stop()


async def test_storage_raises_one_typed_error_while_the_database_is_down(cluster):
    from store import open_storage
    url = cluster.server.create_database()
    storage = await asyncio.to_thread(open_storage, url)
    try:
        t = await storage.ensure_tenant("faults")
        await storage.add_domain("a.faults.test", t.id)
        with pytest.raises(Conflict):  # a statement error keeps its own type
            await storage.add_domain("a.faults.test", t.id)
        await asyncio.to_thread(cluster.down)
        with pytest.raises(StoreUnavailable):
            await storage.get_domain("a.faults.test")
        with pytest.raises(StoreUnavailable):
            await storage.put_challenge("tok", "tok.keyauth", "a.faults.test")
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(storage.served_rows)
        await asyncio.to_thread(cluster.up)
        assert (await storage.get_domain("a.faults.test")).hostname == "a.faults.test"
    finally:
        await asyncio.to_thread(storage.close)


@pytest.mark.slow
async def test_node_answers_its_http01_challenges_and_the_api_503s_while_postgres_is_down(cluster, tmp_path):
    from edge.app import Server
    from edge.config import Settings
    from store import open_storage
    url = cluster.server.create_database()
    http_port, api_port = free_port(), free_port()
    settings = Settings(database_url=url, state_dir=str(tmp_path / "state"), admin_token=ADMIN_TOKEN,
                        api_listen=f"127.0.0.1:{api_port}", http_listen=f"127.0.0.1:{http_port}",
                        https_listen="127.0.0.1:0", acme_directory="https://127.0.0.1:9/dir",
                        sweep_interval=0.5, store_retry_after=7, probe_interval=0)
    server = Server(settings)
    services = await server.start()
    other = await asyncio.to_thread(open_storage, url)  # another node sharing the database
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        # What the issuer does when it answers an HTTP-01 challenge (acme_client/issuer.py -> publisher).
        await services.publisher.publish(hostname="mine.faults.test", kind="http-01", token="tok-mine",
                                         key_authorization="tok-mine.thumbprint")
        await other.put_challenge("tok-other", "tok-other.thumbprint", "other.faults.test", kind="http-01")
        async with aiohttp.ClientSession() as s:
            async def get(port: int, path: str, host: str | None = None) -> tuple[int, dict, str]:
                headers = dict(auth)
                if host:
                    headers["Host"] = host
                async with s.get(f"http://127.0.0.1:{port}{path}", headers=headers,
                                 allow_redirects=False) as r:
                    return r.status, dict(r.headers), await r.text()

            assert (await get(http_port, "/.well-known/acme-challenge/tok-other", "other.faults.test"))[0] == 200
            st, _, body = await get(api_port, "/v1/domains")
            assert st == 200, body

            await asyncio.to_thread(cluster.down)
            # This node's own answer still comes back (from memory); a wrong Host still gets none.
            st, _, body = await get(http_port, "/.well-known/acme-challenge/tok-mine", "mine.faults.test")
            assert (st, body) == (200, "tok-mine.thumbprint")
            assert (await get(http_port, "/.well-known/acme-challenge/tok-mine", "other.faults.test"))[0] == 404
            # Another node's answer lives only in the database: 503 with Retry-After, not a 500.
            st, headers, _ = await get(http_port, "/.well-known/acme-challenge/tok-other", "other.faults.test")
            assert st == 503 and headers["Retry-After"] == "7"
            # The API: 503, Retry-After, the usual error shape, in plain words.
            for path in ("/v1/domains", "/v1/domains/mine.faults.test", "/v1/tenants"):
                st, headers, body = await get(api_port, path)
                assert st == 503, (path, st, body)
                assert headers["Retry-After"] == "7"
                err = json.loads(body)["error"]
                assert err["code"] == "store_unavailable" and "database" in err["message"]
                assert "psycopg" not in body and "Traceback" not in body and "127.0.0.1" not in body
            async with s.post(f"http://127.0.0.1:{api_port}/v1/domains", headers=auth,
                              json={"hostname": "new.faults.test", "tenant": "t"}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "7"

            await asyncio.to_thread(cluster.up)
            st, _, body = await get(api_port, "/v1/domains")
            assert st == 200, body
            assert (await get(http_port, "/.well-known/acme-challenge/tok-other", "other.faults.test"))[0] == 200
            # Withdrawn: gone from memory and store.
            await services.publisher.withdraw(hostname="mine.faults.test", kind="http-01", token="tok-mine")
            assert services.publisher.answer("tok-mine") is None
            assert (await get(http_port, "/.well-known/acme-challenge/tok-mine", "mine.faults.test"))[0] == 404
    finally:
        await asyncio.to_thread(other.close)
        await server.stop()


def test_publisher_memory_is_bounded():
    from edge.app import StorePublisher

    class Store:
        async def put_challenge(self, *a, **k):
            pass

        async def delete_challenge(self, token):
            pass

    p = StorePublisher(Store(), max_entries=3)

    async def run():
        for i in range(5):
            await p.publish(hostname=f"h{i}.test", kind="http-01", token=f"t{i}", key_authorization=f"k{i}")
    asyncio.run(run())
    assert len(p) == 3 and p.answer("t0") is None and p.answer("t4") == ("h4.test", "http-01", "k4")


@pytest.mark.slow
def test_service_recovers_after_postgres_restart(cluster, tmp_path, pebble, dns):
    """The real service (``edgecert serve``) on the real PostgreSQL: 503 with Retry-After while it is stopped,
    and onboarding works again once it is back."""
    url = cluster.server.create_database()
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={"EDGECERT_DATABASE_URL": url})
    try:
        edge.start()
        edge.add_domain("before.pgdown.test", tenant="pgdown")
        edge.wait_status("before.pgdown.test", "active", timeout=90)
        cluster.down()
        st, body = edge.call("GET", "/v1/domains")
        assert st == 503 and body["error"]["code"] == "store_unavailable", body
        st, body = edge.call("POST", "/v1/domains", {"hostname": "during.pgdown.test", "tenant": "pgdown"})
        assert st == 503 and body["error"]["code"] == "store_unavailable", body
        cluster.up()
        edge.wait_for(lambda: edge.call("GET", "/v1/domains")[0] == 200, timeout=30, what="API back")
        edge.add_domain("after.pgdown.test", tenant="pgdown")
        edge.wait_status("after.pgdown.test", "active", timeout=90)
        assert "internal error on GET /v1/domains" not in edge.log_text()
    finally:
        edge.stop()


class ValidationTap:
    """Listens where Pebble's VA connects for HTTP-01 (``pebble.http_port``) and forwards to the edge's plain-HTTP
    listener; ``on_first`` runs (once) when the first validation request arrives, before it is forwarded."""

    def __init__(self, listen_port: int, target_port: int, on_first) -> None:
        import http.server
        import threading
        import urllib.error
        import urllib.request
        tap = self
        self.seen: list[tuple[str, int, bytes]] = []
        self._first = threading.Lock()
        self._done = False

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with tap._first:
                    if not tap._done:
                        tap._done = True
                        on_first()
                req = urllib.request.Request(f"http://127.0.0.1:{target_port}{self.path}",
                                             headers={"Host": self.headers.get("Host", "")})
                try:
                    with urllib.request.urlopen(req, timeout=20) as r:
                        status, body = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, body = e.code, e.read()
                tap.seen.append((self.path, status, body))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_the_ca_validates_http01_while_postgres_is_down(cluster, tmp_path, pebble, dns):
    """Pebble's validation request reaches the node only once PostgreSQL is stopped: the node answers it from
    memory (200 with the key authorization), not 500; once the database is back the name becomes active."""
    url = cluster.server.create_database()
    edge_http = free_port()
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_DATABASE_URL": url, "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{edge_http}"})
    tap = None
    try:
        edge.start()
        tap = ValidationTap(pebble.http_port, edge_http, on_first=cluster.down)
        h = "validate.pgdown.test"
        orders, issued = pebble.order_count(), pebble.issued_count()
        st, body = edge.call("POST", "/v1/domains", {"hostname": h, "tenant": "pgdown"})
        assert st == 201, body
        edge.wait_for(lambda: tap.seen, timeout=60, what="Pebble's validation request")
        path, status, answer = tap.seen[0]
        token = path.rsplit("/", 1)[-1]
        assert status == 200 and answer.decode().startswith(token + "."), tap.seen[0]
        st, body = edge.call("GET", "/v1/domains")
        assert st == 503 and body["error"]["code"] == "store_unavailable"
        cluster.up()
        edge.wait_status(h, "active", timeout=120)
        assert all(s == 200 for _, s, _ in tap.seen), tap.seen
        # From the CA's side: the outage cost nothing: one order, one certificate.
        assert (pebble.order_count() - orders, pebble.issued_count() - issued) == (1, 1)
    finally:
        if tap is not None:
            tap.close()
        edge.stop()
