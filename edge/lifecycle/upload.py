"""Validation of certificates before they go live (uploaded by an operator, or obtained from a CA).

A certificate goes live only if: the PEM parses, the private key matches it, it covers the name, it is valid now,
and its chain is complete up to a trusted root (the system store plus any configured extra roots).
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from acme_client.identifiers import covers
from acme_client.keys import CertInfo, public_key_fingerprint, read_certificate, split_pem_chain

__all__ = ["UploadError", "ValidCertificate", "validate_certificate", "load_trust_roots"]


class UploadError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


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


def validate_certificate(hostname: str, cert_pem: str, key_pem: str | bytes, *, chain_pem: str = "",
                         roots: list[x509.Certificate], now: dt.datetime | None = None) -> ValidCertificate:
    """Raises :class:`UploadError` with a precise ``code`` when anything is wrong."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if not isinstance(cert_pem, str) or not isinstance(key_pem, (str, bytes)):
        raise UploadError("invalid_pem", "certificate and private_key must be PEM strings")
    pems = split_pem_chain(cert_pem) + split_pem_chain(chain_pem or "")
    if not pems:
        raise UploadError("invalid_pem", "no PEM certificate found ('-----BEGIN CERTIFICATE-----')")
    try:
        certs = [x509.load_pem_x509_certificate(p.encode()) for p in pems]
    except ValueError as e:
        raise UploadError("invalid_pem", f"a certificate does not parse: {e}") from None
    kb = key_pem.encode() if isinstance(key_pem, str) else key_pem
    if b"PRIVATE KEY-----" not in kb:
        raise UploadError("invalid_key", "private_key is not a PEM private key")
    try:
        key = serialization.load_pem_private_key(kb, password=None)
    except (ValueError, TypeError) as e:
        raise UploadError("invalid_key", f"private_key does not parse (encrypted keys are not accepted): {e}") from None
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
    intermediates = [c for c in certs[1:] if c.subject != c.issuer]
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
    except VerificationError as e:
        text = str(e)
        issuer_known = any(c.subject == leaf.issuer for c in intermediates) or any(r.subject == leaf.issuer
                                                                                   for r in roots)
        if not issuer_known:
            raise UploadError("incomplete_chain", f"the chain is incomplete: the issuer of the certificate "
                                                  f"({leaf.issuer.rfc4514_string()}) is not in the chain and is not "
                                                  f"a trusted root; include the intermediate certificate(s)") from None
        raise UploadError("untrusted_chain", f"the chain does not verify to a trusted root: {text}") from None
    chain_out = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in intermediates)
    return ValidCertificate(cert_pem=pems[0], chain_pem=chain_out, key_pem=kb, info=info)
