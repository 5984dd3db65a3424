"""A corpus of broken TLS endpoints on loopback, built from scratch for the diagnostics tests.

Everything here is real: certificates are made with ``cryptography`` (and ``openssl x509 -sha1`` for the one SHA-1
signature ``cryptography`` refuses to make), servers are Python ``ssl`` servers in threads, raw sockets, a tiny DNS
server (dnspython) on loopback UDP, a plain HTTP server for CRLs, and nginx.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.server
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port}")
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------------------------- PKI


@dataclass
class Cert:
    cert: x509.Certificate
    key: object
    path: Path
    key_path: Path

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class PKI:
    """Makes keys and certificates into one directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._serial = 1000

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def key(self, kind: str = "ec", size: int = 2048):
        if kind == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=size)
        return ec.generate_private_key(ec.SECP256R1())

    def _write(self, name: str, cert: x509.Certificate, key) -> Cert:
        path = self.dir / f"{name}.pem"
        key_path = self.dir / f"{name}.key"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return Cert(cert, key, path, key_path)

    def ca(
        self,
        name: str,
        *,
        issuer: Cert | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key=None,
    ) -> Cert:
        key = key or self.key()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Edgecert Tests"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name = issuer.cert.subject if issuer else subject
        signing_key = issuer.key if issuer else key
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(self._next_serial())
            .not_valid_before(not_before or NOW - 30 * DAY)
            .not_valid_after(not_after or NOW + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
            )
        cert = b.sign(signing_key, hashes.SHA256())
        return self._write(name.replace(" ", "_"), cert, key)

    def leaf(
        self,
        file_name: str,
        names: list[str],
        *,
        issuer: Cert | None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key=None,
        crl_url: str | None = None,
        aia_issuer_url: str | None = None,
        common_name: str | None = None,
    ) -> Cert:
        """A server certificate; ``issuer=None`` makes it self-signed."""
        key = key or self.key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(self._next_serial())
            .not_valid_before(not_before or NOW - DAY)
            .not_valid_after(not_after or NOW + 80 * DAY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if issuer:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
            )
        if crl_url:
            b = b.add_extension(
                x509.CRLDistributionPoints([
                    x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
                ]),
                critical=False,
            )
        if aia_issuer_url:
            b = b.add_extension(
                x509.AuthorityInformationAccess([
                    x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                           x509.UniformResourceIdentifier(aia_issuer_url))
                ]),
                critical=False,
            )
        cert = b.sign(issuer.key if issuer else key, hashes.SHA256())
        return self._write(file_name, cert, key)

    def leaf_sha1(self, file_name: str, names: list[str], *, issuer: Cert) -> Cert:
        """A leaf signed with SHA-1 by ``issuer``: ``cryptography`` refuses to sign SHA-1, ``openssl x509 -req``
        does not (a CSR made here carries the extensions, ``-copy_extensions copyall`` keeps them)."""
        key = self.key()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        csr_path = self.dir / f"{file_name}.csr"
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        out = self.dir / f"{file_name}.pem"
        subprocess.run(
            ["openssl", "x509", "-req", "-in", str(csr_path), "-CA", str(issuer.path), "-CAkey",
             str(issuer.key_path), "-sha1", "-days", "60", "-set_serial", str(self._next_serial()),
             "-copy_extensions", "copyall", "-out", str(out)],
            check=True, capture_output=True,
        )
        cert = x509.load_pem_x509_certificate(out.read_bytes())
        assert cert.signature_hash_algorithm.name == "sha1"
        return self._write(file_name, cert, key)

    def crl(self, issuer: Cert, revoked: list[Cert], file_name: str) -> Path:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(NOW - DAY)
            .next_update(NOW + 7 * DAY)
        )
        for c in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(c.cert.serial_number)
                .revocation_date(NOW - DAY)
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
        crl = b.sign(issuer.key, hashes.SHA256())
        path = self.dir / f"{file_name}.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        return path

    def ocsp_revoked_response(self, leaf: Cert, issuer: Cert, file_name: str) -> Path:
        from cryptography.x509 import ocsp

        b = ocsp.OCSPResponseBuilder().add_response(
            cert=leaf.cert, issuer=issuer.cert, algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.REVOKED, this_update=NOW - DAY, next_update=NOW + 6 * DAY,
            revocation_time=NOW - DAY, revocation_reason=x509.ReasonFlags.key_compromise,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
        resp = b.sign(issuer.key, hashes.SHA256())
        path = self.dir / f"{file_name}.ocsp.der"
        path.write_bytes(resp.public_bytes(serialization.Encoding.DER))
        return path

    def bundle(self, file_name: str, *certs: Cert) -> Path:
        path = self.dir / f"{file_name}.chain.pem"
        path.write_bytes(b"".join(c.pem for c in certs))
        return path


# ------------------------------------------------------------------------------------------------------- servers


class _ThreadedServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 64):
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._guard, args=(conn,), daemon=True).start()

    def _guard(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            self.handle(conn)
        except Exception:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _read_request(stream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = stream.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def http_response(body: bytes, content_type: str = "text/html") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


class TLSServer(_ThreadedServer):
    """A Python ``ssl`` server answering one HTTP request per connection."""

    def __init__(self, ctx: ssl.SSLContext, body: bytes = b"<html><body>hello</body></html>", **kw):
        self.ctx = ctx
        self.body = body
        super().__init__(**kw)

    def handle(self, conn: socket.socket) -> None:
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            if _read_request(tls):
                tls.sendall(http_response(self.body))


class RawServer(_ThreadedServer):
    """Not TLS: ``mode`` is "http" (plain HTTP), "reset" (RST after the ClientHello), "eof" (FIN after it),
    "stall" (reads the ClientHello and never answers)."""

    def __init__(self, mode: str, **kw):
        self.mode = mode
        super().__init__(**kw)

    def handle(self, conn: socket.socket) -> None:
        if self.mode == "http":
            conn.recv(65536)  # a ClientHello or a request: either way, answer like a web server does
            conn.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
                b"Connection: close\r\n\r\nbad request\n"
            )
            return
        conn.recv(4096)
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.mode == "stall":
            self._stop.wait(30)


class RefusingPort:
    """A port that refuses connections and stays ours: a TCP socket bound but never listening (the kernel answers a
    SYN with RST), held open so no other process -- another test worker, another server -- can take the port."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class BacklogFull:
    """A listening socket whose accept queue is full and never drained: SYNs are dropped, connects time out."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect((host, self.port))
            self.fillers.append(c)
        time.sleep(0.2)

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


class FileHTTPServer:
    """Serves files from a dict path -> bytes (CRLs, AIA issuers)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DNSServer:
    """A tiny authoritative DNS server on loopback UDP. ``zone`` maps names to records:
    ``{"a.test": [("A", "127.0.0.1")], "b.test": [("CNAME", "a.test")]}``; unknown names answer NXDOMAIN."""

    def __init__(self, zone: dict[str, list[tuple[str, str]]]):
        self.zone = {k.rstrip(".").lower(): v for k, v in zone.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
                resp = self._answer(q)
                self.sock.sendto(resp.to_wire(), peer)
            except Exception:
                continue

    def _answer(self, q: dns.message.Message) -> dns.message.Message:
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.AA
        question = q.question[0]
        name = question.name.to_text().rstrip(".").lower()
        qtype = question.rdtype
        for _ in range(8):
            records = self.zone.get(name)
            if records is None:
                if not resp.answer:
                    resp.set_rcode(dns.rcode.NXDOMAIN)
                return resp
            cnames = [v for t, v in records if t == "CNAME"]
            if cnames and qtype != dns.rdatatype.CNAME:
                resp.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "CNAME", cnames[0].rstrip(".") + "."))
                name = cnames[0].rstrip(".").lower()
                continue
            wanted = dns.rdatatype.to_text(qtype)
            values = [v for t, v in records if t == wanted]
            if values:
                resp.answer.append(dns.rrset.from_text(name + ".", 60, "IN", wanted, *values))
            return resp
        return resp

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------------------- nginx


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


@dataclass
class NginxSite:
    name: str
    body: str  # the inside of a server {} block, without listen
    ssl: bool = True
    port: int = field(default_factory=free_port)


class Nginx:
    def __init__(self, directory: Path, sites: list[NginxSite]):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.sites = {s.name: s for s in sites}
        servers = []
        for s in sites:
            listen = f"listen 127.0.0.1:{s.port}{' ssl' if s.ssl else ''};"
            servers.append(f"  server {{\n    {listen}\n{s.body}\n  }}")
        user = "user root;\n" if os.geteuid() == 0 else ""
        t = self.dir / "tmp"
        conf = (
            f"{user}worker_processes 1;\nerror_log {self.dir}/error.log info;\npid {self.dir}/nginx.pid;\n"
            "events { worker_connections 256; }\n"
            "http {\n  access_log off;\n"
            f"  client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t};\n"
            f"  uwsgi_temp_path {t}; scgi_temp_path {t};\n"
            + "\n".join(servers)
            + "\n}\n"
        )
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            for s in sites:
                wait_port(s.port)
        except RuntimeError:
            self.proc.kill()
            out = self.proc.communicate()[0].decode(errors="replace")
            raise RuntimeError(f"nginx did not start: {out}\n{conf}")

    def port(self, name: str) -> int:
        return self.sites[name].port

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------------- contexts


def server_context(
    chain: Path,
    key: Path,
    *,
    seclevel0: bool = False,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    import warnings

    warnings.filterwarnings("ignore", "ssl.TLSVersion", DeprecationWarning)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if seclevel0 or ciphers:
        ctx.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    ctx.load_cert_chain(str(chain), str(key))
    return ctx


# -------------------------------------------------------------------------------------------------------- the corpus


@dataclass
class Endpoint:
    """One broken (or healthy) endpoint and what ``diagnose()`` must say about it."""

    name: str
    expected: str
    hostname: str
    connect: str | None = None
    cafile: str | None = None
    kwargs: dict = field(default_factory=dict)
    server: str = "python"  # python | nginx | raw | none

    def diagnose_kwargs(self) -> dict:
        kw = dict(self.kwargs)
        if self.connect:
            kw["connect"] = self.connect
        if self.cafile:
            kw["cafile"] = self.cafile
        return kw


class Corpus:
    def __init__(self, directory: Path, *, with_nginx: bool = True):
        self.dir = directory
        self.pki = pki = PKI(directory / "pki")
        self._closers: list = []
        self.endpoints: dict[str, Endpoint] = {}

        root = pki.ca("Edgecert Test Root")
        inter = pki.ca("Edgecert Test Intermediate", issuer=root)
        other_root = pki.ca("Elsewhere Private Root")
        other_inter = pki.ca("Elsewhere Private Intermediate", issuer=other_root)
        old_inter = pki.ca("Edgecert Expired Intermediate", issuer=root,
                           not_before=NOW - 400 * DAY, not_after=NOW - 5 * DAY)
        self.root, self.inter = root, inter
        self.cafile = str(root.path)
        ca = self.cafile

        files = FileHTTPServer({})
        self._closers.append(files)
        self.files = files

        def add(ep: Endpoint):
            self.endpoints[ep.name] = ep
            return ep

        def py(name, leaf: Cert, chain: list[Cert], *, body=None, **ctxkw) -> TLSServer:
            bundle = pki.bundle(name, leaf, *chain)
            ctx = server_context(bundle, leaf.key_path, **ctxkw)
            srv = TLSServer(ctx, **({"body": body} if body is not None else {}))
            self._closers.append(srv)
            return srv

        def leaf(name, names, issuer=inter, **kw):
            return pki.leaf(name, names, issuer=issuer, **kw)

        # -- healthy
        self.ok_leaf = ok_leaf = leaf("ok", ["ok.test", "www.ok.test"])
        s = py("ok", ok_leaf, [inter])
        self.ok_server = s
        add(Endpoint("ok", "ok", "ok.test", s.address, ca))
        wc = leaf("wildcard", ["*.wild.test"])
        s = py("wildcard", wc, [inter])
        add(Endpoint("ok_wildcard", "ok", "shop.wild.test", s.address, ca))
        s = py("wildcard2", wc, [inter])
        add(Endpoint("wildcard_too_deep", "hostname_mismatch", "a.b.wild.test", s.address, ca))

        # -- certificate problems
        s = py("expired", leaf("expired", ["expired.test"], not_before=NOW - 100 * DAY, not_after=NOW - 2 * DAY),
               [inter])
        add(Endpoint("expired", "expired", "expired.test", s.address, ca))
        s = py("expired_inter", leaf("expired_inter_leaf", ["old-chain.test"], issuer=old_inter,
                                     not_before=NOW - 30 * DAY, not_after=NOW + 30 * DAY), [old_inter])
        add(Endpoint("expired_intermediate", "expired", "old-chain.test", s.address, ca))
        s = py("notyet", leaf("notyet", ["future.test"], not_before=NOW + 3 * DAY, not_after=NOW + 90 * DAY),
               [inter])
        add(Endpoint("not_yet_valid", "not_yet_valid", "future.test", s.address, ca))
        s = py("selfsigned", pki.leaf("selfsigned", ["self.test"], issuer=None), [])
        add(Endpoint("self_signed", "self_signed", "self.test", s.address, ca))
        s = py("untrusted", leaf("untrusted", ["private.test"], issuer=other_inter), [other_inter, other_root])
        add(Endpoint("untrusted_root", "untrusted_root", "private.test", s.address, ca))
        s = py("untrusted2", leaf("untrusted2", ["private2.test"], issuer=other_inter), [other_inter])
        add(Endpoint("untrusted_root_not_sent", "untrusted_root", "private2.test", s.address, ca))
        s = py("incomplete", leaf("incomplete", ["nochain.test"]), [])
        add(Endpoint("incomplete_chain", "incomplete_chain", "nochain.test", s.address, ca))
        s = py("mismatch", leaf("mismatch", ["other.test", "www.other.test"]), [inter])
        add(Endpoint("hostname_mismatch", "hostname_mismatch", "shop.test", s.address, ca))
        s = py("sha1", pki.leaf_sha1("sha1", ["sha1.test"], issuer=inter), [inter], seclevel0=True)
        add(Endpoint("weak_signature", "weak_signature", "sha1.test", s.address, ca))
        s = py("rsa1024", leaf("rsa1024", ["weak.test"], key=pki.key("rsa", 1024)), [inter], seclevel0=True)
        add(Endpoint("weak_key", "weak_key", "weak.test", s.address, ca))
        revoked_leaf = leaf("revoked", ["revoked.test"], crl_url=files.url("/inter.crl"))
        crl_path = pki.crl(inter, [revoked_leaf], "inter")
        files.files["/inter.crl"] = crl_path.read_bytes()
        s = py("revoked", revoked_leaf, [inter])
        add(Endpoint("revoked", "revoked", "revoked.test", s.address, ca))

        # default certificate: an SNI callback that serves a self-signed fallback for unknown names
        self.tenant_leaf = tenant_leaf = leaf("tenant", ["tenant.test"])
        fallback = pki.leaf("edge_default", ["edge-default.invalid"], issuer=None, common_name="Edge Default")
        fallback_ctx = server_context(pki.bundle("edge_default", fallback), fallback.key_path)
        known = {"known.test": server_context(pki.bundle("known", leaf("known", ["known.test"]), inter),
                                              self.pki.dir / "known.key")}

        def pick(sslobj, server_name, _ctx):
            if server_name in known:
                sslobj.context = known[server_name]
            return None

        fallback_ctx.sni_callback = pick
        s = TLSServer(fallback_ctx)
        self._closers.append(s)
        add(Endpoint("default_certificate", "default_certificate", "tenant.test", s.address, ca,
                     {"expected_sha256": tenant_leaf.sha256}))
        # the gotcha: a CA-signed default certificate sent WITHOUT its intermediate (verify code 20 hides the name)
        fallback2 = leaf("edge_default2", ["default.edge.test"])
        fallback2_ctx = server_context(pki.bundle("edge_default2", fallback2), fallback2.key_path)
        s = TLSServer(fallback2_ctx)
        self._closers.append(s)
        add(Endpoint("default_certificate_unchained", "default_certificate", "tenant.test", s.address, ca,
                     {"expected_sha256": tenant_leaf.sha256}))

        # mixed content: a valid endpoint whose page pulls a script over http://
        s = py("mixed", leaf("mixed", ["mixed.test"]), [inter],
               body=b'<html><head><script src="http://cdn.mixed.test/app.js"></script></head><body>hi</body></html>')
        add(Endpoint("mixed_content", "mixed_content", "mixed.test", s.address, ca))

        # -- handshake problems
        hs_leaf = leaf("handshake", ["hs.test"])
        hs_rsa = leaf("handshake_rsa", ["hs.test"], key=pki.key("rsa", 2048))

        def refuse_name(sslobj, server_name, _ctx):
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

        ctx = server_context(pki.bundle("sni", hs_leaf, inter), hs_leaf.key_path)
        ctx.sni_callback = refuse_name
        s = TLSServer(ctx)
        self._closers.append(s)
        add(Endpoint("sni_unrecognized", "sni_unrecognized", "hs.test", s.address, ca))
        s = py("tls11", hs_rsa, [inter], seclevel0=True, min_version=ssl.TLSVersion.TLSv1_1,
               max_version=ssl.TLSVersion.TLSv1_1)
        add(Endpoint("tls11_only", "protocol_version_mismatch", "hs.test", s.address, ca))
        for mode in ("http", "reset", "eof"):
            s = RawServer(mode)
            self._closers.append(s)
            expected = "plain_http_on_tls_port" if mode == "http" else "handshake_failure"
            add(Endpoint(f"raw_{mode}", expected, "hs.test", s.address, ca, server="raw"))

        # -- tcp problems
        refusing = RefusingPort()
        self._closers.append(refusing)
        add(Endpoint("connection_refused", "connection_refused", "hs.test", f"127.0.0.1:{refusing.port}", ca,
                     server="none"))
        blk = BacklogFull()
        self._closers.append(blk)
        add(Endpoint("connection_timeout", "connection_timeout", "hs.test", f"127.0.0.1:{blk.port}", ca,
                     {"timeout": 1.5}, server="none"))

        # -- DNS: a loopback DNS server; names point at the healthy server or elsewhere
        elsewhere = TLSServer(server_context(
            pki.bundle("cdn", leaf("cdn", ["cdn-old.test"]), inter), pki.dir / "cdn.key"), host="127.0.0.2")
        self._closers.append(elsewhere)
        self.dns = DNSServer({
            "edge.test": [("A", "127.0.0.1")],
            "good.test": [("CNAME", "edge.test")],
            "ok.test": [("CNAME", "edge.test")],
            "elsewhere.test": [("A", "127.0.0.2")],
            "stale.test": [("CNAME", "old-cdn.test")],
            "old-cdn.test": [("A", "127.0.0.2")],
            "noaddr.test": [("TXT", '"v=nothing"')],
        })
        self._closers.append(self.dns)
        dnskw = {"resolver": self.dns.address, "edge_targets": ["edge.test"]}
        add(Endpoint("dns_ok", "ok", "ok.test", None, ca, {**dnskw, "port": self.ok_server.port}))
        add(Endpoint("dns_nxdomain", "dns_not_configured", "missing.test", None, ca, dict(dnskw)))
        add(Endpoint("dns_no_address", "dns_not_configured", "noaddr.test", None, ca, dict(dnskw)))
        add(Endpoint("wrong_endpoint", "wrong_endpoint", "elsewhere.test", None, ca,
                     {**dnskw, "port": elsewhere.port}))
        add(Endpoint("wrong_endpoint_cname", "wrong_endpoint", "stale.test", None, ca,
                     {**dnskw, "port": elsewhere.port}))

        # -- nginx
        self.nginx = None
        if with_nginx and NGINX:
            inc = leaf("ngx_incomplete", ["ngx-nochain.test"])
            okc = pki.bundle("ngx_ok", leaf("ngx_ok", ["ngx-ok.test"]), inter)
            rsa_leaf = leaf("ngx_rsa", ["ngx-legacy.test"], key=pki.key("rsa", 2048))
            rsa_bundle = pki.bundle("ngx_rsa", rsa_leaf, inter)
            stapled = leaf("ngx_stapled", ["ngx-stapled.test"])
            stapled_bundle = pki.bundle("ngx_stapled", stapled, inter)
            ocsp = pki.ocsp_revoked_response(stapled, inter, "ngx_stapled")
            sites = [
                NginxSite("ok", f"    ssl_certificate {okc};\n    ssl_certificate_key {pki.dir}/ngx_ok.key;\n"
                                "    location / { return 200 'ok\\n'; }"),
                NginxSite("incomplete", f"    ssl_certificate {inc.path};\n    ssl_certificate_key {inc.key_path};\n"
                                        "    location / { return 200 'ok\\n'; }"),
                NginxSite("plain", "    location / { return 200 'plain\\n'; }", ssl=False),
                NginxSite("tls10", f"    ssl_certificate {rsa_bundle};\n    ssl_certificate_key {rsa_leaf.key_path};\n"
                                   "    ssl_protocols TLSv1;\n    ssl_ciphers 'DEFAULT:@SECLEVEL=0';\n"
                                   "    location / { return 200 'old\\n'; }"),
                NginxSite("cipher", f"    ssl_certificate {rsa_bundle};\n    ssl_certificate_key {rsa_leaf.key_path};\n"
                                    "    ssl_protocols TLSv1.2;\n    ssl_ciphers 'CAMELLIA128-SHA:CAMELLIA256-SHA';\n"
                                    "    location / { return 200 'odd\\n'; }"),
                NginxSite("stapled", f"    ssl_certificate {stapled_bundle};\n    ssl_certificate_key {stapled.key_path};\n"
                                     f"    ssl_stapling on;\n    ssl_stapling_file {ocsp};\n"
                                     "    location / { return 200 'ok\\n'; }"),
            ]
            self.nginx = Nginx(directory / "nginx", sites)
            self._closers.append(self.nginx)
            n = self.nginx
            add(Endpoint("nginx_ok", "ok", "ngx-ok.test", f"127.0.0.1:{n.port('ok')}", ca, server="nginx"))
            add(Endpoint("nginx_incomplete_chain", "incomplete_chain", "ngx-nochain.test",
                         f"127.0.0.1:{n.port('incomplete')}", ca, server="nginx"))
            add(Endpoint("nginx_plain_http", "plain_http_on_tls_port", "ngx-ok.test",
                         f"127.0.0.1:{n.port('plain')}", ca, server="nginx"))
            add(Endpoint("nginx_tls10_only", "protocol_version_mismatch", "ngx-legacy.test",
                         f"127.0.0.1:{n.port('tls10')}", ca, server="nginx"))
            add(Endpoint("nginx_cipher_mismatch", "cipher_mismatch", "ngx-legacy.test",
                         f"127.0.0.1:{n.port('cipher')}", ca, server="nginx"))
            add(Endpoint("nginx_ocsp_revoked", "revoked", "ngx-stapled.test",
                         f"127.0.0.1:{n.port('stapled')}", ca, server="nginx"))

    def close(self) -> None:
        for c in reversed(self._closers):
            with contextlib.suppress(Exception):
                c.close()
