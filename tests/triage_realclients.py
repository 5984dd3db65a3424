"""Broken TLS endpoints on loopback and the real clients run against them, to record the error texts people paste
into triage.

``build(workdir)`` makes a small PKI (``cryptography``) and starts one ``openssl s_server`` (or a raw socket
server) per broken setup; ``collect(endpoints, clients)`` runs each installed client (openssl s_client, curl,
Python ``ssl``, Node ``tls``, Java ``SSLSocket``, wget, git, gnutls-cli, PHP streams) against each and returns what it printed.
``python -m tests.triage_realclients OUT.jsonl`` writes the records (``text``, ``expected``, ``source``) that
``tests/data/triage_corpus.jsonl`` was seeded from. Nothing here is faked: every text is a client's own output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")
            time.sleep(0.05)


class PKI:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.serial = 7000

    def _save(self, name: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
        c, k = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return c, k

    def make(self, name: str, subject_cn: str, *, issuer=None, ca: bool = False, path_length: int | None = None,
             sans: list[str] | None = None, eku=(ExtendedKeyUsageOID.SERVER_AUTH,), not_before=None, not_after=None,
             key=None, permitted: list[str] | None = None, must_staple: bool = False,
             key_cert_sign: bool = True) -> dict:
        key = key or ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Triage Lab"),
                             x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
        self.serial += 1
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(issuer["cert"].subject if issuer else subject)
             .public_key(key.public_key()).serial_number(self.serial)
             .not_valid_before(not_before or NOW - 10 * DAY).not_valid_after(not_after or NOW + 300 * DAY)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, key_cert_sign, True, False, False),
                                critical=True)
        else:
            b = b.add_extension(x509.KeyUsage(True, False, isinstance(key, rsa.RSAPrivateKey), False, False, False,
                                              False, False, False), critical=True)
        if issuer:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer["key"].public_key()),
                                critical=False)
        if sans:
            names = []
            for n in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    names.append(x509.DNSName(n))
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if eku and not ca:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if permitted:
            b = b.add_extension(x509.NameConstraints([x509.DNSName(p) for p in permitted], None), critical=True)
        if must_staple:
            b = b.add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
        cert = b.sign(issuer["key"] if issuer else key, hashes.SHA256())
        path, key_path = self._save(name, cert, key)
        return {"cert": cert, "key": key, "path": path, "key_path": key_path}

    def bundle(self, name: str, *certs: dict) -> Path:
        p = self.dir / f"{name}.chain.pem"
        p.write_bytes(b"".join(c["path"].read_bytes() for c in certs))
        return p


@dataclass
class Endpoint:
    name: str  # the setup, e.g. "expired"
    expected: str  # the failure mode a report of it should be triaged to
    hostname: str
    port: int
    cafile: str
    alpn: bool = False  # clients offer h2,http/1.1
    procs: list = field(default_factory=list)

    @property
    def connect(self) -> str:
        return f"127.0.0.1:{self.port}"


class _Refusing:
    """A port that refuses connections and stays ours: bound, never listening (the kernel answers RST), held open so
    no other process can take it meanwhile."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def terminate(self) -> None:
        self.sock.close()

    def wait(self, timeout: float | None = None) -> None:
        return None


