"""Settings: every option comes from a TOML file or an ``EDGECERT_*`` environment variable; the variable wins.

The names and defaults of the variables listed in ``docs/configuration.md`` (and interface.md) are public.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "ConfigError", "LETSENCRYPT_PRODUCTION", "LETSENCRYPT_STAGING", "parse_hostport"]

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def parse_hostport(value: str, *, setting: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    Raises:
        ConfigError: when the value is not of that form.
    """
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{setting}: expected [ipv6]:port, got {value!r}")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep:
            raise ConfigError(f"{setting}: expected host:port, got {value!r}")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{setting}: port must be a number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{setting}: port out of range in {value!r}")
    return host or "0.0.0.0", port


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in {"1", "true", "yes", "on"}:
        return True
    if s in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {v!r}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """All settings of one edgecert process. Build it with :meth:`load`."""

    database_url: str = "sqlite:///./edgecert.db"
    state_dir: str = "./edgecert-state"
    acme_directory: str = LETSENCRYPT_PRODUCTION
    acme_ca_bundle: str | None = None
    acme_email: str | None = None
    api_listen: str = "127.0.0.1:8080"
    http_listen: str = "0.0.0.0:80"
    https_listen: str = "0.0.0.0:443"
    upstream: str | None = None
    edge_target: str | None = None
    dns_resolver: str | None = None
    admin_token: str | None = None
    reload_command: str | None = None
    reload_webhook: str | None = None
    reload_webhook_secret: str | None = None
    reload_timeout: float = 60.0
    secret_key: str | None = None
    key_type: str = "ecdsa-p256"
    default_cert: str | None = None
    default_key: str | None = None
    https_public_port: int = 443
    # How often the maintenance sweep looks for due work, seconds.
    sweep_interval: float = 30.0
    # DNS re-check backoff for domains that do not point at the edge yet: first delay and cap, seconds.
    dns_recheck_initial: float = 30.0
    dns_recheck_max: float = 3600.0
    # Issuance concurrency (orders in flight at once, process-wide).
    max_concurrent_orders: int = 4
    # Verify that the served certificate after a swap is the new one against these host:port addresses
    # (default: the service's own TLS listener).
    verify_addresses: tuple[str, ...] = ()
    # Time to wait for one ACME order to finish (authorizations + finalization), seconds.
    order_timeout: float = 300.0
    # Allow diagnostics to connect to loopback / private addresses (lab setups, tests).
    diagnose_allow_private: bool = False
    # Renewal: fraction of lifetime left at which to renew when the CA offers no ARI window.
    renew_ratio: float = 1 / 3
    # Extra PEM roots (comma-separated files) trusted when validating uploaded certificates.
    upload_trust_roots: str | None = None
    # nginx snippet included by every generated server block (exports/nginx-servers.conf).
    nginx_site_include: str | None = "/etc/nginx/edgecert-site.conf"
    nginx_listen: str = "443 ssl"
    # Pacing of new orders per CA account: at most this many per 10 seconds (CertMagic's default).
    orders_per_10s: int = 10
    # Maximum number of SSLContexts kept built in memory (LRU); each costs ~20 KiB.
    context_cache_size: int = 20000
    log_level: str = "INFO"
    log_json: bool = False
    status_page_brand: str = "edgecert"
    status_page_logo_url: str | None = None
    status_page_color: str = "#0b5fff"
    expose_domain_metrics: bool = True
    # Outgoing webhooks (edge/webhooks.py): one URL, HMAC-SHA256 signed with the secret, for the event kinds in
    # webhook_events ("*" = all; comma-separated kinds, shell-style patterns such as "probe_*" allowed).
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_events: str = "*"
    # Delays between delivery attempts, seconds (comma-separated); after the last one the delivery is "failed".
    webhook_retry_schedule: str = "10,60,600,3600,21600"
    rate_limits: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
             **overrides: Any) -> "Settings":
        """Read ``config_file`` (TOML, optional), then ``EDGECERT_*`` variables, then ``overrides``.

        Raises:
            ConfigError: unreadable file, unknown key, or a value of the wrong type.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        if config_file is None and env.get("EDGECERT_CONFIG"):
            config_file = env["EDGECERT_CONFIG"]
        if config_file is not None:
            try:
                data = tomllib.loads(Path(config_file).read_text())
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {config_file}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {config_file} is not valid TOML: {e}") from None
            section = data.get("edgecert", data)
            for k, v in section.items():
                key = k.replace("-", "_").lower()
                if key not in known:
                    raise ConfigError(f"unknown setting {k!r} in {config_file}")
                values[key] = v
        for name in known:
            var = "EDGECERT_" + name.upper()
            if var in env:
                values[name] = env[var]
        values.update(overrides)
        return cls._coerce(values)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> "Settings":
        out: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            if f.name not in values:
                continue
            raw = values[f.name]
            default = getattr(defaults, f.name)
            try:
                if f.name == "verify_addresses":
                    if isinstance(raw, str):
                        raw = tuple(a.strip() for a in raw.split(",") if a.strip())
                    out[f.name] = tuple(raw)
                elif f.name in {"rate_limits", "extra"}:
                    if isinstance(raw, str):
                        import json
                        raw = json.loads(raw) if raw.strip() else {}
                    out[f.name] = dict(raw)
                elif isinstance(default, bool):
                    out[f.name] = _bool(raw)
                elif isinstance(default, int):
                    out[f.name] = int(raw)
                elif isinstance(default, float):
                    out[f.name] = float(raw)
                else:
                    out[f.name] = None if raw in (None, "") else str(raw)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"setting {f.name}: {e}") from None
        s = dataclasses.replace(defaults, **out)
        s.validate()
        return s

    def validate(self) -> None:
        for name in ("api_listen", "http_listen", "https_listen"):
            parse_hostport(getattr(self, name), setting=name.upper())
        if self.dns_resolver:
            parse_hostport(self.dns_resolver if ":" in self.dns_resolver else self.dns_resolver + ":53",
                           setting="EDGECERT_DNS_RESOLVER")
        if self.key_type not in {"ecdsa-p256", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096"}:
            raise ConfigError(f"EDGECERT_KEY_TYPE must be ecdsa-p256, ecdsa-p384, rsa2048, rsa3072 or rsa4096, "
                              f"not {self.key_type!r}")
        if self.upstream and not self.upstream.startswith(("http://", "https://")):
            raise ConfigError("EDGECERT_UPSTREAM must be an http:// or https:// URL")
        if not 0 < self.renew_ratio < 1:
            raise ConfigError("renew_ratio must be between 0 and 1")
        if self.max_concurrent_orders < 1:
            raise ConfigError("max_concurrent_orders must be at least 1")
        if self.webhook_url:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ConfigError("EDGECERT_WEBHOOK_URL must be an http:// or https:// URL")
            if not self.webhook_secret:
                raise ConfigError("EDGECERT_WEBHOOK_URL needs EDGECERT_WEBHOOK_SECRET: deliveries are signed")
        try:
            if any(float(x) < 0 for x in self.webhook_retry_schedule.split(",") if x.strip()):
                raise ValueError
        except ValueError:
            raise ConfigError("EDGECERT_WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds, "
                              "e.g. 10,60,600,3600,21600") from None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def dns_resolver_hostport(self) -> tuple[str, int] | None:
        if not self.dns_resolver:
            return None
        r = self.dns_resolver if ":" in self.dns_resolver.strip("[]") or self.dns_resolver.startswith("[") \
            else self.dns_resolver + ":53"
        return parse_hostport(r, setting="EDGECERT_DNS_RESOLVER")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets replaced, for logs and ``/v1/config``."""
        d = dataclasses.asdict(self)
        for k in ("admin_token", "secret_key", "reload_webhook_secret", "webhook_secret"):
            if d.get(k):
                d[k] = "***"
        if d.get("database_url") and "@" in d["database_url"]:
            scheme, _, rest = d["database_url"].partition("://")
            d["database_url"] = scheme + "://***@" + rest.split("@", 1)[1]
        return d
