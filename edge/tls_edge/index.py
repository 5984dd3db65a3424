"""The TLS edge's certificate selection: an in-memory SNI index, lazily built SSLContexts, a default certificate.

The handshake path (``sni_callback``) only reads memory, in a fixed order: exact name, then the wildcard one label
up, then the default certificate. A name not in memory never triggers any I/O or CA order: it gets the default
certificate. SSLContexts are built from PEM held in memory (loaded through an anonymous memfd, never the disk) and
kept in an LRU bounded by ``max_contexts`` and by a memory budget (``CONTEXT_BYTES`` each).

Building one context costs ~1.1-1.6 ms of CPU with OpenSSL 3.0 (measured with perf: mostly the OSSL_DECODER chains
that decode the private key and the two certificates' public keys) and ~25 KiB. To keep that off the handshake path,
:meth:`SniIndex.start_prewarm` builds contexts in a background thread at the lowest CPU priority (nice 19) until the
LRU is full, after start and after every index update; the handshake path builds only on a miss (in memory, no I/O).
Prewarmed contexts enter the LRU at its cold end, so contexts that served a handshake are evicted last.
"""

from __future__ import annotations

import binascii
import datetime as dt
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertEntry", "SniIndex", "make_server_context", "generate_default_certificate", "MOZILLA_INTERMEDIATE",
           "SniOutcome", "CONTEXT_BYTES", "entry_from_row", "pem_cert_to_der"]

