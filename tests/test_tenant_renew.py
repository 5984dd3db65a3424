"""Tenants may force a renewal, but not burn the operator's CA limits with it."""

from __future__ import annotations


from tests.helpers import EdgeProcess


def test_tenant_forced_renewals_are_throttled_operator_ones_are_not(tmp_path, pebble, dns):
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_TENANT_RENEW_MIN_AGE": "3600"}).start()
    try:
        st, t = edge.call("POST", "/v1/tenants", {"name": "renewer"})
        assert st == 201
        d = edge.add_domain("r.renew.test", tenant="renewer", token=t["token"])
        proof = [r for r in d["dns_records"] if r["purpose"] == "ownership"][0]
        dns.set_txt(proof["name"], proof["value"])  # ownership before binding: the tenant proves control
        d = edge.wait_status("r.renew.test", "active", timeout=30)
        st, body = edge.call("POST", "/v1/domains/r.renew.test/renew", token=t["token"])
        assert st == 429 and body["error"]["code"] == "renew_throttled" and body["error"]["retry_at"]
        assert edge.domain("r.renew.test")["certificate"]["serial"] == d["certificate"]["serial"]
        st, body = edge.call("POST", "/v1/domains/r.renew.test/renew")  # the operator may
        assert st == 202
        edge.wait_for(lambda: edge.domain("r.renew.test")["certificate"]["serial"] != d["certificate"]["serial"],
                      timeout=30, what="operator-forced renewal")
    finally:
        edge.stop()
