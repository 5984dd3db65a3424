"""The public diagnostic endpoints (rate-limited per client; a token is optional): ``GET /v1/diagnose/{hostname}``
(probe a registered domain's live TLS endpoint) and ``POST /v1/triage`` (name the failure in a pasted error report)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from store.models import utcnow

from edge.api.auth import limit_public, optional_caller
from edge.api.domains import visible_domain
from edge.api.analysis import analyse
from edge.api.errors import ApiError, json_body
from edge.api.plainwords import public_json
from edge.api.state import ANALYSIS, SERVICES
from edge.diagnostics import TargetNotAllowed
from edge.diagnostics import diagnose as run_diagnose
from edge.diagnostics import triage as run_triage
from edge.names import InvalidHostname, validate_hostname

__all__ = ["diagnose", "triage"]


async def diagnose(request: web.Request) -> web.Response:
    limit_public(request)
    services = request.app[SERVICES]
    s = services.settings
    c = await optional_caller(request)
    d = await visible_domain(request, c)
    if d.ownership_pending:
        # An unproven tenant claim is not a licence to probe someone else's name (ownership before binding).
        raise ApiError(409, "ownership_unproven", f"{d.hostname} is not diagnosed until its owner proves control "
                       f"of it (the ownership record in the domain's dns_records)")
    cert = await services.storage.get_certificate(d.current_cert_id) if d.current_cert_id else None
    targets = [t.strip() for t in (s.edge_target or "").split(",") if t.strip()] or None
    try:
        result = await asyncio.wait_for(run_diagnose(
            d.hostname, resolver=s.dns_resolver, allow_private=s.diagnose_allow_private,
            expected_sha256=cert.sha256 if cert else None, edge_targets=targets,
            cafile=s.diagnose_cafile, port=s.https_public_port, timeout=5.0,
            offload=request.app[ANALYSIS].run), 90)
    except TargetNotAllowed as e:
        raise ApiError(422, "target_not_allowed", f"{d.hostname} resolves to an address the diagnostic endpoint "
                       f"may not connect to ({e}); run 'edgecert diagnose' from your own network instead") \
            from None
    except ValueError as e:
        raise ApiError(422, "invalid_target", str(e)) from None
    except TimeoutError:
        raise ApiError(504, "diagnose_timeout", "the diagnosis took too long") from None
    return web.json_response(public_json(result))  # no exception names or refused internal addresses


async def triage(request: web.Request) -> web.Response:
    limit_public(request)
    services = request.app[SERVICES]
    body = await json_body(request)
    report = body.get("report")
    if not isinstance(report, str) or not report.strip():
        raise ApiError(422, "invalid_report", "report must be a non-empty string (the pasted error text)",
                       field="report")
    hostname = body.get("hostname")
    if hostname is not None:
        try:
            hostname = validate_hostname(hostname).ascii
        except InvalidHostname as e:
            raise ApiError(422, e.code, e.message, field="hostname") from None
    issuers = await services.edge_issuers()
    served_valid = None
    if hostname:
        d = await services.storage.get_domain(hostname)
        if d is not None and d.current_cert_id:
            cert = await services.storage.get_certificate(d.current_cert_id)
            served_valid = bool(cert and cert.not_before <= utcnow() < cert.not_after)
    try:
        result = await analyse(request, run_triage, report, hostname=hostname, edge_issuers=issuers or None,
                               served_certificate_valid=served_valid)
    except ValueError as e:
        raise ApiError(422, "invalid_report", str(e), field="report") from None
    return web.json_response(result)
