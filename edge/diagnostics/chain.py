"""Certificates: the trust store, chain building like OpenSSL, what a certificate says (names, key, signature,
validity, AIA/CRL URLs) and whether it covers a name."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import ssl
import warnings
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from acme_client.identifiers import name_matches


__all__ = ["load_store", "validate_cafile", "to_der", "name_text", "self_signed", "key_desc", "signature_desc",
           "san_names", "common_name", "display_name", "name_coverage", "cert_info", "ext_urls",
           "fetchable_url", "load_any_certs",
           "ChainReport", "build_chain", "sha256_hex", "normalize_fingerprint", "utc_now", "iso_utc"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_utc(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(value: str) -> str:
    v = value.strip().lower().replace(":", "")
    if v.startswith("sha256/") or v.startswith("sha256:"):
        v = v[7:]
    if not re.fullmatch(r"[0-9a-f]{64}", v):
        raise ValueError("expected_sha256 must be 64 hex digits (colons allowed)")
    return v


@lru_cache(maxsize=8)
def load_store(cafile: str | None) -> tuple[x509.Certificate, ...]:
    """Trust anchors: ``cafile`` or the system bundle."""
    paths: list[str] = []
    if cafile:
        paths = [cafile]
    else:
        vp = ssl.get_default_verify_paths()
        for p in (vp.cafile, vp.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
            if p and os.path.isfile(p):
                paths = [p]
                break
        if not paths and vp.capath and os.path.isdir(vp.capath):
            paths = [os.path.join(vp.capath, f) for f in os.listdir(vp.capath)
                     if f.endswith((".pem", ".crt")) or re.fullmatch(r"[0-9a-f]{8}\.\d+", f)]
    out: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for p in paths:
        try:
            data = open(p, "rb").read()
        except OSError:
            continue
        for block in re.findall(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----.+?-----END (?:TRUSTED )?CERTIFICATE-----",
                                data, re.S):
            block = block.replace(b"TRUSTED CERTIFICATE", b"CERTIFICATE")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # old roots with negative serials
                    c = x509.load_pem_x509_certificate(block)
            except Exception:
                continue
            der = c.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(c)
    return tuple(out)


def validate_cafile(cafile: str) -> None:
    if not os.path.isfile(cafile):
        raise ValueError(f"cafile {cafile!r} does not exist")
    load_store.cache_clear()
    if not load_store(cafile):
        raise ValueError(f"cafile {cafile!r} holds no PEM certificate")


def to_der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


def name_text(n: x509.Name) -> str:
    try:
        return n.rfc4514_string()
    except Exception:
        return str(n)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (ValueError, TypeError, NotImplementedError):  # names match; an algorithm cryptography will not check
        return True
    except Exception:  # InvalidSignature
        return False


def self_signed(c: x509.Certificate) -> bool:
    return c.subject == c.issuer and _issued_by(c, c)


def key_desc(c: x509.Certificate) -> tuple[str, int, bool]:
    """(description, bits, weak)."""
    try:
        k = c.public_key()
    except Exception:
        return "unknown key", 0, False
    if isinstance(k, rsa.RSAPublicKey):
        return f"RSA {k.key_size}", k.key_size, k.key_size < 2048
    if isinstance(k, dsa.DSAPublicKey):
        return f"DSA {k.key_size}", k.key_size, k.key_size < 2048
    if isinstance(k, ec.EllipticCurvePublicKey):
        return f"EC {k.curve.name}", k.curve.key_size, k.curve.key_size < 224
    if isinstance(k, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, False
    if isinstance(k, ed448.Ed448PublicKey):
        return "Ed448", 456, False
    return type(k).__name__, 0, False


def signature_desc(c: x509.Certificate) -> tuple[str, bool]:
    try:
        h = c.signature_hash_algorithm
        hname = h.name if h else None
    except Exception:
        hname = None
    try:
        oid_name = c.signature_algorithm_oid._name  # type: ignore[attr-defined]
    except Exception:
        oid_name = c.signature_algorithm_oid.dotted_string
    weak = (hname or "").lower() in ("md5", "sha1", "md2", "md4") or any(
        w in oid_name.lower() for w in ("md5", "md2", "sha1"))
    return oid_name, weak


def san_names(c: x509.Certificate) -> tuple[list[str], list[str], bool]:
    """(DNS names, IP addresses, has SAN extension)."""
    try:
        ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], False
    except Exception:
        return [], [], False
    names = [n.lower() for n in ext.get_values_for_type(x509.DNSName)]
    ips = [str(i) for i in ext.get_values_for_type(x509.IPAddress)]
    return names, ips, True


def common_name(c: x509.Certificate) -> str | None:
    try:
        attrs = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else None
    except Exception:
        return None


def display_name(c: x509.Certificate) -> str:
    """The certificate's CN, else its subject DN."""
    return common_name(c) or name_text(c.subject)


def name_coverage(c: x509.Certificate, host: str) -> str:
    """``san`` (a SAN covers the name), ``cn_only`` (no SAN; only the legacy CN matches: OpenSSL accepts,
    browsers refuse) or ``none``."""
    names, ips, _has_san = san_names(c)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if any(ipaddress.ip_address(i) == ip for i in ips):
            return "san"
    elif any(name_matches(n, host) for n in names):
        return "san"
    if not names and not ips:
        cn = common_name(c)
        if cn and (name_matches(cn, host) if ip is None else cn == str(ip)):
            return "cn_only"
    return "none"


