"""Settings: one typed, validated object for every option of an edgecert process (One concern: the settings, their
checks and where they come from).

Every field of :class:`Settings` is a setting: a TOML key (``edgecert serve --config FILE``, at the top level or
under ``[edgecert]``) and an ``EDGECERT_<NAME>`` environment variable; the variable wins. Values are converted to the
field's type and checked here, once: a wrong value raises :class:`ConfigError` naming the setting and the accepted
form (``edgecert serve`` prints it and exits 2). An unknown TOML key is an error and an unknown ``EDGECERT_*``
variable a warning, both with a "did you mean" when a setting is spelled alike.

The names and defaults listed in ``docs/configuration.md`` (and ``shared/docs/interface.md``) are public.
The ``extra`` table / ``EDGECERT_EXTRA`` JSON of earlier versions is still read: each of its keys is a setting of
its own now, so a warning names the variable to use instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import urllib.parse
import tomllib
import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from edge.config_issuers import as_mapping, issuer_specs, issuers_check, optional_b64url, optional_profile
from edge.names import InvalidHostPort, parse_hostport as _split_hostport

__all__ = ["Settings", "ConfigError", "ConfigWarning", "LETSENCRYPT_PRODUCTION", "LETSENCRYPT_STAGING",
           "parse_hostport"]

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096")

#: ``EDGECERT_*`` variables that are not settings of ``serve`` (the CLI's, the hook's, the tests').
OTHER_VARIABLES = frozenset({
    "EDGECERT_CONFIG", "EDGECERT_EXTRA", "EDGECERT_API_URL", "EDGECERT_HOSTNAMES", "EDGECERT_TEST_DATABASE_URL",
    "EDGECERT_LIVE_DIR", "EDGECERT_FULLCHAIN", "EDGECERT_PRIVKEY", "EDGECERT_DB_PASSWORD", "EDGECERT_TOKEN",
    "EDGECERT_TEST_CRASH_AT",  # a test hook (acme_client/journal.py), not a setting
    "EDGECERT_HTTPS_SOCKET_FD",  # from serve to its TLS edge workers (edge/tls_edge/worker.py), not a setting
})


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting and what it accepts."""


class ConfigWarning(UserWarning):
    """A setting that is ignored or deprecated (unknown variable, the old ``extra`` table)."""


def var(name: str) -> str:
    """The environment variable of setting ``name``."""
    return "EDGECERT_" + name.upper()


def parse_hostport(value: str, *, setting: str = "address", default_port: int | None = None) -> tuple[str, int]:
    """A listening or server address ``host:port`` (``[v6]:port``), with a :class:`ConfigError` naming ``setting``.

    An empty host means every address (``:443`` -> ``0.0.0.0``); port 0 picks a free port."""
    try:
        return _split_hostport(value, what=setting, default_port=default_port, listen=True)
    except InvalidHostPort as e:
        raise ConfigError(str(e)) from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in {"1", "true", "yes", "on"}:
        return True
    if s in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _seq(v: Any) -> list:
    """A list from a TOML array, a JSON array or a comma-separated string."""
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            v = json.loads(s)
        else:
            return [x.strip() for x in s.split(",") if x.strip()]
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"expected a list (or comma-separated values), got {v!r}")
    return list(v)


def _url(*schemes: str) -> Callable[[str | None], str | None]:
    def check(v: str | None) -> str | None:
        if v and not v.startswith(tuple(s + "://" for s in schemes)):
            return "must be an " + " or ".join(f"{s}://" for s in schemes) + " URL"
        if v:
            try:
                u = urllib.parse.urlsplit(v)
                u.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as e:  # "http://[::1" (Invalid IPv6 URL), a port past 65535, ...
                return f"is not a valid URL ({e})"
            if not u.hostname:
                return "must name a host, e.g. " + schemes[0] + "://127.0.0.1:3000"
        return None
    return check


def _directories(v: str) -> str | None:
    urls = [u.strip() for u in (v or "").split(",")]
    if not v or any(not u for u in urls):
        return "must be an https:// URL, or several separated by commas (in order of preference)"
    for u in urls:
        if not u.startswith(("https://", "http://")):
            return f"must be https:// (or http://) URLs, comma-separated; {u!r} is not one"
    if len(set(urls)) != len(urls):
        return "names the same directory twice"
    return None


def _at_least(n: float) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= n else f"must be at least {n:g}"


