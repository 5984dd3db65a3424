"""Per-hostname settings over a real ``edgecert serve`` (two processes serving the TLS edge) and two real origins:
each name proxied to its own origin, a PATCH (domain or tenant) taking effect without a restart, and a tenant refused
an internal origin. Issue 17, item 3."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest
from aiohttp import web

from edge.demo.process import free_port
from tests.helpers import EdgeProcess
from tests.origin import make_origin_app


class Origin:
    """A real origin (aiohttp) in a thread; ``seen`` lists what reached it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict] = []
        self.loop = asyncio.new_event_loop()

        async def start():
            runner = web.AppRunner(make_origin_app(self.seen))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner
        self.runner = self.loop.run_until_complete(start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def origins():
    a, b = Origin(), Origin()
    yield a, b
    a.stop()
    b.stop()


def fetch(port: int, host: str, path: str, cafile: str) -> int:
    """One request over a fresh TLS connection (so that any of the edge's processes may take it): its status."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    return int(data.split(b" ", 2)[1])


def reaches(edge: EdgeProcess, host: str, origin: Origin, cafile: str, *, n: int = 8) -> bool:
    """``n`` requests on fresh connections for ``host`` all reach ``origin``."""
    for i in range(n):
        path = f"/probe-{time.monotonic_ns()}-{i}"
        try:
            status = fetch(edge.https_port, host, path, cafile)
        except ssl.SSLCertVerificationError:
            return False  # the edge worker has not loaded the new certificate yet (it follows the store)
        assert status == 200
        if not any(r["path"] == path for r in origin.seen):
            return False
    return True


@pytest.mark.slow
def test_each_name_goes_to_its_origin_and_a_patch_applies_without_restart(tmp_path, pebble, dns, origins):
    a, b = origins
    # Global upstream: origin A. Two processes serve the TLS edge: the API's own and one edge worker, which learns
    # of a change only by following the store (sweep_interval 0.5 s).
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns,
                       env={"EDGECERT_UPSTREAM": a.url, "EDGECERT_WORKERS": "2"}).start()
    try:
        st, d = edge.call("POST", "/v1/domains", {"hostname": "one.perhost.test", "tenant": "ph"})
        assert st == 201 and d["origin"] is None and d["metadata"] == {}, d
        st, d = edge.call("POST", "/v1/domains", {"hostname": "two.perhost.test", "tenant": "ph", "origin": b.url,
                                                   "metadata": {"plan": "gold"}, "min_tls_version": "1.2"})
        assert st == 201 and d["origin"] == b.url and d["metadata"] == {"plan": "gold"}, d
        assert d["min_tls_version"] == "1.2" and d["http2"] is None
        for h in ("one.perhost.test", "two.perhost.test"):
            edge.wait_status(h, "active", timeout=60)
        cafile = pebble.roots_file
        edge.wait_for(lambda: reaches(edge, "one.perhost.test", a, cafile), timeout=20, what="one -> A")
        edge.wait_for(lambda: reaches(edge, "two.perhost.test", b, cafile), timeout=20, what="two -> B")

        # PATCH one.perhost.test to origin B: every process routes it there within its refresh interval.
        st, d = edge.call("PATCH", "/v1/domains/one.perhost.test", {"origin": b.url + "/"})
        assert st == 200 and d["origin"] == b.url, d  # stored without the trailing slash
        t0 = time.monotonic()
        edge.wait_for(lambda: reaches(edge, "one.perhost.test", b, cafile), timeout=10, what="one -> B")
        took = time.monotonic() - t0
        assert reaches(edge, "two.perhost.test", b, cafile)
        # null: back to the default (the tenant has none: the global upstream).
        st, d = edge.call("PATCH", "/v1/domains/one.perhost.test", {"origin": None})
        assert st == 200 and d["origin"] is None
        edge.wait_for(lambda: reaches(edge, "one.perhost.test", a, cafile), timeout=10, what="one -> A again")

        # A tenant's origin applies to its domains that have none of their own.
        st, t = edge.call("PATCH", "/v1/tenants/ph", {"origin": b.url})
        assert st == 200 and t["origin"] == b.url, t
        edge.wait_for(lambda: reaches(edge, "one.perhost.test", b, cafile), timeout=10, what="tenant origin")
        st, t = edge.call("PATCH", "/v1/tenants/ph", {"origin": None})
        assert st == 200 and t["origin"] is None
        edge.wait_for(lambda: reaches(edge, "one.perhost.test", a, cafile), timeout=10, what="tenant origin reset")

        # Filters see the settings; export carries them.
        st, page = edge.call("GET", "/v1/domains?metadata=plan%3Dgold")
        assert st == 200 and [x["hostname"] for x in page["domains"]] == ["two.perhost.test"]
        st, page = edge.call("GET", "/v1/domains?metadata=plan%3DGold")
        assert st == 200 and page["total"] == 0  # exact, case-sensitive
        st, ev = edge.call("GET", "/v1/domains/one.perhost.test/events")
        assert "settings_changed" in [e["kind"] for e in ev["events"]]
        log = edge.log_text()
        assert "Traceback" not in log and "changed domain(s)" in log  # the edge worker followed the store
        print(f"PATCH applied on every edge process within {took:.2f}s (sweep_interval 0.5s)")
    finally:
        edge.stop()


@pytest.mark.slow
def test_a_tenant_cannot_point_the_edge_at_an_internal_address(tmp_path, pebble, dns):
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns).start()
    try:
        st, t = edge.call("POST", "/v1/tenants", {"name": "ssrf-t"})
        assert st == 201
        tok = t["token"]
        edge.add_domain("own.ssrf.test", tenant="ssrf-t")  # operator-added: no ownership proof needed
        dns.add_a("internal.ssrf.test", ["10.1.2.3"])
        dns.add_a("public.ssrf.test", ["93.184.216.34"])
        refused = {
            "http://127.0.0.1:8080/": "origin_not_allowed",      # loopback
            "http://10.0.0.5": "origin_not_allowed",             # private
            "http://169.254.169.254/latest/": "origin_not_allowed",  # cloud metadata (link-local)
            "http://[::1]:9000": "origin_not_allowed",
            "http://[::ffff:127.0.0.1]/": "origin_not_allowed",  # IPv4-mapped loopback
            "http://internal.ssrf.test": "origin_not_allowed",   # a name that resolves to a private address
            "http://localhost.ssrf.test": "origin_not_allowed",  # the test DNS answers 127.0.0.1 for it
            "http://user:pw@public.ssrf.test/": "invalid_origin",
            "ftp://public.ssrf.test/": "invalid_origin",
            "https://public.ssrf.test/?a=1": "invalid_origin",
            "https://": "invalid_origin",
            "https://public.ssrf.test:0/": "invalid_origin",
        }
        for url, code in refused.items():
            st, body = edge.call("PATCH", "/v1/domains/own.ssrf.test", {"origin": url}, token=tok)
            assert st == 422 and body["error"]["code"] == code and body["error"]["field"] == "origin", (url, body)
            assert "Traceback" not in body["error"]["message"]
        # Refused at creation too, and nothing is stored.
        st, body = edge.call("POST", "/v1/domains", {"hostname": "new.ssrf.test", "origin": "http://10.9.9.9"},
                             token=tok)
        assert st == 422 and body["error"]["code"] == "origin_not_allowed"
        assert edge.call("GET", "/v1/domains/new.ssrf.test")[0] == 404
        assert edge.domain("own.ssrf.test")["origin"] is None  # every refusal changed nothing
        # A public origin is fine for the tenant; the operator may name an internal one.
        st, d = edge.call("PATCH", "/v1/domains/own.ssrf.test", {"origin": "https://public.ssrf.test/app/"},
                          token=tok)
        assert st == 200 and d["origin"] == "https://public.ssrf.test/app", d
        st, d = edge.call("PATCH", "/v1/domains/own.ssrf.test", {"origin": "http://10.0.0.5:8080"})
        assert st == 200 and d["origin"] == "http://10.0.0.5:8080"
        # Only settings can be patched; a tenant's PATCH of a tenant is an operator call; bad values are 422s.
        for body, code in (({"status": "active"}, "unsupported_field"), ({}, "empty_patch"),
                           ({"min_tls_version": "1.1"}, "invalid_min_tls_version"),
                           ({"http2": "yes"}, "invalid_http2"),
                           ({"metadata": {"k": 1}}, "invalid_metadata"),
                           ({"metadata": {f"k{i}": "v" for i in range(33)}}, "invalid_metadata"),
                           ({"metadata": {"k" * 65: "v"}}, "invalid_metadata"),
                           ({"metadata": {"k": "v" * 513}}, "invalid_metadata"),
                           ({"metadata": ["a"]}, "invalid_metadata")):
            st, err = edge.call("PATCH", "/v1/domains/own.ssrf.test", body, token=tok)
            assert st == 422 and err["error"]["code"] == code, (body, err)
        assert edge.call("PATCH", "/v1/tenants/ssrf-t", {"origin": "http://10.0.0.1"}, token=tok)[0] == 403
        st, d = edge.call("PATCH", "/v1/domains/own.ssrf.test", {"min_tls_version": "1.3", "http2": False,
                                                                   "metadata": {"plan": "free", "région": "eu"}},
                          token=tok)
        assert st == 200 and (d["min_tls_version"], d["http2"]) == ("1.3", False), d
        assert d["metadata"] == {"plan": "free", "région": "eu"}
        st, page = edge.call("GET", "/v1/domains?metadata=r%C3%A9gion%3Deu", token=tok)
        assert st == 200 and page["total"] == 1
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()


@pytest.mark.slow
def test_a_tenant_origin_that_later_points_inside_is_not_connected(tmp_path, pebble, dns, origins):
    """DNS rebinding: the name a tenant set resolved to a public address when it was checked (the service's
    resolver), and to loopback when the edge connects (the system's: /etc/hosts). The edge resolves again at
    connect time and refuses; the same origin set by the operator is used."""
    a, _ = origins
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=pebble, dns=dns).start()
    try:
        st, t = edge.call("POST", "/v1/tenants", {"name": "rebind"})
        edge.add_domain("rb.perhost.test", tenant="rebind")
        edge.wait_status("rb.perhost.test", "active", timeout=60)
        dns.add_a("localhost", ["93.184.216.34"])  # what the service's resolver says when the tenant sets it
        origin = f"http://localhost:{a.port}"
        st, d = edge.call("PATCH", "/v1/domains/rb.perhost.test", {"origin": origin}, token=t["token"])
        assert st == 200 and d["origin"] == origin, d
        n = len(a.seen)
        assert fetch(edge.https_port, "rb.perhost.test", "/rebound", pebble.roots_file) == 502
        assert len(a.seen) == n  # nothing reached the loopback origin
        assert "resolves to no public address" in edge.log_text()
        st, d = edge.call("PATCH", "/v1/domains/rb.perhost.test", {"origin": origin})  # the operator: any address
        assert st == 200
        edge.wait_for(lambda: reaches(edge, "rb.perhost.test", a, pebble.roots_file), timeout=10,
                      what="operator-set loopback origin")
    finally:
        edge.stop()


def test_public_address_rule():
    from edge.tls_edge.upstream import public_address
    for a in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"):
        assert public_address(a), a
    for a in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
              "::1", "fe80::1%eth0", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1", "ff02::1", "not an address"):
        assert not public_address(a), a


def test_origin_pools_are_one_per_origin_and_bounded():
    from edge.tls_edge.upstream import OriginPools

    async def run():
        pools = OriginPools("http://127.0.0.1:9", max_pools=2, connect_timeout=1.0)
        assert pools.get(None) is pools.default and pools.get("") is pools.default
        p1 = pools.get("http://127.0.0.1:10")
        assert pools.get("http://127.0.0.1:10") is p1  # one pool per origin URL
        p2 = pools.get("https://origin.example/prefix")
        assert (p2.host, p2.port, p2.prefix, p2.ssl is not None) == ("origin.example", 443, b"/prefix", True)
        pools.get("http://127.0.0.1:10")  # p1 used last: p2 is the least recently used
        pools.get("http://127.0.0.1:11")
        assert [k for k, _ in pools.pools] == ["http://127.0.0.1:10", "http://127.0.0.1:11"] and p2.retired
        assert pools.get("gopher://x") is pools.default  # never accepted by the API; logged, not fatal
        pools.close()
        assert p1.retired and not pools.pools
        none = OriginPools(None)
        assert none.get(None) is None and none.get("http://127.0.0.1:12") is not None
        none.close()
    asyncio.run(run())
