"""Tenant tokens over the real API of a real ``edgecert serve``: isolation, rotation, revocation.

With a tenant token a tenant sees and manages only its own domains; another tenant's domain answers 404 with the
same body as a missing one (byte for byte once the hostname is replaced).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import ADMIN_TOKEN

pytestmark = pytest.mark.real

MINE = "www.mine.tenants.test"
THEIRS = "shop.theirs.tenants.test"
MISSING = "nope.absent.tenants.test"


def _raw(edge, method: str, path: str, token: str | None, body=None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(edge.api + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def edge(edge_factory):
    # Isolation, not ownership proofs (tests/test_ownership.py): a tenant's claim is bound at once here.
    return edge_factory(EDGECERT_TENANT_CLAIMS_REQUIRE_PROOF="false")


@pytest.fixture
def two_tenants(edge, dns):
    # Both stay pending_dns: isolation does not need certificates, and no CA order is placed.
    for h in (MINE, THEIRS):
        dns.add_a(h, ["192.0.2.20"])
    st, a = edge.call("POST", "/v1/tenants", {"name": "mine"})
    assert st == 201 and a["created"] is True and a["token"].startswith("ect_")
    st, b = edge.call("POST", "/v1/tenants", {"name": "theirs"})
    assert st == 201
    edge.add_domain(MINE, tenant="mine", token=a["token"])  # a tenant token adds to its own tenant
    edge.add_domain(THEIRS, tenant="theirs")                # the operator adds for any tenant
    return edge, a["token"], b["token"]


def test_tenant_sees_and_manages_only_its_own_domains(two_tenants):
    edge, mine, theirs = two_tenants
    # list: only its own, whatever the filter says
    st, body = edge.call("GET", "/v1/domains", token=mine)
    assert st == 200 and [d["hostname"] for d in body["domains"]] == [MINE]
    st, body = edge.call("GET", "/v1/domains?tenant=theirs", token=mine)
    st2, missing = edge.call("GET", "/v1/domains?tenant=nobody", token=mine)
    # another tenant's name answers exactly like a tenant that does not exist (issue 17: a 422, not an empty list)
    assert st == st2 == 422 and "domains" not in body and body["error"]["code"] == missing["error"]["code"]
    assert body["error"]["message"].replace("theirs", "X") == missing["error"]["message"].replace("nobody", "X")
    st, body = edge.call("GET", "/v1/domains?status=pending_dns", token=mine)
    assert [d["hostname"] for d in body["domains"]] == [MINE]
    # the operator sees both
    st, body = edge.call("GET", "/v1/domains")
    assert sorted(d["hostname"] for d in body["domains"]) == sorted([MINE, THEIRS])
    # get / events / renew of its own domain work
    assert edge.call("GET", f"/v1/domains/{MINE}", token=mine)[1]["tenant"] == "mine"
    st, ev = edge.call("GET", f"/v1/domains/{MINE}/events", token=mine)
    assert st == 200 and ev["events"][0]["kind"] == "domain_added"
    assert edge.call("POST", f"/v1/domains/{MINE}/renew", token=mine)[0] == 202

    # Another tenant's domain answers exactly like a missing one, for every call.
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/renew"), ("GET", "/events")):
        st_other, other = _raw(edge, method, f"/v1/domains/{THEIRS}{suffix}", mine)
        st_missing, missing = _raw(edge, method, f"/v1/domains/{MISSING}{suffix}", mine)
        assert (st_other, st_missing) == (404, 404), (method, suffix, other)
        assert other.replace(THEIRS.encode(), b"HOST") == missing.replace(MISSING.encode(), b"HOST"), \
            (method, suffix, other, missing)
        assert json.loads(other)["error"]["code"] == "not_found"
    # diagnose with a tenant token: the same
    st_other, other = _raw(edge, "GET", f"/v1/diagnose/{THEIRS}", mine)
    st_missing, missing = _raw(edge, "GET", f"/v1/diagnose/{MISSING}", mine)
    assert (st_other, st_missing) == (404, 404)
    assert other.replace(THEIRS.encode(), b"HOST") == missing.replace(MISSING.encode(), b"HOST")

    # Nothing above touched the other tenant's domain.
    d = edge.domain(THEIRS)
    assert d["tenant"] == "theirs" and d["attempts"] == 0
    kinds = [e["kind"] for e in edge.events(THEIRS)]
    assert "domain_removed" not in kinds
    # ... and the other tenant still sees it, and not ours.
    st, body = edge.call("GET", "/v1/domains", token=theirs)
    assert [d["hostname"] for d in body["domains"]] == [THEIRS]
    assert edge.call("GET", f"/v1/domains/{MINE}", token=theirs)[0] == 404

    # A tenant deletes its own domain.
    assert edge.call("DELETE", f"/v1/domains/{MINE}", token=mine)[0] == 204
    assert edge.call("GET", f"/v1/domains/{MINE}")[0] == 404


def test_tenant_cannot_create_for_another_tenant_nor_use_operator_calls(two_tenants):
    edge, mine, _ = two_tenants
    st, body = edge.call("POST", "/v1/domains", {"hostname": "new.theirs.tenants.test", "tenant": "theirs"},
                         token=mine)
    assert st == 403 and body["error"]["code"] == "forbidden"
    assert edge.call("GET", "/v1/domains/new.theirs.tenants.test")[0] == 404  # nothing was created
    # Registering a name another tenant holds: a conflict that shows nothing of the other domain.
    st, body = edge.call("POST", "/v1/domains", {"hostname": THEIRS}, token=mine)
    assert st == 409 and set(body["error"]) == {"code", "message"} and '"tenant"' not in json.dumps(body)
    # The operator calls are refused with a tenant token.
    for method, path, b in (("POST", "/v1/tenants", {"name": "evil"}), ("GET", "/v1/tenants", None),
                            ("POST", "/v1/tenants/theirs/tokens", None), ("DELETE", "/v1/tenants/theirs/tokens", None),
                            ("GET", "/v1/webhooks/deliveries", None)):
        st, body = edge.call(method, path, b, token=mine)
        assert st == 403 and body["error"]["code"] == "forbidden", (method, path, body)
    assert "evil" not in [t["name"] for t in edge.call("GET", "/v1/tenants")[1]["tenants"]]


def test_rotation_revokes_the_old_token_and_revocation_locks_out(two_tenants):
    edge, mine, _ = two_tenants
    st, rot = edge.call("POST", "/v1/tenants/mine/tokens")
    assert st == 201 and rot["revoked"] == 1 and rot["token"] != mine
    st, body = edge.call("GET", "/v1/domains", token=mine)
    assert st == 401 and body["error"]["code"] == "invalid_token"
    st, body = edge.call("GET", "/v1/domains", token=rot["token"])
    assert st == 200 and [d["hostname"] for d in body["domains"]] == [MINE]
    # Revoke: the new token stops working too.
    st, rev = edge.call("DELETE", "/v1/tenants/mine/tokens")
    assert st == 200 and rev["revoked"] == 1
    assert edge.call("GET", "/v1/domains", token=rot["token"])[0] == 401
    # Tokens are stored hashed: the secret is nowhere in the database file.
    db = b"".join(p.read_bytes() for p in edge.work_dir.glob("edgecert.db*"))
    assert rot["token"].encode() not in db and mine.encode() not in db
    # Unknown tenants, garbage tokens.
    assert edge.call("POST", "/v1/tenants/ghost/tokens")[0] == 404
    assert edge.call("GET", "/v1/domains", token="ect_" + "x" * 43)[0] == 401
    assert edge.call("GET", "/v1/domains", token=ADMIN_TOKEN + "x")[0] == 401
