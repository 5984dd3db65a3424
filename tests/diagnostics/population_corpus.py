"""Broken endpoints for the client-population, chain-validity, address and phase checks of ``diagnose``.

All real, all on loopback: chains minted here with ``cryptography`` (CA:FALSE intermediates, path lengths, name
constraints, clientAuth-only leaves, must-staple, CN-only, Ed25519), Python ``ssl`` servers (``corpus.TLSServer``),
``openssl s_server`` for what Python's server cannot do (demand a client certificate, refuse every ALPN offer,
DHE-only, one key-exchange group), a raw socket that accepts and never answers, and a dual-stack name whose IPv6
address serves another site.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .corpus import DNSServer, TLSServer, free_port, server_context, wait_port

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)


@dataclass
class Minted:
    cert: x509.Certificate
    key: object
    path: Path
    key_path: Path

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


class Mint:
    """Certificates with every knob the chain rules look at."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.serial = 5000

    def key(self, kind: str = "ec"):
        if kind == "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        if kind.startswith("rsa"):
            return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:] or 2048))
        return ec.generate_private_key(ec.SECP256R1())

    def cert(self, file_name: str, *, cn: str, issuer: Minted | None = None, ca: bool | None = False,
             pathlen: int | None = None, names: list[str] | None = None, eku: list | None = None,
             key_cert_sign: bool = True, permitted: list[str] | None = None, must_staple: bool = False,
             not_before: dt.datetime | None = None, not_after: dt.datetime | None = None, key=None,
             ocsp_url: str | None = None, digital_signature: bool = True, with_eku: bool = True) -> Minted:
        key = key or self.key()
        self.serial += 1
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Edgecert Population"),
                             x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(issuer.cert.subject if issuer else subject).public_key(key.public_key())
             .serial_number(self.serial).not_valid_before(not_before or NOW - 10 * DAY)
             .not_valid_after(not_after or NOW + (3650 if ca else 80) * DAY)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if ca is not None:
            b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen if ca else None), critical=True)
        if ca:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=True, encipher_only=False,
                decipher_only=False), critical=True)
        if issuer:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                                critical=False)
        if names:
            sans: list[x509.GeneralName] = []
            for n in names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if not ca:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=digital_signature, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            if with_eku:
                b = b.add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        if permitted:
            b = b.add_extension(x509.NameConstraints(permitted_subtrees=[x509.DNSName(p) for p in permitted],
                                                     excluded_subtrees=None), critical=True)
        if must_staple:
            b = b.add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
        if ocsp_url:
            b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]),
                critical=False)
        signer = issuer.key if issuer else key
        algo = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        c = b.sign(signer, algo)
        path = self.dir / f"{file_name}.pem"
        key_path = self.dir / f"{file_name}.key"
        path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return Minted(c, key, path, key_path)

    def bundle(self, name: str, *certs: Minted) -> Path:
        p = self.dir / f"{name}.chain.pem"
        p.write_bytes(b"".join(c.pem for c in certs))
        return p