def _positive(v: Any) -> str | None:
    if v is None:
        return None
    if not v > 0:
        return "must be greater than 0"
    return None if math.isfinite(v) else "must be a finite number (inf would mean no bound at all)"


def _delays(v: tuple) -> str | None:
    return None if all(x >= 0 and math.isfinite(x) for x in v) else "must be seconds >= 0, e.g. 10,60,600"


def _nonempty_delays(v: tuple) -> str | None:
    return "must list at least one delay" if not v else _delays(v)


def _hostport_check(v: str | None, default_port: int | None = None) -> str | None:
    if not v:
        return None
    try:
        _split_hostport(v, default_port=default_port, listen=True)
    except InvalidHostPort as e:
        return f"must be host:port ([ipv6]:port for IPv6): {e.problem}"
    return None


def _database_url(v: str) -> str | None:
    if v.startswith(("postgres://", "postgresql://")):
        return ("use postgresql+psycopg://... (SQLAlchemy's name for the psycopg 3 driver), "
                f"e.g. {v.replace(v.split('://')[0], 'postgresql+psycopg', 1)}")
    if not v.startswith(("sqlite://", "postgresql+psycopg://", "postgresql+psycopg2://")):
        return "must be sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
    return None


def _edge_target(v: str | None) -> str | None:
    if not v:
        return None
    if "://" in v or "/" in v or " " in v.strip():
        return ("must be the DNS name tenants CNAME to (edge.saas.example) or comma-separated IP addresses, "
                "without a scheme or path")
    return None


def _key_type(v: str) -> str | None:
    return None if v in KEY_TYPES else f"must be {', '.join(KEY_TYPES[:-1])} or {KEY_TYPES[-1]}"


def _renew_ratio(v: float) -> str | None:
    return None if 0 < v < 1 else "must be between 0 and 1 (a fraction of the lifetime left)"


def _rate_limits(v: Any) -> str | None:
    from acme_client.ratelimit import load_limits
    try:
        load_limits(v)
    except ValueError as e:
        return str(e)
    return None


def _resolver(v: str | None) -> str | None:
    problem = _hostport_check(v, default_port=53)
    if problem or not v:
        return problem
    host = _split_hostport(v, default_port=53, listen=True)[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:  # the resolver library takes addresses only (a name failed at start, with a traceback)
        return f"must be the IP address of a DNS server (with an optional :port), not the name {host!r}"
    return None


def _log_level(v: str) -> str | None:
    return None if v.upper() in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} else \
        "must be DEBUG, INFO, WARNING, ERROR or CRITICAL"


# -- checks of the challenge-method settings (DNS-01 delegation) -----------------------------------------------
#: Settings whose value is never echoed in an error or a log line (secrets).
NEVER_ECHOED = frozenset({"dns01_tsig", "issuers", "acme_eab_hmac_key"})


def _dns01_server(v: str | None) -> str | None:
    return _hostport_check(v, default_port=53)


def _dns01_zone(v: str | None) -> str | None:
    if not v:
        return None
    from edge.names import InvalidHostname, validate_hostname
    try:
        validate_hostname(v, registrable=False)
    except InvalidHostname as e:
        return f"must be a DNS zone name such as acme.saas.example: {e.message}"
    if "." not in v.strip().rstrip("."):
        return "must be a zone of at least two labels, such as acme.saas.example"
    return None


def _dns01_tsig(v: str | None) -> str | None:
    if not v:
        return None
    from edge.lifecycle.dns01 import TsigKey
    try:
        TsigKey.parse(v)
    except ValueError as e:
        return str(e)
    return None


