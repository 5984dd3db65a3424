"""The triage classifier: name the failure mode behind a pasted error report.

Reports are whatever a visitor or a tenant pastes: a browser error code or page text (Chrome/Edge, Firefox,
Safari/NSURLError, legacy Edge/IE DLG_FLAGS), a curl/wget message, an ``openssl s_client`` transcript, a Python /
Go / Java / Node / .NET stack trace, or a server log line (nginx, Apache, HAProxy, Caddy, AWS ALB, Cloudflare).

Classification weighs a table of evidence rules (``rules``: regular expressions with a weight and the source they
identify), plus parsing of ``openssl s_client`` transcripts (``verify error:num=N``, alerts, issuer lines,
``notAfter=`` dates) and two context rules: an issuer that is not one of ``edge_issuers`` means
``tls_interception``; a date error while the served certificate is valid (``served_certificate_valid``), or a date
error whose dates show the certificate valid today, means ``client_clock_skew``.
"""

from __future__ import annotations

import datetime as dt
import re

from acme_client.identifiers import name_matches

from .command import report_command
from .modes import get_mode
from .rules import CURL_EXIT, INTERCEPTORS, RULES
from .target import normalize_hostname

__all__ = ["triage", "MAX_REPORT_BYTES"]

MAX_REPORT_BYTES = 64 * 1024


def _parse_openssl_date(text: str) -> dt.datetime | None:
    text = re.sub(r"\s+", " ", text.strip())
    for fmt in ("%b %d %H:%M:%S %Y GMT", "%b %d %H:%M:%S %Y %Z", "%a %b %d %H:%M:%S %Z %Y", "%Y-%m-%dT%H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S %Z"):
        try:
            d = dt.datetime.strptime(text, fmt)
            return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def _clock_evidence(text: str, now: dt.datetime) -> list[str]:
    """Date errors whose dates show the certificate is valid today: the client's clock is off."""
    found = []
    for m in re.finditer(r"verify error:num=10:[^\n]{0,300}\n(?:[^\n]{0,300}\n)?[ \t]{0,16}"
                         r"notAfter=([^\n]{1,100})", text):
        d = _parse_openssl_date(m.group(1))
        if d and d > now:
            found.append(f"openssl says expired, but notAfter {m.group(1).strip()} is still in the future")
    for m in re.finditer(r"verify error:num=9:[^\n]{0,300}\n(?:[^\n]{0,300}\n)?[ \t]{0,16}"
                         r"notBefore=([^\n]{1,100})", text):
        d = _parse_openssl_date(m.group(1))
        if d and d < now:
            found.append(f"openssl says not yet valid, but notBefore {m.group(1).strip()} has passed")
    m = re.search(r"current time (\S{1,64}) is (after|before) (\S{1,64})", text)
    if m:
        client, how, bound = (_parse_openssl_date(m.group(1).rstrip(":,")), m.group(2),
                              _parse_openssl_date(m.group(3).rstrip(":,")))
        if client and bound and abs((client - now).total_seconds()) > 86400 and (
                (how == "after" and bound > now) or (how == "before" and bound < now)):
            found.append(f"the client's clock said {m.group(1)}, the certificate is valid today")
    for m in re.finditer(r"(NotAfter|NotBefore): (\w{3} \w{3} \d{1,2} [\d:]{8} \w{1,8} \d{4})", text):
        d = _parse_openssl_date(m.group(2))
        if d and ((m.group(1) == "NotAfter" and d > now) or (m.group(1) == "NotBefore" and d < now)):
            found.append(f"the report's {m.group(1)} {m.group(2)} is fine today")
    return found


def _issuers(text: str) -> list[str]:
    out = []
    for m in re.finditer(r"^[ \t]{0,16}(?:issuer=|i:)[ \t]{0,16}([^\n]{1,300})", text, re.M):
        out.append(m.group(1).strip())
    for m in re.finditer(r"Issuer: ([^\n]{1,300})", text, re.M):
        out.append(m.group(1).strip())
    return out


def _issuer_matches(issuer: str, edge_issuers: list[str]) -> bool:
    norm = re.sub(r"\s+", " ", issuer.lower().replace(" = ", "=").replace(", ", ","))
    for e in edge_issuers:
        en = re.sub(r"\s+", " ", e.lower().replace(" = ", "=").replace(", ", ","))
        if en and (en in norm or norm in en):
            return True
        cn = re.search(r"cn=([^,/]{1,200})", en)
        o = re.search(r"\bo=([^,/]{1,200})", en)
        if (cn and cn.group(1).strip() in norm) or (o and o.group(1).strip() in norm):
            return True
    return False


