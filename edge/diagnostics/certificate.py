"""The certificate phase of a diagnosis: the served chain checked for what browsers refuse (default
certificate, validity, trust with the AIA issuer fetched, weak keys and signatures, revocation by stapled OCSP
or CRL, the name), each recorded as a check and a failure mode.

Decoding what a remote server hands over (an AIA issuer, a CRL of up to 8 MiB) is CPU work on input chosen by whoever
runs that server: ``parse_issuers`` and ``crl_lookup`` go through ``offload`` (the API passes its analysis workers;
the command line runs them in place)."""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

from cryptography import x509

from .chain import (build_chain, cert_info, common_name, display_name, ext_urls, iso_utc, key_desc, load_any_certs,
                    load_store, name_coverage, name_text, san_names, self_signed, sha256_hex, signature_desc, to_der,
                    utc_now)
from .handshake import Handshake
from .page import http_get
from .population import CertIssue
from .state import State
from .target import TargetNotAllowed
from .validity import chain_rule_issues, chain_warnings, webpki_verdict

__all__ = ["certificate_checks", "parse_issuers", "crl_lookup", "Offload", "run_in_place"]

MAX_FETCH = 1 << 20  # CRLs, AIA issuers

#: ``await offload(fn, *args)`` runs the pure function ``fn`` (e.g. in worker processes) and returns its result.
Offload = Callable[..., Awaitable[Any]]


async def run_in_place(fn: Callable[..., Any], *args: Any) -> Any:
    """The default ``Offload``: call ``fn`` here (the command line has no loop to protect)."""
    return fn(*args)


def parse_issuers(body: bytes) -> list[bytes]:
    """The certificates (DER, at most 10) of an AIA ``caIssuers`` answer (PEM, DER or PKCS#7)."""
    return [to_der(c) for c in load_any_certs(body)[:10]]


def crl_lookup(body: bytes, issuer_der: bytes | None, serial: int) -> tuple[str, str]:
    """Look ``serial`` up in the CRL ``body`` (PEM or DER) signed by ``issuer_der``: ``("bad_signature", "")``,
    ``("revoked", reason)`` or ``("absent", "")``. Raises ``ValueError`` when the CRL does not parse."""
    crl = (x509.load_pem_x509_crl(body) if body.lstrip().startswith(b"-----") else x509.load_der_x509_crl(body))
    if issuer_der is not None and not crl.is_signature_valid(x509.load_der_x509_certificate(issuer_der).public_key()):
        return "bad_signature", ""
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return "absent", ""
    try:
        return "revoked", entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except Exception:
        return "revoked", ""


