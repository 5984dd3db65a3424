"""TLS-ALPN-01 (RFC 8737) answered by the TLS edge itself: the challenge certificate chosen in the ClientHello path
(C engine and Python ``ssl`` fallback, both over real sockets with ``openssl s_client -alpn acme-tls/1``), a normal
client on the same name at the same moment still served normally, answers followed from the store
(``challenge_tokens``, kind ``tls-alpn-01``), and a domain made active by the real Pebble validating over the edge's
HTTPS port while its HTTP-01 port is closed. No timing is asserted."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
import subprocess
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge.config import Settings
from edge.demo.process import free_port
from edge.tls_edge import engine as tlsengine
from edge.tls_edge.certificates import (ID_PE_ACME_IDENTIFIER, generate_default_certificate,
                                        make_challenge_certificate)
from edge.tls_edge.clienthello import UNPARSEABLE, parse
from edge.tls_edge.handshake_rules import HandshakeRules
from edge.tls_edge.http import EdgeHttpServer
from edge.tls_edge.index import CertEntry, SniIndex
from tests.certs import self_signed
from tests.helpers import IN_CI, require_binary

NAME = "shop.alpn.test"
KEY_AUTH = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture(params=["engine", "pyssl"])
def driver(request):
    """Every handshake test runs with TLS driven by the C engine and by Python's ssl module (the fallback)."""
    if request.param == "engine" and not tlsengine.available():
        if IN_CI:
            pytest.fail(f"the C TLS engine must be built in CI: {tlsengine.unavailable_reason()}")
        pytest.skip(f"C TLS engine unavailable: {tlsengine.unavailable_reason()}")
    return request.param


async def _edge(engine: bool) -> tuple[EdgeHttpServer, SniIndex, int, bytes]:
    dpem, dkey = generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=engine)
    assert (index.engine is not None) == engine
    pem, key, _ = self_signed(NAME)
    index.put(CertEntry(hostname=NAME, fullchain_pem=pem, key_pem=key, serial="1"))
    srv = EdgeHttpServer(types.SimpleNamespace(settings=Settings(), index=index,
                                               bench_stats={"connections": 0, "resumed": 0}))
    port = free_port()
    await srv.start("127.0.0.1", port, index.default_context)
    return srv, index, port, pem


def _s_client(port: int, name: str, *extra: str) -> str:
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, "-showcerts",
                        *extra], input=b"", capture_output=True, timeout=20)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def _leaf(out: str) -> x509.Certificate:
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
    assert m, out
    return x509.load_pem_x509_certificate(m.group(0).encode())


def _assert_challenge_cert(cert: x509.Certificate, name: str, key_authorization: str) -> None:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    ext = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(key_authorization.encode()).digest()


def _normal_client(port: int, name: str) -> tuple[bytes, str | None, bytes]:
    """A visitor speaking HTTP/1.1 (ALPN http/1.1; HTTP/2 has its own tests): the leaf it was served, the ALPN
    agreed, the HTTP answer."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            body = b""
            while chunk := tls.recv(65536):
                body += chunk
            return tls.getpeercert(binary_form=True), tls.selected_alpn_protocol(), body


def _validator(port: int, name: str) -> tuple[bytes, str | None, bytes]:
    """What an ACME validator does (ALPN acme-tls/1 only), then an HTTP request the edge must not answer."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            der, alpn = tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()
            try:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
                rest = tls.recv(65536)
            except (ssl.SSLError, OSError):
                rest = b""
            return der, alpn, rest


