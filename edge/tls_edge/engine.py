"""The TLS edge's C engine (``edge.tls_edge._edgetls``), from Python: availability, self-test, and certificates as CertKeys.

With the engine the edge has ONE ``SSL_CTX``; each handshake gets its tenant's certificate and key from the SNI index
through the certificate callback (a reference-counted hand-over, no per-tenant context), and each connection's TLS is
driven by one C call per chunk read from the socket. A tenant costs a decoded certificate + key (~9 KiB, ~0.55 M
instructions to build: its public key decoded without OpenSSL 3.0's OSSL_DECODER, see ``_edgetls.c``) instead of an
``SSLContext`` (~25 KiB, ~1.2 ms). Without the extension (no compiler at install time), when it
fails its self-test, or with ``tls_engine = false``, the edge uses Python's ``ssl`` module (``load_cert_chain``): the
one fallback.

The extension is self-tested at first use: a real in-memory handshake between Python's ``ssl`` client and the engine,
with SNI, checking that the right certificate is served and ALPN agreed; any surprise turns it off for the process.
"""

from __future__ import annotations

import binascii
import logging
import ssl
import threading

from edge.tls_edge.certificates import (MOZILLA_INTERMEDIATE, generate_default_certificate, pem_chain_ders,
                                        split_fullchain)

try:
    from edge.tls_edge import _edgetls
except ImportError:  # built without a C compiler / OpenSSL headers
    _edgetls = None  # type: ignore[assignment]

__all__ = ["use_tls_engine", "available", "unavailable_reason", "key_der", "chain_for", "certkey", "make_engine",
           "build_entry_certkey", "handshake_with", "Error", "CERTKEY_BYTES", "OPENSSL_VERSION"]

log = logging.getLogger(__name__)

Error = _edgetls.Error if _edgetls is not None else ssl.SSLError
OPENSSL_VERSION = _edgetls.OPENSSL_VERSION if _edgetls is not None else None

# Memory of one CertKey (leaf + P-256 key decoded by OpenSSL 3.0, plus the Python wrapper), measured as the RSS
# growth over 20,000 of them (bench/README.md); the chain is shared.
CERTKEY_BYTES = 9 * 1024

_state: dict[str, object] = {}
_lock = threading.Lock()


def use_tls_engine(settings) -> bool:
    """True unless the ``tls_engine`` setting is false: the TLS edge then drives TLS with this engine.
    Whether the engine is built and passes its self-test is checked by the SNI index (:func:`available`)."""
    return settings.tls_engine


def available() -> bool:
    """The engine is built and passed its self-test (run once, on first call)."""
    ok = _state.get("ok")
    if ok is None:
        with _lock:
            ok = _state.get("ok")
            if ok is None:
                ok, why = _selftest()
                _state["ok"], _state["why"] = ok, why
                if not ok:
                    log.warning("TLS engine unavailable (%s); the edge uses Python's ssl module", why)
    return bool(ok)


def unavailable_reason() -> str | None:
    available()
    return _state.get("why")  # type: ignore[return-value]


def key_der(key_pem: bytes) -> bytes:
    """The DER body of one PEM private key (PKCS#8 ``PRIVATE KEY``, SEC1 ``EC PRIVATE KEY`` or PKCS#1)."""
    start = key_pem.find(b"-----BEGIN ")
    head_end = key_pem.find(b"-----", start + 11) if start >= 0 else -1
    end = key_pem.find(b"-----END ", head_end)
    if start < 0 or head_end < 0 or end < 0 or b"ENCRYPTED" in key_pem[start:head_end]:
        raise ValueError("not an unencrypted PEM private key")
    try:
        return binascii.a2b_base64(key_pem[head_end + 5:end])
    except binascii.Error as e:
        raise ValueError(f"bad PEM private key: {e}") from None


_CHAINS: dict[bytes, object] = {}


def chain_for(chain_pem: bytes):
    """The shared :class:`Chain` of a PEM chain (decoded once per distinct chain, kept for the process's life)."""
    c = _CHAINS.get(chain_pem)
    if c is None:
        with _lock:
            c = _CHAINS.setdefault(chain_pem, _edgetls.Chain(pem_chain_ders(chain_pem)))
    return c