class SServer:
    """``openssl s_server -www`` on loopback with extra options (the process is ours; closed by ``close``)."""

    def __init__(self, cert: Path, key: Path, chain: Path | None, *extra: str, host: str = "127.0.0.1"):
        self.port = free_port(host)
        self.host = host
        args = ["openssl", "s_server", "-accept", f"{host}:{self.port}", "-cert", str(cert), "-key", str(key),
                "-www", "-quiet", "-naccept", "1000000"]
        if chain:
            args += ["-cert_chain", str(chain)]
        self.proc = subprocess.Popen(args + list(extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, host)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Staller:
    """Accepts TCP connections, reads the ClientHello and never answers (a stalled process / a middlebox)."""

    def __init__(self, partial: bytes = b""):
        self.partial = partial  # sent after the ClientHello arrives, before stalling (a half-answered handshake)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)  # kept open, never (fully) answered
            if self.partial:
                threading.Thread(target=self._half_answer, args=(c,), daemon=True).start()

    def _half_answer(self, c: socket.socket) -> None:
        with contextlib.suppress(OSError):
            c.settimeout(5)
            c.recv(65536)
            c.sendall(self.partial)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@dataclass
class PEndpoint:
    name: str
    expected: str
    hostname: str
    connect: str | None
    cafile: str
    kwargs: dict = field(default_factory=dict)

    def diagnose_kwargs(self) -> dict:
        kw = dict(self.kwargs)
        if self.connect:
            kw["connect"] = self.connect
        kw["cafile"] = self.cafile
        return kw


class PopulationCorpus:
    def __init__(self, directory: Path):
        self.dir = directory
        m = self.mint = Mint(directory / "pki")
        self._closers: list = []
        self.endpoints: dict[str, PEndpoint] = {}
        root = m.cert("root", cn="Population Root", ca=True)
        inter = m.cert("inter", cn="Population Intermediate", issuer=root, ca=True)
        self.root, self.inter = root, inter
        self.cafile = ca = str(root.path)

        def add(name, expected, host, address, **kw):
            self.endpoints[name] = PEndpoint(name, expected, host, address, ca, kw)

        def py(name, leaf: Minted, chain: list[Minted], host: str = "127.0.0.1", port: int = 0, body=None,
               **ctxkw) -> TLSServer:
            bundle = m.bundle(name, leaf, *chain)
            srv = TLSServer(server_context(bundle, leaf.key_path, **ctxkw), host=host, port=port,
                            **({"body": body} if body else {}))
            self._closers.append(srv)
            return srv

        def ss(name, leaf: Minted, chain: list[Minted], *extra: str) -> SServer:
            srv = SServer(leaf.path, leaf.key_path, m.bundle(name + "_chain", *chain) if chain else None, *extra)
            self._closers.append(srv)
            return srv

        # healthy, and healthy with an extra unrelated certificate and the intermediate after the root
        ok = m.cert("ok", cn="pop-ok.test", issuer=inter, names=["pop-ok.test"])
        add("ok", "ok", "pop-ok.test", py("ok", ok, [inter]).address)
        stray = m.cert("stray", cn="Stray CA", ca=True)
        messy = m.cert("messy", cn="messy.test", issuer=inter, names=["messy.test"])
        add("extra_out_of_order", "ok", "messy.test", py("messy", messy, [root, stray, inter]).address)

        # the server demands something of the client
        cc = m.cert("mtls", cn="mtls.test", issuer=inter, names=["mtls.test"])
        add("client_cert_tls13", "client_certificate_required", "mtls.test",
            ss("mtls13", cc, [inter], "-Verify", "1", "-CAfile", ca).address)
        add("client_cert_tls12", "client_certificate_required", "mtls.test",
            ss("mtls12", cc, [inter], "-Verify", "1", "-CAfile", ca, "-tls1_2").address)
        al = m.cert("alpn", cn="alpn.test", issuer=inter, names=["alpn.test"])
        add("alpn_only_acme", "alpn_mismatch", "alpn.test", ss("alpn", al, [inter], "-alpn", "acme-tls/1").address)

        # handshakes that start but never finish
        st = Staller()
        self._closers.append(st)
        add("stall", "handshake_timeout", "stall.test", st.address, timeout=1.5)
        st = Staller(partial=b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03")  # a ServerHello cut short
        self._closers.append(st)
        add("stall_mid_handshake", "handshake_timeout", "stall2.test", st.address, timeout=1.5)

        # chains that are complete but not valid
        notca = m.cert("notca", cn="Not A CA Intermediate", issuer=root, ca=False)
        leaf = m.cert("notca_leaf", cn="notca.test", issuer=notca, names=["notca.test"])
        add("ca_false_intermediate", "invalid_chain", "notca.test", py("notca", leaf, [notca]).address)
        i0 = m.cert("pathlen0", cn="Pathlen Zero Intermediate", issuer=root, ca=True, pathlen=0)
        i1 = m.cert("pathlen_sub", cn="Too Deep Intermediate", issuer=i0, ca=True)
        leaf = m.cert("pathlen_leaf", cn="deep.test", issuer=i1, names=["deep.test"])
        add("pathlen_exceeded", "invalid_chain", "deep.test", py("pathlen", leaf, [i1, i0]).address)
        nc = m.cert("nc_inter", cn="Constrained Intermediate", issuer=root, ca=True, permitted=["allowed.test"])
        leaf = m.cert("nc_leaf", cn="outside.test", issuer=nc, names=["outside.test"])
        add("name_constraints", "invalid_chain", "outside.test", py("nc", leaf, [nc]).address)
        leaf = m.cert("clientauth", cn="clientauth.test", issuer=inter, names=["clientauth.test"],
                      eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        add("eku_client_only", "unsuitable_purpose", "clientauth.test", py("clientauth", leaf, [inter]).address)
        leaf = m.cert("staple", cn="staple.test", issuer=inter, names=["staple.test"], must_staple=True)
        add("must_staple", "must_staple_missing", "staple.test", py("staple", leaf, [inter]).address)
        old = m.cert("old_inter", cn="Expired Population Intermediate", issuer=root, ca=True,
                     not_before=NOW - 400 * DAY, not_after=NOW - 3 * DAY)
        leaf = m.cert("old_leaf", cn="oldinter.test", issuer=old, names=["oldinter.test"])
        add("expired_intermediate", "expired", "oldinter.test", py("oldinter", leaf, [old]).address)
        leaf = m.cert("cnonly", cn="cnonly.test", issuer=inter)
        add("cn_only", "hostname_mismatch", "cnonly.test", py("cnonly", leaf, [inter]).address)
        leaf = m.cert("rsa1024", cn="rsa1024.test", issuer=inter, names=["rsa1024.test"], key=m.key("rsa1024"))
        add("rsa1024", "weak_key", "rsa1024.test", py("rsa1024", leaf, [inter], seclevel0=True).address)

        leaf = m.cert("ku_enc", cn="kuenc.test", issuer=inter, names=["kuenc.test"], key=m.key("rsa2048"),
                      digital_signature=False)
        add("rsa_ku_no_signature", "unsuitable_purpose", "kuenc.test", py("kuenc", leaf, [inter]).address)
        leaf = m.cert("noeku", cn="noeku.test", issuer=inter, names=["noeku.test"], with_eku=False)
        add("no_eku_leaf", "ok", "noeku.test", py("noeku", leaf, [inter]).address)

        # what OpenSSL accepts but browsers do not negotiate
        leaf = m.cert("ed25519", cn="ed.test", issuer=inter, names=["ed.test"], key=m.key("ed25519"))
        add("ed25519_leaf", "cipher_mismatch", "ed.test", py("ed", leaf, [inter]).address)
        rsa_leaf = m.cert("dhe", cn="dhe.test", issuer=inter, names=["dhe.test"], key=m.key("rsa2048"))
        add("dhe_only", "cipher_mismatch", "dhe.test",
            ss("dhe", rsa_leaf, [inter], "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")
            .address)
        leaf = m.cert("p521", cn="p521.test", issuer=inter, names=["p521.test"])
        add("p521_only", "cipher_mismatch", "p521.test", ss("p521", leaf, [inter], "-groups", "P-521").address)
        leaf = m.cert("tls13only", cn="tls13.test", issuer=inter, names=["tls13.test"])
        add("tls13_only", "ok", "tls13.test", py("tls13", leaf, [inter], min_version=__import__("ssl").TLSVersion.TLSv1_3)
            .address)
        leaf = m.cert("legacy", cn="legacy.test", issuer=inter, names=["legacy.test"], key=m.key("rsa2048"))
        add("tls10_still_enabled", "ok", "legacy.test",
            py("legacy", leaf, [inter], seclevel0=True, min_version=__import__("ssl").TLSVersion.TLSv1).address)
        leaf = m.cert("soon", cn="soon.test", issuer=inter, names=["soon.test"], not_after=NOW + 5 * DAY,
                      ocsp_url="http://ocsp.population.test/")
        add("expiring_soon", "ok", "soon.test", py("soon", leaf, [inter]).address)

        # every address: soon.test's IPv4 address is right, its IPv6 address serves another site
        port = free_port("127.0.0.1")
        good = m.cert("dual_good", cn="dual.test", issuer=inter, names=["dual.test"])
        py("dual4", good, [inter], host="127.0.0.1", port=port)
        other = m.cert("dual_other", cn="old-host.test", issuer=inter, names=["old-host.test"])
        py("dual6", other, [inter], host="::1", port=port)
        # and a name still pointing at its old host while the edge (127.0.0.1, same port) already serves it
        port2 = free_port("127.0.0.2")
        moved = m.cert("moved", cn="moved.test", issuer=inter, names=["moved.test"])
        py("moved_edge", moved, [inter], host="127.0.0.1", port=port2)
        py("moved_old", m.cert("moved_old", cn="old-host.test", issuer=inter, names=["old-host.test"]), [inter],
           host="127.0.0.2", port=port2)
        self.dns = DNSServer({"dual.test": [("A", "127.0.0.1"), ("AAAA", "::1")],
                              "moved.test": [("A", "127.0.0.2")]})
        self._closers.append(self.dns)
        add("ipv6_other_site", "wrong_endpoint", "dual.test", None, resolver=self.dns.address, port=port)
        add("edge_ready_dns_elsewhere", "wrong_endpoint", "moved.test", None, resolver=self.dns.address, port=port2,
            edge_targets=["127.0.0.1"])

    def close(self) -> None:
        for c in reversed(self._closers):
            with contextlib.suppress(Exception):
                c.close()
