"""The C TLS engine (edge/_edgetls.c, edge/tlsengine.py): certificate objects, in-memory handshakes against Python's
ssl client (SNI selection, default certificate, ALPN, TLS 1.2 with ECDSA and RSA, data both ways, alerts, tickets that
resume only for their own name), the SNI index in engine mode, and real ``openssl s_client`` handshakes against the
edge's HTTP layer driven by the engine. No timing is asserted."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
import sys
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edge.config import Settings
from edge.tls_edge import certificates
from edge.tls_edge import engine as tlsengine
from edge.tls_edge.certificates import generate_default_certificate
from edge.tls_edge.index import CertEntry, SniIndex
from edge.demo.process import free_port
from tests.certs import self_signed
from tests.helpers import IN_CI, require_binary

if not tlsengine.available():
    if IN_CI:
        pytest.fail(f"the C TLS engine must be built in CI: {tlsengine.unavailable_reason()}", pytrace=False)
    pytest.skip(f"C TLS engine unavailable: {tlsengine.unavailable_reason()}", allow_module_level=True)

from edge.tls_edge import _edgetls  # noqa: E402


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _ck(name: str, *, key=None):
    pem, key_pem, _ = self_signed(name, key=key)
    return tlsengine.certkey(_der(pem), b"", key_pem), _der(pem)


def _client_ctx(*, alpn=None, tls12=False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _client(server_hostname, *, ctx=None):
    """A client that has not started its handshake, and its BIOs."""
    c2s, s2c = ssl.MemoryBIO(), ssl.MemoryBIO()
    return (ctx or _client_ctx()).wrap_bio(s2c, c2s, server_hostname=server_hostname), c2s, s2c


def _handshake(engine, name, *, ctx=None, session=None, **ctx_options):
    out = tlsengine.handshake_with(engine, name, ctx=ctx or _client_ctx(**ctx_options), session=session)
    assert out[1].established
    return out


def _engine(table: dict, *, tickets=False):
    dpem, dkey = generate_default_certificate(common_name="engine test default")
    return tlsengine.make_engine(table.get, dpem, dkey, tickets=tickets), _der(dpem)


# -- certificate objects -------------------------------------------------------------------------------------

def test_certkey_accepts_pkcs8_sec1_and_pkcs1_and_refuses_a_foreign_key():
    k = ec.generate_private_key(ec.SECP256R1())
    pem, _, _ = self_signed("k.example", key=k)
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        key_pem = k.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        assert isinstance(tlsengine.certkey(_der(pem), b"", key_pem), _edgetls.CertKey)
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rpem, _, _ = self_signed("r.example", key=r)
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        key_pem = r.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        assert isinstance(tlsengine.certkey(_der(rpem), b"", key_pem), _edgetls.CertKey)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError, match="does not match"):
        tlsengine.certkey(_der(pem), b"", other)


@pytest.mark.parametrize("curve_or_rsa", ["p256", "p384", "rsa"])
def test_leaf_key_decoded_without_the_decoder_serves_the_same_verified_certificate(curve_or_rsa):
    """The leaf's public key is decoded by OpenSSL's legacy decoder (cheaper than 3.0's OSSL_DECODER, see
    _edgetls.c d2i_leaf); both ways the engine serves the same bytes, a verifying client accepts them over TLS 1.3
    and 1.2, a foreign key is still refused, and the rest of the process (Python's ssl here) is unaffected."""
    key = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
           "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
           "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)}[curve_or_rsa]()
    pem, key_pem, _ = self_signed("v.example", key=key)
    der = _der(pem)
    plain_ck = tlsengine.certkey(der, b"", key_pem, legacy_spki=False)
    legacy_ck = tlsengine.certkey(der, b"", key_pem, legacy_spki=True)
    was = _edgetls.set_legacy_spki(True)  # the module-wide default, as CertKey(legacy_spki=None) reads it
    try:
        assert was is False  # off unless asked for
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        with pytest.raises(ValueError, match="does not match"):
            tlsengine.certkey(der, b"", other)
    finally:
        _edgetls.set_legacy_spki(was)
    for ck in (plain_ck, legacy_ck):
        engine, _ = _engine({"v.example": ck})
        for tls12 in (False, True):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
            ctx.load_verify_locations(cadata=pem.decode())
            if tls12:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            client, conn, _, _ = _handshake(engine, "v.example", ctx=ctx)
            assert client.getpeercert(binary_form=True) == der == conn.certificate()
            assert conn.version() == ("TLSv1.2" if tls12 else "TLSv1.3")


@pytest.mark.parametrize("leaf,key,why", [
    (b"not der", None, "DER certificate"),
    (None, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "EC or RSA key"),
    (None, b"no pem at all", "PEM private key"),
    (None, b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "unencrypted"),
])
def test_certkey_bad_input_is_a_clear_value_error(leaf, key, why):
    pem, key_pem, _ = self_signed("bad.example")
    with pytest.raises(ValueError, match=why):
        tlsengine.certkey(leaf if leaf is not None else _der(pem), b"", key if key is not None else key_pem)
    with pytest.raises(ValueError):
        _edgetls.Chain([_der(pem) + b"trailing"])


# -- handshakes in memory ------------------------------------------------------------------------------------

def test_sni_picks_the_certificate_unknown_and_no_sni_get_the_default():
    a, a_der = _ck("a.example")
    b, b_der = _ck("b.example")
    engine, default_der = _engine({"a.example": a, "b.example": b})
    for name, want in (("a.example", a_der), ("b.example", b_der), ("c.example", default_der), (None, default_der)):
        client, conn, _, _ = _handshake(engine, name)
        assert client.getpeercert(binary_form=True) == want
        assert conn.certificate() == want
        assert conn.server_name == name
        assert conn.version() == "TLSv1.3" and client.version() == "TLSv1.3"
        assert conn.session_reused is False


def test_alpn_tls12_ecdsa_and_rsa_and_data_both_ways_then_close_notify():
    e, e_der = _ck("e.example")
    r, r_der = _ck("r.example", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    engine, _ = _engine({"e.example": e, "r.example": r})
    for name, want, suite in (("e.example", e_der, "ECDHE-ECDSA"), ("r.example", r_der, "ECDHE-RSA")):
        client, conn, c2s, s2c = _handshake(engine, name, alpn=["h2", "http/1.1"], tls12=True)
        assert client.getpeercert(binary_form=True) == want
        assert conn.version() == "TLSv1.2" and conn.cipher()[0].startswith(suite)
        assert conn.selected_alpn_protocol() == "http/1.1" == client.selected_alpn_protocol()
        client.write(b"GET / HTTP/1.1\r\n\r\n" * 1000)  # several records in one feed
        out, plain = conn.feed(c2s.read())
        assert plain == b"GET / HTTP/1.1\r\n\r\n" * 1000
        s2c.write(conn.write(b"x" * 100_000))
        got = b""
        while len(got) < 100_000:
            got += client.read(65536)
        assert got == b"x" * 100_000
        try:
            client.unwrap()
        except ssl.SSLWantReadError:
            pass
        out, plain = conn.feed(c2s.read())
        assert conn.eof and plain is None
        bye = conn.shutdown()
        assert bye and bye[0] == 21  # an alert record: close_notify
        s2c.write(bye)
        client.unwrap()  # completes (no SSLWantReadError): the server's close_notify arrived


def test_no_common_protocol_is_an_error_with_the_alert_to_send():
    engine, _ = _engine({})
    ctx = _client_ctx(tls12=True)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # a CBC-only TLS 1.2 client: nothing in common
    client, c2s, s2c = _client("x.example", ctx=ctx)
    conn = engine.conn()
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    with pytest.raises(_edgetls.Error) as exc:
        conn.feed(c2s.read())
    reason, alert = exc.value.args
    assert "cipher" in reason.lower()
    assert alert and alert[0] == 21  # a TLS alert record
    with pytest.raises(_edgetls.Error):
        conn.feed(b"more")  # a failed connection stays failed
    garbage = engine.conn()
    with pytest.raises(_edgetls.Error):
        garbage.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the TLS port


def test_garbage_and_truncated_records_fail_cleanly_and_change_nothing():
    """Bytes from the network are hostile: random data, truncated and mangled ClientHellos, data after a failure.
    Every connection either waits for more or fails with Error; the engine keeps serving real handshakes."""
    import random
    a, a_der = _ck("a.example")
    engine, _ = _engine({"a.example": a}, tickets=True)
    real, c2s, _ = _client("a.example")
    with pytest.raises(ssl.SSLWantReadError):
        real.do_handshake()
    hello = c2s.read()
    rnd = random.Random(7)
    failed = waited = 0
    for i in range(400):
        conn = engine.conn()
        if i % 3 == 0:
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400)))
        elif i % 3 == 1:
            data = hello[:rnd.randint(1, len(hello) - 1)]  # truncated: the engine waits for the rest
        else:
            b = bytearray(hello)
            for _ in range(rnd.randint(1, 8)):
                b[rnd.randrange(5, len(b))] = rnd.getrandbits(8)
            data = bytes(b)
        try:
            out, plain = conn.feed(data)
            assert plain is None and not conn.established
            waited += 1
        except _edgetls.Error as e:
            failed += 1
            assert isinstance(e.args[0], str)
            with pytest.raises(_edgetls.Error):
                conn.write(b"x")
        conn.shutdown()
    assert failed > 100 and waited > 100
    client, _, _, _ = _handshake(engine, "a.example")
    assert client.getpeercert(binary_form=True) == a_der


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the error is reported, as it should be
def test_select_that_raises_serves_the_default_and_is_counted():
    def select(name):
        raise RuntimeError("boom")
    dpem, dkey = generate_default_certificate()
    engine = tlsengine.make_engine(select, dpem, dkey, tickets=False)
    client, conn, _, _ = _handshake(engine, "a.example")
    assert client.getpeercert(binary_form=True) == _der(dpem)
    assert engine.select_errors == 1


