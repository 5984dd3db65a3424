"""The triage classifier: name the failure mode behind a pasted error report.

Reports are whatever a visitor or a tenant pastes: a browser error code or page text (Chrome/Edge, Firefox,
Safari/NSURLError, legacy Edge/IE, in English, German, Spanish, French, Portuguese, Japanese, Italian, Dutch), a
curl / wget / git message, an ``openssl s_client`` or ``gnutls-cli`` transcript, a Python / Go / Java / Android /
Node / .NET / PHP / rustls error, a tool that wraps one (kubectl, docker, helm, terraform, pip, npm, az, aws), a CDN
error page (Cloudflare 52x) or a proxy's log line (nginx, HAProxy, Envoy, Caddy, Traefik, AWS ALB).

One function decides: :func:`classify` reads the report (and the hostname it is about) and nothing else, so the
command line and the API answer the same for the same input. :func:`triage` adds what the service knows (the
edge's issuers, whether the certificate it serves is valid now) as *evidence* beside that answer: it reorders the
candidates and says so in ``context``, it never silently flips the mode the report's own words map to.

How the report is read (docs/triage.md): flattened to one line (``triage_text.flatten``), small typos of known
words and codes put right (``triage_text.Corrector``), the outer words of wrapping tools set aside
(``triage_text.strip_wrappers``: the innermost error decides), then weighed against the evidence tables
(``rules.RULES`` and ``triage_patterns.FAMILY_RULES``), TLS alerts by number, name or packed error code, OpenSSL
verify codes, and the parsing of ``openssl s_client`` transcripts (``verify error:num=N``, issuer lines,
``notAfter=`` dates, a CertificateRequest). A report that names no known failure is ``unclassified`` with
``candidates``; ``unknown`` is never answered.
"""

from __future__ import annotations

import datetime as dt
import re

from acme_client.identifiers import name_matches

from .command import report_command
from .modes import FAILURE_MODES
from .rules import CURL_EXIT, INTERCEPTORS, RULES
from .target import normalize_hostname
from .triage_transcript import clock_evidence, extract_host, issuer_matches, issuers_in, leaf_subject_cn
from .triage_patterns import (ALERTS, CHROMIUM_NET_ERRORS, FAMILY_RULES, SERVER_SIDE, VERIFY_CODES, alerts_in,
                              chromium_net_errors_in, verify_codes_in)
from .triage_text import Corrector, flatten, strip_wrappers
from .triage_vocab import NEXT_STEPS, vocabulary, words

__all__ = ["triage", "classify", "MAX_REPORT_BYTES"]

MAX_REPORT_BYTES = 64 * 1024

ALL_RULES = RULES + FAMILY_RULES

_sre = getattr(re, "_parser")  # the stdlib's pattern parser: literal prefixes of a rule's alternatives
_sre_c = getattr(re, "_constants")


def _prefixes(items) -> list[str] | None:
    """The literal start of every way ``items`` (a parsed pattern) can match, lower-cased; ``None`` when one of
    them starts with something other than a literal (then the rule is always searched)."""
    items = [(op, av) for op, av in items if op is not _sre_c.AT]
    if not items:
        return None
    op, av = items[0]
    if op is _sre_c.BRANCH:
        out: list[str] = []
        for b in av[1]:
            sub = _prefixes(list(b))
            if sub is None:
                return None
            out += sub
        return out
    if op is _sre_c.SUBPATTERN:
        return _prefixes(list(av[-1]))
    lit = ""
    for op, av in items:
        if op is not _sre_c.LITERAL:
            break
        lit += chr(av)
    return [lit.lower()] if len(lit) >= 3 else None


def _needles(rule) -> tuple[str, ...] | None:
    try:
        found = _prefixes(list(_sre.parse(rule.pattern.pattern, rule.pattern.flags)))
    except Exception:  # an unusual pattern is simply always searched
        return None
    return tuple(sorted(set(found))) if found else None


#: per rule, strings one of which a matching report must contain (lower-cased): a cheap test before the search
_NEEDLES = [_needles(r) for r in ALL_RULES]

