"""The API reference as an OpenAPI 3.1 document, served at ``GET /v1/openapi.json``.

``tests/test_openapi.py`` checks it against the routes the API app really has (every route documented, every
documented path routed, same methods), so this file is the one place to describe a new route.
"""

from __future__ import annotations

from typing import Any

from edge import __version__

__all__ = ["openapi_document"]

_S = "#/components/schemas/"


def _ref(name: str) -> dict:
    return {"$ref": _S + name}


def _json(schema: dict | str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(schema) if isinstance(schema, str) else schema}}}


def _err(description: str) -> dict:
    return _json("Error", description)


_HOST = {"name": "hostname", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the tenant domain, e.g. shop.example.com (IDNs as Unicode or A-labels)"}
_TENANT = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "tenant name"}
_AUTH = {"401": _err("no Authorization header (`missing`: Authorization), or the token is wrong, revoked or "
                     "expired; the message names the header and the server variable (EDGECERT_ADMIN_TOKEN)"),
         "403": _err("admin_token_not_configured: the operator API is disabled because EDGECERT_ADMIN_TOKEN is not set "
                     "on the server (`missing`: EDGECERT_ADMIN_TOKEN); forbidden: the call needs the operator "
                     "token")}
_OP = [{"bearerAuth": []}]
_PUBLIC: list = []
_NOT_FOUND = _err("no such domain; with a tenant token, also another tenant's domain (same answer)")


def _dt(desc: str = "", nullable: bool = True) -> dict:
    s: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "format": "date-time"}
    if desc:
        s["description"] = desc
    return s


def _settings_props() -> dict[str, Any]:
    """The per-hostname settings of a domain (docs/api.md, "Per-hostname settings")."""
    return {
        "origin": {"type": ["string", "null"], "examples": ["https://origin.example.com"],
                   "description": "upstream URL the edge proxies this name to: http or https, a host, an optional "
                                  "port and path prefix; no credentials, query or fragment. null: the tenant's "
                                  "origin, else EDGECERT_UPSTREAM. Set with a tenant token, it must be a public "
                                  "address (origin_not_allowed otherwise)"},
        "min_tls_version": {"type": ["string", "null"], "enum": ["1.2", "1.3", None],
                            "description": "lowest TLS version the edge accepts for this name (null: the default)"},
        "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string", "maxLength": 512},
                     "maxProperties": 32, "description": "your own string key/value pairs (keys 1-64 characters, "
                     "values up to 512, 8 KiB as JSON); returned as {} when none; filter with ?metadata=k=v"},
        "http2": {"type": ["boolean", "null"], "description": "offer HTTP/2 for this name (null: the default)"}}