def _leaf_subject_cn(text: str) -> str | None:
    m = (re.search(r"^[ \t]{0,16}0 s:[^\n]{0,300}?CN ?= ?([^,/\n]{1,200})", text, re.M)
         or re.search(r"^subject=[^\n]{0,300}?CN ?= ?([^,/\n]{1,200})", text, re.M))
    return m.group(1).strip() if m else None


def _extract_host(text: str) -> str | None:
    for pat in (r"https://([A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63})(?::\d{1,5})?",
                r"Could not resolve host: ([A-Za-z0-9.-]{1,253})",
                r"Failed to connect to ([A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}) port",
                r"-servername ([A-Za-z0-9.-]{1,253})",
                r"lookup ([A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63})(?: on |: )",
                r"getaddrinfo ENOTFOUND ([A-Za-z0-9.-]{1,253})"):
        m = re.search(pat, text)
        if m:
            try:
                return normalize_hostname(m.group(1))
            except ValueError:
                continue
    return None


_NEXT_STEPS = {
    "dns_not_configured": ["Check the record from outside: `dig +short {h} A` and `dig +short {h} CNAME`.",
                           "If the record was just created, wait for the negative-cache TTL (SOA minimum)."],
    "wrong_endpoint": ["Compare `dig +short {h}` with the edge target; remove stale A/AAAA records."],
    "connection_refused": ["Check that the server listens on 443 (`ss -ltnp 'sport = :443'`) and the load balancer "
                           "forwards it."],
    "connection_timeout": ["Check firewalls / security groups for port 443 from the visitor's network; "
                           "`curl -v --connect-timeout 10 https://{h}/`."],
    "plain_http_on_tls_port": ["`curl -v http://{h}:443/` answering HTTP confirms it; enable TLS on the listener."],
    "protocol_version_mismatch": ["List what the server accepts: `openssl s_client -connect {h}:443 -tls1_2` and "
                                  "`-tls1_3` (and `-tls1 -cipher DEFAULT:@SECLEVEL=0`)."],
    "cipher_mismatch": ["List the server's suites with `nmap --script ssl-enum-ciphers -p 443 {h}` or "
                        "`openssl s_client -cipher ALL:@SECLEVEL=0`."],
    "sni_unrecognized": ["Check the server has a site/certificate for {h}; compare with `-noservername`."],
    "handshake_failure": ["Run the command from inside and outside the network: a middlebox cuts the handshake if "
                          "only one side fails.", "Read the server's TLS error log at the time of the attempt."],
    "default_certificate": ["Compare the served certificate's subject with the name: "
                            "`... | openssl x509 -noout -subject -ext subjectAltName`.",
                            "Check the domain is registered on the edge and its certificate issued."],
    "hostname_mismatch": ["Read the SANs: `... | openssl x509 -noout -ext subjectAltName`."],
    "expired": ["Read the dates: `... | openssl x509 -noout -dates`; renew and reload."],
    "not_yet_valid": ["Read the dates: `... | openssl x509 -noout -dates`; check the issuing machine's clock."],
    "client_clock_skew": ["Compare the visitor's device date with the real date; enable automatic time."],
    "incomplete_chain": ["Count the certificates the server sends (`-showcerts`); serve fullchain.pem."],
    "self_signed": ["Replace the certificate with one from a public CA."],
    "untrusted_root": ["Read the chain's top issuer (`-showcerts`); check it is publicly trusted."],
    "tls_interception": ["Compare the issuer seen on the affected network with the one seen elsewhere; if it "
                         "differs, a proxy or antivirus re-signs the traffic."],
    "weak_signature": ["Read the signature algorithm: `... | openssl x509 -noout -text | grep 'Signature Alg'`."],
    "weak_key": ["Read the key size: `... | openssl x509 -noout -text | grep 'Public-Key'`."],
    "revoked": ["Check the CRL / OCSP status with the CA; issue a new certificate."],
    "mixed_content": ["Open the browser console on the page and fix every http:// URL it lists."],
    "unknown": ["Paste the complete error (browser error code, the full curl -v output, or the whole "
                "`openssl s_client` transcript).", "Run `edgecert diagnose {h}` from the edge's side."],
}