def _rule_vocabulary() -> tuple[set[str], set[str]]:
    """The words (5+ letters) and the codes (``A_B_C``) the rules are written in: what typos are corrected to."""
    words_, codes = set(), set()
    for rule in ALL_RULES:
        src = rule.pattern.pattern.replace("\\b", " ").replace("\\", " ")
        for w in re.findall(r"(?<![A-Za-z_])[A-Za-z]{5,40}(?![A-Za-z_])", src):
            words_.add(w.lower())  # ETIMEDOUT, ECONNRESET: matched case-insensitively, corrected like words
        for c in re.findall(r"[A-Z][A-Z0-9]{1,40}(?:_[A-Z0-9]{1,40}){1,12}", src):
            codes.add(c)
    for mode in FAILURE_MODES.values():
        for text in mode.browser_errors.values():
            codes.update(re.findall(r"[A-Z][A-Z0-9]{1,40}(?:_[A-Z0-9]{1,40}){1,12}", text))
    return words_, codes


_W, _C = _rule_vocabulary()
#: words the transcript parsing below looks for, besides the rules' own
_W |= {"current", "response", "feature", "connected", "acceptable", "request", "timed", "before", "after",
       "handshake", "certificate", "status", "names", "failed", "verify"}
#: common words that look like typos of rule words but are not
_KEEP = ("expires", "expiring", "renewed", "trusts", "verified", "verifies", "connected", "connects", "refuses",
         "handshakes", "certificates", "requested", "requests", "response", "responses", "server", "servers",
         "signed", "issuer", "issued", "issues", "invalid", "valid", "error", "errors", "failed", "failure",
         "protocol", "protocols", "version", "versions", "shared", "unknown", "remote", "cannot", "unable",
         "secure", "security", "private", "public", "domain", "domains", "website", "browser", "chrome", "firefox",
         "safari", "opened", "proxy", "proxies", "timeout", "timeouts", "header", "headers", "reset", "resets",
         "socket", "sockets", "config", "nginx", "client", "clients", "request", "reason", "reached", "reaches")
CORRECTOR = Corrector(_W, _C, keep=_KEEP)

_SERVER_SIDE_REFUSALS = {42: "untrusted_root", 43: "untrusted_root", 46: "untrusted_root", 48: "untrusted_root",
                         45: "expired", 44: "revoked", 116: "client_certificate_required",
                         120: "alpn_mismatch", 70: "protocol_version_mismatch", 112: "sni_unrecognized"}

_CONNECTED = re.compile(r"\* Connected to |CONNECTED\(|Client hello \(1\)|\.\.\. connected\.|TLS handshake, "
                        r"Client hello|Connecting to [^\n]{1,200}\.\.\. connected|SSL_connect|handshake started", re.I)
_TIMED_OUT = re.compile(r"curl: \(28\)|timed out|Timeout was reached|\[killed after|timeout after|Operation timed "
                        r"out", re.I)
_CERT_REQUEST = re.compile(r"Acceptable client certificate CA names|Request CERT \(13\)|CertificateRequest"
                           r"|Client Certificate Types:|client certificate request", re.I)


def _hints(flat: str) -> list[str]:
    """Candidates for a report that names no known failure, from the words it does use."""
    low = flat.lower()
    out: list[str] = []
    if re.search(r"cert|x509|trust|pkix|verif", low):
        out += ["untrusted_root", "expired", "hostname_mismatch", "incomplete_chain"]
    if re.search(r"handshake|ssl|tls|secure connection|https", low):
        out += ["handshake_failure", "protocol_version_mismatch", "cipher_mismatch"]
    if re.search(r"time ?out|timed|slow|hang", low):
        out += ["connection_timeout", "handshake_timeout"]
    if re.search(r"connect|reach|refus|unreachable|down", low):
        out += ["connection_refused", "connection_timeout", "dns_not_configured"]
    if re.search(r"dns|resolv|nxdomain|host", low):
        out += ["dns_not_configured"]
    if not out:
        out = ["dns_not_configured", "connection_refused", "handshake_failure", "untrusted_root"]
    seen: list[str] = []
    for c in out:
        if c not in seen:
            seen.append(c)
    return seen[:6]


