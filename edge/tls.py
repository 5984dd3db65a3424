"""The TLS edge's certificate selection: an in-memory SNI index, lazily built SSLContexts, a default certificate.

The handshake path (``sni_callback``) only reads memory, in a fixed order: exact name, then the wildcard one label
up, then the default certificate. A name not in memory never triggers any I/O or CA order: it gets the default
certificate. SSLContexts are built on first use from PEM held in memory (loaded through an anonymous memfd, never
the disk), and kept in an LRU bounded by ``max_contexts``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertEntry", "SniIndex", "make_server_context", "generate_default_certificate", "MOZILLA_INTERMEDIATE",
           "SniOutcome"]

log = logging.getLogger(__name__)

# Mozilla "intermediate" TLS 1.2 suites (TLS 1.3 suites are always on). DHE omitted: no DH params configured.
MOZILLA_INTERMEDIATE = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])


class SniOutcome:
    KNOWN = "known"
    DEFAULT = "default"      # no SNI sent
    UNKNOWN = "unknown"      # SNI sent, no certificate for it
    INVALID = "invalid"      # SNI is not a plausible hostname


class CertEntry:
    """One served certificate, compact: the leaf as DER, the chain interned (shared by all certificates of one
    intermediate), the key either as PEM or still encrypted (decrypted only when a context is first built)."""

    __slots__ = ("hostname", "_leaf_der", "_chain", "_key", "_unlock", "serial", "sha256", "not_after", "cert_id",
                 "names", "_ctx")

    def __init__(self, *, hostname: str, fullchain_pem: bytes | None = None, key_pem: bytes | None = None,
                 serial: str, sha256: str, not_after: dt.datetime, cert_id: int | None = None,
                 names: tuple[str, ...] = (), leaf_der: bytes | None = None, chain_pem: bytes | None = None,
                 key_unlock: Callable[[], bytes] | None = None) -> None:
        self.hostname = hostname
        if leaf_der is None:
            assert fullchain_pem is not None
            leaf_pem, _, rest = fullchain_pem.partition(b"-----END CERTIFICATE-----")
            leaf_der = ssl.PEM_cert_to_DER_cert((leaf_pem + b"-----END CERTIFICATE-----\n").decode())
            chain_pem = rest.lstrip(b"\r\n")
        self._leaf_der = leaf_der
        self._chain = _intern(chain_pem or b"")
        self._key = key_pem
        self._unlock = key_unlock
        self.serial = serial
        self.sha256 = sha256
        self.not_after = not_after
        self.cert_id = cert_id
        self.names = names
        self._ctx: ssl.SSLContext | None = None

    @property
    def fullchain_pem(self) -> bytes:
        return ssl.DER_cert_to_PEM_cert(self._leaf_der).encode() + self._chain

    @property
    def key_pem(self) -> bytes:
        if self._key is None:
            assert self._unlock is not None
            return self._unlock()
        return self._key


_CHAINS: dict[bytes, bytes] = {}


def _intern(chain: bytes) -> bytes:
    return _CHAINS.setdefault(chain, chain)


TICKETS = True  # set False (bench, tests of full handshakes) to turn TLS session tickets off


def _configure(ctx: ssl.SSLContext) -> None:
    if not TICKETS:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(MOZILLA_INTERMEDIATE)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])


def _load_pem_into(ctx: ssl.SSLContext, fullchain_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` from memory: an anonymous memfd (no file system, nothing left behind)."""
    fd = os.memfd_create("edgecert-cert", os.MFD_CLOEXEC)
    try:
        os.write(fd, fullchain_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def make_server_context(fullchain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server SSLContext with edgecert's TLS settings for one certificate.

    Raises:
        ssl.SSLError: the PEM does not load or the key does not match the certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(ctx)
    _load_pem_into(ctx, fullchain_pem, key_pem)
    return ctx


def generate_default_certificate(*, common_name: str = "edgecert default certificate") -> tuple[bytes, bytes]:
    """A self-signed ECDSA certificate served to clients without SNI or with an unknown name."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgecert")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("edgecert.invalid")]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class SniIndex:
    """Hostname -> :class:`CertEntry`, plus an LRU of built SSLContexts.

    Reads (the handshake) take no lock: replacing an entry is one dict assignment, atomic under the GIL, so a
    handshake sees either the old or the new entry, never a mix. Writers serialise on a lock.
    """

    def __init__(self, *, default_fullchain: bytes, default_key: bytes, max_contexts: int = 20000,
                 on_outcome: Callable[[str], None] | None = None) -> None:
        self._exact: dict[str, CertEntry] = {}
        self._lru: OrderedDict[int, CertEntry] = OrderedDict()
        self._max = max(1, max_contexts)
        self._wlock = threading.Lock()
        self._on_outcome = on_outcome
        self.default_pem = default_fullchain
        self.default_context = make_server_context(default_fullchain, default_key)
        self.default_context.sni_callback = self._sni_callback
        self.builds = 0

    # -- writers ---------------------------------------------------------------------------------------------
    def put(self, entry: CertEntry, *, prebuild: bool = True) -> None:
        """Install or replace the entry for ``entry.hostname`` (and build its context first, off the handshake)."""
        if prebuild:
            self._context_for(entry)
        with self._wlock:
            old = self._exact.get(entry.hostname)
            self._exact[entry.hostname] = entry
            if old is not None and old is not entry:
                self._lru.pop(id(old), None)
                old._ctx = None

    def remove(self, hostname: str) -> None:
        with self._wlock:
            old = self._exact.pop(hostname, None)
            if old is not None:
                self._lru.pop(id(old), None)
                old._ctx = None

    def names(self) -> list[str]:
        return list(self._exact)

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, hostname: str) -> bool:
        return hostname in self._exact

    # -- readers ---------------------------------------------------------------------------------------------
    def lookup(self, name: str) -> CertEntry | None:
        e = self._exact.get(name)
        if e is not None:
            return e
        dot = name.find(".")
        if dot > 0:
            return self._exact.get("*" + name[dot:])
        return None

    def get(self, hostname: str) -> CertEntry | None:
        return self._exact.get(hostname)

    def _context_for(self, entry: CertEntry) -> ssl.SSLContext:
        ctx = entry._ctx
        if ctx is not None:
            lru = self._lru
            if id(entry) in lru:
                lru.move_to_end(id(entry))
            return ctx
        ctx = make_server_context(entry.fullchain_pem, entry.key_pem)
        self.builds += 1
        entry._ctx = ctx
        with self._wlock:
            self._lru[id(entry)] = entry
            while len(self._lru) > self._max:
                _, evicted = self._lru.popitem(last=False)
                evicted._ctx = None
        return ctx

    def context_count(self) -> int:
        return len(self._lru)

    def _sni_callback(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext):
        if server_name is None:
            self._outcome(SniOutcome.DEFAULT)
            return None
        name = server_name.lower().rstrip(".")
        sslobj.edgecert_sni = name  # read by the HTTP layer for the Host == SNI check
        entry = self.lookup(name)
        if entry is None:
            self._outcome(SniOutcome.UNKNOWN)
            return None
        try:
            sslobj.context = self._context_for(entry)
        except (ssl.SSLError, OSError):
            log.exception("cannot load the certificate of %s; serving the default certificate", name)
            self._outcome(SniOutcome.UNKNOWN)
            return None
        self._outcome(SniOutcome.KNOWN)
        return None

    def _outcome(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def load_default_certificate(cert_path: str | None, key_path: str | None, state_dir: Path) -> tuple[bytes, bytes]:
    """The configured default certificate, or a generated self-signed one kept in ``state_dir/default/``."""
    if cert_path and key_path:
        return Path(cert_path).read_bytes(), Path(key_path).read_bytes()
    d = state_dir / "default"
    cert_f, key_f = d / "cert.pem", d / "key.pem"
    if cert_f.exists() and key_f.exists():
        return cert_f.read_bytes(), key_f.read_bytes()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = generate_default_certificate()
    fd = os.open(key_f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    cert_f.write_bytes(cert)
    return cert, key
