"""The tenant-facing status page ``GET /status/{hostname}``: plain-language onboarding steps, no secrets, no JS."""

from __future__ import annotations

import json
import shlex

import jinja2
from aiohttp import web

from store.models import DomainStatus, utcnow

from .hostnames import InvalidHostname, validate_hostname

__all__ = ["add_status_routes"]

_env = jinja2.Environment(loader=jinja2.PackageLoader("edge", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

_STEP_STATE = {
    DomainStatus.PENDING_DNS: ("current", "todo", "todo"),
    DomainStatus.PENDING_ISSUANCE: ("done", "current", "todo"),
    DomainStatus.ISSUING: ("done", "current", "todo"),
    DomainStatus.RATE_LIMITED: ("done", "current", "todo"),
    DomainStatus.FAILED: ("done", "failed", "todo"),
    DomainStatus.ACTIVE: ("done", "done", "done"),
    DomainStatus.EXPIRED: ("done", "failed", "failed"),
}

_HEADLINE = {
    DomainStatus.PENDING_DNS: ("Waiting for your DNS record", "tenant",
                               "Create the DNS record below at your DNS provider. We check again automatically."),
    DomainStatus.PENDING_ISSUANCE: ("Getting your certificate", "nobody",
                                    "Your DNS is right. We are obtaining the certificate; no action needed."),
    DomainStatus.ISSUING: ("Getting your certificate", "nobody",
                           "The certificate authority is validating your domain; this takes under a minute."),
    DomainStatus.RATE_LIMITED: ("Waiting on the certificate authority's rate limit", "nobody",
                                "We will try again automatically at the time shown below."),
    DomainStatus.FAILED: ("Certificate could not be issued", "operator",
                          "The certificate authority refused this name. The site operator has to act."),
    DomainStatus.ACTIVE: ("Your site is served over HTTPS", "nobody", "Everything is working."),
    DomainStatus.EXPIRED: ("The certificate has expired", "operator",
                           "Visitors see a security warning. The site operator has to act."),
}


def add_status_routes(app: web.Application, services, *, limiter) -> None:
    s = services.settings

    async def status_page(request: web.Request) -> web.Response:
        if not limiter.allow(request.remote or "?"):
            return web.Response(status=429, text="Too many requests; try again in a minute.\n")
        raw = request.match_info["hostname"]
        try:
            name = validate_hostname(raw).ascii
        except InvalidHostname:
            name = None
        d = await services.storage.get_domain(name) if name else None
        if d is None:
            tpl = _env.get_template("status_missing.html")
            return web.Response(status=404, content_type="text/html",
                                text=tpl.render(hostname=raw[:253], brand=_brand(s)))
        cert = await services.storage.get_certificate(d.current_cert_id) if d.current_cert_id else None
        events = await services.storage.list_events(d.hostname, limit=12)
        expected = services.dns.expected_record(d.hostname)
        observed = json.loads(d.dns_observed) if d.dns_observed else None
        headline, who, what = _HEADLINE.get(d.status, (d.status, "operator", ""))
        steps = _STEP_STATE.get(d.status, ("todo", "todo", "todo"))
        public = services.public_address()
        connect = public if public else f"{d.hostname}:443"
        openssl = (f"openssl s_client -connect {shlex.quote(d.hostname + ':443')} -servername "
                   f"{shlex.quote(d.hostname)} -verify_hostname {shlex.quote(d.hostname)} -verify_return_error "
                   f"-showcerts </dev/null")
        days_left = None
        if cert is not None:
            days_left = round((cert.not_after - utcnow()).total_seconds() / 86400, 1)
        last_probe = next((e for e in reversed(events) if e.kind in ("probe_ok", "probe_failed")), None)
        pending = d.status not in (DomainStatus.ACTIVE, DomainStatus.FAILED, DomainStatus.EXPIRED)
        tpl = _env.get_template("status.html")
        html = tpl.render(d=d, cert=cert, events=list(reversed(events)), expected=expected, observed=observed,
                          headline=headline, who=who, what=what, steps=steps, openssl=openssl, connect=connect,
                          days_left=days_left, last_probe=last_probe, refresh=15 if pending else None,
                          brand=_brand(s), now=utcnow())
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'; img-src https: data:; "
                                                                "style-src 'unsafe-inline'"})

    app.router.add_get("/status/{hostname}", status_page)


def _brand(s) -> dict:
    color = s.status_page_color if s.status_page_color.startswith("#") and len(s.status_page_color) in (4, 7) \
        and all(c in "0123456789abcdefABCDEF" for c in s.status_page_color[1:]) else "#0b5fff"
    logo = s.status_page_logo_url if (s.status_page_logo_url or "").startswith("https://") else None
    return {"name": s.status_page_brand, "logo": logo, "color": color}