def _schemas() -> dict[str, Any]:
    nstr = {"type": ["string", "null"]}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "stable machine-readable code, e.g. invalid_hostname"},
                "message": {"type": "string", "description": "one sentence for a human"},
                "field": {"type": "string", "description": "the request field at fault, when there is one"}},
            "additionalProperties": True}}},
        "Certificate": {"type": "object", "required": ["serial", "not_before", "not_after", "issuer", "sha256"],
                        "properties": {
                            "serial": {"type": "string", "description": "hex serial number"},
                            "not_before": _dt(nullable=False), "not_after": _dt(nullable=False),
                            "issuer": {"type": "string", "description": "issuer DN, RFC 4514"},
                            "sha256": {"type": "string", "description": "SHA-256 of the DER leaf, hex"},
                            "names": {"type": "array", "items": {"type": "string"}},
                            "key_type": {"type": "string"}, "source": {"type": "string"},
                            "days_left": {"type": "number"},
                            "issuer_directory": {**nstr, "description": "the ACME directory (CA) that issued it"},
                            "profile": {**nstr, "description": "the ACME profile it was ordered with"}}},
        "DnsRecord": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["CNAME", "A", "AAAA", "any"]}, "name": {"type": "string"},
            "value": nstr, "text": {"type": "string", "description": "the record exactly as it must look"}}},
        "Domain": {"type": "object",
                   "required": ["hostname", "tenant", "status", "last_error", "next_renewal_at", "certificate"],
                   "properties": {
                       "hostname": {"type": "string"}, "tenant": {"type": "string"},
                       "status": {"type": "string", "enum": ["pending_ownership", "pending_dns", "issuing", "pending_issuance",
                                                             "rate_limited", "active", "failed", "expired"]},
                       "last_error": {**nstr, "description": "what is wrong now, in one actionable sentence"},
                       "last_error_code": nstr,
                       "next_renewal_at": _dt(), "retry_at": _dt("next attempt after a failure"),
                       "next_check_at": _dt(), "attempts": {"type": "integer"},
                       "profile": {**nstr, "description": "the ACME profile asked for (null: the issuer's)"},
                       "certificate": {"oneOf": [_ref("Certificate"), {"type": "null"}]},
                       "dns": {"type": "object", "properties": {
                           "expected_record": {"oneOf": [_ref("DnsRecord"), {"type": "null"}]},
                           "observed": {"type": ["object", "null"],
                                        "description": "what the last DNS check saw (cname_chain, addresses)"},
                           "ready_for_cutover": {"type": "boolean", "description": "a certificate obtained before "
                                                 "the cutover (DNS-01) is served while the name does not point "
                                                 "here yet: switch the DNS now (docs/dns-01.md)"},
                           "delegation_seen_at": _dt("the _acme-challenge delegation was last seen in place")}},
                       "validation": {"type": "string", "enum": ["auto", "http-01", "tls-alpn-01", "dns-01"]},
                       "validation_method": {**nstr, "description": "the challenge method that last worked"},
                       "wildcard": {"type": "boolean"},
                       "dns_records": {"type": "array", "description": "every record the tenant must create",
                                       "items": {"type": "object", "required": ["name", "type", "value", "purpose"],
                                                 "properties": {
                                                     "name": {"type": "string"}, "type": {"type": "string"},
                                                     "value": {"type": "string"},
                                                     "purpose": {"type": "string", "enum": [
                                                         "pointing", "acme-challenge", "ownership"]}}}},
                       "ownership": {"type": "object", "properties": {
                           "required": {"type": "boolean", "description": "claimed with a tenant token"},
                           "verified": {"type": "boolean"}, "verified_at": _dt()}},
                       "created_at": _dt(), "updated_at": _dt(),
                       "last_probe": {"type": ["object", "null"], "description": "the last self-probe of the "
                                      "live edge: ok, at, served_serial, days_to_expiry, failure_mode, detail, "
                                      "handshake_ms, tls_version"},
                       "reload": {"type": "object", "properties": {
                           "pending": {"type": "boolean", "description": "the reload hook has not yet succeeded "
                                                                         "for the current certificate"},
                           "verified_serial": {**nstr, "description": "serial the edge was seen serving"}}},
                       "renewal": {"type": "object", "properties": {
                           "reason": nstr, "ari_window": {"type": ["object", "null"], "properties": {
                               "start": _dt(), "end": _dt()}}}},
                       **_settings_props(),
                       "links": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "DomainPatch": {"type": "object", "minProperties": 1, "additionalProperties": False,
                        "properties": _settings_props()},
        "DomainCreate": {"type": "object", "required": ["hostname"], "properties": {
            **_settings_props(),
            "hostname": {"type": "string", "examples": ["shop.example.com"]},
            "tenant": {"type": "string", "description": "required with the operator token; with a tenant token it "
                                                        "may only name the caller's own tenant"},
            "key_type": {"type": "string", "enum": ["ecdsa-p256", "ecdsa-p384", "rsa2048", "rsa3072", "rsa4096"]},
            "profile": {"type": "string", "maxLength": 64, "description": "ACME profile (e.g. tlsserver, shortlived): "
                        "checked against each CA's meta.profiles; 422 invalid_profile when not a printable token"},
            "validation": {"type": "string", "enum": ["auto", "http-01", "tls-alpn-01", "dns-01"],
                           "description": "how the CA validates the name (default auto; a wildcard *.name needs "
                                          "dns-01 or auto, and DNS-01 configured; see docs/dns-01.md)"}}},
        "CertificateUpload": {"type": "object", "required": ["certificate", "private_key"], "properties": {
            "certificate": {"type": "string", "description": "PEM: the leaf (and optionally its chain)"},
            "private_key": {"type": "string", "description": "PEM, unencrypted"},
            "chain": {"type": "string", "description": "PEM intermediates, if not after the leaf"}}},
        "DomainList": {"type": "object", "required": ["domains", "count", "total", "next"], "properties": {
            "domains": {"type": "array", "items": _ref("Domain")},
            "count": {"type": "integer", "description": "domains on this page"},
            "total": {"type": "integer", "description": "all domains matching the filters"},
            "next": {"type": ["string", "null"], "description": "opaque cursor of the next page (pass it as "
                                                               "?cursor=); null on the last page"}}},
        "DomainBatch": {"type": "object", "required": ["domains"], "properties": {
            "domains": {"type": "array", "maxItems": 500, "items": {"type": "object", "properties": {
                "hostname": {"type": "string"}, "tenant": {"type": "string"},
                "validation": {"type": "string", "enum": ["auto", "http-01", "tls-alpn-01", "dns-01"]},
                **_settings_props(),
                "key_type": {"type": "string"}}}}}},
        "DomainBatchResult": {"type": "object", "required": ["results"], "properties": {
            "results": {"type": "array", "items": {"type": "object", "required": ["hostname", "result"],
                                                   "properties": {
                "hostname": {"type": ["string", "null"]},
                "result": {"type": "string", "enum": ["added", "exists", "refused"]},
                "error": {"type": "object", "properties": {"code": {"type": "string"},
                                                           "message": {"type": "string"},
                                                           "field": {"type": "string"}}}}}}}},
        "Removal": {"type": "object", "required": ["hostname", "removed", "revoked", "cleanup"], "properties": {
            "hostname": {"type": "string"}, "removed": {"type": "boolean"},
            "revoke_requested": {"type": "boolean"}, "revoked": {"type": "boolean"},
            "failed_steps": {"type": "array", "items": {"type": "string"}},
            "cleanup": {"type": "array", "items": {"type": "object", "required": ["step", "status", "detail"],
                                                   "properties": {
                "step": {"type": "string"}, "status": {"type": "string", "enum": ["done", "failed", "skipped"]},
                "detail": {"type": "string"}}}}}},
        "Event": {"type": "object", "required": ["id", "at", "kind", "message", "data"], "properties": {
            "id": {"type": "integer"}, "at": _dt(nullable=False),
            "kind": {"type": "string", "description": "domain_added, dns_checked, order_placed, challenge_answered, "
                                                      "challenge_valid, certificate_obtained, swapped, "
                                                      "renewal_scheduled, issuance_failed, rate_limited, "
                                                      "hook_succeeded, hook_failed, certificate_expired, "
                                                      "domain_removed, ..."},
            "message": {"type": "string"}, "data": {"type": "object"}}},
        "EventList": {"type": "object", "properties": {
            "hostname": {"type": "string"}, "events": {"type": "array", "items": _ref("Event")}}},
        "TenantCreate": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "description": "1-100 of letters, digits, '-', '_', '.'"},
            "origin": {"type": ["string", "null"], "description": "default upstream URL of the tenant's domains "
                                                                  "(a domain's own origin wins); null: "
                                                                  "EDGECERT_UPSTREAM"}}},
        "TenantPatch": {"type": "object", "required": ["origin"], "additionalProperties": False, "properties": {
            "origin": {"type": ["string", "null"], "description": "as in TenantCreate"}}},
        "Tenant": {"type": "object", "properties": {"name": {"type": "string"}, "origin": nstr,
                                                     "created_at": _dt()}},
        "TenantToken": {"type": "object", "required": ["name", "token"], "properties": {
            "name": {"type": "string"},
            "token": {"type": "string", "description": "the new bearer token; shown once, stored hashed"},
            "created": {"type": "boolean"}, "revoked": {"type": "integer"}, "origin": nstr}},
        "TenantList": {"type": "object", "properties": {"tenants": {"type": "array", "items": _ref("Tenant")}}},
        "TokensRevoked": {"type": "object", "properties": {"name": {"type": "string"},
                                                            "revoked": {"type": "integer"}}},
        "Check": {"type": "object", "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"},
                                                    "detail": {"type": "string"}}},
        "Diagnosis": {"type": "object", "required": ["hostname", "ok", "failure_mode", "summary", "fix", "who_acts",
                                                     "browser_errors", "checks", "certificate", "openssl_command"],
                      "properties": {
                          "hostname": {"type": "string"}, "ok": {"type": "boolean"},
                          "failure_mode": {"type": "string", "description": "an id of docs/troubleshooting.md"},
                          "summary": {"type": "string"}, "fix": {"type": "string"}, "who_acts": {"type": "string"},
                          "browser_errors": {"type": "object", "properties": {
                              b: nstr for b in ("chrome", "firefox", "safari", "edge")}},
                          "checks": {"type": "array", "items": _ref("Check")},
                          "certificate": {"type": ["object", "null"]},
                          "openssl_command": {"type": "string"}, "curl_command": {"type": "string"},
                          "clients": {"type": "array", "items": {"type": "object", "properties": {
                              "client": {"type": "string"}, "ok": {"type": "boolean"}, "error": nstr}}},
                          "addresses": {"type": "array", "items": {"type": "object"}},
                          "warnings": {"type": "array", "items": {"type": "string"}}}},
        "TriageRequest": {"type": "object", "required": ["report"], "properties": {
            "report": {"type": "string", "description": "pasted browser / curl / openssl / client error text"},
            "hostname": {"type": "string"}}},
        "Triage": {"type": "object", "required": ["failure_mode", "confidence", "candidates", "explanation",
                                                  "next_steps", "openssl_command"], "properties": {
            "failure_mode": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "candidates": {"type": "array", "items": {"type": "string"}}, "explanation": {"type": "string"},
            "next_steps": {"type": "array", "items": {"type": "string"}}, "openssl_command": nstr}},
        "Health": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "domains": {"type": "object", "additionalProperties": {"type": "integer"}},
            "served": {"type": "integer"}, "version": {"type": "string"},
            "tls": {"type": "string", "enum": ["engine", "python-ssl"],
                    "description": "what drives the TLS edge's handshakes: edgecert's C engine or Python's ssl"}}},
        "WebhookDelivery": {"type": "object", "properties": {
            "id": {"type": "integer"}, "event_id": {"type": "string"}, "type": {"type": "string"},
            "hostname": nstr, "url": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"}, "last_status_code": {"type": ["integer", "null"]},
            "last_error": nstr, "next_attempt_at": _dt(), "created_at": _dt(), "delivered_at": _dt(),
            "event": {"type": ["object", "null"], "description": "the JSON body that is POSTed"}}},
        "WebhookDeliveryList": {"type": "object", "properties": {
            "deliveries": {"type": "array", "items": _ref("WebhookDelivery")}, "count": {"type": "integer"}}},
    }