def _check_report(report: object) -> str:
    if not isinstance(report, str):
        raise ValueError("report must be text")
    size = len(report.encode("utf-8", "surrogatepass"))
    if size > MAX_REPORT_BYTES:
        raise ValueError(f"report is too large ({size} bytes; the limit is {MAX_REPORT_BYTES} bytes): paste only "
                         "the error and the openssl/curl output")
    if not report.strip():
        raise ValueError("report is empty: paste the error message, browser error code or openssl output")
    return report.replace("\r\n", "\n").replace("\r", "\n")


def classify(report: str, hostname: str | None = None, *, now: dt.datetime | None = None) -> dict:
    """The one decision: the failure mode the report's own words point at.

    Reads only ``report`` and ``hostname`` (the name the report is about: it lets a transcript's leaf name be
    compared with it, as failure-modes.md documents for ``default_certificate``). Returns ``{"failure_mode",
    "confidence", "candidates", "matched", "corrections"}``; ``failure_mode`` is always in :func:`vocabulary`.

    Raises:
        ValueError: empty report, report over 64 KiB, or a malformed hostname.
    """
    text = _check_report(report)
    host = normalize_hostname(hostname) if hostname else None
    now = now or dt.datetime.now(dt.timezone.utc)
    flat = flatten(text)
    corrected, corrections = CORRECTOR.correct(flat)
    inner = strip_wrappers(corrected)

    scores: dict[str, float] = {}
    cands: dict[str, float] = {}
    matched: list[dict] = []
    notes: list[str] = []

    def add(mode: str, weight: float, source: str, evidence: str, candidates: tuple[str, ...] = ()) -> None:
        prev = scores.get(mode, 0.0)
        # more evidence for the same mode adds a little; generic words (under 0.5) add nothing
        scores[mode] = max(prev, weight) + (0.03 if prev and weight >= 0.5 else 0.0)
        for c in candidates:
            cands[c] = max(cands.get(c, 0.0), weight * 0.6)
        if len(matched) < 40:
            matched.append({"mode": mode, "source": source, "evidence": evidence.strip()[:160],
                            "weight": round(weight, 2)})

    # the innermost words decide; the wrappers' own words only when nothing else is said
    for body in (inner, corrected) if inner != corrected else (corrected,):
        low = body.lower()
        for rule, needles in zip(ALL_RULES, _NEEDLES):
            if needles is not None and not any(n in low for n in needles):
                continue
            m = rule.pattern.search(body)
            if m:
                add(rule.mode, rule.weight, rule.source, m.group(0), rule.candidates)
        if scores:
            break

    # curl exit codes back up messages too generic to place
    if max(scores.values(), default=0.0) < 0.5:
        for m in re.finditer(r"curl: \((\d{1,3})\)", corrected):
            mode = CURL_EXIT.get(int(m.group(1)))
            if mode:
                add(mode, 0.45, "curl exit code", m.group(0), ())

    # TLS alerts by number, name or packed error code; in a server's log the visitor sent them
    server_side = bool(SERVER_SIDE.search(corrected))
    for n, ev in alerts_in(inner):
        if server_side and n in _SERVER_SIDE_REFUSALS:
            mode = _SERVER_SIDE_REFUSALS[n]
            add(mode, 0.6 if mode == "untrusted_root" else 0.85, "server log (the visitor's client sent this alert)",
                ev, ("default_certificate", "incomplete_chain", "self_signed", "expired", "hostname_mismatch")
                if mode == "untrusted_root" else ())
        elif n in ALERTS:
            mode, weight, alts = ALERTS[n]
            add(mode, weight, f"TLS alert {n}", ev, alts)

    for n, ev in chromium_net_errors_in(inner):
        if n in CHROMIUM_NET_ERRORS:
            mode, weight = CHROMIUM_NET_ERRORS[n]
            add(mode, weight, "Chromium net error number", ev)

    if server_side and scores.get("client_certificate_required", 1.0) < 0.7:
        # "bad certificate" in a server's log is the visitor refusing the served certificate, not a client cert
        scores.pop("client_certificate_required")

    # OpenSSL verify codes (openssl, nginx "(N:text)", X509_V_ERR_... (N))
    for n, ev in verify_codes_in(inner):
        mode = VERIFY_CODES.get(n)
        if mode:
            add(mode, 0.7 if n == 20 else 0.9, "OpenSSL verify code", ev,
                ("untrusted_root", "tls_interception", "default_certificate") if n == 20 else ())

    # a client-certificate request followed by a handshake refusal (TLS 1.2 mTLS: alert 40 or 42)
    if _CERT_REQUEST.search(corrected) and (scores.keys() & {"cipher_mismatch", "handshake_failure",
                                                         "client_certificate_required"}):
        add("client_certificate_required", 0.88, "transcript",
            "the server sent a CertificateRequest, then refused the handshake", ("cipher_mismatch",))

    # connected, then nothing until a timeout: the TLS handshake stalled
    if _CONNECTED.search(corrected) and _TIMED_OUT.search(corrected) and not scores.keys() - {
            "connection_timeout", "handshake_timeout", "handshake_failure"}:
        add("handshake_timeout", 0.9, "transcript", "TCP connected, then the handshake timed out",
            ("connection_timeout",))
        scores.pop("connection_timeout", None)

    if max(scores.values(), default=0.0) >= 0.5:  # generic evidence only counts alone
        for k in [k for k, v in scores.items() if v < 0.3]:
            del scores[k]

    # Go's combined date message: "current time X is after/before Y"
    gm = re.search(r"current time \S{1,64} is (after|before) \S{1,64}", corrected, re.I)
    if gm:
        # the dates decide between the two halves of "has expired or is not yet valid"
        after = gm.group(1).lower() == "after"
        scores.pop("not_yet_valid" if after else "expired", None)
        add("expired" if after else "not_yet_valid", 0.92, "Go", gm.group(0))

    # a must-staple leaf (TLS Feature status_request) and no OCSP staple in the same transcript
    if re.search(r"OCSP response: no response sent", corrected, re.I) and re.search(
            r"TLS Feature|1\.3\.6\.1\.5\.5\.7\.1\.24|status_request", corrected, re.I):
        add("must_staple_missing", 0.85, "openssl", "a must-staple certificate and no OCSP response sent",
            ("revoked",))

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
        cn = leaf_subject_cn(text)
        if host and cn and not name_matches(cn, host) and 62 not in codeset and codeset & {18, 20, 21}:
            add("default_certificate", 0.75, "openssl", f"leaf CN {cn} is not {host} (verify error hides it)",
                ("hostname_mismatch",))
    if is_transcript and re.search(r"no peer certificate available", text) and not codes:
        for mode in ("expired", "not_yet_valid", "incomplete_chain", "untrusted_root", "self_signed"):
            scores.pop(mode, None)
    if is_transcript and not scores and "CONNECTED(" in text and not re.search(
            r"Certificate chain|handshake has read|error|verify|no peer certificate|Cipher|alert|errno", text, re.I):
        add("handshake_timeout", 0.6, "openssl", "CONNECTED(...) and nothing after it", ("connection_timeout",))

    # interception products named as the issuer (the report's own words)
    issuers = issuers_in(text)
    if issuers and re.search(INTERCEPTORS, " ".join(issuers), re.I):
        add("tls_interception", 0.85, "issuer", f"issuer {issuers[0]} is a known TLS-inspection product")

    # clock skew shown by the report's own dates
    for ev in clock_evidence(text, now, corrected):
        add("client_clock_skew", 0.9, "dates", ev, ("expired",))

    # hostname given: is the name in the report the same?
    if host and "hostname_mismatch" in scores:
        m = re.search(r"(?:is valid for|altnames:) ?([^\n]{1,400})", flat)
        if m:
            listed = re.split(r", not |\. |\)|$", m.group(1), maxsplit=1)[0]
            names = [n.strip().removeprefix("DNS:").rstrip(".") for n in re.split(r"[, ]{1,4}", listed) if n.strip()]
            if names and any(name_matches(n, host) for n in names):
                # evidence, not a verdict: the report may be about another name than the one given
                notes.append(f"The certificate in the report does cover {host}: the error may concern another name "
                             "(a redirect, an API host) than the one given.")

    # a clean openssl transcript: the handshake and verification succeeded
    if is_transcript and not codes and not scores and re.search(r"Verify return code: 0 \(ok\)", text) and \
            re.search(r"Cipher is (?!\(NONE\))|SSL handshake has read [1-9]", text):
        add("ok", 0.7, "openssl", "Verify return code: 0 (ok) after a completed handshake")

    # a clean curl -v: the certificate was verified and nothing failed after it
    if not scores and re.search(r"SSL certificate verify ok", corrected, re.I) and not re.search(
            r"curl: \(\d{1,3}\)|error|fail", corrected.replace("verify ok", ""), re.I):
        add("ok", 0.65, "curl", "SSL certificate verify ok, and no error after it")

    # a default / platform certificate named in the report explains the name or trust error next to it
    if "default_certificate" in scores and scores.keys() & {"hostname_mismatch", "self_signed", "untrusted_root",
                                                             "incomplete_chain"}:
        scores["default_certificate"] = max(scores["default_certificate"], 0.85)
    # another platform's certificate (Heroku, Netlify, CloudFront...) explains a name error: DNS points there
    if "wrong_endpoint" in scores and "hostname_mismatch" in scores:
        scores["wrong_endpoint"] = max(scores["wrong_endpoint"], 0.85)

    if not scores:
        return {"failure_mode": "unclassified", "confidence": 0.05, "candidates": _hints(corrected),
                "matched": [], "corrections": corrections, "notes": notes}

    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _PRIO.get(kv[0], 99)))
    mode_id, best = ranked[0]
    overridden = mode_id in ("client_clock_skew", "tls_interception", "default_certificate",
                             "wrong_endpoint") and best >= 0.75
    # context found in the report (dates, issuers, the certificate's own name) explains the codes beside it
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
    candidates = [k for k, _ in sorted(others.items(), key=lambda kv: (-kv[1], _PRIO.get(kv[0], 99)))
                  if k in vocabulary()]
    runner_up = max(others.values(), default=0.0)
    confidence = min(0.97, best)
    if runner_up >= best - 0.1 and not overridden:
        confidence = max(0.3, confidence - 0.15)
    return {"failure_mode": mode_id, "confidence": round(confidence, 2), "candidates": candidates[:6],
            "matched": matched, "corrections": corrections, "notes": notes}