async def test_acme_tls_1_gets_the_challenge_certificate_and_others_the_tenant_one(driver):
    require_binary("openssl")
    srv, index, port, tenant_pem = await _edge(driver == "engine")
    try:
        cert_pem, key_pem = await asyncio.to_thread(make_challenge_certificate, NAME, KEY_AUTH)
        await asyncio.to_thread(index.put_challenge, NAME, cert_pem, key_pem)

        # The validator and a visitor at the same moment, on the same name.
        validator = asyncio.to_thread(_s_client, port, NAME, "-alpn", "acme-tls/1")
        visitors = [asyncio.to_thread(_normal_client, port, NAME) for _ in range(4)]
        out, (vder, valpn, rest), *seen = await asyncio.gather(validator, asyncio.to_thread(_validator, port, NAME),
                                                               *visitors)
        assert "ALPN protocol: acme-tls/1" in out, out
        _assert_challenge_cert(_leaf(out), NAME, KEY_AUTH)
        assert valpn == "acme-tls/1"
        _assert_challenge_cert(x509.load_der_x509_certificate(vder), NAME, KEY_AUTH)
        assert rest == b""  # the edge closed after the handshake: no HTTP on a validation connection
        tenant_der = ssl.PEM_cert_to_DER_cert(tenant_pem.decode())
        for der, alpn, body in seen:
            assert der == tenant_der and alpn == "http/1.1"
            assert body.startswith(b"HTTP/1.1 200") and NAME.encode() in body

        # acme-tls/1 for a name with no pending answer: no challenge certificate, a no_application_protocol alert.
        out = await asyncio.to_thread(_s_client, port, "other.alpn.test", "-alpn", "acme-tls/1")
        assert "alert no application protocol" in out or "alert number 120" in out, out
        assert "BEGIN CERTIFICATE" not in out

        # Offering acme-tls/1 among other protocols is not a validation: the tenant's certificate, http/1.1.
        out = await asyncio.to_thread(_s_client, port, NAME, "-alpn", "acme-tls/1,http/1.1")
        assert "ALPN protocol: http/1.1" in out
        assert _leaf(out).public_bytes(Encoding.DER) == tenant_der

        # Withdrawn: the validator gets no challenge certificate any more (engine: alert 120; the fallback with
        # no rule left does not read the ClientHello: the tenant's certificate, no ALPN agreed).
        index.remove_challenge(NAME)
        out = await asyncio.to_thread(_s_client, port, NAME, "-alpn", "acme-tls/1")
        assert "ALPN protocol: acme-tls/1" not in out
        if driver == "engine":
            assert "alert number 120" in out or "no application protocol" in out, out
        else:
            assert _leaf(out).public_bytes(Encoding.DER) == tenant_der
    finally:
        await srv.stop()


async def test_answers_follow_the_store_and_local_ones_stay_until_withdrawn(tmp_path):
    """Another process's answers arrive through ``challenge_tokens`` (kind tls-alpn-01); this process's own stay
    served (pinned) while the store does not list them, until withdrawn."""
    from store import SQLStorage, make_engine, migrate
    url = f"sqlite:///{tmp_path}/s.db"
    engine = make_engine(url)
    migrate(engine)
    storage = SQLStorage(engine)
    dpem, dkey = generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=tlsengine.available())
    rules = HandshakeRules(index, database_url=url, floors_interval=0.2)
    try:
        await storage.put_challenge("tok-a", "tok-a.thumb", "a.follow.test", kind="tls-alpn-01", ttl=60)
        await storage.put_challenge("tok-h", "tok-h.thumb", "h.follow.test", kind="http-01", ttl=60)
        await storage.put_challenge("tok-x", "tok-x.thumb", "x.follow.test", kind="tls-alpn-01", ttl=-1)  # expired
        await rules.poll_once()
        assert set(index.challenges) == {"a.follow.test"}
        assert rules.answering() == {"a.follow.test": "tok-a"}
        await rules.publish(hostname="b.follow.test", token="tok-b", key_authorization="tok-b.thumb")
        await rules.poll_once()  # the store does not list b (yet): still served, this process published it
        assert set(index.challenges) == {"a.follow.test", "b.follow.test"}
        await storage.delete_challenge("tok-a")
        await rules.poll_once()
        assert set(index.challenges) == {"b.follow.test"}
        rules.withdraw(hostname="b.follow.test", token="tok-other")  # not its token: kept
        assert set(index.challenges) == {"b.follow.test"}
        rules.withdraw(hostname="b.follow.test", token="tok-b")
        assert index.challenges == {}
        # What is served is the certificate made from the stored key authorization.
        await storage.put_challenge("tok-c", "tok-c.thumb", "c.follow.test", kind="tls-alpn-01", ttl=60)
        await rules.poll_once()
        if index.engine is not None:
            client, conn, _, _ = tlsengine.handshake_with(index.engine, "c.follow.test", alpn=["acme-tls/1"])
            assert conn.selected_alpn_protocol() == "acme-tls/1"
            _assert_challenge_cert(x509.load_der_x509_certificate(client.getpeercert(binary_form=True)),
                                   "c.follow.test", "tok-c.thumb")
    finally:
        await rules.stop()
        await asyncio.to_thread(storage.close)