def triage(
    report: str,
    *,
    hostname: str | None = None,
    edge_issuers: list[str] | None = None,
    served_certificate_valid: bool | None = None,
) -> dict:
    """Classify a pasted error report.

    Args:
        report: the pasted text (browser error, curl/openssl output, stack trace, server log line).
        hostname: the affected name: used for the reproducing ``openssl_command`` and name checks.
        edge_issuers: issuer names (CN/O or full DN) of the certificates the edge serves; an issuer outside them
            in the report means ``tls_interception``.
        served_certificate_valid: whether the certificate the edge serves is valid now; a date error while it is
            means ``client_clock_skew``.

    Returns:
        The triage object: ``failure_mode, confidence (0..1), candidates, explanation, next_steps,
        openssl_command`` plus ``who_acts``, ``summary``, ``fix``, ``matched`` (the evidence) and ``hostname``.

    Raises:
        ValueError: empty report, report over 64 KiB, or a malformed hostname.
    """
    if not isinstance(report, str):
        raise ValueError("report must be text")
    if len(report.encode("utf-8", "surrogatepass")) > MAX_REPORT_BYTES:
        raise ValueError(f"report is too large ({len(report.encode('utf-8', 'surrogatepass'))} bytes; the limit is "
                         f"{MAX_REPORT_BYTES} bytes): paste only the error and the openssl/curl output")
    if not report.strip():
        raise ValueError("report is empty: paste the error message, browser error code or openssl output")
    host = normalize_hostname(hostname) if hostname else None
    text = report.replace("\r\n", "\n")
    now = dt.datetime.now(dt.timezone.utc)

    scores: dict[str, float] = {}
    cands: dict[str, float] = {}
    matched: list[dict] = []

    def add(mode: str, weight: float, source: str, evidence: str, candidates: tuple[str, ...] = ()) -> None:
        prev = scores.get(mode, 0.0)
        scores[mode] = max(prev, weight) + (0.03 if prev else 0.0)
        for c in candidates:
            cands[c] = max(cands.get(c, 0.0), weight * 0.6)
        matched.append({"mode": mode, "source": source, "evidence": evidence[:160], "weight": round(weight, 2)})

    for rule in RULES:
        m = rule.pattern.search(text)
        if m:
            add(rule.mode, rule.weight, rule.source, m.group(0), rule.candidates)

    # curl exit codes back up messages too generic to place
    if max(scores.values(), default=0.0) < 0.5:
        for m in re.finditer(r"curl: \((\d{1,3})\)", text):
            mode = CURL_EXIT.get(int(m.group(1)))
            if mode:
                add(mode, 0.45, "curl exit code", m.group(0), ())
    if max(scores.values(), default=0.0) >= 0.5:  # generic evidence only counts alone
        for k in [k for k, v in scores.items() if v < 0.3]:
            del scores[k]

    # Go's combined date message: "current time X is after/before Y"
    gm = re.search(r"current time \S{1,64} is (after|before) \S{1,64}", text)
    if gm:
        add("expired" if gm.group(1) == "after" else "not_yet_valid", 0.92, "Go", gm.group(0))

    # openssl s_client transcript
    is_transcript = bool(re.search(r"CONNECTED\(|verify error:num=|Verify return code:|SSL handshake has read|"
                                   r"no peer certificate available|s_client", text))
    codes = [int(c) for c in re.findall(r"verify error:num=(\d{1,3})", text)]
    if is_transcript and codes:
        codeset = set(codes)
        if 62 in codeset and codeset & {18, 20, 21}:
            add("default_certificate", 0.8, "openssl",
                "verify errors " + ",".join(map(str, codes)) + ": an unchained certificate for another name",
                ("hostname_mismatch", "self_signed" if 18 in codeset else "incomplete_chain"))
        cn = _leaf_subject_cn(text)
        if host and cn and not name_matches(cn, host) and 62 not in codeset and codeset & {18, 20, 21}:
            add("default_certificate", 0.75, "openssl", f"leaf CN {cn} is not {host} (verify error hides it)",
                ("hostname_mismatch",))
    if is_transcript and re.search(r"no peer certificate available", text) and not codes:
        for mode in ("expired", "not_yet_valid", "incomplete_chain", "untrusted_root", "self_signed"):
            scores.pop(mode, None)

    # interception: an issuer that is not the edge's
    issuers = _issuers(text)
    if edge_issuers and issuers:
        # the leaf's issuer (the first one printed) decides
        if not _issuer_matches(issuers[0], edge_issuers):
            add("tls_interception", 0.9, "issuer", f"issuer {issuers[0]} is not the edge's", ("untrusted_root",))
        else:
            scores.pop("tls_interception", None)
    elif issuers and re.search(INTERCEPTORS, " ".join(issuers), re.I):
        add("tls_interception", 0.85, "issuer", f"issuer {issuers[0]} is a known TLS-inspection product")

    # clock skew
    date_modes = {"expired", "not_yet_valid"}
    if served_certificate_valid is True and (date_modes & set(scores) or "expired" in cands):
        add("client_clock_skew", 0.93, "context", "a date error while the served certificate is valid",
            ("expired", "not_yet_valid"))
    for ev in _clock_evidence(text, now):
        add("client_clock_skew", 0.9, "dates", ev, ("expired",))
    if served_certificate_valid is False:
        scores.pop("client_clock_skew", None)

    # hostname given: is the name in the report the same?
    if host and "hostname_mismatch" in scores:
        m = re.search(r"(?:valid for|altnames:?)[ \t]{0,16}(?:DNS:)?([A-Za-z0-9*.,: -]{1,300}?)(?:, not|\.|$)", text)
        if m:
            names = [n.strip().removeprefix("DNS:") for n in re.split(r"[, ]+", m.group(1)) if n.strip()]
            if names and any(name_matches(n, host) for n in names):
                scores["hostname_mismatch"] *= 0.8

    # a clean openssl transcript: the handshake and verification succeeded
    if is_transcript and not codes and not scores and re.search(r"Verify return code: 0 \(ok\)", text) and \
            re.search(r"Cipher is (?!\(NONE\))|SSL handshake has read [1-9]", text):
        add("ok", 0.7, "openssl", "Verify return code: 0 (ok) after a completed handshake")

    # a default / platform certificate named in the report explains the name or trust error next to it
    if "default_certificate" in scores and scores.keys() & {"hostname_mismatch", "self_signed", "untrusted_root",
                                                             "incomplete_chain"}:
        scores["default_certificate"] = max(scores["default_certificate"], 0.85)
    # another platform's certificate (Heroku, Netlify, CloudFront...) explains a name error: DNS points there
    if "wrong_endpoint" in scores and "hostname_mismatch" in scores:
        scores["wrong_endpoint"] = max(scores["wrong_endpoint"], 0.85)

    if not scores:
        mode_id, confidence = "unknown", 0.05
        candidates: list[str] = []
    else:
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _PRIO.get(kv[0], 99)))
        mode_id, best = ranked[0]
        # context evidence (dates, issuers, the certificate's own name) explains the codes that came with it
        overridden = mode_id in ("client_clock_skew", "tls_interception", "default_certificate",
                                 "wrong_endpoint") and best >= 0.75
        # Context rules outrank the codes they explain.
        for override in ("client_clock_skew", "tls_interception", "default_certificate", "wrong_endpoint"):
            if override in scores and scores[override] >= 0.75 and mode_id != override:
                if override in ("default_certificate", "wrong_endpoint") and scores[mode_id] > 0.9 and mode_id not in (
                        "hostname_mismatch", "self_signed", "incomplete_chain", "untrusted_root"):
                    continue
                mode_id, best = override, scores[override]
                overridden = True
                break
        others = {k: v for k, v in scores.items() if k != mode_id}
        for k, v in cands.items():
            if k != mode_id:
                others[k] = max(others.get(k, 0.0), v)
        candidates = [k for k, _ in sorted(others.items(), key=lambda kv: (-kv[1], _PRIO.get(kv[0], 99)))]
        runner_up = max(others.values(), default=0.0)
        confidence = min(0.97, best)
        if runner_up >= best - 0.1 and not overridden:
            confidence = max(0.3, confidence - 0.15)
        confidence = round(confidence, 2)

    mode = get_mode(mode_id)
    evidence = [m for m in matched if m["mode"] == mode_id]
    if mode_id == "unknown":
        explanation = ("No known TLS error code or message was found in the report. " + mode.summary)
    else:
        ev = "; ".join(f"{e['source']}: \"{e['evidence']}\"" for e in evidence[:3])
        explanation = f"{mode.summary} Evidence: {ev}."
        if candidates:
            explanation += " Also possible: " + ", ".join(candidates[:4]) + "."
    h = host or _extract_host(text) or "HOSTNAME"
    steps = [mode.fix] if mode_id != "unknown" else []
    steps += [s.format(h=h) for s in _NEXT_STEPS.get(mode_id, [])]
    if mode_id != "unknown":
        steps.append(f"Reproduce from the affected network: {report_command(mode_id, h)}")
    else:
        steps.append(f"Run from the affected network and paste the output: {report_command('ok', h)}")
    return {
        "failure_mode": mode_id,
        "confidence": confidence,
        "candidates": candidates[:6],
        "explanation": explanation,
        "next_steps": steps,
        "openssl_command": report_command(mode_id if mode_id != "unknown" else "ok", host) if host else None,
        "who_acts": mode.who_acts,
        "summary": mode.summary,
        "fix": mode.fix,
        "matched": matched[:20],
        "hostname": host,
    }


_PRIO = {m: i for i, m in enumerate((
    "client_clock_skew", "tls_interception", "revoked", "weak_signature", "weak_key", "expired", "not_yet_valid",
    "self_signed", "untrusted_root", "incomplete_chain", "default_certificate", "hostname_mismatch",
    "sni_unrecognized", "plain_http_on_tls_port", "protocol_version_mismatch", "cipher_mismatch",
    "dns_not_configured", "connection_refused", "connection_timeout", "handshake_failure", "mixed_content",
    "wrong_endpoint"))}
