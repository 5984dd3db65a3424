"""Ownership before binding (issue 13, item 8), over a real ``edgecert serve``, the real Pebble and the real
pebble-challtestsrv, which serves the tenants' TXT records.

A name claimed with a tenant token is bound (ordered, served) only after that tenant publishes its own
``_edgecert-verify.<name>`` TXT record. In this test DNS every name resolves to the edge by default (a live CNAME or
A record pointing here): exactly the case where, without a proof, any tenant could take any name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real

ORDER_KINDS = {"order_placed", "challenge_answered", "challenge_valid", "certificate_obtained", "swapped"}


def _tenant(edge, name: str) -> str:
    st, body = edge.call("POST", "/v1/tenants", {"name": name})
    assert st == 201, body
    return body["token"]


def _claim(edge, host: str, token: str) -> tuple[int, dict]:
    return edge.call("POST", "/v1/domains", {"hostname": host}, token=token)


def _ownership(records: list[dict]) -> dict:
    [rec] = [r for r in records if r["purpose"] == "ownership"]
    return rec


def _kinds(edge, host: str, token: str | None = None) -> list[str]:
    if token is None:
        return [e["kind"] for e in edge.events(host)]
    st, body = edge.call("GET", f"/v1/domains/{host}/events?limit=1000", token=token)
    assert st == 200, body
    return [e["kind"] for e in body["events"]]


def _wait_checks(edge, host: str, n: int) -> None:
    edge.wait_for(lambda: _kinds(edge, host).count("ownership_checked") >= n, timeout=30,
                  what=f"{n} ownership re-checks of {host}")


def _assert_nothing_ordered(edge, dns, host: str, token: str | None = None) -> None:
    kinds = _kinds(edge, host, token)
    assert not ORDER_KINDS & set(kinds), kinds
    assert not (edge.work_dir / "state" / "live" / host).exists()
    # Nobody asked DNS about the name itself: not the edge's pointing check, not Pebble validating an order
    # (only the ownership record _edgecert-verify.<host> was looked up).
    assert dns.dns_request_history(host) == [], dns.dns_request_history(host)
    assert dns.dns_request_history(f"_edgecert-verify.{host}")


@pytest.mark.slow
def test_unproven_claim_is_pending_orders_nothing_and_the_prover_takes_the_name(edge, dns):
    host = "shop.takeover.own.test"
    a, b = _tenant(edge, "own-a"), _tenant(edge, "own-b")

    # Tenant A claims a name it does not control (it resolves to the edge): pending, with the records to create.
    st, d = _claim(edge, host, a)
    assert st == 201, d
    assert d["status"] == "pending_ownership" and d["tenant"] == "own-a"
    assert d["ownership"] == {"required": True, "verified": False, "verified_at": None}
    rec_a = _ownership(d["dns_records"])
    assert rec_a["name"] == f"_edgecert-verify.{host}" and rec_a["type"] == "TXT"
    assert rec_a["value"].startswith("edgecert-verify=") and len(rec_a["value"]) > 30
    assert {"name": host, "type": "CNAME", "value": "edge.test", "purpose": "pointing"} in d["dns_records"]
    for r in d["dns_records"]:
        assert set(r) == {"name", "type", "value", "purpose"}
        assert not r["name"].endswith(".") and not r["value"].endswith("."), r
    assert rec_a["name"] in d["last_error"] and rec_a["value"] in d["last_error"]

    # The periodic re-check (with backoff) keeps looking; nothing is ordered at Pebble, nothing served.
    _wait_checks(edge, host, 2)
    assert edge.domain(host)["status"] == "pending_ownership"
    _assert_nothing_ordered(edge, dns, host)
    # No diagnose (anonymous or by the claimant) and no uploaded certificate for an unproven claim.
    for token in (a, None):
        st, body = edge.call("GET", f"/v1/diagnose/{host}", token=token)
        assert st == 409 and body["error"]["code"] == "ownership_unproven", body
    st, body = edge.call("PUT", f"/v1/domains/{host}/certificate", {"certificate": "x", "private_key": "y"},
                         token=a)
    assert st == 409 and body["error"]["code"] == "ownership_unproven", body

    # Tenant B without a proof: told which record of its own to create; A's claim is untouched.
    st, body = _claim(edge, host, b)
    assert st == 409 and body["error"]["code"] == "ownership_proof_required", body
    rec_b = _ownership(body["error"]["dns_records"])
    assert rec_b["name"] == rec_a["name"] and rec_b["value"] != rec_a["value"]
    assert '"tenant"' not in json.dumps(body) and "own-a" not in json.dumps(body)
    assert edge.domain(host)["tenant"] == "own-a"
    # The operator (trusted) still adds names without a proof.
    d_op = edge.add_domain("op.takeover.own.test", tenant="own-b")
    assert d_op["status"] == "pending_dns" and d_op["ownership"]["required"] is False
    assert [r["purpose"] for r in d_op["dns_records"]] == ["pointing"]

    # A publishing B's value (or anyone publishing A's) proves nothing for the other: the value is per tenant.
    dns.set_txt(rec_b["name"], rec_b["value"])
    try:
        st, d = _claim(edge, host, b)
        assert st == 201, d
        assert d["tenant"] == "own-b" and d["ownership"]["verified"] is True
        assert d["status"] in ("pending_dns", "issuing", "active")
        assert not [r for r in d["dns_records"] if r["purpose"] == "ownership"]
        # A's claim is gone (404 for A, exactly like a missing name), with an event for the takeover.
        assert edge.call("GET", f"/v1/domains/{host}", token=a)[0] == 404
        kinds = _kinds(edge, host)
        assert "claim_superseded" in kinds and "ownership_verified" in kinds
        # B sees only its own claim's history (not A's re-checks, not A's tenant name).
        st, ev = edge.call("GET", f"/v1/domains/{host}/events", token=b)
        assert st == 200 and "ownership_checked" not in [e["kind"] for e in ev["events"]]
        assert "own-a" not in json.dumps(ev)
        assert "own-a" in edge.log_text()  # the operator's log names both tenants
        final = edge.wait_status(host, "active", timeout=60)
        assert final["tenant"] == "own-b" and final["certificate"]["serial"]
        # A proven claim is not superseded by anyone (A now publishing its own record changes nothing).
        dns.set_txt(rec_a["name"], [rec_a["value"], rec_b["value"]])
        st, body = _claim(edge, host, a)
        assert st == 409 and body["error"]["code"] == "already_exists", body
        assert edge.domain(host)["tenant"] == "own-b"
    finally:
        dns.clear_txt(rec_a["name"])


@pytest.mark.slow
def test_owner_proves_later_picked_up_by_the_recheck_shown_on_status_page_and_cli(edge, dns):
    host = "www.later.own.test"
    a = _tenant(edge, "own-later")
    st, d = _claim(edge, host, a)
    assert st == 201 and d["status"] == "pending_ownership"
    rec = _ownership(d["dns_records"])

    # The status page shows the TXT record to create, exactly.
    st, html = edge.call("GET", f"/status/{host}", token=None)
    assert st == 200 and "Waiting for proof that you control this domain" in html
    assert f'<td id="ownership-name">{rec["name"]}</td>' in html
    assert f'<td id="ownership-value">{rec["value"]}</td>' in html
    assert f'<pre id="ownership-record">{rec["name"]}. TXT &#34;{rec["value"]}&#34;</pre>' in html \
        or f'<pre id="ownership-record">{rec["name"]}. TXT "{rec["value"]}"</pre>' in html
    assert "own-later" not in html and a not in html

    # The CLI shows every record (the tenant's own token).
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    env.update(EDGECERT_API_URL=edge.api, EDGECERT_TOKEN=a)
    r = subprocess.run([sys.executable, "-m", "edge", "domains", "show", host], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f'DNS record to create: {rec["name"]}. TXT "{rec["value"]}"  (ownership)' in r.stdout, r.stdout
    assert f"DNS record to create: {host}. CNAME edge.test.  (pointing)" in r.stdout, r.stdout

    # The value is stable: the same after a restart (derived, not random per process).
    _wait_checks(edge, host, 1)
    edge.restart()
    assert _ownership(edge.domain(host, token=a)["dns_records"]) == rec
    _assert_nothing_ordered(edge, dns, host)

    # The tenant creates the record later: the periodic re-check finds it and issuance goes on.
    dns.set_txt(rec["name"], rec["value"])
    try:
        d = edge.wait_status(host, "active", timeout=60)
    finally:
        dns.clear_txt(rec["name"])
    assert d["tenant"] == "own-later" and d["ownership"]["verified"] is True and d["ownership"]["verified_at"]
    assert [r["purpose"] for r in d["dns_records"]] == ["pointing"]
    kinds = _kinds(edge, host)
    assert kinds.index("ownership_verified") < kinds.index("order_placed")


def test_when_both_tenants_publish_their_record_the_earlier_claim_keeps_the_name(edge, dns):
    host = "both.own.test"
    a, b = _tenant(edge, "own-early"), _tenant(edge, "own-late")
    st, d = _claim(edge, host, a)
    assert st == 201 and d["status"] == "pending_ownership"
    rec_a = _ownership(d["dns_records"])
    st, body = _claim(edge, host, b)
    rec_b = _ownership(body["error"]["dns_records"])
    dns.set_txt(rec_a["name"], [rec_a["value"], rec_b["value"]])
    try:
        st, body = _claim(edge, host, b)
        assert st == 409 and body["error"]["code"] == "already_exists", body
        d = edge.wait_for(lambda: (lambda x: x if x["ownership"]["verified"] else None)(edge.domain(host)),
                          timeout=30, what="the earlier claim verified")
        assert d["tenant"] == "own-early"
    finally:
        dns.clear_txt(rec_a["name"])


@pytest.mark.slow
def test_released_name_with_a_live_cname_goes_to_another_tenant_only_with_proof(edge, dns):
    host = "app.released.own.test"
    dns.set_cname(host, "edge.test")  # the customer's CNAME keeps pointing at the edge after release
    try:
        a, b = _tenant(edge, "own-first"), _tenant(edge, "own-next")
        st, d = _claim(edge, host, a)
        assert st == 201
        rec_a = _ownership(d["dns_records"])
        dns.set_txt(rec_a["name"], rec_a["value"])
        edge.wait_status(host, "active", timeout=60)
        dns.clear_txt(rec_a["name"])
        assert edge.call("DELETE", f"/v1/domains/{host}", token=a)[0] == 204

        dns.clear_request_history(host)
        # Another tenant claims the released name: the CNAME still points here, but that proves nothing.
        st, d = _claim(edge, host, b)
        assert st == 201 and d["status"] == "pending_ownership" and d["tenant"] == "own-next", d
        _wait_checks(edge, host, 2)
        d = edge.domain(host)
        assert d["status"] == "pending_ownership" and d["certificate"] is None
        _assert_nothing_ordered(edge, dns, host, token=b)  # B's claim: its own events only
        # ... and the edge no longer serves the released name's certificate.
        from cryptography import x509
        from tests.helpers import served_leaf
        leaf = served_leaf(edge.https_port, host)
        try:
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
                .get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        assert host not in names, names
        # With its own proof, the next tenant gets the name.
        rec_b = _ownership(d["dns_records"])
        assert rec_b["value"] != rec_a["value"]
        dns.set_txt(rec_b["name"], rec_b["value"])
        try:
            d = edge.wait_status(host, "active", timeout=60)
        finally:
            dns.clear_txt(rec_b["name"])
        assert d["tenant"] == "own-next" and d["ownership"]["verified"] is True
    finally:
        dns.clear_cname(host)


def test_the_setting_turns_it_off(edge_factory, dns):
    edge = edge_factory(EDGECERT_TENANT_CLAIMS_REQUIRE_PROOF="false")
    t = _tenant(edge, "own-trusted")
    st, d = _claim(edge, "x.trusted.own.test", t)
    assert st == 201 and d["status"] == "pending_dns" and d["ownership"]["required"] is False
    assert [r["purpose"] for r in d["dns_records"]] == ["pointing"]


async def test_store_supersedes_only_an_unproven_claim_of_another_tenant(database_url):
    """The storage seam on SQLite and PostgreSQL: the takeover is one transaction, and only of an unproven claim."""
    from store import Conflict, NotFound, open_storage
    from store.models import DomainStatus, utcnow
    st = open_storage(database_url)
    try:
        a, b = await st.ensure_tenant("a"), await st.ensure_tenant("b")
        await st.add_domain("u.own.test", a.id, ownership_required=True, status=DomainStatus.PENDING_OWNERSHIP)
        await st.add_domain("p.own.test", a.id, ownership_required=True, ownership_verified_at=utcnow())
        await st.add_domain("o.own.test", a.id)  # operator-added
        with pytest.raises(Conflict):  # the same tenant does not "supersede" itself
            await st.supersede_unproven_claim("u.own.test", a.id)
        for host in ("p.own.test", "o.own.test"):
            with pytest.raises(Conflict):
                await st.supersede_unproven_claim(host, b.id, ownership_required=True)
            assert (await st.get_domain(host)).tenant_id == a.id
        with pytest.raises(NotFound):
            await st.supersede_unproven_claim("none.own.test", b.id)
        d, dropped = await st.supersede_unproven_claim("u.own.test", b.id, ownership_required=True,
                                                       ownership_verified_at=utcnow(), status=DomainStatus.PENDING_DNS)
        assert dropped == a.id and d.tenant_id == b.id and not d.ownership_pending
        got = await st.get_domain("u.own.test")
        assert got.tenant_id == b.id and got.status == DomainStatus.PENDING_DNS and got.ownership_verified_at
    finally:
        st.close()
