"""The TLS edge's certificate material and TLS settings: PEM/DER helpers, the default certificate, the TLS-ALPN-01
challenge certificate (RFC 8737), the server ``SSLContext`` (Python's ``ssl``, the fallback driver), and the
process-wide TLS switches.

Imports run ``certificates`` <- ``engine`` <- ``index``: this module needs neither of the others.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from edge.lifecycle.files import atomic_write  # the one writer of the state dir (whole, fsynced, renamed)

__all__ = ["MOZILLA_INTERMEDIATE", "TICKETS", "apply_settings", "make_server_context", "memory_handshake",
           "pem_cert_to_der", "pem_chain_ders", "split_fullchain", "generate_default_certificate",
           "load_default_certificate", "ACME_TLS_ALPN", "ID_PE_ACME_IDENTIFIER", "TLS_VERSIONS",
           "make_challenge_certificate", "make_challenge_context"]

#: The ALPN protocol of TLS-ALPN-01 validations (RFC 8737 section 6.2).
ACME_TLS_ALPN = "acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 section 6.1): critical, an OCTET STRING holding SHA-256(key authorization).
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: ``domains.min_tls_version`` values -> the protocol version numbers of the wire and of OpenSSL (TLS1_x_VERSION).
TLS_VERSIONS = {"1.2": 0x0303, "1.3": 0x0304}

# Mozilla "intermediate" TLS 1.2 suites (TLS 1.3 suites are always on). DHE omitted: no DH params configured.
MOZILLA_INTERMEDIATE = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])

TICKETS = True  # set False (bench, tests of full handshakes) to turn TLS session tickets off
HTTP2 = False   # HTTP/2 (h2 helper): ALPN offers h2 too (setting edge_http2; see apply_settings)


def apply_settings(settings) -> None:
    """The process-wide TLS switch from the settings: ``tls_tickets = false`` (no session tickets: full
    handshakes only, for benchmarks). Call before the SNI index is built: its engine and contexts read it."""
    global TICKETS, HTTP2
    if not settings.tls_tickets:
        TICKETS = False
    from edge.tls_edge.h2 import AVAILABLE as h2_built  # HTTP/2 needs the nghttp2 extension (_edgeh2)
    HTTP2 = bool(getattr(settings, "edge_http2", False)) and h2_built  # the Python ssl fallback offers h2 too


_END_CERT = b"-----END CERTIFICATE-----"


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
            for part in chain_pem.split(_END_CERT)[:-1]]


def split_fullchain(fullchain_pem: bytes) -> tuple[bytes, bytes]:
    """(leaf as DER, the rest of the chain as PEM) of a PEM full chain.

    Raises:
        ValueError: the first certificate is not PEM.
    """
    leaf_pem, _, rest = fullchain_pem.partition(_END_CERT)
    return ssl.PEM_cert_to_DER_cert((leaf_pem + _END_CERT + b"\n").decode()), rest.lstrip(b"\r\n")


def _configure(ctx: ssl.SSLContext) -> None:
    if not TICKETS:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(MOZILLA_INTERMEDIATE)
    # Mozilla's "intermediate": all of them strong AEAD suites, so the client's order decides (AES where it has AES
    # instructions, ChaCha20 on phones without), no server preference; the same in the C engine (_edgetls.c).
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["h2", "http/1.1"] if HTTP2 else ["http/1.1"])  # h2: HTTP/2 (h2 helper)


def make_server_context(fullchain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server SSLContext with edgecert's TLS settings for one certificate; ``load_cert_chain`` from memory (an
    anonymous memfd: no file system, nothing left behind).

    Raises:
        ssl.SSLError: the PEM does not load or the key does not match the certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(ctx)
    fd = os.memfd_create("edgecert-cert", os.MFD_CLOEXEC)
    try:
        os.write(fd, fullchain_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
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


def make_challenge_certificate(hostname: str, key_authorization: str) -> tuple[bytes, bytes]:
    """The TLS-ALPN-01 challenge certificate of ``hostname`` (RFC 8737 section 3): self-signed, one SAN (the name),
    the critical acmeIdentifier extension holding SHA-256 of the key authorization. A fresh P-256 key each time (it
    is thrown away with the answer). CPU work (~1-2 ms): call it off the event loop. Returns (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgecert tls-alpn-01 challenge")])
    digest = hashlib.sha256(key_authorization.encode()).digest()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def make_challenge_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """The fallback's context for a TLS-ALPN-01 answer: the challenge certificate, ALPN ``acme-tls/1`` only, no
    session tickets (a validation never resumes)."""
    ctx = make_server_context(cert_pem, key_pem)
    ctx.set_alpn_protocols([ACME_TLS_ALPN])
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    return ctx


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
    atomic_write(key_f, key, mode=0o600)
    atomic_write(cert_f, cert, mode=0o644)
    return cert, key