def openapi_document(*, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API listener (``EDGECERT_API_LISTEN``)."""
    q = lambda name, desc, typ="string": {"name": name, "in": "query", "required": False,  # noqa: E731
                                          "schema": {"type": typ}, "description": desc}
    paths: dict[str, Any] = {
        "/v1/domains": {
            "post": {"operationId": "createDomain", "tags": ["domains"], "summary": "Onboard a tenant domain",
                     "description": "Registers the name and starts the DNS check; no CA order is placed until the "
                                    "name points at the edge.",
                     "security": _OP, "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("DomainCreate")}}},
                     "responses": {"201": _json("Domain", "created"), **_AUTH,
                                   "400": _err("the body is not a JSON object"),
                                   "409": _err("the hostname is already registered (the body shows the domain only "
                                               "when the caller may see it)"),
                                   "413": _err("body too large"),
                                   "422": _err("invalid hostname, tenant or key_type; invalid_origin, "
                                               "origin_not_allowed (a tenant naming an internal address), "
                                               "invalid_metadata, invalid_min_tls_version, invalid_http2")}},
            "get": {"operationId": "listDomains", "tags": ["domains"], "summary": "List domains",
                    "description": "In natural hostname order (d9 < d10 < d99), a page at a time: follow `next` "
                                   "(keyset pagination, stable while domains are added). With a tenant token, "
                                   "only that tenant's domains.", "security": _OP,
                    "parameters": [q("status", "only this status"), q("tenant", "only this tenant"),
                                   q("q", "only hostnames containing this text"),
                                   q("prefix", "only hostnames starting with this text"),
                                   q("issuer", "only names whose current certificate comes from this CA: its "
                                               "ACME directory URL (exactly) or a part of the issuer name (any "
                                               "case)"),
                                   q("expiring_before", "only names whose current certificate ends before this: "
                                                        "an ISO date (2027-01-31), date-time, or a number of "
                                                        "days from now (30 or 30d)"),
                                   q("probe", "by the last self-probe: failing (e.g. active but visitors get an "
                                              "error), ok, unknown (not probed yet)"),
                                   q("metadata", "key=value: only names whose metadata holds exactly this pair"),
                                   q("limit", "page size (default 100; larger values are capped at 1000)",
                                     "integer"),
                                   q("cursor", "the `next` of the previous page"),
                                   q("offset", "skip this many (without cursor; kept for older callers)",
                                     "integer")],
                    "responses": {"200": _json("DomainList", "a page of domains, in natural order"), **_AUTH,
                                  "422": _err("invalid_query (limit / offset not integers in range, a bad "
                                              "issuer / expiring_before / probe / metadata: `field` names it), "
                                              "invalid_status, unknown_tenant (also for another tenant's name "
                                              "with a tenant token), invalid_cursor")}}},
        "/v1/domains/batch": {
            "post": {"operationId": "batchDomains", "tags": ["domains"], "summary": "Onboard up to 500 domains",
                     "description": "Each item gets exactly the checks of POST /v1/domains; the same name for the "
                                    "same tenant again is `exists` (idempotent). Per-item results, in order.",
                     "security": _OP, "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("DomainBatch")}}},
                     "responses": {"200": _json("DomainBatchResult", "one result per item"), **_AUTH,
                                   "400": _err("the body is not a JSON object"), "413": _err("body too large"),
                                   "422": _err("invalid_batch (no domains list), batch_too_large (> 500)")}}},
        "/v1/domains/{hostname}": {
            "parameters": [_HOST],
            "get": {"operationId": "getDomain", "tags": ["domains"], "summary": "One domain", "security": _OP,
                    "responses": {"200": _json("Domain", "the domain"), **_AUTH, "404": _NOT_FOUND}},
            "patch": {"operationId": "patchDomain", "tags": ["domains"],
                      "summary": "Change a domain's settings (origin, min_tls_version, metadata, http2)",
                      "description": "Operator token for any domain, a tenant token for its own (an origin it sets "
                                     "must be a public address). null resets a setting to the default. The edge "
                                     "routes by the new origin within its refresh interval (sweep_interval), "
                                     "without a restart.", "security": _OP,
                      "requestBody": {"required": True, "content": {
                          "application/json": {"schema": _ref("DomainPatch")}}},
                      "responses": {"200": _json("Domain", "changed"), **_AUTH, "404": _NOT_FOUND,
                                    "400": _err("the body is not a JSON object"),
                                    "422": _err("unsupported_field (not a setting), empty_patch, invalid_origin, "
                                                "origin_not_allowed, invalid_metadata, invalid_min_tls_version, "
                                                "invalid_http2")}},
            "delete": {"operationId": "deleteDomain", "tags": ["domains"], "summary": "Remove a domain",
                       "description": "Stops serving it and its renewals, deletes its certificates, live files and "
                                      "exports, runs the reload hook, deactivates the authorizations of an open "
                                      "order at the CA; with revoke=true also revokes its certificate (reason "
                                      "cessationOfOperation). A failed cleanup step never blocks the removal: it "
                                      "is listed in the answer. Tenants may remove (and revoke) their own domains.",
                       "parameters": [{"name": "revoke", "in": "query", "required": False,
                                       "schema": {"type": "boolean", "default": False}},
                                      {"name": "report", "in": "query", "required": False,
                                       "schema": {"type": "boolean", "default": False}}],
                       "security": _OP, "responses": {"204": {"description": "removed, every cleanup step done "
                                                                             "(no revoke, no report asked for)"},
                                                      "200": _json("Removal", "removed; the cleanup report (with "
                                                                   "revoke=true, report=true, or a failed step)"),
                                                      **_AUTH, "404": _NOT_FOUND,
                                                      "422": _err("invalid_query (revoke is not true/false)"),
                                                      "503": _err("busy (the domain is being worked on)")}}},
        "/v1/domains/{hostname}/renew": {
            "parameters": [_HOST],
            "post": {"operationId": "renewDomain", "tags": ["domains"], "summary": "Renew now / retry after a fix",
                     "security": _OP, "responses": {"202": _json("Domain", "queued"), **_AUTH, "404": _NOT_FOUND}}},
        "/v1/domains/{hostname}/certificate": {
            "parameters": [_HOST],
            "put": {"operationId": "uploadCertificate", "tags": ["domains"],
                    "summary": "Serve a certificate you bring (instead of one from the CA)",
                    "description": "The certificate goes live only if the PEM parses, the key matches, it covers "
                                   "the name, it is valid now and its chain verifies to a trusted root (system "
                                   "store plus upload_trust_roots). Only the chain that climbs from the leaf is "
                                   "kept and served; unrelated certificates are dropped.", "security": _OP,
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("CertificateUpload")}}},
                    "responses": {"200": _json("Domain", "now served"), **_AUTH, "404": _NOT_FOUND,
                                  "400": _err("the body is not a JSON object"),
                                  "422": _err("refused: invalid_pem, invalid_key, key_mismatch, expired, "
                                              "not_yet_valid, name_not_covered, incomplete_chain, untrusted_chain, "
                                              "too_many_certificates, chain_too_long, chain_too_large, "
                                              "swap_rejected"),
                                  "503": _err("analysis_timeout / analysis_busy: decoding took too long or no "
                                              "worker was free (Retry-After)")}}},
        "/v1/domains/{hostname}/events": {
            "parameters": [_HOST],
            "get": {"operationId": "domainEvents", "tags": ["domains"], "summary": "The domain's timeline",
                    "security": _OP,
                    "parameters": [q("after", "only events with a larger id (for polling)", "integer"),
                                   q("limit", "the newest N (default 200, at most 1000)", "integer")],
                    "responses": {"200": _json("EventList", "events, oldest first"), **_AUTH,
                                  "422": _err("invalid_query: after / limit are not integers in range "
                                              "(limit >= 1, after 0 to 2^63-1)"), "404": _NOT_FOUND}}},
        "/v1/tenants": {
            "post": {"operationId": "createTenant", "tags": ["tenants"],
                     "summary": "Create a tenant and an API token for it (operator token)", "security": _OP,
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("TenantCreate")}}},
                     "responses": {"201": _json("TenantToken", "tenant created; its first token"),
                                   "200": _json("TenantToken", "the tenant existed; an additional token"),
                                   **_AUTH, "400": _err("the body is not a JSON object"),
                                   "422": _err("invalid tenant name")}},
            "get": {"operationId": "listTenants", "tags": ["tenants"], "summary": "List tenants (operator token)",
                    "security": _OP, "responses": {"200": _json("TenantList", "tenants by name"), **_AUTH}}},
        "/v1/tenants/{name}": {
            "parameters": [_TENANT],
            "patch": {"operationId": "patchTenant", "tags": ["tenants"],
                      "summary": "Set the tenant's default origin (operator token)", "security": _OP,
                      "requestBody": {"required": True, "content": {
                          "application/json": {"schema": _ref("TenantPatch")}}},
                      "responses": {"200": _json("Tenant", "changed"), **_AUTH, "404": _err("no such tenant"),
                                    "400": _err("the body is not a JSON object"),
                                    "422": _err("unsupported_field, invalid_origin")}}},
        "/v1/tenants/{name}/tokens": {
            "parameters": [_TENANT],
            "post": {"operationId": "rotateTenantToken", "tags": ["tenants"],
                     "summary": "Rotate: revoke every token of the tenant and return a new one (operator token)",
                     "security": _OP, "responses": {"201": _json("TenantToken", "the new token"), **_AUTH,
                                                    "404": _err("no such tenant")}},
            "delete": {"operationId": "revokeTenantTokens", "tags": ["tenants"],
                       "summary": "Revoke every token of the tenant (operator token)", "security": _OP,
                       "responses": {"200": _json("TokensRevoked", "how many were revoked"), **_AUTH,
                                     "404": _err("no such tenant")}}},
        "/v1/webhooks/deliveries": {
            "get": {"operationId": "listWebhookDeliveries", "tags": ["webhooks"],
                    "summary": "The webhook delivery log, newest first (operator token)", "security": _OP,
                    "parameters": [q("status", "pending, delivered or failed"), q("hostname", "only this domain"),
                                   q("type", "only this event type"),
                                   q("limit", "at most this many (default 100, at most 1000)", "integer"),
                                   q("after", "only rows with a larger id, oldest first", "integer")],
                    "responses": {"200": _json("WebhookDeliveryList", "deliveries"), **_AUTH,
                                  "422": _err("invalid_query: limit / after are not integers in range "
                                              "(limit >= 1, after 0 to 2^63-1)")}}},
        "/v1/diagnose/{hostname}": {
            "parameters": [_HOST],
            "get": {"operationId": "diagnose", "tags": ["diagnostics"],
                    "summary": "Probe the edge for a registered domain and name what is wrong",
                    "description": "Public (rate-limited per client). With a tenant token, another tenant's "
                                   "domain answers 404.", "security": [{}, {"bearerAuth": []}],
                    "responses": {"200": _json("Diagnosis", "the diagnosis"), "404": _NOT_FOUND,
                                  "401": _AUTH["401"],
                                  "422": _err("the name resolves to an address the service may not probe"),
                                  "429": _err("too many requests from this client"),
                                  "504": _err("the diagnosis took too long")}}},
        "/v1/triage": {
            "post": {"operationId": "triage", "tags": ["diagnostics"],
                     "summary": "Classify a pasted error report", "security": _PUBLIC,
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("TriageRequest")}}},
                     "responses": {"200": _json("Triage", "the classification"),
                                   "400": _err("the body is not a JSON object"),
                                   "422": _err("report missing or empty, or invalid hostname"),
                                   "429": _err("too many requests from this client (Retry-After)"),
                                   "503": _err("analysis_timeout / analysis_busy: the report took too long to "
                                               "classify or no worker was free (Retry-After)")}}},
        "/status/{hostname}": {
            "parameters": [_HOST],
            "get": {"operationId": "statusPage", "tags": ["status"], "summary": "The tenant's status page (HTML)",
                    "description": "Public. Each onboarding step in plain language, the DNS record to create, "
                                   "what is wrong and who acts, an openssl command; no secrets.",
                    "security": _PUBLIC,
                    "responses": {"200": {"description": "the page", "content": {"text/html": {
                        "schema": {"type": "string"}}}},
                        "404": {"description": "not registered (HTML)", "content": {"text/html": {
                            "schema": {"type": "string"}}}},
                        "429": {"description": "too many requests from this client",
                                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/healthz": {"get": {"operationId": "healthz", "tags": ["operations"], "summary": "Liveness and store health",
                             "security": _PUBLIC,
                             "responses": {"200": _json("Health", "healthy"),
                                           "503": _json({"type": "object"}, "the store is unavailable")}}},
        "/metrics": {"get": {"operationId": "metrics", "tags": ["operations"],
                             "summary": "Prometheus metrics (text format 0.0.4); the per-hostname series only "
                                        "with the operator token", "security": _PUBLIC,
                             "responses": {"200": {"description": "metrics", "content": {"text/plain": {
                                 "schema": {"type": "string"}}}}}}},
        "/v1/openapi.json": {"get": {"operationId": "openapi", "tags": ["operations"],
                                     "summary": "This document", "security": _PUBLIC,
                                     "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                                         "application/json": {"schema": {"type": "object"}}}}}}},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "edgecert API", "version": __version__,
                 "description": "Operator, tenant and diagnostic API of edgecert. JSON over HTTP; "
                                "`Authorization: Bearer <token>` with the operator token (EDGECERT_ADMIN_TOKEN) or a "
                                "tenant token (POST /v1/tenants). Errors are `{\"error\": {\"code\", \"message\"}}` "
                                "with a 4xx status for bad input. With a tenant token, another tenant's domain "
                                "answers 404 exactly like a missing one.",
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": [{"name": t} for t in ("domains", "tenants", "webhooks", "diagnostics", "status", "operations")],
        "paths": paths,
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                          "description": "operator or tenant token"}}},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
