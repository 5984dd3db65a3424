"""``edgecert``: serve, diagnose, triage, demo, and the operator commands (domains, tenants) over the API.

One concern: the command line -- parsing arguments, checking them (bad usage exits 2), calling the API or the
module that does the work, and printing the outcome."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from edge import __version__
from edge import cli_fleet as fleet

__all__ = ["main"]

USAGE = """usage: edgecert <command> [options]

commands:
  serve [--config FILE]            run the API, the plain-HTTP listener, the TLS edge and the scheduler
  demo                             start a local Pebble CA + DNS, onboard a demo domain, serve it (Ctrl-C stops)
  diagnose HOSTNAME [--connect HOST:PORT] [--cafile PEM] [--json]
                                   probe any TLS endpoint and name what is wrong
  triage [TEXT | -] [--hostname H] [--json]
                                   classify a pasted browser / curl / openssl / client error
  domains add|list|import|export|set|show|remove|renew|events ...
                                   manage tenant domains through the API
  tenants add|list|token|set ...   manage tenants and their API tokens through the API
  completion bash|zsh              print a shell completion script (eval "$(edgecert completion bash)")
  version                          print the version

Run 'edgecert <command> --help' for a command's options.
"""


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt
        out = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
               .replace("+00:00", "Z"), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_SECRET = re.compile(r"(?i)(bearer\s{1,16})[^\s'\"\\]{1,4096}|\bect_[A-Za-z0-9_-]{1,512}")


def _redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class _SafeRecords(logging.Filter):
    """No token reaches the log, and a malformed request is one line, not a traceback.

    aiohttp logs a request its parser refuses at ERROR with the exception, whose text quotes the raw header line
    (``Authorization: Bearer ...``): such a record becomes one WARNING line naming the client and the problem. Any
    other record has bearer tokens and tenant tokens (``ect_...``) in its message and traceback replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        exc = record.exc_info[1] if record.exc_info else None
        if record.name.startswith("aiohttp") and isinstance(exc, HttpProcessingError):
            what = (str(exc.message or "").strip().splitlines() or ["malformed request"])[0].rstrip(": ")
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "bad HTTP request from %s: %s %s", (remote, exc.code, _redact(what))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that does not format is left to the handler
            return True
        if _SECRET.search(message):
            record.msg, record.args = _redact(message), ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            if _SECRET.search(text):
                record.exc_text = _redact(text)
        return True


def _setup_logging(level: str = "INFO", json_logs: bool = False) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _SafeRecords) for f in handler.filters):
            handler.addFilter(_SafeRecords())
    if json_logs:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonFormatter())
    for noisy in ("acme.client", "urllib3", "aiohttp.access", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecert serve", description="Run edgecert: the API, the plain-HTTP listener "
                                "(ACME HTTP-01 + redirect), the TLS edge and the scheduler, in one process. Every "
                                "setting comes from --config or an EDGECERT_* variable (see docs/configuration.md); "
                                "a setting it cannot use exits 2 naming it.")
    p.add_argument("--config", metavar="FILE", help="TOML settings file (EDGECERT_* variables win)")
    return p


