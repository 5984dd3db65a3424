"""DNS-01 through a delegated CNAME, end to end over real servers (docs/dns-01.md).

The DNS here is built like production, from real programs:
* the tenant's zone: pebble-challtestsrv (the session ``dns`` fixture); the tests create the tenant's records there
  (``_acme-challenge.<name> CNAME <label>.<zone>``, the pointing A/CNAME);
* the operator's challenge zone: Knot (``tests/support/knot.py``), which takes edgecert's RFC 2136 updates signed
  with TSIG (``EDGECERT_DNS01_SERVER`` / ``_ZONE`` / ``_TSIG``);
* a recursive resolver in front of both: Unbound (``tests/support/unbound.py``), Pebble's ``-dnsserver`` and
  edgecert's ``EDGECERT_DNS_RESOLVER``. Neither challtestsrv nor Knot chases a CNAME into the other's zone and
  Pebble's validator is a stub, so, as at a real CA, the resolver follows the tenant's CNAME into the challenge zone.

So the TXT value travels edgecert -> RFC 2136 update -> Knot -> Unbound (following the tenant's CNAME) -> Pebble's
DNS-01 lookup; nothing is mocked. Certificates live 40 s here, so renewals happen within a test.
"""

from __future__ import annotations


import pytest

from tests.helpers import ADMIN_TOKEN, EdgeProcess, openssl_s_client, require_binary, served_leaf

ZONE = "acme.edgecert.test"


@pytest.fixture(scope="module")
def knot(tmp_path_factory):
    require_binary("knotd")
    from tests.support.knot import KnotServer
    srv = KnotServer(work_dir=tmp_path_factory.mktemp("knot"), zone=ZONE).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def resolver(tmp_path_factory, knot, dns):
    require_binary("unbound")
    from tests.support.unbound import UnboundResolver
    srv = UnboundResolver(work_dir=tmp_path_factory.mktemp("unbound"), forward_to=dns.dns_address,
                          stub_zones={knot.zone: knot.address}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory, resolver):
    """A Pebble resolving every name through Unbound; 40-second certificates (renewal after ~27 s)."""
    require_binary("pebble")
    from edge.demo.components import Pebble, free_port
    work = tmp_path_factory.mktemp("pebble-dns01")
    p = Pebble(dns_server=resolver.address, work_dir=work, http_port=free_port(), authz_reuse_percent=0,
               certificate_validity_period=40).start()
    p.roots_file = str(p.write_roots(work / "roots.pem"))
    yield p
    p.stop()


@pytest.fixture
def dns01_edge(tmp_path, ca, dns, knot, resolver):
    procs: list[EdgeProcess] = []

    def make(name: str = "edge", **env: str) -> EdgeProcess:
        full = {"EDGECERT_DNS_RESOLVER": resolver.address, "EDGECERT_DNS01_SERVER": knot.address,
                "EDGECERT_DNS01_ZONE": ZONE, "EDGECERT_DNS01_TSIG": knot.tsig}
        full.update(env)
        p = EdgeProcess(work_dir=tmp_path / name, pebble=ca, dns=dns, env=full)
        procs.append(p)
        return p.start()
    yield make
    for p in procs:
        p.stop()


def _record(d: dict, purpose: str) -> dict:
    recs = [r for r in d["dns_records"] if r["purpose"] == purpose]
    assert len(recs) == 1, d["dns_records"]
    return recs[0]


def _events(edge: EdgeProcess, host: str, kind: str) -> list[dict]:
    return [e for e in edge.events(host) if e["kind"] == kind]


