"""CAA with several CAs, end to end: the tenant's CAA record allows only the SECOND of two configured CAs; the name is
ordered from that CA alone (no order, not even a request for a new order, at the first), and the events say which
CAs the record allowed. Two real Pebbles, real CAA records served by pebble-challtestsrv, a real ``edgecert serve``;
each CA's CAA identity comes from its ``caa_identities`` setting (Pebble 2.4 publishes none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import EdgeProcess, require_binary, served_leaf

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _pebble(dns, work: Path, http_port: int):
    require_binary("pebble")
    from edge.demo.components import Pebble
    return Pebble(dns_server=dns, work_dir=work, http_port=http_port, authz_reuse_percent=0).start()


def test_caa_allowing_only_the_second_ca_orders_there_and_never_at_the_first(dns, tmp_path):
    from edge.demo.components import free_port
    http = free_port()
    a = _pebble(dns, tmp_path / "ca-a", http)
    b = _pebble(dns, tmp_path / "ca-b", http)
    host, parent = "shop.caa-two.test", "caa-two.test"
    cfg = tmp_path / "edgecert.toml"
    cfg.write_text("\n".join([
        "[edgecert]", 'acme_email = "ops@caa-two.test"', "",
        "[[issuers]]", f"directory = {json.dumps(a.directory_url)}", f"ca_bundle = {json.dumps(str(a.ca_bundle))}",
        'caa_identities = ["first-ca.test"]', "",
        "[[issuers]]", f"directory = {json.dumps(b.directory_url)}", f"ca_bundle = {json.dumps(str(b.ca_bundle))}",
        'caa_identities = ["second-ca.test"]', ""]))
    dns.add_caa(parent, [{"tag": "issue", "value": "second-ca.test"}])
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=a, dns=dns,
                       env={"EDGECERT_ISSUER_FALLBACK_WAIT": "2", "EDGECERT_TRANSIENT_RETRY_SCHEDULE": "1,2"})
    for k in ("EDGECERT_ACME_DIRECTORY", "EDGECERT_ACME_CA_BUNDLE"):
        edge.env.pop(k, None)
    edge.env["EDGECERT_CONFIG"] = str(cfg)
    try:
        edge.start()
        edge.add_domain(host, tenant="caa-two")
        d = edge.wait_status(host, ("active", "failed"), timeout=90)
        assert d["status"] == "active", (d, edge.log_tail(80))
        assert d["certificate"]["issuer_directory"] == b.directory_url
        assert a.order_count() == 0, "the CA the CAA record does not allow got an order"
        assert b.order_count() == 1 and b.issued_count() == 1
        leaf = served_leaf(edge.https_port, host)
        assert format(leaf.serial_number, "x") == d["certificate"]["serial"]
        checked = [e for e in edge.events(host) if e["kind"] == "caa_checked"]
        assert checked and checked[-1]["data"]["ok"] is True, checked
        assert checked[-1]["data"]["directories"] == [b.directory_url], checked[-1]
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()
        dns.clear_caa(parent)
        a.stop()
        b.stop()