def cert_info(c: x509.Certificate) -> dict:
    names, ips, _ = san_names(c)
    key, bits, _ = key_desc(c)
    sig, _ = signature_desc(c)
    return {
        "subject": name_text(c.subject),
        "issuer": name_text(c.issuer),
        "serial": format(c.serial_number, "x"),
        "not_before": iso_utc(c.not_valid_before_utc),
        "not_after": iso_utc(c.not_valid_after_utc),
        "sha256": sha256_hex(to_der(c)),
        "san": names + ips,
        "key": key,
        "signature_algorithm": sig,
        "self_signed": self_signed(c),
    }


def ext_urls(c: x509.Certificate, kind: str, *, any_port: bool = False) -> list[str]:
    """The certificate's AIA issuer (``kind="aia"``) or CRL (``"crl"``) URLs that diagnose may fetch
    (``fetchable_url``; ``any_port``: any port, for the operator's own runs that may probe private targets)."""
    urls: list[str] = []
    try:
        if kind == "crl":
            for dp in c.extensions.get_extension_for_class(x509.CRLDistributionPoints).value:
                for n in dp.full_name or []:
                    if isinstance(n, x509.UniformResourceIdentifier):
                        urls.append(n.value)
        else:
            for ad in c.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value:
                if ad.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS and isinstance(
                        ad.access_location, x509.UniformResourceIdentifier):
                    urls.append(ad.access_location.value)
    except x509.ExtensionNotFound:
        pass
    except Exception:
        pass
    return [u for u in urls if fetchable_url(u, any_port=any_port)]


def fetchable_url(url: str, *, any_port: bool = False) -> bool:
    """Whether diagnose may fetch ``url`` (an AIA issuer or a CRL named by a certificate, i.e. by whoever made it):
    only ``http://`` on port 80 and ``https://`` on port 443, with a host and no user name, so that a certificate
    cannot aim the service at another port of a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return bool(default and parts.hostname and parts.username is None and (any_port or port in (None, default)))


def load_any_certs(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in data:
        try:
            return list(x509.load_pem_x509_certificates(data))
        except Exception:
            return []
    try:
        return [x509.load_der_x509_certificate(data)]
    except Exception:
        pass
    try:  # PKCS#7 "certs-only" (.p7c)
        from cryptography.hazmat.primitives.serialization import pkcs7

        return list(pkcs7.load_der_pkcs7_certificates(data))
    except Exception:
        return []


@dataclass
class ChainReport:
    path: list[x509.Certificate]
    trusted: bool
    status: str  # trusted | self_signed | untrusted_root | incomplete_chain
    detail: str
    served_order_ok: bool
    unused: list[x509.Certificate]
    aia_detail: str = ""


def build_chain(served: list[x509.Certificate], store: tuple[x509.Certificate, ...],
                extra_issuers: list[x509.Certificate] = ()) -> ChainReport:  # type: ignore[assignment]
    """Build leaf -> ... -> anchor like OpenSSL (trusted store first, then the served certificates)."""
    leaf = served[0]
    store_ders = {to_der(c) for c in store}
    by_subject: dict[x509.Name, list[x509.Certificate]] = {}
    for c in store:
        by_subject.setdefault(c.subject, []).append(c)
    path = [leaf]
    cur = leaf
    trusted = False
    for _ in range(12):
        if self_signed(cur):
            trusted = to_der(cur) in store_ders
            break
        issuer = next((c for c in by_subject.get(cur.issuer, []) if _issued_by(cur, c)), None)
        if issuer is None:
            issuer = next((c for c in list(served[1:]) + list(extra_issuers)
                           if all(c is not p for p in path) and _issued_by(cur, c)), None)
        if issuer is None:
            break
        path.append(issuer)
        cur = issuer
    order_ok = all(served[i].issuer == served[i + 1].subject for i in range(len(served) - 1))
    used = {to_der(c) for c in path}
    unused = [c for c in served[1:] if to_der(c) not in used]
    if trusted:
        return ChainReport(path, True, "trusted", "chains to a trusted root: "
                           + " -> ".join(display_name(c) for c in path), order_ok, unused)
    top = path[-1]
    if len(path) == 1 and self_signed(leaf):
        return ChainReport(path, False, "self_signed", "the certificate is self-signed and not trusted", order_ok,
                           unused)
    if self_signed(top):
        return ChainReport(path, False, "untrusted_root",
                           f"the chain ends at the root {name_text(top.subject)!s}, which is not trusted", order_ok,
                           unused)
    if len(path) == 1:
        return ChainReport(path, False, "incomplete_chain",
                           f"the server sent no certificate for the issuer {name_text(leaf.issuer)} and it is not a "
                           "trusted root: the intermediate is missing", order_ok, unused)
    return ChainReport(path, False, "untrusted_root",
                       f"the chain stops at {name_text(top.subject)}, issued by {name_text(top.issuer)}, which is "
                       "neither sent nor trusted", order_ok, unused)