def test_tickets_go_out_with_the_answer_when_the_first_request_came_with_the_finished():
    """TLS 1.3 tickets: sent at once when the client's Finished arrives alone; held and written with the answer (one
    write) when the first request came in the same chunk. Either way the client gets them, in order, and resumes."""
    a, a_der = _ck("a.example")
    engine, _ = _engine({"a.example": a}, tickets=True)
    for with_request in (False, True):
        ctx = _client_ctx()
        client, c2s, s2c = _client("a.example", ctx=ctx)
        conn = engine.conn()
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        out, plain = conn.feed(c2s.read())
        s2c.write(out)
        client.do_handshake()  # TLS 1.3: the client is done once it has sent its Finished
        if with_request:
            client.write(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        out, plain = conn.feed(c2s.read())
        assert conn.established and conn.sni == "a.example"
        if with_request:
            assert out is None and plain == b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
            answer = conn.write(b"HTTP/1.1 200 OK\r\n\r\n")
            assert len(answer) > 200  # two tickets, then the answer's record
            s2c.write(answer)
            assert client.read(100) == b"HTTP/1.1 200 OK\r\n\r\n"
        else:
            assert out and plain is None  # the tickets, at once
            s2c.write(out)
            with pytest.raises(ssl.SSLWantReadError):
                client.read(100)  # processes the tickets
        assert client.session is not None and client.session.has_ticket
        again, conn2, _, _ = _handshake(engine, "a.example", ctx=ctx, session=client.session)
        assert conn2.session_reused and again.getpeercert(binary_form=True) == a_der


def test_data_and_close_notify_in_one_chunk_and_the_normalised_sni():
    a, _ = _ck("a.example")
    engine, _ = _engine({"a.example": a})
    client, conn, c2s, s2c = _handshake(engine, "A.Example.")
    assert conn.server_name == "A.Example." and conn.sni == "a.example"
    client.write(b"one")
    client.write(b"two")
    try:
        client.unwrap()
    except ssl.SSLWantReadError:
        pass
    out, plain = conn.feed(c2s.read())  # two records and the close_notify in one chunk
    assert plain == b"onetwo" and conn.eof
    _, nosni, _, _ = _handshake(engine, None)
    assert nosni.sni is None and nosni.server_name is None


def test_tickets_resume_only_for_the_name_they_were_issued_to():
    a, _ = _ck("a.example")
    b, _ = _ck("b.example")
    engine, _ = _engine({"a.example": a, "b.example": b}, tickets=True)
    ctx = _client_ctx()  # one client context: its sessions are offered back to it
    client, conn, c2s, s2c = _handshake(engine, "a.example", ctx=ctx)
    client.write(b"ping")
    out, _ = conn.feed(c2s.read())
    s2c.write(conn.write(b"pong"))
    assert client.read(4) == b"pong"  # reads the tickets too
    session = client.session
    assert session is not None and session.has_ticket
    again, conn2, _, _ = _handshake(engine, "a.example", ctx=ctx, session=session)
    assert again.session_reused and conn2.session_reused
    other, conn3, _, _ = _handshake(engine, "b.example", ctx=ctx, session=session)
    assert not other.session_reused and not conn3.session_reused
    assert x509.load_der_x509_certificate(other.getpeercert(binary_form=True)).subject.rfc4514_string() == \
        "CN=b.example"
    off, _ = _engine({"a.example": a}, tickets=False)
    client4, conn4, c2s4, s2c4 = _handshake(off, "a.example", ctx=ctx)
    client4.write(b"ping")
    conn4.feed(c2s4.read())
    s2c4.write(conn4.write(b"pong"))
    assert client4.read(4) == b"pong"
    assert not client4.session.has_ticket  # tickets off: nothing to resume with


# -- the SNI index in engine mode ----------------------------------------------------------------------------

def test_index_in_engine_mode_builds_on_a_miss_bounds_the_lru_and_swaps():
    dpem, dkey = generate_default_certificate()
    idx = SniIndex(default_fullchain=dpem, default_key=dkey, engine=True, max_contexts=2)
    assert idx.engine is not None and idx.unit_bytes == tlsengine.CERTKEY_BYTES
    ders = {}
    for n in ("x1.example", "x2.example", "x3.example"):
        pem, key, serial = self_signed(n)
        ders[n] = _der(pem)
        idx.put(CertEntry(hostname=n, fullchain_pem=pem, key_pem=key, serial=serial), prebuild=False)
    for n in ders:
        client, _, _, _ = _handshake(idx.engine, n.upper() + ".")  # case and trailing dot do not matter
        assert client.getpeercert(binary_form=True) == ders[n]
    assert idx.builds_on_handshake == 3 and idx.context_count() == 2
    assert idx.evicting()  # 3 names, room for 2: CertKeys are built with the cheaper public-key decode
    pem, key, serial = self_signed("x1.example")
    idx.put(CertEntry(hostname="x1.example", fullchain_pem=pem, key_pem=key, serial=serial))
    client, _, _, _ = _handshake(idx.engine, "x1.example")
    assert client.getpeercert(binary_form=True) == _der(pem)
    idx.remove("x2.example")
    client, _, _, _ = _handshake(idx.engine, "x2.example")
    assert client.getpeercert(binary_form=True) == _der(dpem)
    bad_pem, _, _ = self_signed("bad.example")
    _, other_key, _ = self_signed("other.example")
    with pytest.raises(ValueError):
        idx.put(CertEntry(hostname="bad.example", fullchain_pem=bad_pem, key_pem=other_key, serial="1"))
    assert "bad.example" not in idx
    idx.remove("x3.example")
    assert not idx.evicting()  # every name fits: the plain decode, no ENGINE table for later handshakes


# -- real clients against the engine-driven HTTP layer -------------------------------------------------------

async def test_openssl_and_curl_against_the_engine_driven_edge(tmp_path):
    openssl = require_binary("openssl")
    curl = require_binary("curl")
    from edge.tls_edge.http import EdgeHttpServer
    dpem, dkey = generate_default_certificate()
    idx = SniIndex(default_fullchain=dpem, default_key=dkey, engine=True)
    pem, key, serial = self_signed("real.example")
    idx.put(CertEntry(hostname="real.example", fullchain_pem=pem, key_pem=key, serial=serial))
    settings = Settings()
    srv = EdgeHttpServer(types.SimpleNamespace(settings=settings, index=idx, bench_stats=None))
    assert srv.engine is idx.engine
    port = free_port()
    await srv.start("127.0.0.1", port, idx.default_context)
    ca = tmp_path / "real.pem"
    ca.write_bytes(pem)
    try:
        def run(*cmd):
            return subprocess.run(cmd, input=b"", capture_output=True, timeout=20)
        r = await asyncio.to_thread(run, openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                                    "real.example", "-CAfile", str(ca), "-verify_hostname", "real.example",
                                    "-verify_return_error", "-alpn", "http/1.1")
        out = r.stdout.decode()
        assert "Verify return code: 0 (ok)" in out and "ALPN protocol: http/1.1" in out, out
        r = await asyncio.to_thread(run, openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                                    "real.example", "-tls1_1")
        assert r.returncode != 0  # TLS 1.1 is refused
        r = await asyncio.to_thread(run, curl, "-sS", "--cacert", str(ca), "--resolve",
                                    f"real.example:{port}:127.0.0.1", f"https://real.example:{port}/")
        assert r.returncode == 0 and b"real.example is served by edgecert" in r.stdout, r.stderr
        r = await asyncio.to_thread(run, curl, "-sS", "-k", "--tls-max", "1.2", "--resolve",
                                    f"other.example:{port}:127.0.0.1", f"https://other.example:{port}/")
        assert r.returncode == 0 and b"404" not in r.stdout[:0] and b"not served by this edge" in r.stdout
    finally:
        await srv.stop(grace=1)


def test_engine_is_used_by_default_and_can_be_turned_off():
    from edge.tls_edge.engine import use_tls_engine
    assert use_tls_engine(Settings.load(env={}))
    assert not use_tls_engine(Settings.load(env={"EDGECERT_TLS_ENGINE": "false"}))
    assert not use_tls_engine(Settings.load(env={"EDGECERT_TLS_ENGINE": "off"}))
    assert os.path.exists(_edgetls.__file__)


_MEMCHECK_SCRIPT = r"""
import os, random, ssl
from edge.tls_edge import engine as t
from edge.tls_edge import _edgetls as e
from edge.tls_edge.certificates import generate_default_certificate
pems = [generate_default_certificate(common_name=f"n{i}") for i in range(3)]
cks = {f"n{i}.test": t.certkey(ssl.PEM_cert_to_DER_cert(p.decode()), b"", k) for i, (p, k) in enumerate(pems)}
dp, dk = generate_default_certificate()
for tickets in (False, True):
    eng = t.make_engine(cks.get, dp, dk, tickets=tickets)
    for name in list(cks) + ["zz.test", None]:
        client, conn, c2s, s2c = t.handshake_with(eng, name)
        client.write(b"x" * 70000)
        out, plain = conn.feed(c2s.read())
        assert plain == b"x" * 70000
        s2c.write(conn.write(b"y" * 5000))
        conn.shutdown(b"bye")
    rnd = random.Random(1)
    for i in range(150):
        c = eng.conn()
        for head in (b"", b"\x16\x03\x01"):
            try:
                c.feed(head + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 500))))
            except e.Error:
                pass
        try:
            c.write(b"a")
        except e.Error:
            pass
        c.shutdown()
for bad in (b"", b"\x30\x82", os.urandom(300)):
    for make in (lambda: e.CertKey(bad, bad), lambda: e.Chain([bad])):
        try:
            make()
        except ValueError:
            pass
print("memcheck script done")
"""


@pytest.mark.slow
def test_the_extension_is_memory_clean_under_valgrind_on_real_and_hostile_input(tmp_path):
    """memcheck over handshakes, data both ways, tickets, garbage records and bad DER: no invalid read/write,
    no use of uninitialised memory, no bad free in a stack that goes through edge/_edgetls.c."""
    valgrind = require_binary("valgrind")
    log = tmp_path / "memcheck.log"
    env = dict(os.environ, PYTHONMALLOC="malloc")
    r = subprocess.run([valgrind, "--tool=memcheck", "--num-callers=30", f"--log-file={log}", sys.executable, "-c",
                        _MEMCHECK_SCRIPT], capture_output=True, env=env, timeout=900)
    assert r.returncode == 0 and b"memcheck script done" in r.stdout, r.stderr[-2000:]
    text = log.read_text(errors="replace")
    assert "ERROR SUMMARY" in text
    # One report per paragraph: strip the "==PID== " prefixes, split on the blank lines between reports.
    lines = [re.sub(r"^==\d+==\s?", "", line) for line in text.splitlines()]
    reports = [r for r in "\n".join(lines).split("\n\n") if r.strip()]
    kinds = ("Invalid read", "Invalid write", "Conditional jump or move depends on uninitialised",
             "Use of uninitialised value", "Syscall param", "Invalid free", "Mismatched free", "Source and destination")
    errors = [r for r in reports if r.strip().splitlines()[0].startswith(kinds)]
    assert all(" at 0x" in r for r in errors)  # the parse keeps each report's stack with it
    ours = [r for r in errors if "_edgetls" in r]
    assert not ours, "\n---\n".join(ours[:3])


def test_tls_settings_switch_tickets_off(monkeypatch):
    monkeypatch.setattr(certificates, "TICKETS", True)
    certificates.apply_settings(Settings())
    assert certificates.TICKETS
    certificates.apply_settings(Settings(tls_tickets=False))
    assert not certificates.TICKETS
    dpem, dkey = generate_default_certificate()
    idx = SniIndex(default_fullchain=dpem, default_key=dkey, engine=True)
    client, conn, c2s, s2c = _handshake(idx.engine, "none.example")
    client.write(b"ping")
    conn.feed(c2s.read())
    s2c.write(conn.write(b"pong"))
    assert client.read(4) == b"pong" and not client.session.has_ticket  # the index's engine read the switch
