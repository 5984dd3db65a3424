"""The OpenAPI 3.1 document at ``/v1/openapi.json`` against the API app's real routes and real answers."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.api import make_api_app
from edge.api.openapi import openapi_document
from edge.config import Settings
from edge.diagnostics import FAILURE_MODES
from edge.metrics import Metrics

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def routed() -> dict[str, set[str]]:
    """{path template: methods} of the API app as ``edgecert serve`` builds it (HEAD comes with GET)."""
    app = make_api_app(SimpleNamespace(settings=Settings(), storage=None))
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None:
            continue
        out.setdefault(path, set()).add(route.method.lower())
    return out


def documented(doc: dict) -> dict[str, set[str]]:
    return {p: {m for m in ops if m in HTTP_METHODS} for p, ops in doc["paths"].items()}


def test_every_route_is_documented_and_every_documented_path_is_routed():
    doc = openapi_document()
    assert documented(doc) == routed()


def test_document_is_well_formed_openapi_3_1():
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    op_ids = []

    def walk(node, where):
        if isinstance(node, dict):
            if "$ref" in node:
                m = re.fullmatch(r"#/components/schemas/(\w+)", node["$ref"])
                assert m and m.group(1) in schemas, (where, node["$ref"])
            if isinstance(node.get("type"), (str, list)) and where.endswith("schema"):
                types = node["type"] if isinstance(node["type"], list) else [node["type"]]
                assert set(types) <= {"object", "array", "string", "integer", "number", "boolean", "null"}
            for k, v in node.items():
                walk(v, f"{where}/{k}" if k != "schema" else f"{where}/schema")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
    walk(doc, "#")
    for path, item in doc["paths"].items():
        path_params = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            op_ids.append(op["operationId"])
            assert op["responses"], (path, method)
            assert all("description" in r for r in op["responses"].values()), (path, method)
            params = path_params | {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), (path, method)
            assert all(p["required"] for p in item.get("parameters", []) if p["in"] == "path")
            for sec in op.get("security", []):
                assert set(sec) <= set(doc["components"]["securitySchemes"])
    assert len(op_ids) == len(set(op_ids))


@pytest.mark.real
def test_served_document_matches_and_describes_real_answers(edge, dns):
    st, served = edge.call("GET", "/v1/openapi.json", token=None)
    assert st == 200 and served == openapi_document()
    schemas = served["components"]["schemas"]
    dns.add_a("doc.openapi.test", ["192.0.2.50"])
    created = edge.add_domain("doc.openapi.test", tenant="docs")
    assert set(schemas["Domain"]["required"]) <= set(created)
    assert set(schemas["Domain"]["properties"]) >= set(created)
    assert created["status"] in schemas["Domain"]["properties"]["status"]["enum"]
    st, err = edge.call("GET", "/v1/domains/missing.openapi.test")
    assert st == 404 and "404" in served["paths"]["/v1/domains/{hostname}"]["get"]["responses"]
    assert set(schemas["Error"]["properties"]["error"]["required"]) <= set(err["error"])
    st, tenant = edge.call("POST", "/v1/tenants", {"name": "docs2"})
    assert str(st) in served["paths"]["/v1/tenants"]["post"]["responses"]
    assert set(schemas["TenantToken"]["required"]) <= set(tenant)
    st, ev = edge.call("GET", "/v1/domains/doc.openapi.test/events")
    assert set(schemas["Event"]["required"]) <= set(ev["events"][0])
    st, health = edge.call("GET", "/healthz", token=None)
    assert set(health) <= set(schemas["Health"]["properties"])
    st, tri = edge.call("POST", "/v1/triage", {"report": "NET::ERR_CERT_DATE_INVALID"}, token=None)
    assert st == 200 and set(schemas["Triage"]["required"]) <= set(tri)
    st, log = edge.call("GET", "/v1/webhooks/deliveries")
    assert st == 200 and set(log) == set(schemas["WebhookDeliveryList"]["properties"])


# -- the prose docs say only what the code does ---------------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_api_md_lists_exactly_the_documented_routes():
    text = (DOCS / "api.md").read_text()
    listed = set()
    for m in re.finditer(r"^\| `(GET|POST|PUT|DELETE|PATCH) (/[^ `?]*)", text, re.M):
        listed.add((m.group(1).lower(), m.group(2)))
    doc = openapi_document()
    assert listed == {(meth, p) for p, meths in documented(doc).items() for meth in meths}


def test_every_setting_is_in_configuration_md():
    text = (DOCS / "configuration.md").read_text()
    missing = [f.name for f in fields(Settings) if f"`{f.name}`" not in text]
    assert missing == []


def test_troubleshooting_covers_every_failure_mode_with_who_acts():
    text = (DOCS / "troubleshooting.md").read_text()
    sections = dict(re.findall(r"^### `([a-z_]+)`\n\n\*\*Who acts:\*\* ([^.]+)\.", text, re.M))
    want = {m.id: m.who_acts for m in FAILURE_MODES.values() if m.id not in ("ok", "unknown")}
    assert sections == want


def test_operator_guide_names_every_metric_family():
    text = (DOCS / "operator-guide.md").read_text()
    names = {f.name for f in Metrics().registry.collect()}
    assert names and all(f"`{n}" in text for n in names), sorted(n for n in names if f"`{n}" not in text)
