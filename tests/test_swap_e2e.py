"""Atomic swaps, files for other servers, the reload hook with a real nginx, post-swap verification, uploads."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.lifecycle.files import LiveFiles
from tests.helpers import EdgeProcess, openssl_s_client, require_binary, served_leaf


# -- certificate factory ---------------------------------------------------------------------------------------------
def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(c):
    return c.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()


class LocalCA:
    def __init__(self, cn="edgecert test root"):
        now = dt.datetime.now(dt.timezone.utc)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()), False)
                     .sign(self.root_key, hashes.SHA256()))
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = (x509.CertificateBuilder().subject_name(_name(cn + " intermediate")).issuer_name(self.root.subject)
                      .public_key(self.int_key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1000))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
                      .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.int_key.public_key()), False)
                      .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                                     False)
                      .sign(self.root_key, hashes.SHA256()))

    def leaf(self, name, *, days=30, start=-1):
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self.inter.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now + dt.timedelta(days=start)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.int_key.public_key()), False)
                .sign(self.int_key, hashes.SHA256()))
        return cert, key


# -- files ---------------------------------------------------------------------------------------------------------
def test_reader_never_sees_a_mismatched_pair_during_50_swaps(tmp_path):
    lf = LiveFiles(tmp_path)
    ca = LocalCA()
    cert, key = ca.leaf("loop.example.com")
    lf.install("loop.example.com", cert_pem=_pem(cert).encode(), chain_pem=_pem(ca.inter).encode(),
               key_pem=_key_pem(key).encode(), serial="0")
    live = tmp_path / "live" / "loop.example.com"
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader():
        while not stop.is_set():
            d = os.path.realpath(live)  # resolve the pointer once, then read both files from that version
            try:
                fc = Path(d, "fullchain.pem").read_bytes()
                pk = Path(d, "privkey.pem").read_bytes()
            except FileNotFoundError:
                problems.append("a file vanished under a reader")
                continue
            c = x509.load_pem_x509_certificates(fc)
            k = serialization.load_pem_private_key(pk, None)
            if c[0].public_key().public_numbers() != k.public_key().public_numbers():
                problems.append("mismatched pair")
            if len(c) != 2:
                problems.append("half-written fullchain")
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(50):
        cert, key = ca.leaf("loop.example.com")
        lf.install("loop.example.com", cert_pem=_pem(cert).encode(), chain_pem=_pem(ca.inter).encode(),
                   key_pem=_key_pem(key).encode(), serial=format(cert.serial_number, "x"))
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join()
    assert reads[0] > 50 and problems == []
    assert oct(os.stat(live / "privkey.pem").st_mode & 0o777) == "0o600"


# -- nginx with the reload hook ---------------------------------------------------------------------------------------
@pytest.fixture
def short_pebble(pebble_factory):
    """A Pebble issuing 30-second certificates."""
    return pebble_factory("pebble-short", certificate_validity_period=30)


class Nginx:
    def __init__(self, prefix: Path, include: Path, port: int):
        self.bin = require_binary("nginx")
        self.prefix, self.port = prefix, port
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "logs").mkdir(exist_ok=True)
        (prefix / "site.conf").write_text('return 200 "served by nginx\\n";\n')
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
                             f"events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n"
                             f"  include {include};\n}}\n")

    @property
    def base(self) -> str:
        return f"{self.bin} -p {self.prefix} -c {self.conf}"

    def start(self):
        subprocess.run(self.base.split(), check=True, capture_output=True, timeout=20)
        return self

    def stop(self):
        subprocess.run(self.base.split() + ["-s", "quit"], capture_output=True, timeout=20)


@pytest.mark.slow
def test_renewal_reloads_a_real_nginx_which_then_serves_the_new_serial(tmp_path, short_pebble, dns):
    from edge.demo.process import free_port
    nginx_port = free_port()
    prefix = tmp_path / "nginx"
    state = tmp_path / "edge" / "state"
    ngx = Nginx(prefix, state / "exports" / "nginx-servers.conf", nginx_port)
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=short_pebble, dns=dns, env={
        "EDGECERT_RELOAD_COMMAND": f"{ngx.base} -s reload && sleep 0.5",
        "EDGECERT_NGINX_SITE_INCLUDE": str(prefix / "site.conf"),
        "EDGECERT_NGINX_LISTEN": f"127.0.0.1:{nginx_port} ssl",
        "EDGECERT_VERIFY_ADDRESSES": f"127.0.0.1:{nginx_port}"}).start()
    ngx.start()
    try:
        edge.add_domain("reload.nginx.test", tenant="ngx")
        d1 = edge.wait_status("reload.nginx.test", "active", timeout=30)
        s1 = d1["certificate"]["serial"]
        edge.wait_for(lambda: edge.domain("reload.nginx.test")["reload"]["verified_serial"] == s1, timeout=20,
                      what="nginx verified serving the first certificate")
        out = openssl_s_client(nginx_port, servername="reload.nginx.test", cafile=short_pebble.roots_file,
                               verify_name="reload.nginx.test")
        assert "Verify return code: 0 (ok)" in out
        assert format(served_leaf(nginx_port, "reload.nginx.test").serial_number, "x") == s1
        # The hook ran with the hostname in its environment: nginx got the exported server block.
        assert "server_name reload.nginx.test;" in (state / "exports" / "nginx-servers.conf").read_text()
        assert "reload.nginx.test" in (state / "exports" / "haproxy.crt-list").read_text()
        # Renewal (30 s certificates renew after 15 s): nginx is reloaded and serves the new serial.
        d2 = edge.wait_for(lambda: (lambda d: d if d["certificate"]["serial"] != s1 and
                                    d["reload"]["verified_serial"] == d["certificate"]["serial"] else None)(
            edge.domain("reload.nginx.test")), timeout=40, what="renewal verified on nginx")
        s2 = d2["certificate"]["serial"]
        out = openssl_s_client(nginx_port, servername="reload.nginx.test", cafile=short_pebble.roots_file,
                               verify_name="reload.nginx.test")
        assert "Verify return code: 0 (ok)" in out
        assert format(served_leaf(nginx_port, "reload.nginx.test").serial_number, "x") == s2
        kinds = [e["kind"] for e in edge.events("reload.nginx.test")]
        assert kinds.count("hook_succeeded") >= 2 and "renewal_completed" in kinds
        assert d2["reload"]["pending"] is False
        # The renewed certificate on disk is the one the edge serves.
        disk = x509.load_pem_x509_certificate((state / "live" / "reload.nginx.test" / "fullchain.pem").read_bytes())
        assert format(disk.serial_number, "x") == s2 == format(served_leaf(edge.https_port,
                                                                           "reload.nginx.test").serial_number, "x")
    finally:
        ngx.stop()
        edge.stop()


def test_failing_hook_shows_on_the_domain_and_is_retried(tmp_path, pebble, dns):
    marker = tmp_path / "hook-runs.txt"
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_RELOAD_COMMAND": f'echo "$EDGECERT_HOSTNAMES" >> {marker}; echo reload broke >&2; exit 1',
        "EDGECERT_HOOK_RETRY_DELAYS": "1,1,2"}).start()
    try:
        edge.add_domain("broken.hook.test", tenant="hook")
        edge.wait_status("broken.hook.test", "active", timeout=30)
        d = edge.wait_for(lambda: (lambda d: d if d["last_error"] and "exited 1" in d["last_error"] else None)(
            edge.domain("broken.hook.test")), timeout=20, what="hook failure on the domain")
        assert d["last_error_code"] == "hook_failed" and "reload broke" in d["last_error"]
        assert d["reload"]["pending"] is True
        edge.wait_for(lambda: marker.exists() and len(marker.read_text().splitlines()) >= 3, timeout=20,
                      what="hook retries")
        assert set(marker.read_text().split()) == {"broken.hook.test"}
        failed = [e for e in edge.events("broken.hook.test") if e["kind"] == "hook_failed"]
        assert len(failed) >= 2 and "reload broke" in failed[0]["data"]["output"]
    finally:
        edge.stop()


def test_reload_webhook_is_signed(tmp_path, pebble, dns):
    from aiohttp import web
    import asyncio
    got: list[tuple[bytes, str]] = []
    from edge.demo.process import free_port
    port = free_port()
    loop = asyncio.new_event_loop()

    async def handler(request):
        got.append((await request.read(), request.headers.get("X-Edgecert-Signature", "")))
        return web.Response(text="ok")

    async def serve():
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner
    runner = loop.run_until_complete(serve())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_RELOAD_WEBHOOK": f"http://127.0.0.1:{port}/hook", "EDGECERT_RELOAD_WEBHOOK_SECRET": "s3cret"}).start()
    try:
        edge.add_domain("signed.hook.test", tenant="hook")
        edge.wait_status("signed.hook.test", "active", timeout=30)
        edge.wait_for(lambda: got, timeout=15, what="webhook delivery")
        body, sig = got[0]
        from edge.lifecycle.webhooks import verify_signature
        assert sig.startswith("t=") and verify_signature("s3cret", body, sig)
        assert not verify_signature("wrong", body, sig)
        assert json.loads(body)["hostnames"] == ["signed.hook.test"]
        edge.wait_for(lambda: edge.domain("signed.hook.test")["reload"]["pending"] is False, timeout=15,
                      what="hook completion")
    finally:
        edge.stop()
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


def test_stale_served_certificate_is_detected(tmp_path, pebble, dns):
    """A verification address that keeps serving another certificate -> served_certificate_stale, hook retried."""
    from edge.demo.process import free_port
    ca = LocalCA("stale")
    cert, key = ca.leaf("stale.verify.test")
    (tmp_path / "c.pem").write_text(_pem(cert))
    (tmp_path / "k.pem").write_text(_key_pem(key))
    port = free_port()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    import socket
    srv = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    marker = tmp_path / "runs"
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_RELOAD_COMMAND": f"echo run >> {marker}",
        "EDGECERT_VERIFY_ADDRESSES": f"127.0.0.1:{port}"}).start()
    try:
        edge.add_domain("stale.verify.test", tenant="stale")
        edge.wait_status("stale.verify.test", "active", timeout=30)
        d = edge.wait_for(lambda: (lambda d: d if d["last_error_code"] == "served_certificate_stale" else None)(
            edge.domain("stale.verify.test")), timeout=20, what="stale detection")
        assert format(cert.serial_number, "x") in d["last_error"]
        edge.wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 2, timeout=20,
                      what="the hook to be retried")
        st, metrics = edge.call("GET", "/metrics", token=None)
        assert "served_certificate_stale" in [e["kind"] for e in edge.events("stale.verify.test")]
    finally:
        edge.stop()
        stop.set()
        srv.close()


# -- bring your own certificate ---------------------------------------------------------------------------------------
def test_uploads_are_validated_and_bad_ones_change_nothing(tmp_path, pebble, dns):
    ca = LocalCA("upload")
    roots = tmp_path / "upload-roots.pem"
    roots.write_text(_pem(ca.root))
    dns.add_a("byo.upload.test", ["192.0.2.44"])  # not pointing at us: no ACME certificate competes
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_UPLOAD_TRUST_ROOTS": str(roots)}).start()
    try:
        edge.add_domain("byo.upload.test", tenant="byo")
        good, good_key = ca.leaf("byo.upload.test")
        st, d = edge.call("PUT", "/v1/domains/byo.upload.test/certificate",
                          {"certificate": _pem(good) + _pem(ca.inter), "private_key": _key_pem(good_key)})
        assert st == 200, d
        assert d["status"] == "active" and d["certificate"]["serial"] == format(good.serial_number, "x")
        assert d["certificate"]["source"] == "upload"
        assert format(served_leaf(edge.https_port, "byo.upload.test").serial_number, "x") == d["certificate"]["serial"]
        live = edge.work_dir / "state" / "live" / "byo.upload.test"
        before_files = (live / "fullchain.pem").read_bytes(), (live / "privkey.pem").read_bytes()

        other_cert, other_key = ca.leaf("byo.upload.test")
        expired, expired_key = ca.leaf("byo.upload.test", days=-1, start=-30)
        future, future_key = ca.leaf("byo.upload.test", days=60, start=5)
        wrong_name, wrong_name_key = ca.leaf("other.upload.test")
        stranger = LocalCA("stranger")
        untrusted, untrusted_key = stranger.leaf("byo.upload.test")
        cases = [
            ({"certificate": _pem(other_cert) + _pem(ca.inter), "private_key": _key_pem(good_key)}, "key_mismatch"),
            ({"certificate": _pem(expired) + _pem(ca.inter), "private_key": _key_pem(expired_key)}, "expired"),
            ({"certificate": _pem(future) + _pem(ca.inter), "private_key": _key_pem(future_key)}, "not_yet_valid"),
            ({"certificate": _pem(other_cert), "private_key": _key_pem(other_key)}, "incomplete_chain"),
            ({"certificate": _pem(wrong_name) + _pem(ca.inter), "private_key": _key_pem(wrong_name_key)},
             "name_not_covered"),
            ({"certificate": _pem(untrusted) + _pem(stranger.inter), "private_key": _key_pem(untrusted_key)},
             "untrusted_chain"),
            ({"certificate": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
              "private_key": _key_pem(good_key)}, "invalid_pem"),
            ({"certificate": "hello", "private_key": "world"}, "invalid_pem"),
            ({"certificate": _pem(good) + _pem(ca.inter), "private_key": "not a key"}, "invalid_key"),
        ]
        for body, code in cases:
            st, err = edge.call("PUT", "/v1/domains/byo.upload.test/certificate", body)
            assert st == 422 and err["error"]["code"] == code, (code, st, err)
            assert err["error"]["message"]
        st, err = edge.call("PUT", "/v1/domains/byo.upload.test/certificate", raw=b"{broken")
        assert st == 400
        d2 = edge.domain("byo.upload.test")
        assert d2["certificate"]["serial"] == d["certificate"]["serial"]
        assert ((live / "fullchain.pem").read_bytes(), (live / "privkey.pem").read_bytes()) == before_files
        assert format(served_leaf(edge.https_port, "byo.upload.test").serial_number, "x") == d["certificate"]["serial"]
        assert "PRIVATE KEY" not in json.dumps(d2) and "PRIVATE KEY" not in edge.log_text()
    finally:
        edge.stop()


def test_swaps_close_together_are_batched_and_hooks_never_overlap(tmp_path, pebble, dns):
    log = tmp_path / "hook.log"
    cmd = (f'echo "start $(date +%s.%N) $EDGECERT_HOSTNAMES" >> {log}; sleep 1; '
           f'echo "end $(date +%s.%N)" >> {log}')
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_RELOAD_COMMAND": cmd, "EDGECERT_HOOK_BATCH_WINDOW": "3"}).start()
    try:
        names = [f"b{i}.batch.test" for i in range(4)]
        for n in names:
            edge.add_domain(n, tenant="batch")
        for n in names:
            edge.wait_status(n, "active", timeout=40)
        edge.wait_for(lambda: all(edge.domain(n)["reload"]["pending"] is False for n in names), timeout=30,
                      what="all hooks done")
        lines = log.read_text().splitlines()
        starts = [ln for ln in lines if ln.startswith("start")]
        covered = set()
        for ln in starts:
            covered.update(ln.split()[2:])
        assert covered == set(names)
        assert len(starts) < len(names), lines  # batched
        # Never two runs at once: every start comes after the previous end.
        seq = [(ln.split()[0], float(ln.split()[1])) for ln in lines]
        for (a, _), (b, _) in zip(seq, seq[1:]):
            assert (a, b) in (("start", "end"), ("end", "start")), seq
    finally:
        edge.stop()
