"""CAA checked before ordering, end to end: a real ``edgecert serve``, a real Pebble behind the test ACME proxy
(which adds ``meta.caaIdentities`` to the directory: Pebble 2.4 publishes none) and real CAA records served by
pebble-challtestsrv."""

from __future__ import annotations

import json
import urllib.request

import pytest
from aiohttp import web

from tests.helpers import EdgeProcess
from tests.support.acmeproxy import AcmeProxy, ProxyThread

CA_IDENTITY = "pebble.caa.test"


class CaaIdentityProxy(AcmeProxy):
    """The test ACME proxy, whose directory also says ``meta.caaIdentities = [CA_IDENTITY]``."""

    async def _forward(self, request: web.Request, kind: str, body: bytes) -> web.Response:
        resp = await super()._forward(request, kind, body)
        if kind == "directory" and resp.status == 200 and request.method == "GET":
            directory = json.loads(resp.body)
            directory.setdefault("meta", {})["caaIdentities"] = [CA_IDENTITY]
            headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
            return web.Response(status=200, body=json.dumps(directory).encode(), headers=headers)
        return resp


@pytest.fixture
def caa_proxy(pebble, tmp_path):
    pt = ProxyThread(pebble.directory_url)
    pt.proxy = CaaIdentityProxy(pebble.directory_url, upstream_ca=pebble.ca_bundle, work_dir=tmp_path / "proxy",
                                ari=False)
    pt.start()
    yield pt
    pt.stop()


@pytest.mark.real
@pytest.mark.slow
def test_forbidding_caa_holds_the_order_until_the_record_is_fixed(tmp_path, pebble, dns, caa_proxy):
    host, parent = "shop.caa-e2e.test", "caa-e2e.test"
    dns.set_servfail(parent)  # the climb reaches the parent: its CAA cannot be read
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_ACME_DIRECTORY": caa_proxy.directory_url,
                            "EDGECERT_ACME_CA_BUNDLE": caa_proxy.ca_bundle}).start()
    try:
        orders_before = pebble.order_count()
        edge.add_domain(host, tenant="caa")
        d = edge.wait_for(lambda: (lambda d: d if d["last_error_code"] == "caa_lookup_failed" else None)(
            edge.domain(host)), timeout=20, what="caa_lookup_failed")
        assert d["status"] == "pending_issuance" and parent in d["last_error"]

        # The lookup works again but the record names another CA: forbidden, picked up by the periodic re-check.
        dns.clear_servfail(parent)
        dns.add_caa(parent, [{"tag": "issue", "value": "other-ca.example; accounturi=https://x/1"}])
        d = edge.wait_for(lambda: (lambda d: d if d["last_error_code"] == "caa_forbidden" else None)(
            edge.domain(host)), timeout=20, what="caa_forbidden")
        assert d["status"] == "pending_issuance" and d["certificate"] is None
        assert f'{parent}. CAA 0 issue "{CA_IDENTITY}"' in d["last_error"]
        assert f'{parent}. CAA 0 issue "other-ca.example; accounturi=https://x/1"' in d["last_error"]
        # No order was placed at the CA, nothing at all was asked of it for this name.
        assert caa_proxy.count("newOrder") == 0 and pebble.order_count() == orders_before
        with urllib.request.urlopen(f"{edge.api}/status/{host}", timeout=10) as r:
            page = r.read().decode()
        assert "CAA" in page and f"{parent}. CAA 0 issue &#34;{CA_IDENTITY}&#34;" in page
        assert "Who needs to act:</strong> you (the owner of the domain)" in page
        assert caa_proxy.directory_url not in page and "Traceback" not in page
        kinds = [e["kind"] for e in edge.events(host)]
        assert "caa_checked" in kinds and "order_placed" not in kinds

        # The tenant fixes the record; a renew request picks it up at once.
        dns.clear_caa(parent)
        dns.add_caa(parent, [{"tag": "issue", "value": CA_IDENTITY}])
        st, _ = edge.call("POST", f"/v1/domains/{host}/renew")
        assert st == 202
        d = edge.wait_status(host, "active", timeout=40)
        assert d["last_error"] is None and d["certificate"]["serial"]
        assert caa_proxy.count("newOrder") == 1
        checks = [e["data"]["ok"] for e in edge.events(host) if e["kind"] == "caa_checked"]
        assert checks[0] is False and checks[-1] is True
    finally:
        edge.stop()
        dns.clear_servfail(parent)
        dns.clear_caa(parent)