async def certificate_checks(st: State, main: Handshake, hs: dict[str, Handshake], results: dict, *,
                             cafile: str | None, expected: str | None, allow_private: bool, resolver: str | None,
                             timeout: float, cmd_hint: dict, offload: Offload = run_in_place) -> dict:
    host = st.hostname
    served: list[x509.Certificate] = []
    for der in main.chain:
        try:
            served.append(x509.load_der_x509_certificate(der))
        except Exception:
            pass
    if not served:
        st.check("certificate", False, "the certificate sent by the server cannot be parsed")
        st.fail("handshake_failure")
        return {}
    leaf = served[0]
    now = utc_now()
    store = load_store(cafile)
    trust_label = f"CA file {cafile}" if cafile else "the system trust store"
    report = build_chain(served, store)
    issues: list[CertIssue] = []
    aia_rescued = False

    # The missing issuer may be fetchable (AIA caIssuers): tells a missing intermediate from an unknown root.
    if not report.trusted and report.status in ("incomplete_chain", "untrusted_root") and \
            not self_signed(report.path[-1]):
        fetched: list[x509.Certificate] = []
        for url in ext_urls(report.path[-1], "aia", any_port=allow_private)[:2]:
            try:
                status, _h, body = await http_get(url, timeout=timeout, limit=MAX_FETCH,
                                                  allow_private=allow_private, resolver=resolver)
                if status == 200:
                    fetched += [x509.load_der_x509_certificate(d) for d in await offload(parse_issuers, body)]
            except Exception as e:
                report.aia_detail = f"AIA fetch of {url} failed: {type(e).__name__}: {e}"
        if fetched:
            again = build_chain(served, store, fetched)
            if again.trusted:
                aia_rescued = True
                report.status = "incomplete_chain"
                report.detail = ("the server does not send the intermediate "
                                 f"({name_text(again.path[len(report.path)].subject)}); it is downloadable from the "
                                 "AIA URL and chains to a trusted root")
                report.path = again.path
            elif self_signed(again.path[-1]):
                report.status = "untrusted_root"
                report.detail = f"the chain ends at the root {name_text(again.path[-1].subject)}, which is not trusted"

    path = report.path
    served_ders = [to_der(c) for c in served]
    chain_desc = "; ".join(
        f"{i}: {display_name(c)} (issuer {_cn_of_name(c.issuer)})" for i, c in enumerate(served))
    st.check("chain_sent", report.served_order_ok and not report.unused,
             f"{len(served)} certificate(s) sent: {chain_desc}"
             + ("" if report.served_order_ok else "; not in issuing order")
             + (f"; {len(report.unused)} unrelated certificate(s)" if report.unused else ""),
             **({} if report.served_order_ok and not report.unused else {"fatal": False}))

    cov = name_coverage(leaf, host)
    leaf_sha = sha256_hex(served_ders[0])
    is_expected = expected is not None and leaf_sha == expected
    bogus = hs.get("bogus_sni")
    nosni = hs.get("no_sni")
    same_for_unknown = bool(bogus and bogus.ok and bogus.chain and bogus.chain[0] == served_ders[0])
    nosni_same = bool(nosni and nosni.ok and nosni.chain and nosni.chain[0] == served_ders[0])
    if nosni is not None and nosni.ok and nosni.chain:
        st.check("no_sni", True, "clients without SNI get " + (
            "the same certificate" if nosni_same else
            f"a different certificate ({common_name(x509.load_der_x509_certificate(nosni.chain[0])) or 'no CN'})"))
    elif nosni is not None:
        st.check("no_sni", True, f"a handshake without SNI fails ({nosni.text or nosni.kind})")

    problems: list[str] = []

    # default certificate
    default_cert = False
    if cov == "none":
        if expected is not None and not is_expected:
            default_cert = True
        elif not report.trusted and same_for_unknown:
            default_cert = True
    if expected is not None:
        if is_expected:
            st.check("expected_certificate", True, f"the served leaf is the expected one (sha256 {leaf_sha[:16]}...)")
        elif default_cert:
            st.check("expected_certificate", False,
                     f"the edge served its default/fallback certificate ({display_name(leaf)}, "
                     f"sha256 {leaf_sha[:16]}...) instead of the one for {host} (sha256 {expected[:16]}...)")
        else:
            st.check("expected_certificate", False,
                     f"the served leaf (sha256 {leaf_sha[:16]}...) is not the expected one ({expected[:16]}...)",
                     fatal=False)
    elif default_cert:
        st.check("default_certificate", False,
                 f"the server sends the same certificate ({display_name(leaf)}) for unknown names: "
                 "its fallback, not one for this name")
    if default_cert:
        st.fail("default_certificate")
        problems.append("default")
        issues.append(CertIssue("default_certificate", f"the fallback certificate ({display_name(leaf)})"))

    # validity window of every certificate on the path
    expired_c, future_c = [], []
    for i, c in enumerate(path):
        label = "leaf" if i == 0 else ("root" if self_signed(c) else "intermediate")
        if c.not_valid_after_utc < now:
            expired_c.append(f"{label} {display_name(c)} expired {iso_utc(c.not_valid_after_utc)}")
        if c.not_valid_before_utc > now:
            future_c.append(f"{label} {display_name(c)} valid only from {iso_utc(c.not_valid_before_utc)}")
    if expired_c or future_c:
        st.check("validity", False, "; ".join(expired_c + future_c))
        if expired_c:
            st.fail("expired")
            problems.append("expired")
            issues.append(CertIssue("expired", "; ".join(expired_c)))
        if future_c:
            st.fail("not_yet_valid")
            problems.append("not_yet_valid")
            issues.append(CertIssue("not_yet_valid", "; ".join(future_c)))
    else:
        days = (leaf.not_valid_after_utc - now).days
        st.check("validity", True, f"valid {iso_utc(leaf.not_valid_before_utc)} to {iso_utc(leaf.not_valid_after_utc)} "
                                   f"({days} days left)" + ("" if len(path) == 1 else "; issuers valid"))

    # trust
    if report.trusted:
        st.check("trust", True, f"{report.detail} ({trust_label})")
    else:
        st.check("trust", False, f"{report.detail} ({trust_label})" + (
            f"; {report.aia_detail}" if report.aia_detail else ""))
        if not default_cert:
            st.fail(report.status)
        problems.append(report.status)
        issues.append(CertIssue(report.status, report.detail,
                                kind="incomplete_fetchable" if aia_rescued and report.status == "incomplete_chain"
                                else ""))

    # signatures and keys
    weak_sigs, weak_keys = [], []
    sha1_only, min_bits = True, 1 << 16
    for i, c in enumerate(path):
        sig, weak = signature_desc(c)
        if weak and not (self_signed(c) and i == len(path) - 1 and i > 0):
            weak_sigs.append(f"{display_name(c)}: {sig}")
            sha1_only = sha1_only and "sha1" in sig.lower().replace("-", "")
        kd, bits, kweak = key_desc(c)
        if kweak:
            weak_keys.append(f"{display_name(c)}: {kd}")
            min_bits = min(min_bits, bits) if kd.startswith(("RSA", "DSA")) else 0
    st.check("signature", not weak_sigs, "; ".join(weak_sigs) + " (SHA-1/MD5 rejected by clients)" if weak_sigs
             else "signature algorithms: " + ", ".join(sorted({signature_desc(c)[0] for c in path})))
    st.check("key", not weak_keys, "; ".join(weak_keys) + " (under 2048 bits)" if weak_keys
             else "keys: " + ", ".join(key_desc(c)[0] for c in path))
    if weak_sigs:
        st.fail("weak_signature")
        problems.append("weak_signature")
        issues.append(CertIssue("weak_signature", "; ".join(weak_sigs), kind="sha1" if sha1_only else ""))
    if weak_keys:
        st.fail("weak_key")
        problems.append("weak_key")
        issues.append(CertIssue("weak_key", "; ".join(weak_keys), kind=f"rsa:{min_bits}" if min_bits else ""))

    # revocation: stapled OCSP, then CRLs
    revoked_how = None
    ossl = results.get("openssl")
    staple_detail = "no OCSP response stapled"
    if isinstance(ossl, str):
        m = re.search(r"Cert Status: (\w+)", ossl)
        if m:
            staple_detail = f"stapled OCSP response: {m.group(1)}"
            if m.group(1).lower() == "revoked":
                revoked_how = "ocsp"
                rr = re.search(r"Revocation Reason: ([^\n]+)", ossl)
                staple_detail += f" ({rr.group(1).strip()})" if rr else ""
    elif ossl is None:
        staple_detail = "stapled OCSP not checked (openssl unavailable)"
    crl_notes = []
    for i, c in enumerate(path[:-1] if len(path) > 1 else path):
        issuer = path[i + 1] if i + 1 < len(path) else None
        for url in ext_urls(c, "crl", any_port=allow_private)[:2]:
            try:
                status, _h, body = await http_get(url, timeout=timeout, limit=MAX_FETCH * 8,
                                                  allow_private=allow_private, resolver=resolver)
                if status != 200:
                    crl_notes.append(f"CRL {url}: HTTP {status}")
                    continue
                found, reason = await offload(crl_lookup, body, to_der(issuer) if issuer is not None else None,
                                              c.serial_number)
                if found == "bad_signature":
                    crl_notes.append(f"CRL {url}: bad signature, ignored")
                    continue
                if found == "revoked":
                    crl_notes.append(f"{'leaf' if i == 0 else 'intermediate'} {common_name(c)} serial "
                                     f"{format(c.serial_number, 'x')} is REVOKED in {url}"
                                     f"{' (' + reason + ')' if reason else ''}")
                    revoked_how = revoked_how or ("crl" if i == 0 else "crl_all")
                else:
                    crl_notes.append(f"{common_name(c) or 'certificate'} not in CRL {url}")
                break
            except TargetNotAllowed as e:
                crl_notes.append(f"CRL {url} not fetched: {e}")
            except Exception as e:
                crl_notes.append(f"CRL {url} not fetched: {type(e).__name__}: {e}")
    st.check("revocation", revoked_how is None, "; ".join([staple_detail] + (crl_notes or ["no CRL distribution "
                                                                                             "point"])))
    if revoked_how:
        st.fail("revoked")
        problems.append("revoked")
        cmd_hint["revoked_via"] = revoked_how
        issues.append(CertIssue("revoked", "revoked", kind="revoked"))

    # the name
    names, ips, _ = san_names(leaf)
    if cov == "san":
        st.check("hostname", True, f"{host} is covered by the certificate ({', '.join((names + ips)[:6])})")
    elif cov == "cn_only":
        st.check("hostname", False, f"the certificate has no subjectAltName; only its CN {common_name(leaf)!r} matches "
                                    f"{host}: browsers ignore the CN (OpenSSL still accepts it)")
        if not default_cert:
            st.fail("hostname_mismatch")
        problems.append("hostname_cn_only")
        cmd_hint["cn_only"] = True
        issues.append(CertIssue("hostname_mismatch", "only the CN matches (no subjectAltName)", kind="cn_only"))
    else:
        st.check("hostname", False, f"{host} is not covered by the certificate "
                                    f"(SAN: {', '.join((names + ips)[:8]) or 'none'}; CN {common_name(leaf)!r})")
        if not default_cert:
            st.fail("hostname_mismatch")
            issues.append(CertIssue("hostname_mismatch", f"{host} is not covered"))
        problems.append("hostname")

    # chain validity: who may sign, how deep, for which names, for what purpose, with which demands
    staple = None
    if isinstance(ossl, str):
        staple = False if "OCSP response: no response sent" in ossl else (True if "OCSP Response Data" in ossl
                                                                          else None)
    rule_issues = chain_rule_issues(path, host, staple=staple)
    for issue in rule_issues:
        st.fail(issue.mode)
        problems.append(issue.mode)
        issues.append(issue)
    st.check("chain_rules", not rule_issues, "; ".join(i.detail for i in rule_issues) if rule_issues else
             "every issuer is a CA allowed to sign for this name at this depth; the leaf is for TLS servers"
             + ("; the OCSP response is stapled" if staple else ""))
    if report.trusted:
        verdict = await offload(webpki_verdict, [to_der(c) for c in served], [to_der(c) for c in store], host,
                                now.timestamp()) if len(store) <= 512 else None
        if verdict:
            st.check("webpki", True, f"cryptography's strict X.509 verifier also refuses the chain: {verdict} "
                                     "(reported for the record; its profile is stricter than some clients)")
    info_warnings = chain_warnings(served, path, store, order_ok=report.served_order_ok, now=now) \
        if report.trusted else []
    cmd_hint["cert_problems"] = problems
    info = cert_info(leaf)
    info.update({
        "chain": [cert_info(c) for c in path],
        "served_chain_length": len(served),
        "trusted": report.trusted,
        "trust_store": cafile or "system",
        "names_cover_hostname": cov == "san",
        "expected": is_expected if expected is not None else None,
        "same_without_sni": nosni_same if nosni is not None and nosni.ok else None,
        "ocsp_staple": staple_detail,
        "_certs": path,
        "_issues": issues,
        "_warnings": info_warnings,
    })
    return info


def _cn_of_name(n: x509.Name) -> str:
    try:
        attrs = n.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else name_text(n)
    except Exception:
        return name_text(n)
