"""Per-hostname settings of a domain (issue 17): ``origin``, ``min_tls_version``, ``metadata``, ``http2``, as sent
to ``POST /v1/domains``, ``PATCH /v1/domains/{hostname}`` and (``origin`` only) ``POST/PATCH /v1/tenants``.

Each value is checked here and turned into the store's fields; a bad one is a 422 naming the field (nothing is
stored). ``null`` resets a setting to the default (the tenant's origin, else ``EDGECERT_UPSTREAM``; the global TLS
floor; the global HTTP/2 choice; no metadata).

Origins and SSRF: an origin is ``http`` or ``https``, with a host, without credentials, query or fragment. A tenant
may not point the edge at an internal address: for a tenant token the origin's host (an IP literal, or every
address its name resolves to now, through the service's resolver) must be a public address -- loopback, private,
link-local, multicast, reserved, unspecified and cloud metadata addresses are refused, as for diagnostics
(:mod:`edge.diagnostics.target`). The operator may name any address (an internal origin is the usual case).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

from edge.api.errors import ApiError
from edge.diagnostics.target import TargetNotAllowed, check_allowed
from edge.dns import lookup
from edge.names import InvalidHostname, validate_hostname

__all__ = ["SETTING_FIELDS", "METADATA_LIMITS", "TLS_VERSIONS", "check_origin", "check_metadata",
           "settings_fields", "settings_json"]

#: The per-hostname fields of a domain object (request and answer).
SETTING_FIELDS = ("origin", "min_tls_version", "metadata", "http2")
#: ``min_tls_version`` values.
TLS_VERSIONS = ("1.2", "1.3")
#: Bounds of ``metadata``: keys, characters of a key, of a value, and bytes of the whole object as JSON.
METADATA_LIMITS = {"max_keys": 32, "max_key_chars": 64, "max_value_chars": 512, "max_bytes": 8192}
MAX_ORIGIN_CHARS = 2048


def _bad(field: str, code: str, message: str) -> ApiError:
    return ApiError(422, code, message, field=field)


async def check_origin(value: Any, *, tenant_caller: bool, resolver=None, field: str = "origin") -> str:
    """``value`` as a stored origin URL (``scheme://host[:port][/path]``, no trailing slash); ``ApiError`` 422
    ``invalid_origin`` (malformed) or ``origin_not_allowed`` (a tenant naming an internal address)."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, "invalid_origin", f"{field} must be a URL like https://origin.example.com")
    text = value.strip()
    if len(text) > MAX_ORIGIN_CHARS or not text.isascii() or not text.isprintable() or " " in text:
        raise _bad(field, "invalid_origin", f"{field} must be a URL of printable ASCII characters, at most "
                   f"{MAX_ORIGIN_CHARS}")
    try:
        u = urllib.parse.urlsplit(text)
        port = u.port
    except ValueError:
        raise _bad(field, "invalid_origin", f"{field} is not a valid URL (bad port or address)") from None
    if u.scheme.lower() not in ("http", "https"):
        raise _bad(field, "invalid_origin", f"{field} must start with http:// or https://")
    if u.username is not None or u.password is not None:
        raise _bad(field, "invalid_origin", f"{field} must not carry credentials (user:password@); the edge "
                   f"forwards the client's own Authorization header")
    if u.query or u.fragment or "?" in text or "#" in text:
        raise _bad(field, "invalid_origin", f"{field} must not have a query or fragment (a path prefix is allowed)")
    host = u.hostname or ""
    if not host:
        raise _bad(field, "invalid_origin", f"{field} must name a host, e.g. https://origin.example.com")
    literal = None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        try:
            host = validate_hostname(host, registrable=False).ascii
        except InvalidHostname as e:
            raise _bad(field, "invalid_origin", f"{field} host is not valid: {e.message}") from None
    if port == 0:
        raise _bad(field, "invalid_origin", f"{field} port must be from 1 to 65535")
    if tenant_caller:
        if literal is not None:
            addresses = [str(literal)]
        else:
            addresses = []
            if resolver is not None:
                for ans in await lookup(resolver, host):
                    addresses += ans.addresses
            if not addresses:
                raise _bad(field, "origin_not_allowed", f"{field} host {host} does not resolve; an origin set with "
                           f"a tenant token must resolve to a public address")
        try:
            check_allowed(addresses, allow_private=False)
        except TargetNotAllowed as e:
            raise _bad(field, "origin_not_allowed", f"{field} must be a public address: {host} is (or resolves to) "
                       f"a {e.reason} address; only the operator can set an internal origin") from None
    netloc = f"[{literal}]" if isinstance(literal, ipaddress.IPv6Address) else (str(literal) if literal else host)
    if port is not None:
        netloc += f":{port}"
    return f"{u.scheme.lower()}://{netloc}{u.path.rstrip('/')}"


def check_metadata(value: Any, field: str = "metadata") -> dict[str, str] | None:
    """``value`` as stored metadata (None: none); ``ApiError`` 422 ``invalid_metadata`` past the documented
    bounds (:data:`METADATA_LIMITS`) or for anything but a flat object of string keys and string values."""
    import json
    if value is None or value == {}:
        return None
    lim = METADATA_LIMITS
    if not isinstance(value, dict):
        raise _bad(field, "invalid_metadata", f"{field} must be a JSON object of string keys and string values")
    if len(value) > lim["max_keys"]:
        raise _bad(field, "invalid_metadata", f"{field} has {len(value)} keys; at most {lim['max_keys']}")
    for k, v in value.items():
        if not isinstance(k, str) or not k or len(k) > lim["max_key_chars"]:
            raise _bad(field, "invalid_metadata", f"{field} keys are non-empty strings of at most "
                       f"{lim['max_key_chars']} characters")
        if not isinstance(v, str) or len(v) > lim["max_value_chars"]:
            raise _bad(field, "invalid_metadata", f"{field}[{k[:64]!r}] must be a string of at most "
                       f"{lim['max_value_chars']} characters")
    if len(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()) > lim["max_bytes"]:
        raise _bad(field, "invalid_metadata", f"{field} is larger than {lim['max_bytes']} bytes as JSON")
    return dict(value)


async def settings_fields(body: dict, *, tenant_caller: bool, resolver=None) -> dict:
    """The store fields of the settings present in ``body`` (absent: untouched; null: back to the default)."""
    out: dict = {}
    if "origin" in body:
        v = body["origin"]
        out["origin"] = None if v in (None, "") else await check_origin(v, tenant_caller=tenant_caller,
                                                                          resolver=resolver)
        # Set by a tenant: the edge connects to it at public addresses only (its DNS may change later).
        out["origin_public_only"] = (True if tenant_caller else None) if out["origin"] else None
    if "min_tls_version" in body:
        v = body["min_tls_version"]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = f"{v:.1f}"
        if v not in (None, "", *TLS_VERSIONS):
            raise _bad("min_tls_version", "invalid_min_tls_version", "min_tls_version must be \"1.2\" or \"1.3\" "
                       "(or null for the edge's default)")
        out["min_tls_version"] = v or None
    if "metadata" in body:
        out["custom_metadata"] = check_metadata(body["metadata"])
    if "http2" in body:
        v = body["http2"]
        if v is not None and not isinstance(v, bool):
            raise _bad("http2", "invalid_http2", "http2 must be true, false or null (the edge's default)")
        out["http2"] = v
    return out


def settings_json(d: Any) -> dict:
    """The settings of domain ``d`` as the domain object shows them (null: the default applies)."""
    import json
    md = getattr(d, "custom_metadata", None)
    return {"origin": getattr(d, "origin", None), "min_tls_version": getattr(d, "min_tls_version", None),
            "metadata": json.loads(md) if md else {}, "http2": getattr(d, "http2", None)}