def certkey(leaf_der: bytes, chain_pem: bytes, key_pem: bytes, *, legacy_spki: bool | None = None):
    """A CertKey; raises ValueError when the key does not match or does not decode.

    ``legacy_spki``: decode the leaf's public key without OpenSSL 3.0's OSSL_DECODER (~0.53 M instead of ~1.46 M
    instructions a CertKey; every later handshake of the process then costs ~7 k more: see ``_edgetls.c``,
    ``d2i_leaf``); None: the extension's default (off unless ``_edgetls.set_legacy_spki(True)``)."""
    return _edgetls.CertKey(leaf_der, key_der(key_pem), chain_for(chain_pem) if chain_pem.strip() else None,
                            legacy_spki=legacy_spki)


def build_entry_certkey(entry, *, legacy_spki: bool | None = None):
    """The CertKey of an index entry (:class:`edge.tls_edge.index.CertEntry`); its key is decrypted only for this."""
    return certkey(entry.leaf_der, entry.chain_pem, entry.key_pem, legacy_spki=legacy_spki)


def make_engine(select, default_fullchain: bytes, default_key: bytes, *, tickets: bool = True,
                challenges: dict | None = None, min_versions: dict | None = None):
    """An Engine with edgecert's TLS settings (TLS 1.2-1.3, Mozilla intermediate suites, ALPN http/1.1).

    ``challenges`` (name -> CertKey: TLS-ALPN-01 answers) and ``min_versions`` (name or ``*.parent`` -> 0x0303 /
    0x0304) are the dicts the engine reads in its ClientHello callback; the caller keeps changing them."""
    default = certkey(*split_fullchain(default_fullchain), default_key)
    return _edgetls.Engine(select, default, ciphers=MOZILLA_INTERMEDIATE, tickets=tickets,
                           challenges={} if challenges is None else challenges,
                           min_versions={} if min_versions is None else min_versions)


def handshake_with(engine, server_hostname: str | None, *, alpn: list[str] | None = None,
                   ctx: ssl.SSLContext | None = None, session: ssl.SSLSession | None = None):
    """A complete in-memory handshake against ``engine``, Python's ssl as the client (``ctx``, default: no
    verification, ``alpn`` offered; ``session`` offered for resumption).

    Returns (client SSLObject, Conn, client->server BIO, server->client BIO)."""
    c2s, s2c = ssl.MemoryBIO(), ssl.MemoryBIO()
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
    client = ctx.wrap_bio(s2c, c2s, server_hostname=server_hostname, session=session)
    conn = engine.conn()
    for _ in range(10):
        try:
            client.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        out, _plain = conn.feed(c2s.read())  # the last round carries the client's Finished
        if out:
            s2c.write(out)
        if done:
            break
    return client, conn, c2s, s2c


def _selftest() -> tuple[bool, str | None]:
    if _edgetls is None:
        return False, "edge.tls_edge._edgetls is not built (no C compiler or OpenSSL headers at install time)"
    if _edgetls.OPENSSL_VERSION != ssl.OPENSSL_VERSION:
        # Two OpenSSL builds in one process work, but the engine was built for the one Python's ssl uses.
        return False, f"built against {_edgetls.OPENSSL_VERSION}, Python's ssl uses {ssl.OPENSSL_VERSION}"
    try:
        dpem, dkey = generate_default_certificate(common_name="edgecert engine self-test default")
        tpem, tkey = generate_default_certificate(common_name="edgecert engine self-test tenant")
        tder = ssl.PEM_cert_to_DER_cert(tpem.decode())
        tenant = certkey(tder, b"", tkey)
        engine = make_engine(lambda name: tenant if name == "selftest.invalid" else None, dpem, dkey)
        client, conn, c2s, s2c = handshake_with(engine, "selftest.invalid", alpn=["h2", "http/1.1"])
        if client.getpeercert(binary_form=True) != tder:
            return False, "the engine did not serve the selected certificate"
        if client.selected_alpn_protocol() != "http/1.1" or conn.selected_alpn_protocol() != "http/1.1":
            return False, "ALPN was not agreed"
        client.write(b"ping")
        _out, plain = conn.feed(c2s.read())
        s2c.write(conn.write(b"pong"))
        if plain != b"ping" or client.read(4) != b"pong":
            return False, "application data did not flow both ways"
        return True, None
    except Exception as e:  # noqa: BLE001 - any surprise: fall back
        return False, f"self-test failed: {e!r}"
