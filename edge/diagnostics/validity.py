"""Chain validity, beyond completeness: the rules RFC 5280 and the TLS clients apply to a path that does reach a
trusted root.

- every issuer on the path is a CA (basicConstraints CA:TRUE) allowed to sign certificates (keyUsage keyCertSign);
- path length constraints (``pathLenConstraint``) and DNS name constraints (permitted / excluded subtrees);
- the leaf (and any intermediate that carries one) has an extended key usage that allows TLS server
  authentication;
- a must-staple leaf (TLS feature ``status_request``) comes with a stapled OCSP response;
- harmless but worth saying: extra or out-of-order certificates, a cross-signed copy of a trusted root, an
  OCSP URL still in the leaf.

Each finding is a :class:`population.CertIssue` (the failure mode, the text each client family shows); the
chain is also run through ``cryptography``'s own X.509 verifier (``cryptography.x509.verification``), whose verdict
is reported beside ours.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from .chain import display_name, name_text, san_names, self_signed, to_der
from .population import CertIssue

__all__ = ["chain_rule_issues", "chain_warnings", "webpki_verdict", "dns_in_subtree"]

#: Apple's TLS server certificate rules (serverAuth EKU required) apply to certificates issued from this date.
_APPLE_POLICY = dt.datetime(2019, 7, 1, tzinfo=dt.timezone.utc)


def _ext(c: x509.Certificate, cls):
    try:
        return c.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except Exception:
        return None


def dns_in_subtree(name: str, constraint: str) -> bool:
    """RFC 5280 4.2.1.10 for DNS names: ``constraint`` covers itself and every name below it (a leading dot: only
    the names below)."""
    name, c = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if not c:
        return True
    if c.startswith("."):
        return name.endswith(c)
    return name == c or name.endswith("." + c)


def chain_rule_issues(path: list[x509.Certificate], host: str, *, staple: bool | None) -> list[CertIssue]:
    """The rule violations of ``path`` (leaf first, as built to a trust anchor), for ``host``.

    Args:
        staple: whether the server stapled an OCSP response (None: not known).
    """
    issues: list[CertIssue] = []
    if not path:
        return issues
    leaf = path[0]
    names, _ips, _ = san_names(leaf)
    for i, ca in enumerate(path[1:], start=1):
        below = path[i - 1]
        label = f"{display_name(ca)} (issuer of {display_name(below)})"
        bc = _ext(ca, x509.BasicConstraints)
        if bc is None or not bc.ca:
            issues.append(CertIssue(
                "invalid_chain", f"{label} is not a CA certificate (basicConstraints "
                                 f"{'missing' if bc is None else 'CA:FALSE'}) but signs the certificate below it",
                verify_text="invalid CA certificate", node_code="INVALID_CA",
                texts={"firefox": "SEC_ERROR_CA_CERT_INVALID", "chrome": "NET::ERR_CERT_AUTHORITY_INVALID",
                       "edge": "NET::ERR_CERT_AUTHORITY_INVALID",
                       "java": "javax.net.ssl.SSLHandshakeException: PKIX path validation failed: java.security."
                               "cert.CertPathValidatorException: basic constraints check failed: this is not a CA "
                               "certificate",
                       "go": "tls: failed to verify certificate: x509: certificate signed by unknown authority "
                             "(possibly because of \"x509: invalid signature: parent certificate cannot sign this "
                             "kind of certificate\")"}))
            continue
        ku = _ext(ca, x509.KeyUsage)
        if ku is not None and not ku.key_cert_sign:
            issues.append(CertIssue(
                "invalid_chain", f"{label} may not sign certificates (keyUsage without keyCertSign)",
                verify_text="key usage does not include certificate signing", node_code="UNSPECIFIED",
                texts={"firefox": "SEC_ERROR_CA_CERT_INVALID",
                       "java": "javax.net.ssl.SSLHandshakeException: PKIX path validation failed: java.security."
                               "cert.CertPathValidatorException: CA key usage check failed: keyCertSign bit is not "
                               "set"}))
        below_cas = i - 1  # intermediate CAs between this one and the leaf
        if bc.path_length is not None and below_cas > bc.path_length:
            issues.append(CertIssue(
                "invalid_chain", f"{display_name(ca)} allows {bc.path_length} intermediate(s) below it "
                                 f"(pathLenConstraint) but the path has {below_cas}",
                verify_text="path length constraint exceeded", node_code="PATH_LENGTH_EXCEEDED",
                texts={"firefox": "SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID",
                       "java": "javax.net.ssl.SSLHandshakeException: PKIX path validation failed: java.security."
                               "cert.CertPathValidatorException: basic constraints check failed: "
                               "pathLenConstraint violated - this cert must be the last cert in the "
                               "certification path",
                       "go": "tls: failed to verify certificate: x509: too many intermediates for path length "
                             "constraint"}))
        nc = _ext(ca, x509.NameConstraints)
        if nc is not None:
            subjects = names or [n for n in [_cn(leaf)] if n]
            permitted = [g.value for g in (nc.permitted_subtrees or []) if isinstance(g, x509.DNSName)]
            excluded = [g.value for g in (nc.excluded_subtrees or []) if isinstance(g, x509.DNSName)]
            for n in subjects:
                if permitted and not any(dns_in_subtree(n, p) for p in permitted):
                    issues.append(_nc_issue(ca, n, f"is outside its permitted names ({', '.join(permitted)})",
                                            "permitted subtree violation"))
                    break
                if any(dns_in_subtree(n, e) for e in excluded):
                    issues.append(_nc_issue(ca, n, f"is in its excluded names ({', '.join(excluded)})",
                                            "excluded subtree violation"))
                    break
    for i, c in enumerate(path[:-1] if len(path) > 1 else path):
        eku = _ext(c, x509.ExtendedKeyUsage)
        if eku is None:
            continue
        usages = list(eku)
        if ExtendedKeyUsageOID.SERVER_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
            continue
        what = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages) or "none"
        who = "the certificate" if i == 0 else f"the intermediate {display_name(c)}"
        issues.append(CertIssue(
            "unsuitable_purpose", f"{who} allows only {what} (extended key usage without serverAuth): not valid "
                                  "for a TLS server",
            verify_text="unsuitable certificate purpose", node_code="INVALID_PURPOSE"))
        break
    ku = _ext(leaf, x509.KeyUsage)
    try:
        is_rsa = isinstance(leaf.public_key(), rsa.RSAPublicKey)
    except Exception:
        is_rsa = False
    if ku is not None and is_rsa and not ku.digital_signature:
        issues.append(CertIssue(
            "unsuitable_purpose", "the RSA certificate's key usage lacks digitalSignature (only "
                                  + ", ".join(n for n in ("key_encipherment", "key_agreement", "data_encipherment")
                                              if getattr(ku, n)) + "): TLS 1.3 and ECDHE sign with the key, and "
                                  "Chrome, Java and GnuTLS refuse it",
            kind="ku_signature", refused_by=frozenset({"chrome", "edge", "java8", "java11", "java17", "gnutls"}),
            texts={"chrome": "ERR_SSL_KEY_USAGE_INCOMPATIBLE", "edge": "ERR_SSL_KEY_USAGE_INCOMPATIBLE",
                   "java": "javax.net.ssl.SSLHandshakeException: KeyUsage does not allow digital signatures",
                   "gnutls": "*** Fatal error: Key usage violation in certificate has been detected."}))
    feature = _ext(leaf, x509.TLSFeature)
    if feature is not None and x509.TLSFeatureType.status_request in list(feature) and staple is False:
        issues.append(CertIssue(
            "must_staple_missing", "the certificate demands OCSP stapling (TLS feature status_request, "
                                   "\"must-staple\") but the server sent no OCSP response",
            kind="must_staple"))
    return issues


def _cn(c: x509.Certificate) -> str | None:
    try:
        a = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(a[0].value) if a else None
    except Exception:
        return None


def _nc_issue(ca: x509.Certificate, name: str, why: str, verify_text: str) -> CertIssue:
    return CertIssue(
        "invalid_chain", f"{display_name(ca)} carries name constraints: {name} {why}",
        verify_text=verify_text, node_code="UNSPECIFIED",
        texts={"firefox": "SEC_ERROR_CERT_NOT_IN_NAME_SPACE", "chrome": "NET::ERR_CERT_NAME_CONSTRAINT_VIOLATION",
               "edge": "NET::ERR_CERT_NAME_CONSTRAINT_VIOLATION",
               "java": "javax.net.ssl.SSLHandshakeException: PKIX path validation failed: java.security.cert."
                       "CertPathValidatorException: name constraints check failed",
               "go": "tls: failed to verify certificate: x509: a root or intermediate certificate is not authorized "
                     f"to sign for this name: DNS name \"{name}\" is not permitted by any constraint"})


def chain_warnings(served: list[x509.Certificate], path: list[x509.Certificate], store: tuple[x509.Certificate, ...],
                   *, order_ok: bool, now: dt.datetime) -> list[str]:
    """What is harmless about the served chain but worth fixing (a valid path exists)."""
    out: list[str] = []
    used = {to_der(c) for c in path}
    unused = [c for c in served[1:] if to_der(c) not in used]
    if unused:
        out.append(f"the server sends {len(unused)} certificate(s) that are not part of the path to the root "
                   f"({'; '.join(display_name(c) for c in unused[:4])}): harmless, but wasted bytes in every "
                   "handshake; serve only the leaf and its intermediates")
    if not order_ok:
        out.append("the certificates are not sent in issuing order (leaf, its issuer, that issuer's issuer): clients "
                   "reorder them today, but old ones fail; serve them in order")
    sent_roots = [c for c in served[1:] if self_signed(c) and to_der(c) in used]
    if sent_roots and not unused:
        out.append(f"the server sends the root certificate ({display_name(sent_roots[0])}): clients ignore it; "
                   "it only adds bytes")
    store_keys = {}
    for s in store:
        store_keys.setdefault(s.subject, []).append(s)
    for c in served[1:]:
        if self_signed(c):
            continue
        twins = [s for s in store_keys.get(c.subject, []) if _same_key(s, c)]
        if twins:
            state = "expired" if c.not_valid_after_utc < now else f"valid until {c.not_valid_after_utc:%Y-%m-%d}"
            out.append(f"{display_name(c)} is sent cross-signed by {name_text(c.issuer)} ({state}) although the same "
                       "root is trusted directly: current clients use the trusted root, old ones (OpenSSL 1.0.x, "
                       "Android < 7.1.1) follow the cross-sign" + (" and fail on its expiry" if state == "expired"
                                                                  else ""))
    leaf = served[0]
    if _ext(leaf, x509.ExtendedKeyUsage) is None and leaf.not_valid_before_utc >= _APPLE_POLICY and len(path) > 1:
        out.append("the certificate has no extended key usage: Apple's rules for TLS server certificates issued since "
                   "July 2019 ask for serverAuth (Safari / iOS / macOS may refuse it: \"not standards compliant\"); "
                   "reissue it with extendedKeyUsage = serverAuth")
    aia = _ext(leaf, x509.AuthorityInformationAccess)
    if aia is not None:
        ocsp = [d.access_location.value for d in aia
                if d.access_method == x509.AuthorityInformationAccessOID.OCSP
                and isinstance(d.access_location, x509.UniformResourceIdentifier)]
        if ocsp:
            out.append(f"the certificate still names an OCSP responder ({ocsp[0]}): public CAs are ending OCSP "
                       "(Let's Encrypt did in 2025); clients that query it leak visits and wait on it; renew to "
                       "get a certificate without it")
    return out


def _same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    try:
        from cryptography.hazmat.primitives import serialization

        f = serialization.PublicFormat.SubjectPublicKeyInfo
        e = serialization.Encoding.DER
        return a.public_key().public_bytes(e, f) == b.public_key().public_bytes(e, f)
    except Exception:
        return False


def webpki_verdict(served_der: list[bytes], store_der: list[bytes], host: str, now_ts: float) -> str | None:
    """``cryptography``'s X.509 verifier on the served chain (DER, leaf first; the trust anchors as DER; ``now`` as a
    POSIX time: plain data, so that it runs in the analysis workers): None when it builds a valid path for
    ``host``, else its reason (for the record: its profile is stricter than some clients, so it never decides the
    mode)."""
    try:
        from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError
    except ImportError:  # pragma: no cover - old cryptography
        return None
    import ipaddress

    try:
        served = [x509.load_der_x509_certificate(d) for d in served_der]
        store = [x509.load_der_x509_certificate(d) for d in store_der]
        now = dt.datetime.fromtimestamp(now_ts, dt.timezone.utc)
        try:
            subject = IPAddress(ipaddress.ip_address(host))
        except ValueError:
            subject = DNSName(host)
        verifier = PolicyBuilder().store(Store(list(store))).time(now).build_server_verifier(subject)
        verifier.verify(served[0], served[1:])
        return None
    except VerificationError as e:
        return str(e)
    except Exception as e:  # unsupported key types, malformed extensions
        return f"{type(e).__name__}: {e}"
