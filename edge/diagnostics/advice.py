"""Warnings beside the verdict: what works today but should be fixed. A warning never turns "ok" into a failure.

- the certificate expires within 14 days;
- extra, out-of-order or cross-signed certificates, an OCSP URL still in the leaf (``validity.chain_warnings``);
- no HSTS header on the HTTPS answer;
- weak parameters a client still accepts: TLS 1.0/1.1 enabled, a Diffie-Hellman group under 2048 bits, a key
  exchange without forward secrecy, 3DES/RC4;
- legacy clients of the population (old Android, Java 8, curl on OpenSSL 1.1) that cannot connect to an endpoint
  every current client reaches.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["EXPIRY_WARNING_DAYS", "build_warnings"]

EXPIRY_WARNING_DAYS = 14


def build_warnings(*, leaf_not_after: dt.datetime | None, now: dt.datetime, chain_notes: list[str],
                   headers: dict[str, str] | None, tls_versions: dict[str, bool], offers: dict[Any, Any],
                   clients: list[dict]) -> list[str]:
    out: list[str] = []
    if leaf_not_after is not None and now < leaf_not_after <= now + dt.timedelta(days=EXPIRY_WARNING_DAYS):
        left = leaf_not_after - now
        out.append(f"the certificate expires in {left.days} day(s) {left.seconds // 3600} hour(s) "
                   f"({leaf_not_after:%Y-%m-%d %H:%M} UTC): renew it now")
    out += chain_notes
    if headers is not None and "strict-transport-security" not in headers:
        out.append("no HSTS: the HTTPS answer has no Strict-Transport-Security header, so a visitor's first "
                   "plain-http request can be intercepted; add `Strict-Transport-Security: max-age=31536000`")
    legacy = [v for v in ("TLSv1.0", "TLSv1.1") if tls_versions.get(v)]
    if legacy:
        out.append(f"{' and '.join(legacy)} still enabled: no current client needs them (browsers removed them in "
                   "2020); disable them")
    seen: set[str] = set()
    for o in offers.values():
        if not getattr(o, "ok", False):
            continue
        m = re.match(r"DH, (\d+) bits", getattr(o, "temp_key", "") or "")
        if m and int(m.group(1)) < 2048 and "dh" not in seen:
            seen.add("dh")
            out.append(f"a {m.group(1)}-bit Diffie-Hellman group is accepted (Logjam-weak; clients at OpenSSL security "
                       "level 2 refuse it): use ECDHE or a 2048-bit group")
        c = o.cipher or ""
        if o.version in ("TLSv1.2", "TLSv1.1", "TLSv1") and c and not c.startswith(("ECDHE", "DHE", "TLS_")) \
                and "rsa" not in seen:
            seen.add("rsa")
            out.append(f"a key exchange without forward secrecy is negotiated ({c}) with some clients: prefer ECDHE "
                       "suites")
        if ("DES-CBC3" in c or "RC4" in c) and "3des" not in seen:
            seen.add("3des")
            out.append(f"a broken cipher is negotiated ({c}): remove 3DES and RC4")
    mainstream_fail = any(not c["ok"] and c.get("mainstream", True) for c in clients)
    for c in clients:
        if not mainstream_fail and not c["ok"] and not c.get("mainstream", True):
            out.append(f"{c['label']} cannot connect ({c['mode']}): {c['error']}")
    return out