def _context(result: dict, text: str, host: str | None, edge_issuers: list[str] | None,
             served_certificate_valid: bool | None) -> list[str]:
    """What the service knows, as evidence beside the classification: reorders candidates and adjusts the
    confidence, never changes ``failure_mode``."""
    notes: list[str] = []
    mode = result["failure_mode"]
    cands: list[str] = result["candidates"]
    name = host or "this name"

    def promote(c: str) -> None:
        if c != mode:
            if c in cands:
                cands.remove(c)
            cands.insert(0, c)

    date_modes = {"expired", "not_yet_valid", "client_clock_skew"}
    if mode in date_modes or date_modes & set(cands[:3]):
        if served_certificate_valid is True and mode != "client_clock_skew":
            notes.append(f"The certificate the edge serves for {name} is valid now: if the visitor still sees this "
                         "date error, the visitor's clock is probably wrong (client_clock_skew).")
            promote("client_clock_skew")
            result["confidence"] = round(max(0.3, result["confidence"] - 0.15), 2)
        elif served_certificate_valid is False and mode in ("expired", "not_yet_valid"):
            notes.append(f"The certificate the edge serves for {name} is indeed outside its validity window now.")
            result["confidence"] = round(min(0.97, result["confidence"] + 0.05), 2)
            if "client_clock_skew" in cands:
                cands.remove("client_clock_skew")
        elif served_certificate_valid is False and mode == "client_clock_skew":
            notes.append(f"The certificate the edge serves for {name} is outside its validity window now: the "
                         "server may be at fault too (expired).")
            promote("expired")
    issuers = issuers_in(text)
    if edge_issuers and issuers:
        if not issuer_matches(issuers[0], edge_issuers):
            if mode in ("untrusted_root", "incomplete_chain", "self_signed", "tls_interception", "invalid_chain",
                        "default_certificate") or mode == "hostname_mismatch":
                notes.append(f"The report's issuer ({issuers[0][:120]}) is not one of the edge's issuers: a middlebox "
                             "may have re-signed the connection (tls_interception).")
                promote("tls_interception")
        else:
            notes.append(f"The report's issuer ({issuers[0][:120]}) is the edge's own: no interception.")
            if "tls_interception" in cands:
                cands.remove("tls_interception")
    result["candidates"] = cands[:6]
    return notes


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
        edge_issuers: issuer names (CN/O or full DN) of the certificates the edge serves: an issuer outside them
            in the report adds ``tls_interception`` as the first candidate (evidence, not the verdict).
        served_certificate_valid: whether the certificate the edge serves is valid now: with a date error, adds
            ``client_clock_skew`` as the first candidate (evidence, not the verdict).

    Returns:
        The triage object: ``failure_mode`` (always an id of the vocabulary, ``unclassified`` when nothing
        matches), ``confidence (0..1), candidates, explanation, next_steps, openssl_command`` plus ``who_acts``,
        ``summary``, ``fix``, ``matched`` (the evidence), ``context`` (what the service's own knowledge adds),
        ``corrections`` (typos put right) and ``hostname``. ``failure_mode`` is :func:`classify`'s, so the same
        report and hostname give the same answer wherever they are triaged.

    Raises:
        ValueError: empty report, report over 64 KiB, or a malformed hostname.
    """
    result = classify(report, hostname)
    host = normalize_hostname(hostname) if hostname else None
    text = report.replace("\r\n", "\n")
    context = result["notes"] + _context(result, text, host, edge_issuers, served_certificate_valid)
    mode_id = result["failure_mode"]
    mode = words(mode_id)
    candidates = result["candidates"]
    evidence = [m for m in result["matched"] if m["mode"] == mode_id]
    if mode_id == "unclassified":
        explanation = "No known TLS error code or message was found in the report. " + mode.summary
    else:
        ev = "; ".join(f"{e['source']}: \"{e['evidence']}\"" for e in evidence[:3])
        explanation = f"{mode.summary} Evidence: {ev}."
    if candidates:
        explanation += " Also possible: " + ", ".join(candidates[:4]) + "."
    if context:
        explanation += " " + " ".join(context)
    h = host or extract_host(text) or "HOSTNAME"
    steps = [mode.fix] if mode_id != "unclassified" else []
    steps += [s.format(h=h) for s in NEXT_STEPS.get(mode_id, [])]
    if mode_id != "unclassified":
        steps.append(f"Reproduce from the affected network: {_command(mode_id, h)}")
    else:
        steps.append(f"Run from the affected network and paste the output: {_command('ok', h)}")
    return {
        "failure_mode": mode_id,
        "confidence": result["confidence"],
        "candidates": candidates[:6],
        "explanation": explanation,
        "next_steps": steps,
        "openssl_command": _command(mode_id, host) if host else None,
        "who_acts": mode.who_acts,
        "summary": mode.summary,
        "fix": mode.fix,
        "matched": result["matched"][:20],
        "context": context,
        "corrections": [{"from": a, "to": b} for a, b in result["corrections"][:20]],
        "hostname": host,
    }


def _command(mode_id: str, host: str) -> str:
    """``report_command`` for the mode, with the flags that show the newer modes."""
    line = report_command(mode_id if mode_id in _COMMAND_MODES else "ok", host)
    if mode_id == "alpn_mismatch" and "-alpn" not in line:
        line = line.replace(" </dev/null", " -alpn h2,http/1.1 </dev/null", 1)
    elif mode_id == "handshake_timeout" and not line.startswith("timeout"):
        line = "timeout 10 " + line
    elif mode_id in ("unsuitable_purpose", "invalid_chain") and "-purpose" not in line:
        line = line.replace(" </dev/null", " -purpose sslserver </dev/null", 1)
    return line


_COMMAND_MODES = vocabulary() - {"unclassified"}

_PRIO = {m: i for i, m in enumerate((
    "client_clock_skew", "tls_interception", "revoked", "weak_signature", "weak_key", "expired", "not_yet_valid",
    "invalid_chain", "unsuitable_purpose", "self_signed", "untrusted_root", "incomplete_chain", "default_certificate",
    "hostname_mismatch", "must_staple_missing", "client_certificate_required", "alpn_mismatch", "sni_unrecognized",
    "plain_http_on_tls_port", "protocol_version_mismatch", "cipher_mismatch", "dns_not_configured",
    "connection_refused", "handshake_timeout", "connection_timeout", "handshake_failure", "mixed_content",
    "wrong_endpoint", "ok"))}