def _s(default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    """A setting with its check (a function returning what is wrong, or None)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """All settings of one edgecert process. Build it with :meth:`load`; every field is documented in
    ``docs/configuration.md``."""

    # -- where things are ------------------------------------------------------------------------------------
    database_url: str = _s("sqlite:///./edgecert.db", _database_url)
    state_dir: str = "./edgecert-state"
    secret_key: str | None = None
    # -- the CA ----------------------------------------------------------------------------------------------
    acme_directory: str = _s(LETSENCRYPT_PRODUCTION, _directories)
    acme_ca_bundle: str | None = None
    acme_email: str | None = None
    key_type: str = _s("ecdsa-p256", _key_type)
    # Issuance concurrency (orders in flight at once, process-wide).
    max_concurrent_orders: int = _s(4, _at_least(1))
    # Time to wait for one ACME order to finish (authorizations + finalization), seconds.
    order_timeout: float = _s(300.0, _positive)
    # Pacing of new orders per CA account: at most this many per 10 seconds (CertMagic's default).
    orders_per_10s: int = _s(10, _at_least(1))
    # Renewal: fraction of lifetime left at which to renew when the CA offers no ARI window.
    renew_ratio: float = _s(1 / 3, _renew_ratio)
    rate_limits: dict = _s({}, _rate_limits)
    # Issuance retry delays after a failure, seconds (1 min, 10 min, 100 min, then every 6 h; the last repeats).
    retry_schedule: tuple[float, ...] = _s((60.0, 600.0, 6000.0, 21600.0), _nonempty_delays)
    # Transient CA errors (unreachable, 5xx, bad nonce, slow) and failed installs: the SAME order (or certificate)
    # is tried again after these delays, seconds (+-20%; the last repeats).
    transient_retry_schedule: tuple[float, ...] = _s((5.0, 15.0, 60.0, 300.0), _nonempty_delays)
    # -- listeners and the edge ------------------------------------------------------------------------------
    api_listen: str = _s("127.0.0.1:8080", _hostport_check)
    http_listen: str = _s("0.0.0.0:80", _hostport_check)
    https_listen: str = _s("0.0.0.0:443", _hostport_check)
    https_public_port: int = 443
    # The API and plain-HTTP (port 80) listeners cut slow clients off (aiohttp has no deadline of its own): seconds
    # for a whole request head to arrive, counted from the connection's opening or from the previous answer (so
    # also how long an idle keep-alive connection stays open), and for a request body to arrive in full (408).
    listener_head_timeout: float = _s(15.0, _positive)
    listener_body_timeout: float = _s(30.0, _positive)
    listener_max_conns_per_ip: int = _s(256, _at_least(0))
    upstream: str | None = _s(None, _url("http", "https"))
    edge_target: str | None = _s(None, _edge_target)
    dns_resolver: str | None = _s(None, _resolver)
    default_cert: str | None = None
    default_key: str | None = None
    # TLS edge processes sharing the HTTPS port (SO_REUSEPORT); worker 0 runs the whole service.
    workers: int = _s(1, _at_least(1))
    reuse_port: bool = False
    # TLS driven by the C engine (edge/tls_edge/_edgetls.c); false forces Python's ssl module.
    tls_engine: bool = True
    tls_tickets: bool = True
    # Certificates decoded in the background after start.
    prewarm: bool = True
    # Maximum number of built certificates kept in memory (LRU), and/or a memory budget for them / the worker.
    context_cache_size: int = _s(20000, _at_least(1))
    context_cache_mib: float | None = _s(None, _positive)
    edge_memory_mib: float | None = _s(None, _positive)
    placeholder_text: str | None = None
    # Count connections/requests for the benchmark harness (bench/bench_serve.py).
    bench_stats: bool = False
    # -- the TLS edge's bounds (edge/tls_edge/http.py, upstream.py): every phase timed, every buffer capped ----
    # Seconds for a client to finish its TLS handshake.
    edge_handshake_timeout: float = _s(10.0, _positive)
    # Seconds for a request head (request line + headers) to arrive in full: the first one counted from the end
    # of the handshake, a keep-alive one from its first byte.
    edge_request_head_timeout: float = _s(10.0, _positive)
    # Seconds a keep-alive connection may wait, idle, for its next request.
    edge_keepalive_timeout: float = _s(75.0, _positive)
    # Seconds without progress on a request body being uploaded, or on a response the client does not read.
    edge_body_timeout: float = _s(60.0, _positive)
    # Seconds to connect to the origin, and to wait for each read from it (its first byte included).
    edge_upstream_connect_timeout: float = _s(10.0, _positive)
    edge_upstream_read_timeout: float = _s(60.0, _positive)
    # Bytes of a request line or of one header line, and of the whole request head (431/414 beyond).
    edge_max_line_bytes: int = _s(16384, _at_least(256))
    edge_max_head_bytes: int = _s(65536, _at_least(1024))
    # Requests a client may pipeline ahead of the answers; beyond, the edge stops reading from it.
    edge_max_pipeline: int = _s(16, _at_least(1))
    # Open TLS connections per client address (0: no cap); more are closed at once.
    edge_max_conns_per_ip: int = _s(256, _at_least(0))
    # -- maintenance -----------------------------------------------------------------------------------------
    # How often the maintenance sweep looks for due work, seconds.
    sweep_interval: float = _s(30.0, _positive)
    # DNS re-check backoff for domains that do not point at the edge yet: first delay and cap, seconds.
    dns_recheck_initial: float = _s(30.0, _positive)
    dns_recheck_max: float = _s(3600.0, _positive)
    # After a swap, a real handshake against these host:port addresses proves the new certificate is served
    # (default: the service's own TLS listener).
    verify_addresses: tuple[str, ...] = ()
    probe_interval: float = _s(600.0, _at_least(0))
    probe_rate: float = _s(20.0, _positive)
    probe_address: str | None = _s(None, _hostport_check)
    # -- other servers: files, exports, the reload hook ------------------------------------------------------
    exports: bool = True
    # While the database is unreachable: the API's 503 answers carry this Retry-After (seconds), and each node
    # keeps the HTTP-01 answers it published in memory (at most challenge_memory_max) to answer without it.
    store_retry_after: int = _s(5, _at_least(1))
    challenge_memory_max: int = _s(10000, _at_least(1))
    nginx_site_include: str | None = "/etc/nginx/edgecert-site.conf"
    nginx_listen: str = "443 ssl"
    reload_command: str | None = None
    reload_webhook: str | None = _s(None, _url("http", "https"))
    reload_webhook_secret: str | None = None
    reload_timeout: float = _s(60.0, _positive)
    hook_batch_window: float = _s(1.0, _at_least(0))
    hook_retry_delays: tuple[float, ...] = _s((5.0, 30.0, 120.0, 600.0), _nonempty_delays)
    # -- API, status page, diagnostics -----------------------------------------------------------------------
    admin_token: str | None = None
    public_rate_per_s: float = _s(1.0, _positive)
    public_burst: int = _s(30, _at_least(1))
    # Ownership before binding: a name claimed with a tenant token is ordered and served only after the tenant
    # proves control with its TXT record _edgecert-verify.<name> (the operator token may add names as before).
    tenant_claims_require_proof: bool = True
    tenant_renew_min_age: float = _s(86400.0, _at_least(0))
    # Allow diagnostics to connect to loopback / private addresses (lab setups, tests).
    diagnose_allow_private: bool = False
    diagnose_cafile: str | None = None
    # CPU-heavy analysis (triage, certificate parsing of uploads) runs in this many worker processes, off the loop;
    # a call gets analysis_budget seconds of work before its worker is killed and it answers 503.
    analysis_workers: int = _s(2, _at_least(1))
    analysis_budget: float = _s(5.0, _positive)
    # The most certificates an upload may carry (leaf + chain, before unrelated ones are dropped) and their size.
    upload_max_certificates: int = _s(10, _at_least(1))
    upload_max_chain: int = _s(5, _at_least(1))
    # Extra PEM roots (comma-separated files) trusted when validating uploaded certificates.
    upload_trust_roots: str | None = None
    status_page_brand: str = "edgecert"
    status_page_logo_url: str | None = None
    status_page_color: str = "#0b5fff"
    expose_domain_metrics: bool = True
    log_level: str = _s("INFO", _log_level)
    log_json: bool = False
    # -- outgoing webhooks (edge/lifecycle/webhooks.py) ------------------------------------------------------
    # One URL, HMAC-SHA256 signed with the secret, for the event kinds in webhook_events ("*" = all; comma-separated
    # kinds, shell-style patterns such as "probe_*" allowed).
    webhook_url: str | None = _s(None, _url("http", "https"))
    webhook_secret: str | None = None
    webhook_events: str = "*"
    # Delays between delivery attempts, seconds; after the last one the delivery is "failed".
    webhook_retry_schedule: tuple[float, ...] = _s((10.0, 60.0, 600.0, 3600.0, 21600.0), _nonempty_delays)
    # -- several issuers, EAB, profiles (acme_client/issuers.py) -----------------------------------------------
    # ``[[issuers]]`` tables (directory, eab_kid, eab_hmac_key, ca_bundle, profile, caa_identities, rate_limits,
    # orders_per_10s), in order of preference; empty: acme_directory (a comma-separated list) is the list.
    issuers: tuple[dict, ...] = _s((), issuers_check)
    # External Account Binding for the first directory of acme_directory (ZeroSSL, Google Trust Services).
    acme_eab_kid: str | None = None
    acme_eab_hmac_key: str | None = _s(None, optional_b64url)
    # The ACME profile asked for when neither the domain nor its issuer names one (meta.profiles of the CA).
    acme_profile: str | None = _s(None, optional_profile)
    # Seconds an issuer may stay unreachable / answer 5xx before a NEW order goes to the next issuer.
    issuer_fallback_wait: float = _s(30.0, _at_least(0))
    # Seconds an issuer found down is skipped (no request at all) before it is tried again.
    issuer_down_cooldown: float = _s(60.0, _at_least(0))
    # -- challenge methods: DNS-01 delegation, TLS-ALPN-01, CAA ----------------------------------------------
    # CAA (RFC 8659) checked before every order: a name whose CAA records allow none of the configured CAs gets no
    # order (last_error_code caa_forbidden) until the record is fixed (docs/caa.md).
    caa_check: bool = True
    # DNS-01 through a delegated CNAME (docs/dns-01.md): the authoritative DNS server (host:port) that takes RFC 2136
    # updates for the challenge zone, the zone tenants delegate _acme-challenge to, and the TSIG key signing the
    # updates (name:algorithm:base64secret; never logged). All three, or none (DNS-01 off).
    dns01_server: str | None = _s(None, _dns01_server)
    dns01_zone: str | None = _s(None, _dns01_zone)
    dns01_tsig: str | None = _s(None, _dns01_tsig)
    # Before asking the CA for HTTP-01, edgecert fetches its own probe answer through the name's address on this
    # port: 0 = the port of http_listen (80 in production), -1 = no probe (e.g. when the edge cannot reach its own
    # public address); a closed port makes "auto" use TLS-ALPN-01 without a failed validation at the CA.
    http01_probe_port: int = _s(0, lambda v: None if -1 <= v <= 65535 else "must be -1 (off), 0 (the port of "
                                "http_listen) or a port 1-65535")
    # -- per-hostname settings and fleet tooling -------------------------------------------------------------
    # Upstream pools the edge keeps at most for per-hostname / per-tenant origins (one keep-alive pool per origin
    # URL; the least recently used beyond this is closed). The global EDGECERT_UPSTREAM pool is not counted.
    edge_max_origin_pools: int = _s(256, _at_least(1))
    # -- HTTP/2 and the data plane ---------------------------------------------------------------------------
    # HTTP/2 offered by ALPN (h2, then http/1.1) on the TLS edge; a domain's own ``http2`` (true/false) wins over
    # this for its name (edge/tls_edge/h2.py, docs/http2.md).
    edge_http2: bool = True
    # Streams a client may have open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS; beyond:
    # REFUSED_STREAM).
    edge_http2_max_streams: int = _s(100, _at_least(1))
    # HPACK dynamic table the edge keeps for a client's request headers, bytes (SETTINGS_HEADER_TABLE_SIZE).
    edge_http2_header_table_bytes: int = _s(4096, _at_least(0))
    # Flow-control window per stream (request body bytes the edge accepts ahead of the origin) and per connection.
    edge_http2_stream_window: int = _s(65535, _at_least(65535))  # less would break clients that send before our SETTINGS
    edge_http2_connection_window: int = _s(1048576, _at_least(65535))
    # Rapid reset (CVE-2023-44487) and control-frame floods: streams a client cancels, and SETTINGS/PING/
    # PRIORITY/empty frames it sends, per edge_http2_flood_window seconds; beyond, GOAWAY(ENHANCE_YOUR_CALM).
    edge_http2_max_resets: int = _s(200, _at_least(1))
    edge_http2_max_control_frames: int = _s(500, _at_least(10))
    edge_http2_flood_window: float = _s(10.0, _positive)
    # -- renewal planning and removal ------------------------------------------------------------------------
    # Renew when less than this many seconds of the certificate are left (e.g. 2592000: "under 30 days"), instead of
    # renew_ratio; clamped to half the lifetime, and lifetimes of 10 days or less always renew at half (docs/renewal.md).
    renew_before: float | None = _s(None, _positive)
    # The minimum spacing between two renewals of one name, seconds (at most a tenth of the lifetime).
    renew_min_spacing: float = _s(86400.0, _at_least(0))
    # Removing a domain: seconds each call to the CA may take (deactivating authorizations, revoking).
    removal_ca_timeout: float = _s(20.0, _positive)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
             **overrides: Any) -> "Settings":
        """Read ``config_file`` (TOML, optional; else ``$EDGECERT_CONFIG``), then ``EDGECERT_*`` variables, then
        ``overrides`` (keyword arguments named like the fields).

        Raises:
            ConfigError: unreadable file, unknown key, or a value that cannot be used (the message names it).
        """
        env = os.environ if env is None else env
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        if config_file is None and env.get("EDGECERT_CONFIG"):
            config_file = env["EDGECERT_CONFIG"]
        if config_file is not None:
            try:
                data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {config_file}") from None
            except OSError as e:
                raise ConfigError(f"config file {config_file} cannot be read: {e.strerror}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {config_file} is not valid TOML: {e}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"config file {config_file} is not UTF-8 text (TOML)") from None
            section = data.get("edgecert", data)
            if not isinstance(section, dict):
                raise ConfigError(f"[edgecert] in {config_file} must be a table")
            if section is not data and "issuers" in data and "issuers" not in section:
                values["issuers"] = data["issuers"]  # [[issuers]] at the top level next to [edgecert]
            for k, v in section.items():
                key = k.replace("-", "_").lower()
                if key == "extra":
                    values.update(_legacy_extra(v, f"the [extra] table of {config_file}", known))
                elif key not in known:
                    raise ConfigError(f"unknown setting {k!r} in {config_file}{_did_you_mean(key, known)}")
                else:
                    values[key] = v
        if env.get("EDGECERT_ACME_DIRECTORY") and not env.get("EDGECERT_ISSUERS"):
            values.pop("issuers", None)  # the variable wins over the file's [[issuers]]
        if env.get("EDGECERT_EXTRA"):
            values.update(_legacy_extra(env["EDGECERT_EXTRA"], "EDGECERT_EXTRA", known))
        for name in sorted(env):
            if not name.startswith("EDGECERT_") or name in OTHER_VARIABLES:
                continue
            key = name[len("EDGECERT_"):].lower()
            if key in known:
                values[key] = env[name]
            else:
                hint = _did_you_mean(key, known, prefix="EDGECERT_")
                warnings.warn(f"{name} is not an edgecert setting and is ignored{hint}", ConfigWarning, stacklevel=2)
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        values.update(overrides)
        return cls._coerce(values)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> "Settings":
        hints = typing.get_type_hints(cls)
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in values:
                try:
                    out[f.name] = _convert(hints[f.name], values[f.name])
                except (TypeError, ValueError) as e:
                    raise ConfigError(f"{var(f.name)} ({f.name}): {e}") from None
        s = cls(**out)
        s.validate()
        return s

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first setting whose value cannot be used, or a combination that cannot."""
        for f in fields(self):
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name)) if check else None
            if problem:
                got = "(value not shown: it holds a secret)" if f.name in NEVER_ECHOED else repr(getattr(self, f.name))
                raise ConfigError(f"{var(f.name)} ({f.name}) {problem}; got {got}")
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError("EDGECERT_WEBHOOK_URL needs EDGECERT_WEBHOOK_SECRET: deliveries are signed")
        if bool(self.acme_eab_kid) != bool(self.acme_eab_hmac_key):
            raise ConfigError("EDGECERT_ACME_EAB_KID and EDGECERT_ACME_EAB_HMAC_KEY go together (External Account "
                              "Binding of the first directory): set both or neither")
        if self.dns_recheck_max < self.dns_recheck_initial:
            raise ConfigError("EDGECERT_DNS_RECHECK_MAX must not be smaller than EDGECERT_DNS_RECHECK_INITIAL")
        dns01 = {"dns01_server": self.dns01_server, "dns01_zone": self.dns01_zone, "dns01_tsig": self.dns01_tsig}
        if any(dns01.values()) and not all(dns01.values()):
            missing = [var(k) for k, v in dns01.items() if not v]
            raise ConfigError(f"DNS-01 needs EDGECERT_DNS01_SERVER, EDGECERT_DNS01_ZONE and EDGECERT_DNS01_TSIG "
                              f"together; {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")

    def issuer_specs(self) -> list[dict[str, Any]]:
        """The issuers in order (:func:`edge.config_issuers.issuer_specs`)."""
        return issuer_specs(self)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` (checked like any other value)."""
        s = dataclasses.replace(self, **changes)
        s.validate()
        return s

    def summary(self) -> list[str]:
        """What is enabled and what is not, in words, for the start-up log."""
        ca = self.acme_directory if not self.issuers else ", ".join(t["directory"] for t in self.issuers)
        ca_words = ("Let's Encrypt PRODUCTION (test with EDGECERT_ACME_DIRECTORY=" + LETSENCRYPT_STAGING + " first)"
                    if ca == LETSENCRYPT_PRODUCTION else "Let's Encrypt staging" if ca == LETSENCRYPT_STAGING else ca)
        return [
            "operator API: " + ("on, " + self.api_listen if self.admin_token else
                                "DISABLED: every operator call is refused until EDGECERT_ADMIN_TOKEN is set"),
            "edge target: " + (self.edge_target or "not set (EDGECERT_EDGE_TARGET): a tenant name only has to resolve "
                                                   "to this machine's addresses"),
            "CA: " + ca_words,
            "upstream: " + (self.upstream or "not set (EDGECERT_UPSTREAM): the edge answers a placeholder page"),
            f"listeners: api {self.api_listen}, http {self.http_listen}, https {self.https_listen}; "
            f"TLS edge workers: {self.workers}; TLS driver: {'C engine if built' if self.tls_engine else 'python-ssl'}",
            "reload hook: " + (self.reload_command or self.reload_webhook or "none"),
            f"store: {self.redacted()['database_url']}; state dir: {self.state_dir}",
            "DNS-01 (delegated _acme-challenge): " + (f"on, zone {self.dns01_zone} updated on {self.dns01_server} "
                                                      f"with TSIG key {self.redacted()['dns01_tsig']}"
                                                      if self.dns01_enabled else "off (EDGECERT_DNS01_SERVER not set)"),
        ]

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def dns01_enabled(self) -> bool:
        """DNS-01 through a delegated CNAME is configured (server, zone and TSIG key)."""
        return bool(self.dns01_server and self.dns01_zone and self.dns01_tsig)

    def dns_resolver_hostport(self) -> tuple[str, int] | None:
        if not self.dns_resolver:
            return None
        return parse_hostport(self.dns_resolver, setting="EDGECERT_DNS_RESOLVER", default_port=53)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets replaced, for logs and ``/v1/config``."""
        d = dataclasses.asdict(self)
        for k in ("admin_token", "secret_key", "reload_webhook_secret", "webhook_secret", "acme_eab_hmac_key"):
            if d.get(k):
                d[k] = "***"
        d["issuers"] = [{**t, **({"eab_hmac_key": "***"} if t.get("eab_hmac_key") else {})}
                        for t in d.get("issuers") or ()]
        if d.get("dns01_tsig"):
            d["dns01_tsig"] = ":".join(d["dns01_tsig"].split(":", 2)[:2] + ["***"])
        if d.get("database_url") and "@" in d["database_url"]:
            scheme, _, rest = d["database_url"].partition("://")
            d["database_url"] = scheme + "://***@" + rest.split("@", 1)[1]
        return d

    def to_json(self) -> str:
        """Every setting as JSON (for the edge workers this process starts); :meth:`from_json` reads it back."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        return cls._coerce(json.loads(text))


def _convert(hint: Any, raw: Any) -> Any:
    """``raw`` (a TOML value or a variable's text) as the field type ``hint``."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if raw is None or raw == "":
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return _bool(raw)
    if origin in (int, float):
        kind = "a whole number" if origin is int else "a number"
        if isinstance(raw, (bool, dict, list)) or (origin is int and isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"expected {kind}, got {raw!r}")
        try:
            return origin(raw.strip() if isinstance(raw, str) else raw)
        except ValueError:
            raise ValueError(f"expected {kind}, got {raw!r}") from None
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_convert(item, x) for x in _seq(raw))
    if origin is dict:
        return as_mapping(raw)
    if isinstance(raw, (dict, list, bool)):
        raise ValueError(f"expected text, got {raw!r}")
    return str(raw)


def _did_you_mean(key: str, known: set[str], *, prefix: str = "") -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {prefix}{close[0].upper() if prefix else close[0]}?)" if close else ""


def _legacy_extra(raw: Any, where: str, known: set[str]) -> dict[str, Any]:
    """The ``extra`` table of earlier versions: each key is a setting of its own now."""
    try:
        table = as_mapping(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    for k in table:
        if k not in known:
            raise ConfigError(f"unknown setting {k!r} in {where}{_did_you_mean(k, known)}")
    warnings.warn(f"{where} is deprecated: set " + ", ".join(f"{var(k)} (or `{k}` in the TOML file)" for k in table)
                  + " instead", ConfigWarning, stacklevel=3)
    return table
