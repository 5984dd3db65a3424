"""The several-issuers settings (``[[issuers]]`` tables, External Account Binding, profiles): their checks and the
ordered issuer list that :mod:`edge.app` builds one :class:`acme_client.issuer.AcmeIssuer` from each. Kept apart from
:mod:`edge.config` (which calls these) so that module stays one screenful per concern."""

from __future__ import annotations

import base64
import binascii
import difflib
import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["as_mapping", "ISSUER_KEYS", "issuers_check", "issuer_specs", "profile_name", "b64url_key",
           "optional_b64url", "optional_profile"]


def as_mapping(v: Any) -> dict:
    """A TOML table or a JSON object (the environment form) as a dict; ValueError otherwise."""
    if isinstance(v, str):
        v = json.loads(v) if v.strip() else {}
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a table (a JSON object in the variable), got {v!r}")
    return dict(v)


def _did_you_mean(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


#: Keys of an ``[[issuers]]`` table.
ISSUER_KEYS = ("directory", "eab_kid", "eab_hmac_key", "ca_bundle", "profile", "caa_identities", "rate_limits",
               "orders_per_10s")


def profile_name(v: Any) -> str | None:
    """What is wrong with an ACME profile name (a printable token of at most 64 characters), or None."""
    if not isinstance(v, str) or not v or len(v) > 64 or not all(33 <= ord(ch) < 127 for ch in v):
        return "must be a profile name the CA lists (a printable token of at most 64 characters, e.g. tlsserver)"
    return None


def b64url_key(v: Any) -> str | None:
    if not isinstance(v, str) or not v.strip():
        return "must be the base64url HMAC key the CA gave you"
    t = v.strip()
    if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" for c in t):
        return "must be base64url (letters, digits, - and _), as the CA hands it out"
    try:
        raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    except (binascii.Error, ValueError):
        return "is not valid base64url"
    return None if raw else "decodes to an empty key"


def issuers_check(v: tuple) -> str | None:
    seen: set[str] = set()
    for n, t in enumerate(v, 1):
        where = f"[[issuers]] table {n}"
        if not isinstance(t, Mapping):
            return f"{where} must be a table with directory = \"https://...\""
        for k in t:
            if k not in ISSUER_KEYS:
                return f"{where}: unknown key {k!r}{_did_you_mean(str(k), set(ISSUER_KEYS))} (keys: {', '.join(ISSUER_KEYS)})"
        d = t.get("directory")
        if not isinstance(d, str) or not d.startswith(("https://", "http://")):
            return f"{where}: directory must be the CA's ACME directory URL (https://...)"
        if d in seen:
            return f"{where}: directory {d} is listed twice"
        seen.add(d)
        if bool(t.get("eab_kid")) != bool(t.get("eab_hmac_key")):
            return f"{where} ({d}): eab_kid and eab_hmac_key go together (External Account Binding)"
        if t.get("eab_hmac_key"):
            bad = b64url_key(t["eab_hmac_key"])
            if bad:
                return f"{where} ({d}): eab_hmac_key {bad}"
        if t.get("eab_kid") is not None and not isinstance(t.get("eab_kid"), str):
            return f"{where} ({d}): eab_kid must be text"
        if t.get("profile") not in (None, ""):
            bad = profile_name(t["profile"])
            if bad:
                return f"{where} ({d}): profile {bad}"
        ids = t.get("caa_identities")
        if ids is not None and (not isinstance(ids, (list, tuple)) or not all(isinstance(x, str) and x for x in ids)):
            return f"{where} ({d}): caa_identities must be a list of issuer domain names, e.g. [\"letsencrypt.org\"]"
        cab = t.get("ca_bundle")
        if cab not in (None, "") and (not isinstance(cab, str) or not Path(cab).is_file()):
            return f"{where} ({d}): ca_bundle {cab!r} is not a readable file"
        rl = t.get("rate_limits")
        if rl is not None:
            from acme_client.ratelimit import load_limits
            try:
                load_limits(as_mapping(rl))
            except ValueError as e:
                return f"{where} ({d}): rate_limits: {e}"
        o = t.get("orders_per_10s")
        if o is not None and (isinstance(o, bool) or not isinstance(o, int) or o < 1):
            return f"{where} ({d}): orders_per_10s must be a whole number >= 1"
    return None


def optional_b64url(v: str | None) -> str | None:
    return None if v is None else b64url_key(v)


def optional_profile(v: str | None) -> str | None:
    return None if v is None else profile_name(v)


def issuer_specs(s: Any) -> list[dict[str, Any]]:
    """The issuers of settings ``s`` in order, each ``{directory, eab_kid, eab_hmac_key, ca_bundle, profile,
    caa_identities, rate_limits, orders_per_10s, setting}`` (``setting``: how messages name it): the
    ``[[issuers]]`` tables, else ``acme_directory`` split at commas (EAB for the first from acme_eab_kid /
    acme_eab_hmac_key)."""
    out: list[dict[str, Any]] = []
    if s.issuers:
        for n, t in enumerate(s.issuers, 1):
            out.append({"directory": t["directory"], "eab_kid": t.get("eab_kid") or None,
                        "eab_hmac_key": (t.get("eab_hmac_key") or "").strip() or None,
                        "ca_bundle": t.get("ca_bundle") or s.acme_ca_bundle,
                        "profile": t.get("profile") or s.acme_profile,
                        "caa_identities": list(t["caa_identities"]) if t.get("caa_identities") is not None
                        else None,
                        "rate_limits": as_mapping(t["rate_limits"]) if t.get("rate_limits") is not None else None,
                        "orders_per_10s": t.get("orders_per_10s") or s.orders_per_10s,
                        "setting": f"[[issuers]] table {n} ({t['directory']})"})
        return out
    for n, d in enumerate([u.strip() for u in s.acme_directory.split(",")]):
        out.append({"directory": d, "eab_kid": s.acme_eab_kid if n == 0 else None,
                    "eab_hmac_key": s.acme_eab_hmac_key if n == 0 else None,
                    "ca_bundle": s.acme_ca_bundle, "profile": s.acme_profile, "caa_identities": None,
                    "rate_limits": None, "orders_per_10s": s.orders_per_10s,
                    "setting": "acme_directory (EDGECERT_ACME_DIRECTORY)" + (f", entry {n + 1}" if n else "")})
    return out
