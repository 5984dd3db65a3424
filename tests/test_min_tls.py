"""Per-hostname ``min_tls_version`` enforced in the handshake (memory only): a TLS 1.2 client to a name that wants
TLS 1.3 gets a protocol_version alert (70), other names are untouched; with the C engine (ClientHello callback,
``SSL_set_min_proto_version`` before the version is chosen) and with Python's ``ssl`` (the ClientHello read by the
HTTP layer); and in a real ``edgecert serve`` (two processes) that follows ``domains.min_tls_version`` in the store.
Checked with ``openssl s_client -tls1_2`` / ``-tls1_3``. No timing is asserted."""

from __future__ import annotations

import asyncio
import subprocess
import time
import types

import pytest

from edge.config import Settings
from edge.demo.process import free_port
from edge.tls_edge import engine as tlsengine
from edge.tls_edge.certificates import generate_default_certificate
from edge.tls_edge.http import EdgeHttpServer
from edge.tls_edge.index import CertEntry, SniIndex, load_min_tls_rows
from tests.certs import self_signed
from tests.helpers import IN_CI, require_binary


@pytest.fixture(params=["engine", "pyssl"])
def driver(request):
    if request.param == "engine" and not tlsengine.available():
        if IN_CI:
            pytest.fail(f"the C TLS engine must be built in CI: {tlsengine.unavailable_reason()}")
        pytest.skip(f"C TLS engine unavailable: {tlsengine.unavailable_reason()}")
    return request.param


def _s_client(port: int, name: str, *extra: str) -> str:
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, *extra],
                       input=b"", capture_output=True, timeout=20)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def _refused(out: str) -> bool:
    return "alert protocol version" in out or "alert number 70" in out


def _served(out: str, version: str) -> bool:
    return f"Protocol  : {version}" in out or f"New, {version}" in out


async def test_a_tls13_name_refuses_tls12_clients_and_other_names_do_not(driver):
    require_binary("openssl")
    dpem, dkey = generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=driver == "engine")
    for h in ("strict.min.test", "open.min.test"):
        pem, key, _ = self_signed(h)
        index.put(CertEntry(hostname=h, fullchain_pem=pem, key_pem=key, serial="1"))
    load_min_tls_rows(index, [("strict.min.test", "1.3"), ("open.min.test", "1.2"), ("*.wild.min.test", "1.3")])
    assert index.min_tls == {"strict.min.test": 0x0304, "*.wild.min.test": 0x0304}
    srv = EdgeHttpServer(types.SimpleNamespace(settings=Settings(), index=index,
                                               bench_stats={"connections": 0, "resumed": 0}))
    port = free_port()
    await srv.start("127.0.0.1", port, index.default_context)
    try:
        async def run(name: str, flag: str) -> str:
            return await asyncio.to_thread(_s_client, port, name, flag)
        strict12, strict13, open12, wild12, wild13, upper12 = await asyncio.gather(
            run("strict.min.test", "-tls1_2"), run("strict.min.test", "-tls1_3"), run("open.min.test", "-tls1_2"),
            run("a.wild.min.test", "-tls1_2"), run("a.wild.min.test", "-tls1_3"), run("STRICT.min.test.", "-tls1_2"))
        assert _refused(strict12) and "BEGIN CERTIFICATE" not in strict12, strict12
        assert _served(strict13, "TLSv1.3"), strict13
        assert _served(open12, "TLSv1.2"), open12
        assert _refused(wild12) and _served(wild13, "TLSv1.3")  # the wildcard's floor, one label up
        assert _refused(upper12)  # the SNI as sent: upper case, trailing dot
        # The floor lifted: TLS 1.2 works again for that name.
        load_min_tls_rows(index, [], hostnames=["strict.min.test"])
        assert _served(await run("strict.min.test", "-tls1_2"), "TLSv1.2")
    finally:
        await srv.stop()