@pytest.mark.slow
def test_certificate_before_the_cutover_then_active_with_no_gap_and_renewal_by_dns01(dns01_edge, ca, dns, knot):
    """Items 2, 4, 6, 8: the name still points elsewhere; the tenant creates the delegation CNAME listed in
    dns_records; the certificate is obtained through DNS-01 (TXT via RFC 2136 in Knot), served for the SNI at once
    while the status says the name does not point here yet; the DNS flip makes it active with the same certificate;
    the renewal uses DNS-01 again (the method that last worked) although HTTP-01 would now work too."""
    require_binary("openssl")
    edge = dns01_edge()
    host = "shop.cutover.test"
    dns.set_a(host, ["192.0.2.10"])  # the live shop is still at the old provider
    orders_before = ca.order_count()
    d = edge.add_domain(host, tenant="migrating")
    acme = _record(d, "acme-challenge")
    label_target = acme["value"]
    assert acme == {"name": f"_acme-challenge.{host}", "type": "CNAME", "value": label_target,
                    "purpose": "acme-challenge"}
    assert label_target.endswith("." + ZONE) and not label_target.endswith(".")
    assert _record(d, "pointing") == {"name": host, "type": "CNAME", "value": "edge.test", "purpose": "pointing"}

    # Without the delegation nothing is ordered: the tenant is told both ways to proceed.
    d = edge.wait_for(lambda: (x := edge.domain(host))["last_error"] and x, what="the first DNS check")
    assert d["status"] == "pending_dns" and d["certificate"] is None
    assert f"_acme-challenge.{host}. CNAME {label_target}." in d["last_error"], d["last_error"]
    assert ca.order_count() == orders_before

    dns.set_cname(f"_acme-challenge.{host}", label_target)  # the tenant creates the delegation once
    d = edge.wait_for(lambda: (x := edge.domain(host))["certificate"] and x, timeout=90, what="a certificate")
    assert d["status"] == "pending_dns" and d["dns"]["ready_for_cutover"] is True, d
    assert d["validation_method"] == "dns-01" and d["dns"]["delegation_seen_at"]
    first_serial = d["certificate"]["serial"]
    answered = _events(edge, host, "challenge_answered")
    assert answered and {e["data"]["type"] for e in answered} == {"dns-01"}, answered
    # The TXT answer went through Knot (its log shows the signed update) and was removed once the order was over.
    assert f"[{ZONE}.] DDNS" in knot.log_text(), knot.log_tail()
    edge.wait_for(lambda: knot.txt(label_target) == [], what="the TXT answer removed from the zone")

    # Served for that SNI already (real handshake, verified to Pebble's root with hostname check).
    out = openssl_s_client(edge.https_port, servername=host, cafile=ca.roots_file, verify_name=host)
    assert "Verify return code: 0 (ok)" in out, out
    assert format(served_leaf(edge.https_port, host).serial_number, "x") == first_serial
    st, page = edge.call("GET", f"/status/{host}", token=None)
    assert st == 200 and "Ready: switch your DNS now" in page and f"{host}. CNAME edge.test." in page, page
    # ... and in the CLI, with every record the tenant keeps (the delegation among them).
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    r = subprocess.run([sys.executable, "-m", "edge", "domains", "show", host, "--api", edge.api, "--token",
                        ADMIN_TOKEN], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "ready: switch your DNS now" in r.stdout and f"_acme-challenge.{host}. CNAME {label_target}." in r.stdout

    # The DNS flips: active, the very same certificate (no new order, no gap).
    orders = ca.order_count()
    dns.clear_a(host)  # now resolves to the edge's address (challtestsrv's default 127.0.0.1, as edge.test)
    d = edge.wait_status(host, "active", timeout=60)
    assert d["certificate"]["serial"] == first_serial and d["dns"]["ready_for_cutover"] is False
    assert _events(edge, host, "cutover_complete")
    assert ca.order_count() == orders

    # The renewal (40 s certificates) validates with DNS-01 again: the method that last worked.
    d = edge.wait_for(lambda: (x := edge.domain(host))["certificate"]["serial"] != first_serial and x,
                      timeout=90, what="the renewal")
    assert d["status"] == "active" and d["validation_method"] == "dns-01"
    kinds = [e["data"]["type"] for e in _events(edge, host, "challenge_answered")]
    assert kinds == ["dns-01", "dns-01"], kinds
    assert "Traceback" not in edge.log_text()
    assert knot.tsig.rsplit(":", 1)[1] not in edge.log_text()  # the TSIG secret is never logged


@pytest.mark.slow
def test_wildcard_via_dns01_served_one_label_below_and_delegation_loss_told(dns01_edge, ca, dns, knot):
    """Item 3 (+8): ``*.shop-wild.test`` is ordered as that identifier, validated by DNS-01 only (Pebble offers
    nothing else for a wildcard), active once served, and selected by the SNI index for names one label below
    without their own certificate; removing the delegation is told to the tenant while the certificate is valid."""
    edge = dns01_edge()
    wild, base = "*.shop-wild.test", "shop-wild.test"
    st, body = edge.call("POST", "/v1/domains", {"hostname": wild, "tenant": "wild", "validation": "http-01"})
    assert st == 422 and body["error"]["code"] == "wildcard_needs_dns01", body
    st, body = edge.call("POST", "/v1/domains", {"hostname": "*.co.uk", "tenant": "wild"})
    assert st == 422 and body["error"]["code"] == "public_suffix", body
    d = edge.add_domain(wild, tenant="wild")
    assert d["wildcard"] is True and d["validation"] == "auto"
    acme = _record(d, "acme-challenge")
    assert acme["name"] == f"_acme-challenge.{base}"
    dns.set_cname(acme["name"], acme["value"])
    d = edge.wait_status(wild, "active", timeout=90)
    assert d["certificate"]["names"] == [wild] and d["validation_method"] == "dns-01"
    assert [e["data"] for e in _events(edge, wild, "challenge_answered")] == [{"type": "dns-01",
                                                                               "identifier": base}]
    edge.wait_for(lambda: knot.txt(acme["value"]) == [], what="the TXT answer removed")

    from cryptography import x509
    leaf = served_leaf(edge.https_port, "anything.shop-wild.test")
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert sans == [wild] and format(leaf.serial_number, "x") == d["certificate"]["serial"]
    out = openssl_s_client(edge.https_port, servername="www.shop-wild.test", cafile=ca.roots_file,
                           verify_name="www.shop-wild.test")
    assert "Verify return code: 0 (ok)" in out, out
    deeper = served_leaf(edge.https_port, "a.b.shop-wild.test")  # two labels below: not covered, not selected
    assert format(deeper.serial_number, "x") != d["certificate"]["serial"]
    st, page = edge.call("GET", f"/status/{wild}", token=None)
    assert st == 200 and acme["value"] in page and "wildcard" in page.lower()
    assert not _events(edge, wild, "probe_failed") and not _events(edge, wild, "swap_rejected")

    # The tenant removes the delegation: told (event, last_error, status page) while the certificate is valid.
    dns.clear_cname(acme["name"])
    d = edge.wait_for(lambda: (x := edge.domain(wild))["last_error_code"] == "dns01_delegation_missing" and x,
                      timeout=40, what="the missing delegation told")
    assert d["status"] == "active" and acme["value"] in d["last_error"]
    assert _events(edge, wild, "delegation_missing")
    st, page = edge.call("GET", f"/status/{wild}", token=None)
    assert st == 200 and "cannot be renewed" in page and f"Create it again: {acme['name']}. CNAME" in page, page


@pytest.mark.slow
def test_explicit_http01_with_port_80_closed_is_held_without_asking_the_ca(dns01_edge, ca, dns):
    """Item 6: before the CA is told to validate HTTP-01, edgecert fetches its own probe answer through the name's
    address; a closed port holds the name with a plain reason and no order (no failed validation burnt)."""
    from edge.demo.components import free_port
    closed = free_port()
    edge = dns01_edge(EDGECERT_HTTP01_PROBE_PORT=str(closed))
    host = "closed80.methods.test"
    orders = ca.order_count()
    st, body = edge.call("POST", "/v1/domains", {"hostname": "h1.methods.test", "tenant": "m", "validation": "h"})
    assert st == 422 and body["error"]["code"] == "invalid_validation"
    st, body = edge.call("POST", "/v1/domains", {"hostname": host, "tenant": "m", "validation": "http-01"})
    assert st == 201 and body["validation"] == "http-01"
    d = edge.wait_for(lambda: (x := edge.domain(host))["last_error_code"] == "http01_unreachable" and x,
                      what="the http-01 hold")
    assert d["status"] == "pending_dns" and f"port {closed}" in d["last_error"]
    assert _events(edge, host, "http01_unreachable")
    assert ca.order_count() == orders and not _events(edge, host, "order_placed")


@pytest.mark.slow
def test_auto_uses_http01_when_the_probe_reaches_the_edge(dns01_edge, ca):
    """Item 6: a name pointing at the edge, no delegation, port reachable -> HTTP-01 (checked by our own probe
    first), recorded as the method that worked."""
    edge = dns01_edge()
    host = "reachable.methods.test"
    edge.add_domain(host, tenant="m")
    d = edge.wait_status(host, "active", timeout=60)
    assert d["validation_method"] == "http-01"
    assert [e["data"]["type"] for e in _events(edge, host, "challenge_answered")] == ["http-01"]
    assert not _events(edge, host, "http01_unreachable")


def test_dns01_settings_are_checked_and_the_secret_never_shown(tmp_path, knot):
    """Item 7: bad values exit 2 naming the setting; the TSIG secret is redacted in the start-up summary."""
    import subprocess
    import sys
    from edge.config import ConfigError, Settings
    secret = knot.tsig.rsplit(":", 1)[1]
    s = Settings.load(env={"EDGECERT_DNS01_SERVER": knot.address, "EDGECERT_DNS01_ZONE": ZONE,
                           "EDGECERT_DNS01_TSIG": knot.tsig})
    text = "\n".join(s.summary()) + repr(s.redacted())
    assert secret not in text and "edgecert:hmac-sha256:***" in text
    for env, named in (({"EDGECERT_DNS01_SERVER": knot.address}, "EDGECERT_DNS01_ZONE"),
                       ({"EDGECERT_DNS01_TSIG": "edgecert:hmac-md5:" + secret}, "EDGECERT_DNS01_TSIG"),
                       ({"EDGECERT_DNS01_TSIG": "nonsense"}, "EDGECERT_DNS01_TSIG"),
                       ({"EDGECERT_DNS01_SERVER": "knot:99999"}, "EDGECERT_DNS01_SERVER"),
                       ({"EDGECERT_DNS01_ZONE": "bad zone!"}, "EDGECERT_DNS01_ZONE")):
        with pytest.raises(ConfigError) as e:
            Settings.load(env=env)
        assert named in str(e.value) and secret not in str(e.value)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("EDGECERT_")}
    env.update({"EDGECERT_DNS01_SERVER": knot.address, "EDGECERT_DNS01_ZONE": ZONE,
                "EDGECERT_DNS01_TSIG": "edgecert:hmac-sha256:" + secret[:-8] + "!!!!!!!!",
                "EDGECERT_STATE_DIR": str(tmp_path / "s"), "EDGECERT_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    r = subprocess.run([sys.executable, "-m", "edge", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "EDGECERT_DNS01_TSIG" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert secret[:-8] not in r.stderr + r.stdout
