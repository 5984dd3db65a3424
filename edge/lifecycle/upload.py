"""Validation of certificates before they go live (uploaded by an operator, or obtained from a CA).

A certificate goes live only if: the PEM parses, the private key matches it, it covers the name, it is valid now,
and its chain is complete up to a trusted root (the system store plus any configured extra roots). Only the chain
that climbs from the leaf (each certificate issued by the next) is kept and served: unrelated certificates are
dropped, and an upload with more than ``max_certificates`` PEM blocks, a chain longer than ``max_chain`` or a served
chain over ``MAX_CHAIN_BYTES`` is refused (a 250 KB chain breaks OpenSSL clients).

Decoding is CPU work on hostile input: the API runs ``validate_upload`` in its analysis workers, not on the loop.
"""

from __future__ import annotations

import datetime as dt
import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from acme_client.identifiers import covers
from acme_client.keys import CertInfo, public_key_fingerprint, read_certificate, split_pem_chain

__all__ = ["UploadError", "ValidCertificate", "validate_certificate", "validate_upload", "load_trust_roots",
           "MAX_CHAIN_BYTES"]

#: The largest chain (intermediates, PEM) served after the leaf.
MAX_CHAIN_BYTES = 32 * 1024


class UploadError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def __reduce__(self) -> tuple:  # it crosses the analysis workers' pipe
        return (UploadError, (self.code, self.message))


@dataclass(frozen=True)
class ValidCertificate:
    cert_pem: str
    chain_pem: str
    key_pem: bytes
    info: CertInfo


