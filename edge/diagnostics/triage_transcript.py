"""Reading the parts of a pasted report that are not error texts: ``openssl s_client`` transcripts (issuer and
subject lines, ``notAfter=`` dates), Go's ``current time X is after Y``, and the host name the report is about.
Used by ``triage``; every pattern has bounded repeats."""

from __future__ import annotations

import datetime as dt
import re

from .target import normalize_hostname

__all__ = ["parse_openssl_date", "clock_evidence", "issuers_in", "issuer_matches", "leaf_subject_cn", "extract_host"]


def parse_openssl_date(text: str) -> dt.datetime | None:
    text = re.sub(r"\s+", " ", text.strip())
    for fmt in ("%b %d %H:%M:%S %Y GMT", "%b %d %H:%M:%S %Y %Z", "%a %b %d %H:%M:%S %Z %Y", "%Y-%m-%dT%H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S %Z"):
        try:
            d = dt.datetime.strptime(text, fmt)
            return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def clock_evidence(text: str, now: dt.datetime, flat: str | None = None) -> list[str]:
    """Date errors whose dates show the certificate is valid today: the client's clock is off."""
    found = []
    for m in re.finditer(r"verify error:num=10:[^\n]{0,300}\n(?:[^\n]{0,300}\n)?[ \t]{0,16}"
                         r"notAfter=([^\n]{1,100})", text):
        d = parse_openssl_date(m.group(1))
        if d and d > now:
            found.append(f"openssl says expired, but notAfter {m.group(1).strip()} is still in the future")
    for m in re.finditer(r"verify error:num=9:[^\n]{0,300}\n(?:[^\n]{0,300}\n)?[ \t]{0,16}"
                         r"notBefore=([^\n]{1,100})", text):
        d = parse_openssl_date(m.group(1))
        if d and d < now:
            found.append(f"openssl says not yet valid, but notBefore {m.group(1).strip()} has passed")
    m = re.search(r"current time (\S{1,64}) is (after|before) (\S{1,64})", flat or text, re.I)
    if m:
        client, how, bound = (parse_openssl_date(m.group(1).rstrip(":,").upper()), m.group(2).lower(),
                              parse_openssl_date(m.group(3).rstrip(":,").upper()))
        if client and bound and abs((client - now).total_seconds()) > 86400 and (
                (how == "after" and bound > now) or (how == "before" and bound < now)):
            found.append(f"the client's clock said {m.group(1)}, the certificate is valid today")
    for m in re.finditer(r"(NotAfter|NotBefore): (\w{3} \w{3} \d{1,2} [\d:]{8} \w{1,8} \d{4})", text):
        d = parse_openssl_date(m.group(2))
        if d and ((m.group(1) == "NotAfter" and d > now) or (m.group(1) == "NotBefore" and d < now)):
            found.append(f"the report's {m.group(1)} {m.group(2)} is fine today")
    return found


def issuers_in(text: str) -> list[str]:
    out = []
    for m in re.finditer(r"^[ \t]{0,16}(?:issuer=|i:)[ \t]{0,16}([^\n]{1,300})", text, re.M):
        out.append(m.group(1).strip())
    for m in re.finditer(r"Issuer: ([^\n]{1,300})", text, re.M):
        out.append(m.group(1).strip())
    return out


def issuer_matches(issuer: str, edge_issuers: list[str]) -> bool:
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


def leaf_subject_cn(text: str) -> str | None:
    m = (re.search(r"^[ \t]{0,16}0 s:[^\n]{0,300}?CN ?= ?([^,/\n]{1,200})", text, re.M)
         or re.search(r"^subject=[^\n]{0,300}?CN ?= ?([^,/\n]{1,200})", text, re.M))
    return m.group(1).strip() if m else None


def extract_host(text: str) -> str | None:
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
