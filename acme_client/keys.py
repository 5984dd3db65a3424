"""Key generation, CSRs and reading certificates (ECDSA P-256 by default, RSA selectable)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = ["generate_private_key", "private_key_pem", "make_csr", "CertInfo", "read_certificate",
           "split_pem_chain", "public_key_fingerprint", "KEY_TYPES", "ari_cert_id",
           "parse_ari_cert_id"]

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096")


def generate_private_key(key_type: str = "ecdsa-p256"):
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa"):
        bits = int(key_type[3:])
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise ValueError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def private_key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_csr(key, names: list[str]) -> bytes:
    """A CSR for ``names`` (SANs; no CN, as Let's Encrypt recommends for long names)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def split_pem_chain(pem: str | bytes) -> list[str]:
    """Split a PEM bundle into its certificates, in order."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    out, cur = [], []
    inside = False
    for line in text.splitlines():
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            inside, cur = True, [line]
        elif line.startswith("-----END CERTIFICATE-----") and inside:
            cur.append(line)
            out.append("\n".join(cur) + "\n")
            inside = False
        elif inside:
            cur.append(line)
    return out


def public_key_fingerprint(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """RFC 9773 certID: base64url(AKI keyIdentifier) "." base64url(serial DER INTEGER content octets); None when the
    certificate has no Authority Key Identifier."""
    try:
        aki = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    if aki is None:
        return None
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)  # sign bit safe
    return f"{_b64url(aki)}.{_b64url(serial_bytes)}"


def parse_ari_cert_id(text: str) -> tuple[bytes, int]:
    """Split an RFC 9773 certID into (AKI keyIdentifier bytes, serial number).

    Raises:
        ValueError: ``text`` is not ``<base64url AKI>.<base64url serial>``.
    """
    parts = text.split(".")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"certID {text!r} is not <base64url AKI>.<base64url serial>")
    try:
        aki, serial_bytes = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"certID {text!r} is not base64url: {exc}") from exc
    if not serial_bytes:
        raise ValueError(f"certID {text!r} has an empty serial")
    return aki, int.from_bytes(serial_bytes, "big", signed=True)


@dataclass(frozen=True)
class CertInfo:
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str
    subject: str
    sha256: str
    names: tuple[str, ...]
    key_type: str
    ari_cert_id: str | None

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before



def _key_type(pub) -> str:
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(pub.curve.name, "ecdsa-" + pub.curve.name)
    if isinstance(pub, rsa.RSAPublicKey):
        return f"rsa{pub.key_size}"
    return type(pub).__name__.lower()


def read_certificate(pem: str | bytes) -> CertInfo:
    """Read the first certificate of a PEM bundle.

    Raises:
        ValueError: the text holds no parseable certificate.
    """
    certs = split_pem_chain(pem)
    if not certs:
        raise ValueError("no PEM certificate found")
    cert = x509.load_pem_x509_certificate(certs[0].encode())
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    pub = cert.public_key()
    return CertInfo(
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(), subject=cert.subject.rfc4514_string(),
        sha256=cert.fingerprint(hashes.SHA256()).hex(), names=names, key_type=_key_type(pub),
        ari_cert_id=ari_cert_id(cert))