@pytest.mark.slow
def test_edgecert_serve_follows_min_tls_version_from_the_store(edge_factory, pebble):
    """A real ``edgecert serve`` with two processes on the port: ``domains.min_tls_version`` set in the store is
    enforced by both within a sweep, and lifted the same way."""
    require_binary("openssl")
    from store import open_storage
    edge = edge_factory("mintls", EDGECERT_WORKERS="2")
    edge.add_domain("floor.min.test", tenant="floors")
    edge.wait_status("floor.min.test", "active", timeout=60)
    verify = ["-CAfile", pebble.roots_file, "-verify_hostname", "floor.min.test", "-verify_return_error"]
    storage = open_storage(edge.env["EDGECERT_DATABASE_URL"])

    def every_process(flag: str, check) -> list[str]:
        """Six handshakes in a row (spread over both processes by the kernel) pass ``check``, within 15 s."""
        deadline = time.monotonic() + 15
        while True:
            outs = [_s_client(edge.https_port, "floor.min.test", flag, *verify) for _ in range(6)]
            if all(check(o) for o in outs) or time.monotonic() > deadline:
                return outs
            time.sleep(0.3)
    try:
        assert all(_served(o, "TLSv1.2") for o in every_process("-tls1_2", lambda o: _served(o, "TLSv1.2")))
        asyncio.run(storage.update_domain("floor.min.test", min_tls_version="1.3"))
        outs = every_process("-tls1_2", _refused)
        assert all(_refused(o) for o in outs), outs
        outs = every_process("-tls1_3", lambda o: "Verify return code: 0 (ok)" in o)
        assert all(_served(o, "TLSv1.3") and "Verify return code: 0 (ok)" in o for o in outs), outs
        asyncio.run(storage.update_domain("floor.min.test", min_tls_version="1.2"))
        outs = every_process("-tls1_2", lambda o: _served(o, "TLSv1.2"))
        assert all(_served(o, "TLSv1.2") for o in outs), outs
    finally:
        storage.close()
    assert "Traceback" not in edge.log_text()


async def test_the_edge_store_reads_floors_and_tls_alpn_answers(database_url):
    """``store.readonly.EdgeStore`` (what every edge process follows), on SQLite and PostgreSQL: the domains'
    ``min_tls_version`` (all set ones, or those of given names) and the TLS-ALPN-01 answers not expired."""
    from store import open_storage
    from store.readonly import EdgeStore
    storage = open_storage(database_url)
    edge_store = EdgeStore(database_url)
    try:
        t = await storage.ensure_tenant("floors")
        await storage.add_domain("a.rows.test", t.id, min_tls_version="1.3")
        await storage.add_domain("b.rows.test", t.id)
        await storage.add_domain("c.rows.test", t.id, min_tls_version="1.2")
        assert sorted(edge_store.min_tls_rows()) == [("a.rows.test", "1.3"), ("c.rows.test", "1.2")]
        assert sorted(edge_store.min_tls_rows(["a.rows.test", "b.rows.test"])) == [("a.rows.test", "1.3"),
                                                                                 ("b.rows.test", None)]
        await storage.put_challenge("tok-1", "tok-1.thumb", "a.rows.test", kind="tls-alpn-01", ttl=60)
        await storage.put_challenge("tok-2", "tok-2.thumb", "b.rows.test", kind="http-01", ttl=60)
        await storage.put_challenge("tok-3", "tok-3.thumb", "c.rows.test", kind="tls-alpn-01", ttl=-5)
        assert [tuple(r) for r in edge_store.tls_alpn_answers()] == [("tok-1", "a.rows.test", "tok-1.thumb")]
        dpem, dkey = generate_default_certificate()
        index = SniIndex(default_fullchain=dpem, default_key=dkey)
        load_min_tls_rows(index, edge_store.min_tls_rows())
        assert index.min_tls == {"a.rows.test": 0x0304}
    finally:
        edge_store.close()
        await asyncio.to_thread(storage.close)