def load_trust_roots(extra_files: list[str] | None = None) -> list[x509.Certificate]:
    roots: list[x509.Certificate] = []
    paths = []
    default = ssl.get_default_verify_paths()
    for p in (default.cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if p and Path(p).exists():
            paths.append(p)
            break
    paths += list(extra_files or [])
    for p in paths:
        try:
            roots += x509.load_pem_x509_certificates(Path(p).read_bytes())
        except (OSError, ValueError):
            continue
    return roots


@functools.lru_cache(maxsize=4)
def _cached_roots(extra_files: tuple[str, ...]) -> list[x509.Certificate]:
    return load_trust_roots(list(extra_files))


def validate_upload(hostname: str, cert_pem: object, key_pem: object, chain_pem: object,
                    extra_roots: tuple[str, ...] = (), *, max_certificates: int = 10,
                    max_chain: int = 5) -> ValidCertificate:
    """``validate_certificate`` with the trust roots loaded (and kept) here: what the analysis workers run."""
    return validate_certificate(hostname, cert_pem, key_pem, chain_pem=chain_pem,  # type: ignore[arg-type]
                                roots=_cached_roots(tuple(extra_roots)), max_certificates=max_certificates,
                                max_chain=max_chain)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _chain_from_leaf(leaf: x509.Certificate, others: list[x509.Certificate], max_chain: int
                     ) -> list[x509.Certificate]:
    """The certificates of ``others`` that climb from ``leaf``, in order (each issued by the next), self-signed
    roots left out; the rest is dropped. ``UploadError`` ``chain_too_long`` past ``max_chain``."""
    path: list[x509.Certificate] = []
    pool = [c for c in others if c.subject != c.issuer]
    cur = leaf
    while True:
        nxt = next((c for c in pool if _issued_by(cur, c)), None)
        if nxt is None:
            return path
        pool.remove(nxt)
        path.append(nxt)
        if len(path) > max_chain:
            raise UploadError("chain_too_long", f"the chain from the certificate climbs through more than "
                                                f"{max_chain} intermediates; send only the ones that lead to the "
                                                f"root")
        cur = nxt


def validate_certificate(hostname: str, cert_pem: str, key_pem: str | bytes, *, chain_pem: str = "",
                         roots: list[x509.Certificate], now: dt.datetime | None = None,
                         max_certificates: int = 10, max_chain: int = 5) -> ValidCertificate:
    """Raises :class:`UploadError` with a precise ``code`` when anything is wrong."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if not isinstance(cert_pem, str) or not isinstance(key_pem, (str, bytes)):
        raise UploadError("invalid_pem", "certificate and private_key must be PEM strings")
    if chain_pem is None:
        chain_pem = ""
    if not isinstance(chain_pem, str):
        raise UploadError("invalid_pem", "chain must be a PEM string (the intermediate certificates)")
    blocks = cert_pem.count("-----BEGIN CERTIFICATE-----") + chain_pem.count("-----BEGIN CERTIFICATE-----")
    if blocks > max_certificates:
        raise UploadError("too_many_certificates", f"the upload carries {blocks} certificates; at most "
                                                   f"{max_certificates} are accepted (the certificate and the "
                                                   f"intermediates that lead to the root)")
    pems = split_pem_chain(cert_pem) + split_pem_chain(chain_pem)
    if not pems:
        raise UploadError("invalid_pem", "no PEM certificate found ('-----BEGIN CERTIFICATE-----')")
    certs = []
    for i, p in enumerate(pems):
        try:
            certs.append(x509.load_pem_x509_certificate(p.encode()))
        except ValueError:  # the library's text (ASN.1 / base64 internals) is not for tenants: say which block
            raise UploadError("invalid_pem", f"certificate block {i + 1} of {len(pems)} does not parse: it is not "
                              f"a whole base64 X.509 certificate between -----BEGIN CERTIFICATE----- and -----END "
                              f"CERTIFICATE----- (copy the block again, unchanged)") from None
    kb = key_pem.encode() if isinstance(key_pem, str) else key_pem
    if b"PRIVATE KEY-----" not in kb:
        raise UploadError("invalid_key", "private_key is not a PEM private key")
    try:
        key = serialization.load_pem_private_key(kb, password=None)
    except (ValueError, TypeError):
        raise UploadError("invalid_key", "private_key does not parse: send the whole unencrypted PEM private key "
                          "(-----BEGIN PRIVATE KEY-----, or BEGIN RSA / EC PRIVATE KEY), unchanged; encrypted keys "
                          "are not accepted") from None
    leaf = certs[0]
    if public_key_fingerprint(key.public_key()) != public_key_fingerprint(leaf.public_key()):
        raise UploadError("key_mismatch", "the private key does not belong to the certificate")
    if leaf.not_valid_after_utc <= now:
        raise UploadError("expired", f"the certificate expired on {leaf.not_valid_after_utc.isoformat()}")
    if leaf.not_valid_before_utc > now:
        raise UploadError("not_yet_valid", f"the certificate is not valid before "
                                           f"{leaf.not_valid_before_utc.isoformat()}")
    info = read_certificate(pems[0])
    if not covers(hostname, info.names):
        raise UploadError("name_not_covered", f"the certificate covers {', '.join(info.names) or 'no DNS name'}, "
                                              f"not {hostname}")
    intermediates = _chain_from_leaf(leaf, certs[1:], max_chain)
    for c in intermediates:
        if c.not_valid_after_utc <= now:
            raise UploadError("expired", f"the intermediate {c.subject.rfc4514_string()} expired on "
                                         f"{c.not_valid_after_utc.isoformat()}")
    if not roots:
        raise UploadError("untrusted_chain", "no trust roots are available to check the chain")
    try:
        verifier = (PolicyBuilder().store(Store(roots)).time(now)
                    .build_server_verifier(x509.DNSName(hostname)))
        verifier.verify(leaf, intermediates)
    except VerificationError:
        issuer_known = any(c.subject == leaf.issuer for c in intermediates) or any(r.subject == leaf.issuer
                                                                                   for r in roots)
        if not issuer_known:
            raise UploadError("incomplete_chain", f"the chain is incomplete: the issuer of the certificate "
                                                  f"({leaf.issuer.rfc4514_string()}) is not in the chain and is not "
                                                  f"a trusted root; include the intermediate certificate(s)") from None
        top = intermediates[-1] if intermediates else leaf
        raise UploadError("untrusted_chain", f"the chain does not verify to a root this edge trusts (it ends at "
                          f"{top.issuer.rfc4514_string()}): send a server certificate of a publicly trusted CA "
                          f"with its intermediates, in order") from None
    chain_out = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in intermediates)
    if len(chain_out) > MAX_CHAIN_BYTES:
        raise UploadError("chain_too_large", f"the chain is {len(chain_out)} bytes of PEM; at most "
                                             f"{MAX_CHAIN_BYTES} bytes are served (large chains break clients)")
    return ValidCertificate(cert_pem=pems[0], chain_pem=chain_out, key_pem=kb, info=info)