class _Silent:
    """Accepts TCP connections, reads the ClientHello and never answers (a stalled TLS server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def terminate(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()
        self.sock.close()

    def wait(self, timeout=None) -> None:
        return None


class _Reset(_Silent):
    """Reads the ClientHello, then resets the connection (a middlebox cutting the handshake)."""

    def _run(self) -> None:
        import struct
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                c.settimeout(3)
                c.recv(4096)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()


class _PlainHTTP(_Silent):
    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                c.settimeout(3)
                c.recv(4096)
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 20\r\n"
                          b"Connection: close\r\n\r\n<h1>Bad Request</h1>")
                c.close()


def _s_server(port: int, cert: Path, key: Path, *extra: str, chain: Path | None = None) -> subprocess.Popen:
    cmd = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key), "-www",
           "-quiet", *extra]
    if chain:
        cmd += ["-cert_chain", str(chain)]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def build(workdir: Path, names: list[str] | None = None) -> list[Endpoint]:
    """Start the broken endpoints (``names`` picks some); each served under its own hostname."""
    pki = PKI(workdir / "pki")
    root = pki.make("root", "Triage Lab Root", ca=True)
    inter = pki.make("inter", "Triage Lab Issuing CA", issuer=root, ca=True)
    other_root = pki.make("other_root", "Elsewhere Private Root", ca=True)
    other_inter = pki.make("other_inter", "Elsewhere Private Issuing", issuer=other_root, ca=True)
    short_root = pki.make("short_root", "Triage Lab Short Root", ca=True, path_length=0)
    cafile = str(pki.bundle("trusted", root, short_root))
    eps: list[Endpoint] = []

    def want(n: str) -> bool:
        return names is None or n in names

    def tls(n: str, expected: str, host: str, leaf: dict, chain: list[dict], *extra: str, alpn=False) -> None:
        if not want(n):
            return
        port = free_port()
        chain_path = pki.bundle(n, *chain) if chain else None
        p = _s_server(port, leaf["path"], leaf["key_path"], *extra, chain=chain_path)
        eps.append(Endpoint(n, expected, host, port, cafile, alpn=alpn, procs=[p]))

    def leaf(n, host, **kw):
        kw.setdefault("issuer", inter)
        return pki.make(n, host, sans=kw.pop("sans", [host, "localhost"]), **kw)

    h = "shop.example.com"
    tls("ok", "ok", h, leaf("ok", h), [inter])
    tls("expired", "expired", "www.acme-widgets.test",
        leaf("expired", "www.acme-widgets.test", not_before=NOW - 400 * DAY, not_after=NOW - 3 * DAY), [inter])
    tls("not_yet_valid", "not_yet_valid", "app.example.org",
        leaf("nyv", "app.example.org", not_before=NOW + 5 * DAY, not_after=NOW + 300 * DAY), [inter])
    tls("self_signed", "self_signed", "portal.customer.test",
        pki.make("selfsigned", "portal.customer.test", sans=["portal.customer.test", "localhost"]), [])
    tls("untrusted_root", "untrusted_root", "billing.example.net",
        leaf("untrusted", "billing.example.net", issuer=other_inter), [other_inter, other_root])
    tls("incomplete_chain", "incomplete_chain", "docs.example.io", leaf("incomplete", "docs.example.io"), [])
    tls("hostname_mismatch", "hostname_mismatch", "shop.example.com",
        leaf("mismatch", "www.other-brand.test", sans=["www.other-brand.test", "other-brand.test"]), [inter])
    tls("client_cert_tls13", "client_certificate_required", "secure.partner.test",
        leaf("mtls13", "secure.partner.test"), [inter], "-Verify", "1", "-CAfile", cafile, "-tls1_3")
    tls("client_cert_tls12", "client_certificate_required", "b2b.partner.test",
        leaf("mtls12", "b2b.partner.test"), [inter], "-Verify", "1", "-CAfile", cafile, "-tls1_2")
    tls("alpn_mismatch", "alpn_mismatch", "acme.customer.test", leaf("alpn", "acme.customer.test"), [inter],
        "-alpn", "acme-tls/1", alpn=True)
    tls("unsuitable_purpose", "unsuitable_purpose", "login.example.com",
        leaf("clientauth", "login.example.com", eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)), [inter])
    not_ca = pki.make("notca", "Triage Lab Not A CA", issuer=root, sans=None, eku=())
    tls("invalid_ca", "invalid_chain", "store.example.com", leaf("under_notca", "store.example.com", issuer=not_ca),
        [not_ca])
    sub1 = pki.make("sub1", "Triage Lab Sub One", issuer=short_root, ca=True)
    sub2 = pki.make("sub2", "Triage Lab Sub Two", issuer=sub1, ca=True)
    tls("path_length", "invalid_chain", "media.example.com", leaf("deep", "media.example.com", issuer=sub2),
        [sub2, sub1])
    nc = pki.make("nc", "Triage Lab Constrained CA", issuer=root, ca=True, permitted=["allowed.test"])
    tls("name_constraints", "invalid_chain", "cdn.example.com", leaf("nc_leaf", "cdn.example.com", issuer=nc), [nc])
    tls("sni_unrecognized", "sni_unrecognized", "old.example.com", leaf("sni", "default.example.com"), [inter],
        "-servername", "default.example.com", "-servername_fatal", "-cert2",
        str(leaf("sni2", "default.example.com")["path"]), "-key2", str(pki.dir / "sni2.key"))
    tls("protocol_version", "protocol_version_mismatch", "legacy.example.com", leaf("tls10", "legacy.example.com"),
        [inter], "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    tls("cipher_mismatch", "cipher_mismatch", "cipher.example.com", leaf("cipher", "cipher.example.com",
                                                                          key=rsa.generate_private_key(65537, 2048)),
        [inter], "-tls1_2", "-cipher", "NULL-SHA256:@SECLEVEL=0")
    tls("weak_key", "weak_key", "weak.example.com",
        leaf("weakkey", "weak.example.com", key=rsa.generate_private_key(65537, 1024)), [inter],
        "-cipher", "DEFAULT:@SECLEVEL=0")
    tls("must_staple", "must_staple_missing", "staple.example.com",
        leaf("staple", "staple.example.com", must_staple=True), [inter])
    if want("handshake_timeout"):
        s = _Silent()
        eps.append(Endpoint("handshake_timeout", "handshake_timeout", "slow.example.com", s.port, cafile, procs=[s]))
    if want("reset"):
        s = _Reset()
        eps.append(Endpoint("reset", "handshake_failure", "reset.example.com", s.port, cafile, procs=[s]))
    if want("plain_http"):
        s = _PlainHTTP()
        eps.append(Endpoint("plain_http", "plain_http_on_tls_port", "plain.example.com", s.port, cafile, procs=[s]))
    if want("refused"):
        s = _Refusing()
        eps.append(Endpoint("refused", "connection_refused", "down.example.com", s.port, cafile, procs=[s]))
    return eps


def stop(endpoints: list[Endpoint]) -> None:
    for ep in endpoints:
        for p in ep.procs:
            with contextlib.suppress(Exception):
                p.terminate()
                p.wait(timeout=5)


# ---------------------------------------------------------------------------------------------------- clients

TIMEOUT = 4


def _run(cmd: list[str], env: dict | None = None, timeout: float = 20) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out + f"\n[killed after {timeout} s]"
    return (p.stdout + p.stderr).strip()


def openssl(ep: Endpoint) -> str:
    cmd = ["openssl", "s_client", "-connect", ep.connect, "-servername", ep.hostname, "-verify_hostname",
           ep.hostname, "-CAfile", ep.cafile, "-verify_return_error", "-showcerts"]
    if ep.alpn:
        cmd += ["-alpn", "h2,http/1.1"]
    return _run(["timeout", str(TIMEOUT + 2), *cmd])


def curl(ep: Endpoint) -> str:
    return _run(["curl", "-sS", "-o", "/dev/null", "--max-time", str(TIMEOUT), "--cacert", ep.cafile, "--resolve",
                 f"{ep.hostname}:{ep.port}:127.0.0.1", f"https://{ep.hostname}:{ep.port}/"])


def curl_verbose(ep: Endpoint) -> str:
    return _run(["curl", "-v", "-o", "/dev/null", "--max-time", str(TIMEOUT), "--cacert", ep.cafile, "--resolve",
                 f"{ep.hostname}:{ep.port}:127.0.0.1", f"https://{ep.hostname}:{ep.port}/"])


def wget(ep: Endpoint) -> str:
    return _run(["wget", "-O", "/dev/null", "--tries=1", f"--timeout={TIMEOUT}", f"--ca-certificate={ep.cafile}",
                 f"https://localhost:{ep.port}/"])


def git(ep: Endpoint) -> str:
    return _run(["timeout", str(TIMEOUT + 4), "git", "-c", f"http.curloptResolve={ep.hostname}:{ep.port}:127.0.0.1",
                 "-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={TIMEOUT}", "ls-remote",
                 f"https://{ep.hostname}:{ep.port}/team/app.git"],
                env={"GIT_TERMINAL_PROMPT": "0", "GIT_SSL_CAINFO": ep.cafile}, timeout=30)


def gnutls(ep: Endpoint) -> str:
    cmd = ["gnutls-cli", f"--x509cafile={ep.cafile}", "-p", str(ep.port), f"--sni-hostname={ep.hostname}",
           f"--verify-hostname={ep.hostname}", "127.0.0.1"]
    if ep.alpn:
        cmd += ["--alpn=h2", "--alpn=http/1.1"]
    return _run(["timeout", str(TIMEOUT + 2), *cmd])


_PY = r"""
import socket, ssl, sys, traceback
host, port, name, ca, alpn = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
ctx = ssl.create_default_context(cafile=ca)
if alpn:
    ctx.set_alpn_protocols(["h2", "http/1.1"])