def test_client_hello_parser_reads_alpn_and_versions():
    """The fallback's ClientHello reader, on ClientHellos written by OpenSSL (Python's ssl client), split anyhow."""
    def hello(alpn, max_version=None) -> bytes:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if max_version:
            ctx.maximum_version = max_version
        c2s, s2c = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(s2c, c2s, server_hostname="p.alpn.test")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        return c2s.read()

    h = hello(["acme-tls/1"])
    assert parse(h) == (True, True, 0x0304, "p.alpn.test")
    assert parse(h[:3]) is None and parse(h[:-1]) is None  # more bytes needed
    assert parse(hello(["acme-tls/1", "http/1.1"])) == (True, False, 0x0304, "p.alpn.test")
    assert parse(hello(None, ssl.TLSVersion.TLSv1_2)) == (True, False, 0x0303, "p.alpn.test")
    # The same hello cut into two records: reassembled.
    body = h[5:]
    two = b"\x16\x03\x01" + (100).to_bytes(2, "big") + body[:100] + \
        b"\x16\x03\x01" + (len(body) - 100).to_bytes(2, "big") + body[100:]
    assert parse(two) == (True, True, 0x0304, "p.alpn.test")
    assert parse(b"GET / HTTP/1.1\r\n\r\n") == UNPARSEABLE
    assert parse(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") == UNPARSEABLE  # a handshake, not a ClientHello


@pytest.mark.slow
def test_pebble_validates_tls_alpn_01_on_the_edge_https_port_with_http_closed(tmp_path, pebble_factory, dns):
    """The real Pebble with its TLS-ALPN port aimed at the edge's HTTPS port and its HTTP port aimed at nothing: the
    domain becomes active through tls-alpn-01 alone. Two processes serve the port (``workers: 2``: the full service
    and an edge worker that follows the store), and Pebble's validator opens several connections: whichever process
    takes one answers it."""
    import asyncio as aio
    from store import open_storage
    from store.models import utcnow
    from tests.helpers import EdgeProcess, served_leaf
    require_binary("openssl")
    https_port = free_port()
    pebble = pebble_factory("pebble-alpn", tls_port=https_port)  # its http_port: a free port nobody listens on
    with socket.socket() as s:  # nothing answers HTTP-01 there
        assert s.connect_ex(("127.0.0.1", pebble.http_port)) != 0
    db = tmp_path / "edge" / "edgecert.db"
    db.parent.mkdir(parents=True)

    async def seed() -> None:
        storage = open_storage(f"sqlite:///{db}")
        t = await storage.ensure_tenant("alpn")
        await storage.add_domain("tls.alpn.test", t.id, validation="tls-alpn-01", next_check_at=utcnow())
        storage.close()
    aio.run(seed())
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_HTTPS_LISTEN": f"127.0.0.1:{https_port}", "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "EDGECERT_WORKERS": "2"})
    edge.https_port = https_port
    edge.start()
    try:
        d = edge.wait_status("tls.alpn.test", "active", timeout=90)
        kinds = {(e["kind"], (e.get("data") or {}).get("type")) for e in edge.events("tls.alpn.test")}
        assert ("challenge_answered", "tls-alpn-01") in kinds, kinds
        assert not any(k == "challenge_answered" and t == "http-01" for k, t in kinds)
        # Two edge workers: each swaps in the new certificate when it hears of it; wait until both serve it.
        edge.wait_for(lambda: all(format(served_leaf(https_port, "tls.alpn.test").serial_number, "x")
                                  == d["certificate"]["serial"] for _ in range(6)), timeout=15,
                      what="every worker to serve the new certificate")
        out = _s_client(https_port, "tls.alpn.test", "-CAfile", pebble.roots_file, "-verify_hostname",
                        "tls.alpn.test", "-verify_return_error")
        assert "Verify return code: 0 (ok)" in out, out
        # The answer was withdrawn once the order was over: within a poll of the store, no process serves it (six
        # validator handshakes in a row, spread over both processes by the kernel, get alert 120).
        import time
        deadline = time.monotonic() + 15
        while True:
            outs = [_s_client(https_port, "tls.alpn.test", "-alpn", "acme-tls/1") for _ in range(6)]
            refused = all("alert number 120" in o or "no application protocol" in o for o in outs)
            if refused or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert refused, outs
    finally:
        edge.stop()
    assert "Traceback" not in edge.log_text()


async def test_a_validation_never_resumes_a_session(driver, tmp_path):
    """A ticket from a normal TLS 1.2 visit offered with ALPN acme-tls/1 is not used: a full handshake with the
    challenge certificate (the same ticket offered by a normal client resumes)."""
    require_binary("openssl")
    srv, index, port, _pem = await _edge(driver == "engine")
    try:
        cert_pem, key_pem = await asyncio.to_thread(make_challenge_certificate, NAME, KEY_AUTH)
        await asyncio.to_thread(index.put_challenge, NAME, cert_pem, key_pem)
        sess = str(tmp_path / "sess.pem")
        out = await asyncio.to_thread(_s_client, port, NAME, "-tls1_2", "-alpn", "http/1.1", "-sess_out", sess)
        assert "New, TLSv1.2" in out and "TLS session ticket:" in out, out
        again = await asyncio.to_thread(_s_client, port, NAME, "-tls1_2", "-alpn", "http/1.1", "-sess_in", sess)
        assert "Reused, TLSv1.2" in again, again
        out = await asyncio.to_thread(_s_client, port, NAME, "-tls1_2", "-alpn", "acme-tls/1", "-sess_in", sess)
        assert "New, TLSv1.2" in out and "ALPN protocol: acme-tls/1" in out, out
        _assert_challenge_cert(_leaf(out), NAME, KEY_AUTH)
    finally:
        await srv.stop()
