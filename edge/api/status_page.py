"""The tenant-facing status page ``GET /status/{hostname}``: plain-language onboarding steps, no secrets, no JS.

What it shows, for the person who owns the domain (and the support staff they talk to):

1. the DNS record(s) to create, exactly as they must look (the ownership TXT record first while a tenant's claim is
   unproven), and what DNS showed at the last check;
2. the certificate: being obtained, refused, or issued (issuer, dates, days to expiry);
3. serving: whether the edge serves it, and the last self-check (probe) of the live endpoint;

then what is wrong now, who must act and what to do, an ``openssl`` command to check from their own network, and
recent activity in plain words. Pages of domains with work pending refresh themselves (``<meta http-equiv=refresh>``).
Branding comes from ``status_page_brand``, ``status_page_logo_url`` (``https:`` or ``data:image/``) and ``status_page_color``.

Never on the page: tokens, keys, the tenant's name, internal addresses, reload-hook output.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from typing import Any

import jinja2
from aiohttp import web

from acme_client.errors import PLAIN_TEXT, WHO_ACTS, is_plain
from store.models import DomainStatus, utcnow

from edge.api.state import LIMITER, SERVICES
from edge.diagnostics import FAILURE_MODES
from edge.names import InvalidHostname, validate_hostname

__all__ = ["status_page"]

_env = jinja2.Environment(loader=jinja2.PackageLoader("edge", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

#: Seconds between automatic refreshes while work is pending.
REFRESH_SECONDS = 15

# (dns, certificate, serving) step states per status: done | current | todo | failed
_STEP_STATE = {
    DomainStatus.PENDING_OWNERSHIP: ("current", "todo", "todo"),
    DomainStatus.PENDING_DNS: ("current", "todo", "todo"),
    DomainStatus.PENDING_ISSUANCE: ("done", "current", "todo"),
    DomainStatus.ISSUING: ("done", "current", "todo"),
    DomainStatus.RATE_LIMITED: ("done", "current", "todo"),
    DomainStatus.FAILED: ("done", "failed", "todo"),
    DomainStatus.ACTIVE: ("done", "done", "done"),
    DomainStatus.EXPIRED: ("done", "failed", "failed"),
}

_STEP_LABEL = {"done": "Done", "current": "In progress", "todo": "Not started yet", "failed": "Problem"}

# status -> (headline, who acts, what to do)
_HEADLINE = {
    DomainStatus.PENDING_OWNERSHIP: ("Waiting for proof that you control this domain", "tenant",
                                     "Create the TXT record shown in step 1 at your DNS provider. We check again "
                                     "automatically; nothing is ordered or served for this name until it is seen."),
    DomainStatus.PENDING_DNS: ("Waiting for your DNS record", "tenant",
                               "Create the DNS record shown in step 1 at your DNS provider (or correct the one that "
                               "is there). We check again automatically; there is nothing else to do."),
    DomainStatus.PENDING_ISSUANCE: ("Getting your certificate", "nobody",
                                    "Your DNS is right. The last attempt to get the certificate did not succeed; we "
                                    "try again automatically at the time shown."),
    DomainStatus.ISSUING: ("Getting your certificate", "nobody",
                           "Your DNS is right. The certificate authority is checking your domain; this usually "
                           "takes under a minute."),
    DomainStatus.RATE_LIMITED: ("Waiting on the certificate authority", "nobody",
                                "The certificate authority asked us to wait (a rate limit). We try again "
                                "automatically at the time shown; there is nothing for you to do."),
    DomainStatus.FAILED: ("The certificate could not be issued", "operator",
                          "The certificate authority refused this name. The service operator has been told and "
                          "has to act; contact their support if this stays."),
    DomainStatus.ACTIVE: ("Your site is served over HTTPS", "nobody", "Everything is working."),
    DomainStatus.EXPIRED: ("The certificate has expired", "operator",
                           "Visitors see a security warning (NET::ERR_CERT_DATE_INVALID). The service operator has "
                           "to act; contact their support."),
}

# CAA held the order (last_error_code -> headline); the sentence itself is the domain's last_error.
_CAA_TEXT = {
    "caa_forbidden": "Your domain's CAA record does not allow our certificate authority",
    "caa_lookup_failed": "Your domain's CAA records could not be read",
}

# Events shown under "Recent activity", in plain words (others, e.g. reload-hook output, stay internal).
_EVENT_TEXT = {
    "domain_added": "Domain added.",
    "ownership_checked": None,  # the check's own message (it names the TXT record to create)
    "ownership_verified": "Control of the domain confirmed (ownership record found).",
    "dns_checked": None,  # the check's own message (it names the record to create)
    "order_placed": "Asked the certificate authority for a certificate.",
    "challenge_answered": "Answered the certificate authority's validation request.",
    "challenge_valid": "The certificate authority confirmed the domain points here.",
    "certificate_obtained": "Certificate issued.",
    "swapped": "The new certificate is now served.",
    "renewal_scheduled": None,
    "issuance_failed": "The certificate authority did not issue the certificate this time.",
    "rate_limited": "The certificate authority asked us to wait (rate limit).",
    "caa_checked": None,  # the check's own message (plain words; it names the CAA record to add)
    "certificate_expired": "The certificate expired.",
    "expiry_warning": None,
    "probe_ok": "Self-check of https://{h}/ passed.",
    "probe_failed": "Self-check of https://{h}/ found a problem.",
    "ready_for_cutover": "Certificate issued before the DNS switch and already served: ready to switch your DNS.",
    "cutover_complete": "Your DNS now points here; the certificate was already served (no gap).",
    "delegation_missing": None,  # its own message (names the record to create again)
    "delegation_restored": "The _acme-challenge record is back in place.",
    "http01_unreachable": "Port 80 does not reach us; the certificate is validated on the HTTPS port instead.",
}


def _who_text(who: str) -> str:
    return {"tenant": "you (the owner of the domain)", "operator": "the service operator",
            "nobody": "nobody: it is automatic", "visitor": "the visitor", "network": "the network in between",
            "operator / network": "the service operator or the network"}.get(who, who)


def _parse_probe(d) -> dict[str, Any] | None:
    """The last self-probe recorded on the domain (``last_probe*`` columns), as template data."""
    if d.last_probe_at is None and d.last_probe_ok is None and not d.last_probe:
        return None
    info: dict[str, Any] = {"ok": d.last_probe_ok, "at": d.last_probe_at, "failure_mode": None, "summary": None,
                            "fix": None, "who_acts": None}
    try:
        data = json.loads(d.last_probe) if d.last_probe else {}
    except (TypeError, ValueError):
        data = {}
    if isinstance(data, dict):
        if isinstance(data.get("failure_mode"), str):
            info["failure_mode"] = data["failure_mode"]
        if info["ok"] is None and isinstance(data.get("ok"), bool):
            info["ok"] = data["ok"]
    if info["ok"] is False or (info["failure_mode"] not in (None, "ok")):
        info["ok"] = False
        info.update(_mode_text(info["failure_mode"] or "unknown"))
    return info


def _mode_text(failure_mode: str) -> dict[str, str]:
    """Plain words for a probe's failure mode. Never the probe's raw detail: it can name internal addresses."""
    if failure_mode == "served_certificate_stale":
        return {"summary": "The live site still answers with the previous certificate.",
                "fix": "The service operator's servers have not loaded the new certificate yet; it is retried "
                       "automatically. If this stays, the operator has to act.", "who_acts": "operator"}
    m = FAILURE_MODES.get(failure_mode)
    if m is None or failure_mode == "unknown":
        return {"summary": "The live site did not answer as expected.",
                "fix": "The service operator has been told and has to act.", "who_acts": "operator"}
    return {"summary": m.summary, "fix": m.fix, "who_acts": m.who_acts}


def _probe_from_events(events) -> dict[str, Any] | None:
    for e in reversed(events):
        if e.kind in ("probe_ok", "probe_failed"):
            data = json.loads(e.data) if e.data else {}
            fm = data.get("failure_mode")
            info = {"ok": e.kind == "probe_ok", "at": e.created_at, "failure_mode": fm, "summary": e.message,
                    "fix": None, "who_acts": None}
            if e.kind == "probe_failed":
                info.update(_mode_text(fm or "unknown"))
            return info
    return None


def _activity(events, hostname: str) -> list[dict[str, Any]]:
    out = []
    for e in events:
        if e.kind not in _EVENT_TEXT:
            continue
        text = _EVENT_TEXT[e.kind]
        if e.kind == "renewal_scheduled":
            try:
                at = dt.datetime.fromisoformat(json.loads(e.data or "{}").get("at", "").replace("Z", "+00:00"))
                text = f"Renewal planned for {at.strftime('%Y-%m-%d')}."
            except (ValueError, TypeError, AttributeError):
                text = "Renewal planned."
        elif e.kind == "expiry_warning":
            text = "The certificate expires soon and could not be renewed yet."
        elif text is None:
            text = e.message
        text = text.replace("{h}", hostname)
        if out and out[-1]["text"] == text:
            out[-1]["at"] = e.created_at  # the same thing again (e.g. each DNS re-check): show it once, latest time
            continue
        out.append({"at": e.created_at, "kind": e.kind, "text": text})
    return out


def _dig_command(expected: dict, records: list[dict] | None = None) -> str | None:
    """The ``dig`` line that shows the record(s) the tenant must create, of their own type(s): ``CNAME`` for a
    CNAME, ``A`` (and ``AAAA``) for addresses."""
    name = (expected or {}).get("name")
    if not name:
        return None
    types = [t for t in ("CNAME", "A", "AAAA") if any(r.get("type") == t for r in records or [])]
    if not types and expected.get("type") in ("CNAME", "A", "AAAA"):
        types = [expected["type"]]
    if not types:
        return f"dig +short {shlex.quote(name)}"
    return "; ".join(f"dig +short {t} {shlex.quote(name)}" for t in types)


def _tone(status: str, steps: list[str]) -> str:
    """One colour for the badge and the card, from the same facts: ``ok`` (green) only when the name is served and
    nothing failed; ``bad`` (red) when a step failed (the self-check of an active name included); else ``wait``."""
    if "failed" in steps:
        return "bad"
    if status == DomainStatus.ACTIVE and steps[2] == "done":
        return "ok"
    return "wait"


def _badge_text(status: str, tone: str) -> str:
    text = status.replace("_", " ")
    if status == DomainStatus.ACTIVE and tone == "bad":
        return "active, but the self-check fails"
    return text


def _expires_in(days: float) -> str:
    """Whole numbers, in the unit a person uses: "in 12 days", "in about 3 months (92 days)", "in about 5 years
    (1826 days)"; "within a day", "already"."""
    n = round(days)
    if days < 0:
        return "already"
    if n < 1:
        return "within a day"
    if n < 60:
        return f"in {n} day{'s' if n != 1 else ''}"
    if n < 730:
        return f"in about {round(days / 30.44)} months ({n} days)"
    return f"in about {round(days / 365.25)} years ({n} days)"