try:
    with socket.create_connection((host, port), timeout=%d) as s:
        with ctx.wrap_socket(s, server_hostname=name):
            print("OK")
except Exception:
    traceback.print_exc()
""" % TIMEOUT


def python(ep: Endpoint) -> str:
    return _run([sys.executable, "-c", _PY, "127.0.0.1", str(ep.port), ep.hostname, ep.cafile,
                 "1" if ep.alpn else "0"])


_NODE = r"""
const tls = require('tls'); const fs = require('fs'); const util = require('util');
const [host, port, name, ca, alpn] = process.argv.slice(1);
const opts = {host, port: +port, servername: name, ca: fs.readFileSync(ca), timeout: %d000};
if (alpn === '1') opts.ALPNProtocols = ['h2', 'http/1.1'];
const s = tls.connect(opts, () => { console.log('OK'); s.end(); });
s.on('error', (e) => { console.error(util.inspect(e)); process.exitCode = 1; });
s.on('timeout', () => { console.error('Error: TLS handshake timed out after %d000 ms (socket timeout)'); s.destroy(); });
""" % (TIMEOUT, TIMEOUT)


def node(ep: Endpoint) -> str:
    return _run(["node", "-e", _NODE, "127.0.0.1", str(ep.port), ep.hostname, ep.cafile, "1" if ep.alpn else "0"])


JAVA = r"""
import java.io.*; import java.net.*; import java.security.KeyStore; import java.security.cert.*; import java.util.*;
import javax.net.ssl.*;
public class TriageProbe {
  public static void main(String[] a) throws Exception {
    CertificateFactory cf = CertificateFactory.getInstance("X.509");
    KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType()); ks.load(null, null);
    int n = 0;
    try (InputStream in = new FileInputStream(a[3])) {
      for (Certificate c : cf.generateCertificates(in)) ks.setCertificateEntry("ca" + (n++), c);
    }
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(ks);
    SSLContext ctx = SSLContext.getInstance("TLS"); ctx.init(null, tmf.getTrustManagers(), null);
    try (Socket raw = new Socket()) {
      raw.connect(new InetSocketAddress(a[0], Integer.parseInt(a[1])), 4000); raw.setSoTimeout(4000);
      SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(raw, a[2], Integer.parseInt(a[1]), true);
      SSLParameters p = s.getSSLParameters(); p.setEndpointIdentificationAlgorithm("HTTPS");
      p.setServerNames(Collections.singletonList(new SNIHostName(a[2])));
      if (a[4].equals("1")) p.setApplicationProtocols(new String[]{"h2", "http/1.1"});
      s.setSSLParameters(p); s.startHandshake(); System.out.println("OK");
    } catch (Exception e) {
      System.out.println(e.toString());
      for (Throwable c = e.getCause(); c != null; c = c.getCause()) System.out.println("Caused by: " + c);
    }
  }
}
"""


def java(ep: Endpoint, classes: Path) -> str:
    return _run(["java", "-cp", str(classes), "TriageProbe", "127.0.0.1", str(ep.port), ep.hostname, ep.cafile,
                 "1" if ep.alpn else "0"], timeout=30)


_PHP = r"""
$opts = ["ssl" => ["cafile" => $argv[4], "peer_name" => $argv[3], "verify_peer" => true, "verify_peer_name" => true]];
if ($argv[5] === "1") { $opts["ssl"]["alpn_protocols"] = "h2,http/1.1"; }
$ctx = stream_context_create($opts);
$s = stream_socket_client("ssl://" . $argv[1] . ":" . $argv[2], $errno, $errstr, %d, STREAM_CLIENT_CONNECT, $ctx);
if ($s === false) { exit(1); }
fwrite($s, "GET / HTTP/1.0\r\nHost: " . $argv[3] . "\r\n\r\n");
$r = fread($s, 100);
echo ($r === false || $r === "") ? "read failed\n" : "OK\n";
""" % TIMEOUT


def php(ep: Endpoint) -> str:
    return _run(["php", "-d", "display_errors=stderr", "-d", "error_reporting=E_ALL", "-r", _PHP, "127.0.0.1",
                 str(ep.port), ep.hostname, ep.cafile, "1" if ep.alpn else "0"])


GO = r"""
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	addr, name, ca, alpn := os.Args[1], os.Args[2], os.Args[3], os.Args[4] == "1"
	pem, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conf := &tls.Config{RootCAs: pool}
	if alpn {
		conf.NextProtos = []string{"h2", "http/1.1"}
	}
	d := &net.Dialer{Timeout: 4 * time.Second}
	tr := &http.Transport{TLSClientConfig: conf, TLSHandshakeTimeout: 4 * time.Second,
		DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, addr) }}
	c := &http.Client{Transport: tr, Timeout: 8 * time.Second}
	_, port, _ := net.SplitHostPort(addr)
	resp, err := c.Get("https://" + name + ":" + port + "/")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	resp.Body.Close()
	fmt.Println("OK")
}
"""


def go(ep: Endpoint, binary: Path) -> str:
    return _run([str(binary), ep.connect, ep.hostname, ep.cafile, "1" if ep.alpn else "0"], timeout=20)


def kubectl(ep: Endpoint) -> str:
    return _run([_kubectl(), f"--server=https://{ep.connect}", f"--tls-server-name={ep.hostname}",
                 f"--certificate-authority={ep.cafile}", "--token=triage-lab", "--request-timeout=4s", "get", "pods"],
                env={"KUBECONFIG": "/dev/null"}, timeout=30)


def _kubectl() -> str:
    return shutil.which("kubectl") or "/usr/lib/google-cloud-sdk/bin/kubectl"


CLIENTS = {"openssl": "openssl", "curl": "curl", "curl -v": "curl", "python": None, "node": "node", "java": "javac",
           "wget": "wget", "git": "git", "gnutls-cli": "gnutls-cli", "php": "php", "go": "go", "kubectl": "kubectl"}


def available() -> list[str]:
    def have(binary: str | None) -> bool:
        return binary is None or bool(shutil.which(binary)) or (binary == "kubectl" and os.path.exists(_kubectl()))
    return [c for c, binary in CLIENTS.items() if have(binary)]


def collect(endpoints: list[Endpoint], workdir: Path, clients: list[str] | None = None) -> list[dict]:
    """Run every client on every endpoint: ``[{"endpoint", "client", "expected", "hostname", "text"}]``."""
    clients = [c for c in (clients or available()) if c in available()]
    classes = workdir / "java"
    if "java" in clients:
        classes.mkdir(exist_ok=True)
        (classes / "TriageProbe.java").write_text(JAVA)
        subprocess.run(["javac", "-d", str(classes), str(classes / "TriageProbe.java")], check=True,
                       capture_output=True, timeout=120)
    gobin = workdir / "goprobe"
    if "go" in clients:
        (workdir / "goprobe.go").write_text(GO)
        subprocess.run(["go", "build", "-o", str(gobin), str(workdir / "goprobe.go")], check=True, capture_output=True,
                       timeout=600, cwd=workdir, env={**os.environ, "GO111MODULE": "off",
                                                      "GOCACHE": str(workdir / "gocache"),
                                                      "HOME": str(workdir)})
    runners = {"openssl": openssl, "curl": curl, "curl -v": curl_verbose, "python": python, "node": node,
               "wget": wget, "git": git, "gnutls-cli": gnutls, "php": php, "java": lambda ep: java(ep, classes),
               "go": lambda ep: go(ep, gobin), "kubectl": kubectl}
    out = []
    for ep in endpoints:
        for c in clients:
            out.append({"endpoint": ep.name, "client": c, "expected": ep.expected, "hostname": ep.hostname,
                        "text": runners[c](ep)})
    return out


def main(argv: list[str]) -> int:
    import tempfile

    dest = Path(argv[0]) if argv else None
    with tempfile.TemporaryDirectory() as d:
        eps = build(Path(d))
        try:
            rows = collect(eps, Path(d))
        finally:
            stop(eps)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if dest:
        dest.write_text("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