# Memory of one built SSLContext with a P-256 leaf, one intermediate and its key (OpenSSL 3.0.x, measured as the RSS
# growth over 3,000 contexts): a bare SSL_CTX is ~12.7 KiB, the leaf + key ~6 KiB, the intermediate ~6 KiB.
CONTEXT_BYTES = 25 * 1024

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
    intermediate), the key either as PEM or still encrypted (decrypted only when a context is first built).

    The key can be given as PEM (``key_pem``), as a callable returning it (``key_unlock``), or -- the compact form
    used for the bulk load of 100k names -- as the encrypted blob plus the shared key box (``key_enc`` + ``keybox``;
    purpose ``cert-key:<hostname>``): no per-entry closure."""

    __slots__ = ("hostname", "_leaf_der", "_leaf_pem", "_chain", "_key", "_unlock", "serial", "sha256", "not_after",
                 "cert_id", "names", "_ctx")

    def __init__(self, *, hostname: str, fullchain_pem: bytes | None = None, key_pem: bytes | None = None,
                 serial: str, sha256: str | None = None, not_after: dt.datetime | None = None,
                 cert_id: int | None = None, names: tuple[str, ...] = (), leaf_der: bytes | None = None,
                 chain_pem: bytes | None = None, key_unlock: Callable[[], bytes] | None = None,
                 key_enc: bytes | None = None, keybox=None) -> None:
        self.hostname = hostname
        if leaf_der is None:
            assert fullchain_pem is not None
            leaf_pem, _, rest = fullchain_pem.partition(b"-----END CERTIFICATE-----")
            leaf_der = ssl.PEM_cert_to_DER_cert((leaf_pem + b"-----END CERTIFICATE-----\n").decode())
            chain_pem = rest.lstrip(b"\r\n")
        self._leaf_der = leaf_der
        self._leaf_pem = None
        self._chain = _intern(chain_pem or b"")
        if key_enc is not None:
            self._key, self._unlock = key_enc, keybox
        else:
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
        if self._leaf_pem is not None:
            pem = self._leaf_pem.encode()
            return pem + self._chain if pem.endswith(b"\n") else pem + b"\n" + self._chain
        return ssl.DER_cert_to_PEM_cert(self._leaf_der).encode() + self._chain

    @property
    def leaf_der(self) -> bytes:
        if self._leaf_der is None:
            return pem_cert_to_der(self._leaf_pem)  # type: ignore[arg-type]
        return self._leaf_der

    @property
    def key_pem(self) -> bytes:
        u = self._unlock
        if u is None:
            assert self._key is not None
            return self._key
        if self._key is not None:  # encrypted blob + key box
            return u.decrypt(self._key, purpose=b"cert-key:" + self.hostname.encode())
        return u()


_CHAINS: dict[bytes, bytes] = {}


def _intern(chain: bytes) -> bytes:
    return _CHAINS.setdefault(chain, chain)


_CHAINS_STR: dict[str, bytes] = {}


def pem_cert_to_der(pem: str) -> bytes:
    """One PEM certificate to DER (fast path of ``ssl.PEM_cert_to_DER_cert``, which it falls back to)."""
    start = pem.find("-----\n")
    end = pem.rfind("-----END CERTIFICATE-----")
    if pem.startswith("-----BEGIN CERTIFICATE-----") and start > 0 and end > start:
        try:
            return binascii.a2b_base64(pem[start + 6:end])
        except (binascii.Error, ValueError):
            pass
    return ssl.PEM_cert_to_DER_cert(pem)


def pem_chain_ders(chain_pem: bytes) -> list[bytes]:
    """The DER certificates of a PEM chain, in order."""
    return [ssl.PEM_cert_to_DER_cert(part[part.find(b"-----BEGIN CERTIFICATE-----"):].decode()
                                     + "-----END CERTIFICATE-----\n")
            for part in chain_pem.split(b"-----END CERTIFICATE-----")[:-1]]


def entry_from_row(hostname: str, cert_id: int, serial: str | None, cert_pem: str, chain_pem: str,
                   key_enc: bytes, keybox) -> CertEntry:
    """A compact :class:`CertEntry` from a store row; the key stays encrypted until a context is built.

    This is the bulk-load path (100k rows in about a second): no keyword parsing, slots set directly, and the leaf
    kept as the PEM text the store returned (base64-decoding it to DER cost ~4-6 us a row here, 0.5 s at 100k, for
    ~210 bytes saved a row; the context build wants PEM anyway)."""
    chain = _CHAINS_STR.get(chain_pem)
    if chain is None:
        chain = _CHAINS_STR[chain_pem] = _intern(chain_pem.encode())
    e = _new_entry(CertEntry)
    e.hostname = hostname
    if not cert_pem.startswith("-----BEGIN CERTIFICATE-----"):
        raise ValueError("not a PEM certificate")
    e._leaf_der = None
    e._leaf_pem = cert_pem
    e._chain = chain
    e._key = key_enc if type(key_enc) is bytes else bytes(key_enc)
    e._unlock = keybox
    e.serial = serial
    e.sha256 = e.not_after = e._ctx = None
    e.cert_id = cert_id
    e.names = ()
    return e


_new_entry = object.__new__


TICKETS = True  # set False (bench, tests of full handshakes) to turn TLS session tickets off


def apply_settings(settings) -> None:
    """The process-wide TLS switches from the ``extra`` settings: ``fast_context_build = false`` (load_cert_chain
    only) and ``tls_tickets = false`` (no session tickets: full handshakes only, for benchmarks). Call before the
    SNI index is built: its engine and contexts read them."""
    global FAST_BUILD, TICKETS
    if settings.extra.get("fast_context_build", True) is False:
        FAST_BUILD = False
    if settings.extra.get("tls_tickets") is False:
        TICKETS = False


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


def memory_handshake(server_ctx: ssl.SSLContext, server_hostname: str | None) -> bytes | None:
    """A complete TLS handshake in memory (no sockets) against ``server_ctx``; the DER leaf the server sent."""
    c2s, s2c = ssl.MemoryBIO(), ssl.MemoryBIO()
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    client = cctx.wrap_bio(s2c, c2s, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(c2s, s2c, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
    return client.getpeercert(binary_form=True)


# -- the fast build ------------------------------------------------------------------------------------------------
# ``load_cert_chain`` decodes the PEM key and both certificates through OpenSSL 3.0's OSSL_DECODER machinery, which
# builds a decoder chain per object: ~1.1 ms of the ~1.4 ms a context costs (perf: OSSL_DECODER_CTX_add_extra,
# strcasecmp, rwlocks). The fast build hands OpenSSL objects decoded the direct way instead, through ctypes on the
# very libssl/libcrypto the ``_ssl`` module uses: the leaf with d2i_X509, the key as a traditional (SEC1/PKCS#1) DER
# with d2i_ECPrivateKey/d2i_RSAPrivateKey, the intermediate(s) decoded once per distinct chain and shared by every
# context (SSL_CTX_add1_chain_cert). SSL_CTX_check_private_key proves the key matches, as load_cert_chain does.
# Measured: ~0.68 ms instead of ~1.47 ms CPU per context. It needs the SSL_CTX pointer of a Python SSLContext, read
# at the documented-stable offset right after the object header; a self-test at first use (layout, then a real
# in-memory handshake with a context built this way) turns it off if anything differs, and any failure for one entry
# falls back to load_cert_chain. ``FAST_BUILD = False`` turns it off.

FAST_BUILD = True


class _FastUnsupported(Exception):
    pass


class _FastBuilder:
    EVP_PKEY_RSA = 6
    EVP_PKEY_EC = 408
    SSL_CTRL_CHAIN_CERT = 89

    def __init__(self) -> None:
        self.enabled: bool | None = None  # None: not tested yet
        self._lock = threading.RLock()  # the self-test builds (and decodes a chain) under it
        self._chains: dict[bytes, list[int]] = {}

    def _setup(self) -> None:
        import ctypes
        import _ssl
        lib = ctypes.CDLL(_ssl.__file__)
        vp, cpp, lng = ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long
        for name, res, args in (("d2i_X509", vp, [vp, cpp, lng]), ("X509_free", None, [vp]),
                                ("d2i_ECPrivateKey", vp, [vp, cpp, lng]), ("EC_KEY_free", None, [vp]),
                                ("d2i_RSAPrivateKey", vp, [vp, cpp, lng]), ("RSA_free", None, [vp]),
                                ("EVP_PKEY_new", vp, []), ("EVP_PKEY_assign", ctypes.c_int, [vp, ctypes.c_int, vp]),
                                ("EVP_PKEY_free", None, [vp]), ("SSL_CTX_use_certificate", ctypes.c_int, [vp, vp]),
                                ("SSL_CTX_use_PrivateKey", ctypes.c_int, [vp, vp]),
                                ("SSL_CTX_ctrl", lng, [vp, ctypes.c_int, lng, vp]),
                                ("SSL_CTX_check_private_key", ctypes.c_int, [vp]),
                                ("SSL_CTX_get0_certificate", vp, [vp]), ("i2d_X509", ctypes.c_int, [vp, cpp]),
                                ("ERR_clear_error", None, [])):
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        self.ct = ctypes
        self.lib = lib
        self.offset = object.__basicsize__  # PySSLContext: PyObject_HEAD, then SSL_CTX *ctx

    def _ctx_ptr(self, ctx: ssl.SSLContext) -> int:
        return self.ct.c_void_p.from_address(id(ctx) + self.offset).value  # type: ignore[return-value]

    def _selftest(self) -> None:
        """Layout (the pointer read is the context's SSL_CTX) and a real handshake with a fast-built context."""
        pem, key = generate_default_certificate(common_name="edgecert fast-build self-test")
        std = make_server_context(pem, key)
        der = ssl.PEM_cert_to_DER_cert(pem.decode())
        x = self.lib.SSL_CTX_get0_certificate(self._ctx_ptr(std))
        if not x or self.lib.i2d_X509(x, None) != len(der):
            raise RuntimeError("SSLContext layout differs")
        ctx = self._build(der, b"", key)
        if memory_handshake(ctx, "edgecert.invalid") != der:
            raise RuntimeError("a fast-built context did not serve its certificate")

    def build(self, leaf_der: bytes, chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        if self.enabled is None:
            with self._lock:
                if self.enabled is None:
                    try:
                        self._setup()
                        self._selftest()
                        self.enabled = True
                    except Exception as e:  # noqa: BLE001 - any surprise: the standard path only
                        log.info("fast TLS context build unavailable (%s); using load_cert_chain", e)
                        self.enabled = False
        if not self.enabled:
            raise _FastUnsupported()
        return self._build(leaf_der, chain_pem, key_pem)

    def _key(self, key_pem: bytes) -> int:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import rsa
        k = ser.load_pem_private_key(key_pem, None)
        if isinstance(k, ec.EllipticCurvePrivateKey):
            d2i, free, kind = self.lib.d2i_ECPrivateKey, self.lib.EC_KEY_free, self.EVP_PKEY_EC
        elif isinstance(k, rsa.RSAPrivateKey):
            d2i, free, kind = self.lib.d2i_RSAPrivateKey, self.lib.RSA_free, self.EVP_PKEY_RSA
        else:
            raise _FastUnsupported()
        der = k.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
        p = self.ct.c_char_p(der)
        raw = d2i(None, self.ct.byref(p), len(der))
        if not raw:
            raise _FastUnsupported()
        pkey = self.lib.EVP_PKEY_new()
        if not pkey or self.lib.EVP_PKEY_assign(pkey, kind, raw) != 1:
            free(raw)
            if pkey:
                self.lib.EVP_PKEY_free(pkey)
            raise _FastUnsupported()
        return pkey

    def _x509(self, der: bytes) -> int:
        p = self.ct.c_char_p(der)
        x = self.lib.d2i_X509(None, self.ct.byref(p), len(der))
        if not x:
            raise _FastUnsupported()
        return x

    def _chain(self, chain_pem: bytes) -> list[int]:
        xs = self._chains.get(chain_pem)
        if xs is None:
            with self._lock:
                xs = self._chains.get(chain_pem)
                if xs is None:
                    xs = [self._x509(der) for der in pem_chain_ders(chain_pem)]
                    self._chains[chain_pem] = xs  # kept for the process's life: one per intermediate
        return xs

    def _build(self, leaf_der: bytes, chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        lib = self.lib
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _configure(ctx)
        cp = self._ctx_ptr(ctx)
        x = self._x509(leaf_der)
        try:
            ok = lib.SSL_CTX_use_certificate(cp, x) == 1  # takes its own reference
        finally:
            lib.X509_free(x)
        if not ok:
            raise _FastUnsupported()
        pkey = self._key(key_pem)
        try:
            ok = lib.SSL_CTX_use_PrivateKey(cp, pkey) == 1
        finally:
            lib.EVP_PKEY_free(pkey)
        if not ok or lib.SSL_CTX_check_private_key(cp) != 1:
            lib.ERR_clear_error()
            raise ssl.SSLError("the private key does not match the certificate")
        for cx in self._chain(chain_pem):
            if lib.SSL_CTX_ctrl(cp, self.SSL_CTRL_CHAIN_CERT, 1, cx) != 1:  # SSL_CTX_add1_chain_cert
                raise _FastUnsupported()
        return ctx


_FAST = _FastBuilder()


def build_entry_context(entry: "CertEntry") -> ssl.SSLContext:
    """The SSLContext of ``entry``: the fast build when available, else ``load_cert_chain`` from memory."""
    key = entry.key_pem
    if FAST_BUILD and _FAST.enabled is not False:
        try:
            return _FAST.build(entry.leaf_der, entry._chain, key)
        except _FastUnsupported:
            pass
        except ssl.SSLError:
            raise
        except Exception:  # noqa: BLE001 - an odd key or certificate: the standard path decides
            log.debug("fast context build failed for %s; using load_cert_chain", entry.hostname, exc_info=True)
    return make_server_context(entry.fullchain_pem, key)


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
    handshake sees either the old or the new entry, never a mix. Writers (and the prewarm thread's LRU inserts)
    serialise on a lock.

    The LRU holds at most ``min(max_contexts, memory_budget // CONTEXT_BYTES)`` contexts.
    """

    def __init__(self, *, default_fullchain: bytes, default_key: bytes, max_contexts: int = 20000,
                 memory_budget: int | None = None, on_outcome: Callable[[str], None] | None = None,
                 engine: bool = False) -> None:
        self._exact: dict[str, CertEntry] = {}
        self._lru: OrderedDict[int, CertEntry] = OrderedDict()
        # With ``engine`` (edge/tlsengine.py: one SSL_CTX, certificates handed over per handshake), what the LRU
        # holds per entry is a CertKey (~9 KiB, ~0.2 ms to build) instead of an SSLContext (~25 KiB, ~0.7-1.2 ms).
        self.engine = None
        self._builder: Callable[[CertEntry], object] = build_entry_context
        self.unit_bytes = CONTEXT_BYTES
        if engine:
            from edge.tls_edge import engine as tlsengine
            if tlsengine.available():
                self.engine = tlsengine.make_engine(self.select, default_fullchain, default_key, tickets=TICKETS)
                self._builder = tlsengine.build_entry_certkey
                self.unit_bytes = tlsengine.CERTKEY_BYTES
                log.info("TLS edge: C engine (edge._edgetls, %s); one SSL_CTX, certificates by SNI",
                         tlsengine.OPENSSL_VERSION)
        cap = max_contexts
        if memory_budget is not None and memory_budget > 0:
            cap = min(cap, memory_budget // self.unit_bytes)
        self._max = max(1, cap)
        self._wlock = threading.Lock()
        self._on_outcome = on_outcome
        self.default_pem = default_fullchain
        self.default_context = make_server_context(default_fullchain, default_key)
        self.default_context.sni_callback = self._sni_callback
        self.builds = 0            # contexts built, all paths
        self.builds_on_handshake = 0  # ... of which on the handshake path (a miss)
        self.prewarmed = 0         # ... of which by the prewarm thread
        self.build_seconds = 0.0
        self._warm_q: deque[str] | None = None
        self._warm_ev: threading.Event | None = None
        self._warm_thread: threading.Thread | None = None
        self._warm_stop = False
        self.warm_done = threading.Event()  # set when the prewarm thread first runs out of work (or of room)
        self.handshakes = 0  # every SNI callback; the prewarm thread backs off while it moves

    @property
    def max_contexts(self) -> int:
        return self._max

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
        if self._warm_q is not None and entry._ctx is None:
            self._warm_q.append(entry.hostname)
            self._warm_ev.set()  # type: ignore[union-attr]

    def put_many(self, entries) -> int:
        """Bulk :meth:`put` (no prebuild): one lock for the lot. Returns how many were installed."""
        n = 0
        exact, lru = self._exact, self._lru
        with self._wlock:
            for entry in entries:
                old = exact.get(entry.hostname)
                exact[entry.hostname] = entry
                if old is not None and old is not entry:
                    lru.pop(id(old), None)
                    old._ctx = None
                n += 1
        if self._warm_q is not None and n:
            self._warm_q.extend(e.hostname for e in entries if e._ctx is None)
            self._warm_ev.set()  # type: ignore[union-attr]
        return n

    def set_memory_budget(self, budget: int, *, max_contexts: int | None = None) -> int:
        """Re-bound the LRU by ``budget`` bytes (and ``max_contexts``); evicts the coldest if over. Returns the bound."""
        cap = budget // self.unit_bytes
        if max_contexts is not None:
            cap = min(cap, max_contexts)
        with self._wlock:
            self._max = max(1, cap)
            while len(self._lru) > self._max:
                _, evicted = self._lru.popitem(last=False)
                evicted._ctx = None
        if self._warm_ev is not None:
            self._warm_ev.set()
        return self._max

    def remove(self, hostname: str) -> None:
        with self._wlock:
            old = self._exact.pop(hostname, None)
            if old is not None:
                self._lru.pop(id(old), None)
                old._ctx = None
        if self._warm_ev is not None:
            self._warm_ev.set()  # a free slot: the prewarm thread may go on

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

    def _context_for(self, entry: CertEntry, *, warm: bool = False):
        """The built TLS object of ``entry`` (an SSLContext, or a CertKey with the engine), from the LRU or built
        now (which also proves that the key matches the certificate)."""
        ctx = entry._ctx
        if ctx is not None:
            if not warm:
                try:
                    self._lru.move_to_end(id(entry))
                except KeyError:  # evicted meanwhile (another thread), or built by put(prebuild) not yet listed
                    pass
            return ctx
        t0 = time.perf_counter()
        ctx = self._builder(entry)
        dt_build = time.perf_counter() - t0
        with self._wlock:
            if entry._ctx is not None:  # built meanwhile by the other thread
                return entry._ctx
            lru = self._lru
            if warm and len(lru) >= self._max:
                return ctx  # the LRU filled up meanwhile: prewarming never evicts
            self.builds += 1
            self.build_seconds += dt_build
            entry._ctx = ctx
            lru[id(entry)] = entry
            if warm:
                self.prewarmed += 1
                lru.move_to_end(id(entry), last=False)  # cold end: used contexts are evicted last
            while len(lru) > self._max:
                _, evicted = lru.popitem(last=False)
                evicted._ctx = None
        return ctx

    def context_count(self) -> int:
        return len(self._lru)

    def stats(self) -> dict:
        return {"entries": len(self._exact), "contexts": len(self._lru), "max_contexts": self._max,
                "contexts_built": self.builds, "built_on_handshake": self.builds_on_handshake,
                "prewarmed": self.prewarmed, "build_ms_avg": round(1000 * self.build_seconds / self.builds, 3)
                if self.builds else None}

    # -- prewarm ---------------------------------------------------------------------------------------------
    def start_prewarm(self, *, nice: int = 0, quiet: float = 0.005, max_defer: float = 0.35) -> None:
        """Build contexts in a background thread until the LRU is full; entries put later are queued too. Never
        evicts: it only fills free slots. Idempotent.

        Handshakes come first: a build starts only after ``quiet`` seconds without any handshake, or after
        ``max_defer`` seconds of continuous load (so that warming still progresses, at ~0.7 ms per 350 ms, while
        the misses of a busy server build on the handshake path anyway); an idle server builds back to back. A
        build that overlaps a handshake slows it down (they share the core), which is what the cold-name p99 of
        an edge that warms while it serves shows. The thread runs at ``nice`` (per thread, Linux), 0 by default and
        deliberately not 19: a low-priority thread that holds the GIL and is starved by the scheduler (other
        processes on the core) stalls the event loop behind it -- priority inversion, measured here as 9-15 ms
        cold-handshake p99s with nice 10-19 on a shared core."""
        if self._warm_thread is not None:
            return
        self._warm_q = deque(h for h, e in list(self._exact.items()) if e._ctx is None)
        self._warm_ev = threading.Event()
        self._warm_ev.set()
        self._warm_stop = False
        self._warm_thread = threading.Thread(target=self._prewarm_loop, args=(nice, quiet, max_defer),
                                             name="edgecert-prewarm", daemon=True)
        self._warm_thread.start()

    def stop_prewarm(self) -> None:
        self._warm_stop = True
        if self._warm_ev is not None:
            self._warm_ev.set()
        t = self._warm_thread
        if t is not None:
            t.join(timeout=5)
        self._warm_thread = None
        self._warm_q = None

    def _prewarm_loop(self, nice: int, quiet: float, max_defer: float) -> None:
        try:  # per-thread on Linux: the handshakes (main thread) keep their priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (OSError, AttributeError):
            pass
        q, ev = self._warm_q, self._warm_ev
        assert q is not None and ev is not None
        seen = self.handshakes
        while not self._warm_stop:
            if not q or len(self._lru) >= self._max:
                self.warm_done.set()
                ev.wait()
                ev.clear()
                continue
            try:
                h = q.popleft()
            except IndexError:
                continue
            e = self._exact.get(h)
            if e is None or e._ctx is not None:
                continue
            if self.handshakes != seen:  # busy: wait for a quiet moment (at most max_defer)
                deadline = time.monotonic() + max_defer
                while self.handshakes != seen and not self._warm_stop and time.monotonic() < deadline:
                    seen = self.handshakes
                    time.sleep(quiet)
                seen = self.handshakes
                if e._ctx is not None or self._exact.get(h) is not e:
                    continue
            try:
                self._context_for(e, warm=True)
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.warning("cannot build the TLS context of %s: %s", h, exc)
            except Exception:  # noqa: BLE001 - never let the thread die (e.g. a key that does not decrypt)
                log.exception("cannot build the TLS context of %s", h)

    def select(self, server_name: str | None):
        """The engine's certificate callback (edge/_edgetls.c, in the handshake, GIL held): the CertKey for
        ``server_name`` or None for the default certificate. Memory only, like :meth:`_sni_callback`."""
        self.handshakes += 1
        if server_name is None:
            self._outcome(SniOutcome.DEFAULT)
            return None
        return self._built_for(server_name.lower().rstrip("."))

    def _sni_callback(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext):
        """Python's ssl sni_callback (no engine): switch the connection to the name's SSLContext."""
        self.handshakes += 1
        if server_name is None:
            self._outcome(SniOutcome.DEFAULT)
            return None
        name = server_name.lower().rstrip(".")
        sslobj.edgecert_sni = name  # read by the HTTP layer for the Host == SNI check
        ctx = self._built_for(name)
        if ctx is not None:
            sslobj.context = ctx
        return None

    def _built_for(self, name: str):
        """The built TLS object (SSLContext or CertKey) for a normalised SNI name, or None (default certificate);
        counts the outcome. A miss builds in memory; a failure serves the default certificate."""
        entry = self.lookup(name)
        if entry is None:
            self._outcome(SniOutcome.UNKNOWN)
            return None
        built = entry._ctx
        if built is None:
            try:
                built = self._context_for(entry)
                self.builds_on_handshake += 1
            except Exception:  # noqa: BLE001 - ssl.SSLError, a key that does not decrypt or match...
                log.exception("cannot load the certificate of %s; serving the default certificate", name)
                self._outcome(SniOutcome.UNKNOWN)
                return None
        else:
            try:
                self._lru.move_to_end(id(entry))
            except KeyError:
                pass
        self._outcome(SniOutcome.KNOWN)
        return built

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