async def status_page(request: web.Request) -> web.Response:
    """``GET /status/{hostname}``: the page (404 page for an unknown name; 429 text past the public rate limit)."""
    services = request.app[SERVICES]
    s = services.settings
    limiter, key = request.app[LIMITER], request.remote or "?"
    if not limiter.allow(key):
        wait = limiter.retry_after(key)
        return web.Response(status=429, text=f"Too many requests; try again in {wait} second"
                                             f"{'s' if wait != 1 else ''}.\n", headers={"Retry-After": str(wait)})
    raw = request.match_info["hostname"]
    try:
        name = validate_hostname(raw, allow_wildcard=True).ascii
    except InvalidHostname:
        name = None
    d = await services.storage.get_domain(name) if name else None
    if d is None:
        tpl = _env.get_template("status_missing.html")
        return web.Response(status=404, content_type="text/html", headers=_HEADERS,
                            text=tpl.render(hostname=raw[:253], brand=_brand(s), now=utcnow()))
    cert = await services.storage.get_certificate(d.current_cert_id) if d.current_cert_id else None
    events = await services.storage.list_events(d.hostname, limit=40)
    # A name can change hands (released, or an unproven claim superseded): only this claim's history.
    since = d.created_at if d.created_at.tzinfo else d.created_at.replace(tzinfo=dt.timezone.utc)
    events = [e for e in events if (e.created_at if e.created_at.tzinfo
                                    else e.created_at.replace(tzinfo=dt.timezone.utc)) >= since]
    ownership = None
    if d.ownership_pending:
        tenant = await services.storage.get_tenant_by_id(d.tenant_id)
        ownership = services.dns.ownership_record(d.hostname, tenant.name if tenant else "?")
    expected = services.dns.expected_record(d.hostname)
    observed = json.loads(d.dns_observed) if d.dns_observed else None
    headline, who, what = _HEADLINE.get(d.status, (d.status.replace("_", " "), "operator", ""))
    steps = list(_STEP_STATE.get(d.status, ("todo", "todo", "todo")))
    probe = _parse_probe(d) or _probe_from_events(events)
    if d.status == DomainStatus.ACTIVE and probe is not None and probe["ok"] is False:
        steps[2] = "failed"
        headline = "Your certificate is issued, but the self-check found a problem"
        who = probe.get("who_acts") or "operator"
        what = probe.get("fix") or "The service operator has to act."
    problem = d.last_error
    if d.last_error_code in WHO_ACTS and d.status in (DomainStatus.PENDING_ISSUANCE, DomainStatus.RATE_LIMITED,
                                                      DomainStatus.FAILED, DomainStatus.ISSUING):
        # A CA failure: the party who acts follows its kind (a CA outage is nobody's task, CAA is the tenant's),
        # in the plain sentence of its kind (never a stored exception text or an internal URL).
        who = WHO_ACTS[d.last_error_code]
        problem = d.last_error if is_plain(d.last_error) else PLAIN_TEXT[d.last_error_code]
        if d.status == DomainStatus.FAILED:
            what = problem
    if d.last_error_code in _CAA_TEXT and d.last_error:
        # CAA held the order (edge/lifecycle/caa.py): the tenant's DNS decides; last_error is already plain words
        # naming the record to add.
        if d.status != DomainStatus.ACTIVE:  # an active domain keeps its headline: the renewal waits, not the site
            headline = _CAA_TEXT[d.last_error_code]
        who, problem, what = "tenant", d.last_error, d.last_error
    if d.last_error_code == "hook_failed" and d.status == DomainStatus.ACTIVE:
        who, what = "operator", "A new certificate was issued but not yet loaded everywhere; the service " \
                                "operator has been told."
    # DNS-01 (edge/lifecycle/methods.py): the _acme-challenge delegation, and a certificate served before the cutover.
    acme = services.dns.acme_challenge_record(d.hostname)
    wildcard = d.hostname.startswith("*.")
    ready_for_cutover = d.status == DomainStatus.PENDING_DNS and cert is not None and not wildcard
    delegation_missing = d.last_error_code == "dns01_delegation_missing" and cert is not None
    if delegation_missing:  # served now, but the renewal depends on the record the tenant removed
        headline, who = "Your certificate is served, but it cannot be renewed", "tenant"
        what = d.last_error or ""
    if ready_for_cutover:
        headline, who = "Ready: switch your DNS now", "tenant"
        what = (f"Your certificate is issued and already served for {d.hostname}. Switch your DNS now: create "
                f"{expected['text']}. HTTPS works the moment the record changes; there is no gap.")
        steps = ["current", "done", "done"]
    port = int(getattr(s, "https_public_port", 443) or 443)
    target = f"{d.hostname}:{port}"
    openssl = (f"openssl s_client -connect {shlex.quote(target)} -servername {shlex.quote(d.hostname)} "
               f"-verify_hostname {shlex.quote(d.hostname)} -verify_return_error -showcerts </dev/null")
    openssl_dates = (f"openssl s_client -connect {shlex.quote(target)} -servername {shlex.quote(d.hostname)} "
                     f"</dev/null 2>/dev/null | openssl x509 -noout -subject -issuer -dates "
                     f"-ext subjectAltName")
    days_left = expires_in = None
    if cert is not None:
        left = (cert.not_after - utcnow()).total_seconds() / 86400
        days_left, expires_in = max(0, round(left)), _expires_in(left)  # whole days: "89", never "89.0"
    tone = _tone(d.status, steps)
    pending = d.status in (DomainStatus.PENDING_OWNERSHIP, DomainStatus.PENDING_DNS, DomainStatus.ISSUING, DomainStatus.PENDING_ISSUANCE,
                           DomainStatus.RATE_LIMITED)
    step_names = ("Point your domain at us", "Certificate", "Served over HTTPS")
    current_step = next((i for i, st in enumerate(steps) if st in ("current", "failed")), None)
    tpl = _env.get_template("status.html")
    html = tpl.render(d=d, problem=problem, cert=cert, activity=list(reversed(_activity(events, d.hostname)))[:12],
                      expected=expected, observed=observed, headline=headline, who=who, who_text=_who_text(who),
                      what=what, steps=steps, step_labels=_STEP_LABEL, step_names=step_names,
                      current_step=current_step, openssl=openssl, openssl_dates=openssl_dates,
                      dig=_dig_command(expected, services.dns.pointing_records(d.hostname)),
                      days_left=days_left, expires_in=expires_in, tone=tone,
                      badge_text=_badge_text(d.status, tone), ownership=ownership,
                      acme=acme, acme_dig=f"dig +short CNAME {shlex.quote(acme['name'])}" if acme else None,
                      ready_for_cutover=ready_for_cutover, wildcard=wildcard, delegation_missing=delegation_missing,
                      ownership_dig=f"dig +short TXT {shlex.quote(ownership['name'])}" if ownership else None, probe=probe,
                      refresh=REFRESH_SECONDS if pending else None, brand=_brand(s), now=utcnow())
    return web.Response(text=html, content_type="text/html", headers=_HEADERS)


_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
                                       "frame-ancestors 'none'"}


def _brand(s) -> dict:
    raw = s.status_page_color or ""
    color = raw if raw.startswith("#") and len(raw) in (4, 7) and all(c in "0123456789abcdefABCDEF"
                                                                        for c in raw[1:]) else "#0b5fff"
    logo = s.status_page_logo_url if (s.status_page_logo_url or "").startswith(("https://", "data:image/")) \
        else None
    return {"name": s.status_page_brand, "logo": logo, "color": color, "text": _text_on(color)}


def _text_on(color: str) -> str:
    """Black or white, whichever reads better on ``color`` (WCAG relative luminance)."""
    h = color[1:]
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    r, g, b = (int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#111111" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#ffffff"