def cmd_serve(argv: list[str]) -> int:
    p = serve_parser()
    args = p.parse_args(argv)
    import warnings

    from edge.config import ConfigError, ConfigWarning, Settings
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigWarning)
            settings = Settings.load(args.config)
    except ConfigError as e:
        print(f"edgecert: configuration error: {e}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level, settings.log_json)
    for w in caught:
        if issubclass(w.category, ConfigWarning):
            logging.getLogger("edge.config").warning("%s", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for line in settings.summary():
        logging.getLogger("edge.config").info("%s", line)
    import asyncio
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    from edge.app import run_server
    from edge.tls_edge.worker import limit_malloc_arenas
    limit_malloc_arenas(settings)
    try:
        asyncio.run(run_server(settings))
    except ConfigError as e:  # a setting that could not be used once serving began: a listen address, the state dir
        print(f"edgecert: configuration error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # anything else the system refused (a listener that cannot bind is a ConfigError above)
        print(f"edgecert: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


# -- operator CLI over the API -----------------------------------------------------------------------------------
class ApiClient:
    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                try:
                    return r.status, json.loads(raw) if raw else None
                except ValueError:  # not JSON (not UTF-8, or a 4,300+ digit number included)
                    raise SystemExit(f"edgecert: {self.base} answered {r.status} with something that is not JSON; "
                                     f"is --api / $EDGECERT_API_URL the edgecert API?") from None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except json.JSONDecodeError:
                return e.code, {"error": {"code": "http_error", "message": raw.decode(errors="replace")[:300]}}
        except urllib.error.URLError as e:
            raise SystemExit(f"edgecert: cannot reach the API at {self.base}: {e.reason}") from None


def _api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=os.environ.get("EDGECERT_API_URL"),
                   help="API base URL (default: $EDGECERT_API_URL or http://$EDGECERT_API_LISTEN)")
    p.add_argument("--token", default=None, help="bearer token (default: $EDGECERT_TOKEN or $EDGECERT_ADMIN_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _client(args) -> ApiClient:
    base = args.api or "http://" + os.environ.get("EDGECERT_API_LISTEN", "127.0.0.1:8080")
    try:
        u = urllib.parse.urlsplit(base)
        u.port  # noqa: B018 - raises ValueError on a bad port
        ok = u.scheme in ("http", "https") and bool(u.hostname)
    except ValueError:
        ok = False
    if not ok:
        print(f"edgecert: the API URL {base[:200]!r} is not an http:// or https:// URL with a host "
              f"(--api or $EDGECERT_API_URL, e.g. http://127.0.0.1:8080)", file=sys.stderr)
        raise SystemExit(2)
    token = args.token or os.environ.get("EDGECERT_TOKEN") or os.environ.get("EDGECERT_ADMIN_TOKEN")
    return ApiClient(base, token)


def _fail(status: int, body: Any) -> int:
    err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
    print(f"error ({status} {err.get('code', '')}): {err.get('message', body)}", file=sys.stderr)
    if isinstance(err.get("dns_records"), list) and err["dns_records"]:
        print(_records_text(err["dns_records"]), file=sys.stderr)
    return 1


def _records_text(records: list, label: str = "DNS record to create") -> str:
    """``dns_records`` as zone-file lines, one per record, with what each is for."""
    lines = []
    for r in records:
        if not isinstance(r, dict):
            continue
        rtype = r.get("type")
        value = f'"{r.get("value")}"' if rtype == "TXT" else (str(r.get("value")) if rtype in ("A", "AAAA")
                                                               else f"{r.get('value')}.")
        lines.append(f"  {label}: {r.get('name')}. {rtype} {value}  ({r.get('purpose')})")
    return "\n".join(lines)


_table = fleet.table


def _show_domain(d: dict) -> str:
    c = d.get("certificate") or {}
    lines = [f"{d['hostname']}  [{d['status']}]  tenant={d['tenant']}"]
    if d.get("last_error"):
        lines.append(f"  problem: {d['last_error']}")
    rec = (d.get("dns") or {}).get("expected_record") or {}
    if (d.get("dns") or {}).get("ready_for_cutover"):
        lines.append(f"  ready: switch your DNS now ({rec.get('text')}); the certificate is already served")
    if d.get("dns_records"):
        lines.append(_records_text(d["dns_records"], "DNS record (keep it)" if d["status"] == "active"
                                   else "DNS record to create"))
    elif rec.get("text") and d["status"] in ("pending_dns",):
        lines.append(f"  DNS record to create: {rec['text']}")
    if c:
        lines.append(f"  certificate: serial {c['serial']}, valid until {c['not_after']} ({c.get('days_left')} days)")
        lines.append(f"  issuer: {c['issuer']}")
    if d.get("next_renewal_at"):
        lines.append(f"  next renewal: {d['next_renewal_at']}")
    if d.get("retry_at"):
        lines.append(f"  next attempt: {d['retry_at']}")
    settings = [f"{k}={d[k]}" for k in ("origin", "min_tls_version", "http2") if d.get(k) is not None]
    settings += [f"metadata.{k}={v}" for k, v in sorted((d.get("metadata") or {}).items())]
    if settings:
        lines.append(f"  settings: {', '.join(settings)}")
    return "\n".join(lines)


#: Offered by the shell completion for --status (the API checks the value: a 422 names the accepted ones).
STATUS_WORDS = ("pending_ownership", "pending_dns", "pending_issuance", "issuing", "rate_limited", "active", "failed",
             "expired")


def _settings_args(p: argparse.ArgumentParser, *, patch: bool) -> None:
    """The per-hostname settings options (``domains add`` and ``domains set``)."""
    p.add_argument("--origin", metavar="URL", help="upstream URL the edge proxies this name to (http or https; "
                   "default: the tenant's origin, else EDGECERT_UPSTREAM)" + ("; '' resets it" if patch else ""))
    p.add_argument("--min-tls-version", choices=("1.2", "1.3", "") if patch else ("1.2", "1.3"),
                   help="lowest TLS version the edge accepts for this name" + ("; '' resets it" if patch else ""))
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                   help="your own key/value metadata (repeat for several; at most 32 keys, key <= 64 and value <= "
                   "512 characters, 8 KiB in all)" + ("; replaces the whole object, --metadata '' clears it"
                                                      if patch else ""))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--http2", dest="http2", action="store_true", default=None, help="offer HTTP/2 for this name")
    g.add_argument("--no-http2", dest="http2", action="store_false", help="do not offer HTTP/2 for this name")


def _settings_body(args, p: argparse.ArgumentParser) -> dict:
    body: dict = {}
    if args.origin is not None:
        body["origin"] = args.origin or None
    if args.min_tls_version is not None:
        body["min_tls_version"] = args.min_tls_version or None
    if args.metadata is not None:
        md: dict = {}
        for item in args.metadata:
            if item == "":
                continue
            k, eq, v = item.partition("=")
            if not eq or not k:
                p.error(f"--metadata takes KEY=VALUE, not {item!r}")
            md[k] = v
        body["metadata"] = md
    if args.http2 is not None:
        body["http2"] = args.http2
    return body


def domains_parser() -> argparse.ArgumentParser:
    """The ``edgecert domains`` parser (also the source of the shell completion)."""
    p = argparse.ArgumentParser(prog="edgecert domains", description="Manage tenant domains through the API "
                                "($EDGECERT_API_URL, token $EDGECERT_ADMIN_TOKEN or $EDGECERT_TOKEN).")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = sub.add_parser("add", help="onboard a domain (issue and serve a certificate for it)",
                       description="Onboard HOSTNAME: it is checked, stored and worked on at once (DNS check, "
                       "certificate order, served by the edge). Prints the DNS record(s) the tenant must create.")
    a.add_argument("hostname", help="the tenant's name, e.g. shop.example.com")
    a.add_argument("--tenant", help="tenant name (required with the operator token; created if new)")
    _settings_args(a, patch=False)
    a.add_argument("--wait", action="store_true", help="show progress until active or failed")
    a.add_argument("--validation", choices=("auto", "http-01", "tls-alpn-01", "dns-01"),
                   help="how the CA validates the name (default auto; a wildcard needs dns-01 or auto)")
    a.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds --wait waits (default 600)")
    _api_args(a)
    ls = sub.add_parser("list", help="list domains, in natural order (first page; --all for every one)",
                        description="List domains in natural hostname order. Without --all the first page is "
                        "shown and stderr says how many more there are; nothing is cut off silently. Filters "
                        "combine (AND).")
    ls.add_argument("--status", help="only this status (pending_dns, active, failed, ...)"
                    ).completion_values = STATUS_WORDS  # type: ignore[attr-defined]
    ls.add_argument("--tenant", help="only this tenant's domains")
    ls.add_argument("-q", "--search", help="only hostnames containing this text")
    ls.add_argument("--prefix", help="only hostnames starting with this text")
    ls.add_argument("--issuer", help="only names whose certificate comes from this CA (its ACME directory URL, or "
                    "a part of the issuer name, e.g. 'Let's Encrypt')")
    ls.add_argument("--expiring-before", metavar="DATE|DAYS", help="only names whose certificate ends before this "
                    "ISO date/time, or within this many days (30 or 30d)")
    ls.add_argument("--probe", choices=("failing", "ok", "unknown"), help="by the last self-check: failing (e.g. "
                    "active while visitors get an error), ok, or unknown (not probed yet)")
    ls.add_argument("--metadata", metavar="KEY=VALUE", help="only names whose metadata has KEY set to VALUE")
    ls.add_argument("--all", action="store_true", help="walk every page")
    ls.add_argument("--limit", type=int, help="page size, 1-1000 (default 100; 1000 with --all)")
    _api_args(ls)
    im = sub.add_parser("import", help="add many domains from JSON lines or CSV (idempotent, resumable)",
                        description="Import domains from FILE ('-' = stdin): JSON lines ({\"hostname\", "
                        "\"tenant\", ...} per line) or CSV with a header line (hostname,tenant,validation,origin,"
                        "metadata,min_tls_version,http2; metadata as a JSON object). Sent in batches of 500; "
                        "re-running is harmless (names already there are reported so). Exit 0: nothing refused; "
                        "1: some refused (listed with reasons); 2: the file cannot be read (the line is named).")
    im.add_argument("file", help="the file to read, or - for standard input")
    _api_args(im)
    ex = sub.add_parser("export", help="write every domain as JSON lines or CSV (import reads it back)",
                        description="Write every domain (or those matching --status / --tenant) to stdout: "
                        "hostname, tenant, status, certificate expiry and the per-hostname settings (origin, "
                        "min_tls_version, http2, metadata). 'edgecert domains import' reads it back.")
    ex.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default jsonl)")
    ex.add_argument("--status", help="only this status (pending_dns, active, failed, ...)"
                    ).completion_values = STATUS_WORDS  # type: ignore[attr-defined]
    ex.add_argument("--tenant", help="only this tenant's domains")
    _api_args(ex)
    st = sub.add_parser("set", help="change a domain's settings (origin, min TLS version, metadata, HTTP/2)",
                        description="Change HOSTNAME's per-hostname settings (PATCH /v1/domains/HOSTNAME); the "
                        "edge applies them within its refresh interval, without a restart. Options not given "
                        "stay as they are.")
    st.add_argument("hostname", help="the domain to change")
    _settings_args(st, patch=True)
    _api_args(st)
    for name, short, desc in (
            ("show", "show a domain: status, DNS records to create, certificate, settings",
             "Show HOSTNAME as the API sees it: its status and last problem, the DNS records the tenant must "
             "create, the certificate served, the next renewal and the per-hostname settings."),
            ("remove", "remove a domain (stop serving and renewing it; --revoke also revokes its certificate)",
             "Remove HOSTNAME and clean up: the edge stops serving it, renewals stop, its certificate files and "
             "exports are removed, the reload hook runs, an open order's authorizations are deactivated at the "
             "CA; with --revoke its certificate is revoked too. Exit 1 when a cleanup step failed (listed)."),
            ("renew", "renew a domain's certificate now",
             "Queue a renewal of HOSTNAME's certificate now (a tenant token may do so once a day)."),
            ("events", "print a domain's event log (oldest first)",
             "Print HOSTNAME's event log: added, DNS checks, orders, swaps, probes, errors.")):
        x = sub.add_parser(name, help=short, description=desc)
        x.add_argument("hostname", help="the domain, e.g. shop.example.com")
        if name == "remove":
            x.add_argument("--revoke", action="store_true",
                           help="also revoke its certificate at the CA (reason cessationOfOperation)")
        _api_args(x)
    return p


def cmd_domains(argv: list[str]) -> int:
    p = domains_parser()
    args = p.parse_args(argv)
    api = _client(args)
    q = urllib.parse.quote
    if args.action == "add":
        if not (args.timeout > 0 and math.isfinite(args.timeout)):  # nan waited for ever, after adding the name
            p.error("--timeout must be a positive number of seconds")
        body = {"hostname": args.hostname, **_settings_body(args, p)}
        if args.validation:
            body["validation"] = args.validation
        if args.tenant:
            body["tenant"] = args.tenant
        st, d = api.call("POST", "/v1/domains", body)
        if st != 201:
            return _fail(st, d)
        if not args.wait:
            print(json.dumps(d, indent=2) if args.json else _show_domain(d))
            return 0
        try:
            return _wait(api, d["hostname"], args.timeout, args.json)
        except KeyboardInterrupt:
            print(f"\nstopped waiting; {d['hostname']} is still being worked on "
                  f"(edgecert domains show {d['hostname']})", file=sys.stderr)
            return 130
    if args.action == "list":
        if args.limit is not None and not 1 <= args.limit <= 1000:
            p.error("--limit must be from 1 to 1000")
        return fleet.list_command(api, status=args.status, tenant=args.tenant, search=args.search,
                                  prefix=args.prefix, every=args.all, limit=args.limit, as_json=args.json,
                                  issuer=args.issuer, expiring_before=args.expiring_before, probe=args.probe,
                                  metadata=args.metadata)
    if args.action == "import":
        return fleet.import_command(api, args.file, as_json=args.json)
    if args.action == "export":
        return fleet.export_command(api, fmt=args.format, status=args.status, tenant=args.tenant)
    if args.action == "set":
        body = _settings_body(args, p)
        if not body:
            p.error("set needs at least one of --origin, --min-tls-version, --metadata, --http2/--no-http2")
        st, d = api.call("PATCH", f"/v1/domains/{q(args.hostname)}", body)
        if st != 200:
            return _fail(st, d)
        print(json.dumps(d, indent=2) if args.json else _show_domain(d))
        return 0
    if args.action == "show":
        st, d = api.call("GET", f"/v1/domains/{q(args.hostname)}")
        if st != 200:
            return _fail(st, d)
        print(json.dumps(d, indent=2) if args.json else _show_domain(d))
        return 0
    if args.action == "remove":
        st, d = api.call("DELETE", f"/v1/domains/{q(args.hostname)}?report=true" + ("&revoke=true" if args.revoke else ""))
        if st not in (200, 204):
            return _fail(st, d)
        report = d if isinstance(d, dict) else {"hostname": args.hostname, "removed": True, "cleanup": []}
        failed = [s for s in report.get("cleanup", []) if s.get("status") == "failed"]
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"removed {args.hostname}" + (" (certificate revoked)" if report.get("revoked") else ""))
            for s in failed:
                print(f"  not done: {s['step']}: {s['detail']}", file=sys.stderr)
        return 1 if failed else 0
    if args.action == "renew":
        st, d = api.call("POST", f"/v1/domains/{q(args.hostname)}/renew")
        if st != 202:
            return _fail(st, d)
        print(json.dumps(d, indent=2) if args.json else f"renewal of {args.hostname} queued")
        return 0
    if args.action == "events":
        st, d = api.call("GET", f"/v1/domains/{q(args.hostname)}/events")
        if st != 200:
            return _fail(st, d)
        if args.json:
            print(json.dumps(d, indent=2))
        else:
            for e in d["events"]:
                print(f"{e['at']}  {e['kind']:<22} {e['message']}")
        return 0
    return 2


def _wait(api: ApiClient, hostname: str, timeout: float, as_json: bool) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    last_status = None
    q = urllib.parse.quote(hostname)
    while True:
        # The status first, then the events: a status line is printed before the events that happened after it.
        st, d = api.call("GET", f"/v1/domains/{q}")
        if st != 200:
            return _fail(st, d)
        if d["status"] != last_status and not as_json:
            print(f"status: {d['status']}", flush=True)
            last_status = d["status"]
        st, ev = api.call("GET", f"/v1/domains/{q}/events?after={seen}&limit=1000")
        if st == 200:
            for e in ev["events"]:
                seen = max(seen, e["id"])
                if not as_json:
                    print(f"  {e['at'][11:19]}  {e['kind']:<20} {e['message']}", flush=True)
        if d["status"] in ("active", "failed"):
            if as_json:
                print(json.dumps(d, indent=2))
            else:
                print(_show_domain(d))
            return 0 if d["status"] == "active" else 1
        if time.monotonic() > deadline:
            print(f"still {d['status']} after {timeout:.0f}s: {d.get('last_error') or ''}", file=sys.stderr)
            return 1
        time.sleep(1)


def tenants_parser() -> argparse.ArgumentParser:
    """The ``edgecert tenants`` parser (also the source of the shell completion)."""
    p = argparse.ArgumentParser(prog="edgecert tenants", description="Manage tenants and their API tokens through "
                                "the API (operator token: $EDGECERT_ADMIN_TOKEN).")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = sub.add_parser("add", help="create a tenant and print its API token (shown once)",
                       description="Create tenant NAME (or give an existing one a new token) and print the token; "
                       "it is shown once: hand it to the tenant.")
    a.add_argument("name", help="tenant name: letters, digits, '-', '_', '.'")
    a.add_argument("--origin", metavar="URL", help="default upstream URL of the tenant's domains (a domain's own "
                   "origin wins; default EDGECERT_UPSTREAM)")
    _api_args(a)
    ls = sub.add_parser("list", help="list tenants", description="List every tenant, its origin and creation time.")
    _api_args(ls)
    t = sub.add_parser("token", help="rotate (default) or revoke a tenant's token",
                       description="Give tenant NAME a new token (the old ones are revoked), or with --revoke only "
                       "revoke its tokens.")
    t.add_argument("name", help="the tenant")
    t.add_argument("--revoke", action="store_true", help="revoke the tenant's tokens without issuing a new one")
    _api_args(t)
    o = sub.add_parser("set", help="change a tenant's default origin",
                       description="Set tenant NAME's default origin (PATCH /v1/tenants/NAME); '' goes back to "
                       "EDGECERT_UPSTREAM. The edge applies it within its refresh interval.")
    o.add_argument("name", help="the tenant")
    o.add_argument("--origin", metavar="URL", required=True, help="upstream URL ('' for the global one)")
    _api_args(o)
    return p


def cmd_tenants(argv: list[str]) -> int:
    p = tenants_parser()
    args = p.parse_args(argv)
    api = _client(args)
    if args.action == "add":
        st, d = api.call("POST", "/v1/tenants", {"name": args.name,
                                                 **({"origin": args.origin} if args.origin else {})})
        if st not in (200, 201):
            return _fail(st, d)
        print(json.dumps(d, indent=2) if args.json else f"tenant {d['name']}\ntoken {d['token']}\n"
              "(store the token now: it is not shown again)")
        return 0
    if args.action == "list":
        st, d = api.call("GET", "/v1/tenants")
        if st != 200:
            return _fail(st, d)
        print(json.dumps(d, indent=2) if args.json else _table(d["tenants"], [("name", "NAME"),
                                                                            ("origin", "ORIGIN"),
                                                                            ("created_at", "CREATED")]))
        return 0
    q = urllib.parse.quote(args.name)
    if args.action == "set":
        st, d = api.call("PATCH", f"/v1/tenants/{q}", {"origin": args.origin or None})
        if st != 200:
            return _fail(st, d)
        print(json.dumps(d, indent=2) if args.json else f"tenant {d['name']}: origin "
              f"{d['origin'] or '(global EDGECERT_UPSTREAM)'}")
        return 0
    if args.revoke:
        st, d = api.call("DELETE", f"/v1/tenants/{q}/tokens")
    else:
        st, d = api.call("POST", f"/v1/tenants/{q}/tokens")
    if st not in (200, 201):
        return _fail(st, d)
    print(json.dumps(d, indent=2) if args.json else
          (f"revoked {d['revoked']} token(s)" if args.revoke else f"new token {d['token']} "
                                                                  f"({d['revoked']} old token(s) revoked)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``edgecert`` command. Output piped into a reader that stops early (``| head``) ends it quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away: point stdout at /dev/null so that the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by SIGPIPE


def _utf8(arg: str) -> bool:
    try:
        arg.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "serve":
        return cmd_serve(rest)
    if cmd == "diagnose":
        from edge.diagnostics import diagnose_main
        return diagnose_main(rest)
    if cmd == "triage":
        from edge.diagnostics import triage_main
        return triage_main(rest)
    if cmd == "demo":
        from edge.demo import demo_main
        return demo_main(rest)
    if cmd in ("domains", "tenants"):
        bad = next((a for a in rest if not _utf8(a)), None)
        if bad is not None:  # bytes that are not UTF-8 on the command line: they cannot go into a URL or JSON
            shown = bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:60]
            print(f"edgecert {cmd}: error: argument {shown!r} is not valid UTF-8 text", file=sys.stderr)
            return 2
        return cmd_domains(rest) if cmd == "domains" else cmd_tenants(rest)
    if cmd == "completion":
        from edge.completion import completion_main
        return completion_main(rest)
    if cmd in ("version", "--version"):
        print(f"edgecert {__version__}")
        return 0
    print(f"edgecert: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2
