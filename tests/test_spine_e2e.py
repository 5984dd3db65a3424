"""End to end over real components: Pebble + pebble-challtestsrv + ``edgecert serve`` subprocesses + openssl."""

from __future__ import annotations

import subprocess

from cryptography.x509.oid import NameOID

from tests.helpers import openssl_s_client, require_binary, served_leaf


def test_onboard_two_domains_serve_each_by_sni_and_default_for_others(edge, pebble, dns):
    require_binary("openssl")
    dns.add_a("elsewhere.spine.test", ["192.0.2.10"])  # points at another host: must never reach the CA
    orders_before = pebble.order_count()
    a = edge.add_domain("shop.alpha.test", tenant="alpha")
    b = edge.add_domain("www.beta.test", tenant="beta")
    c = edge.add_domain("elsewhere.spine.test", tenant="beta")
    assert a["status"] in ("pending_dns", "issuing", "pending_issuance")
    assert c["hostname"] == "elsewhere.spine.test"

    da = edge.wait_status("shop.alpha.test", "active")
    db = edge.wait_status("www.beta.test", "active")
    for d in (da, db):
        cert = d["certificate"]
        assert cert["serial"] and cert["sha256"] and cert["issuer"].startswith("CN=Pebble Intermediate")
        assert cert["not_before"] < cert["not_after"]
        assert d["next_renewal_at"] is not None and d["last_error"] is None

    # Each name gets its own chain, verifying to Pebble's root, with hostname verification (real openssl).
    for name, d in (("shop.alpha.test", da), ("www.beta.test", db)):
        out = openssl_s_client(edge.https_port, servername=name, cafile=pebble.roots_file, verify_name=name)
        assert "Verify return code: 0 (ok)" in out, out
        assert f"subject=CN = {name}" in out, out
        assert "verify error" not in out, out
        leaf = served_leaf(edge.https_port, name)
        assert format(leaf.serial_number, "x") == d["certificate"]["serial"]
    # The chain has the leaf and the intermediate.
    out = openssl_s_client(edge.https_port, servername="shop.alpha.test", cafile=pebble.roots_file)
    assert out.count("-----BEGIN CERTIFICATE-----") == 2, out

    # Unknown name and no SNI: the default certificate, never a tenant's, and no order.
    default_cn = "edgecert default certificate"
    for sni in ("unknown.gamma.test", None):
        leaf = served_leaf(edge.https_port, sni)
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == default_cn
        out = openssl_s_client(edge.https_port, servername=sni, cafile=pebble.roots_file,
                               verify_name="unknown.gamma.test")
        assert "Verify return code: 0 (ok)" not in out.split("---")[-1] or "verify error" in out

    # The mis-pointed domain is held with the exact record to create, and never reached Pebble.
    dc = edge.domain("elsewhere.spine.test")
    assert dc["status"] == "pending_dns", dc
    assert "192.0.2.10" in dc["last_error"] and "elsewhere.spine.test. CNAME edge.test." in dc["last_error"]
    assert dc["dns"]["expected_record"]["text"] == "elsewhere.spine.test. CNAME edge.test."
    assert dc["certificate"] is None
    assert pebble.order_count() - orders_before == 2  # exactly one order per good domain
    kinds = [e["kind"] for e in edge.events("elsewhere.spine.test")]
    assert "dns_checked" in kinds and "order_placed" not in kinds

    # Fix the DNS record: the domain goes active on its own (re-checked with backoff).
    dns.set_cname("elsewhere.spine.test", "edge.test")
    dns.clear_a("elsewhere.spine.test")
    edge.wait_status("elsewhere.spine.test", "active", timeout=60)

    # Files for other servers.
    import os
    live = edge.work_dir / "state" / "live" / "shop.alpha.test"
    assert (live / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    assert os.stat(live / "privkey.pem").st_mode & 0o777 == 0o600
    # No private key in any API answer or in the log.
    st, listing = edge.call("GET", "/v1/domains")
    assert st == 200 and listing["count"] == 3
    assert "PRIVATE KEY" not in str(listing) and "PRIVATE KEY" not in edge.log_text()


def test_restart_keeps_serving_from_the_store_without_new_orders(edge, pebble):
    edge.add_domain("keep.delta.test", tenant="delta")
    d = edge.wait_status("keep.delta.test", "active")
    orders = pebble.order_count()
    edge.restart()
    leaf = served_leaf(edge.https_port, "keep.delta.test")
    assert format(leaf.serial_number, "x") == d["certificate"]["serial"]
    assert edge.domain("keep.delta.test")["status"] == "active"
    out = openssl_s_client(edge.https_port, servername="keep.delta.test", cafile=pebble.roots_file,
                           verify_name="keep.delta.test")
    assert "Verify return code: 0 (ok)" in out
    assert pebble.order_count() == orders


def test_http_listener_redirects_and_https_checks_host_against_sni(edge, pebble):
    require_binary("curl")
    edge.add_domain("web.epsilon.test", tenant="eps")
    edge.wait_status("web.epsilon.test", "active")
    # Plain HTTP: everything but ACME challenges redirects to https.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                        "-H", "Host: web.epsilon.test", f"http://127.0.0.1:{edge.http_port}/a/b?c=1"],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout.startswith("308 https://web.epsilon.test"), r.stdout
    assert r.stdout.endswith("/a/b?c=1")
    # Unknown challenge tokens are 404, not a redirect.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: web.epsilon.test",
                        f"http://127.0.0.1:{edge.http_port}/.well-known/acme-challenge/nope"],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout == "404"
    # HTTPS with the right name: the placeholder page (no upstream configured), verified by curl.
    base = ["curl", "-sS", "--cacert", pebble.roots_file, "--resolve",
            f"web.epsilon.test:{edge.https_port}:127.0.0.1"]
    r = subprocess.run(base + ["-w", "\n%{http_code}", f"https://web.epsilon.test:{edge.https_port}/"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("200") and "web.epsilon.test is served by edgecert" in r.stdout
    # A Host that is not the SNI name: 421 Misdirected Request.
    r = subprocess.run(base + ["-H", "Host: other.epsilon.test", "-o", "/dev/null", "-w", "%{http_code}",
                               f"https://web.epsilon.test:{edge.https_port}/"],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout == "421", r.stdout + r.stderr
    # TLS 1.1 is refused; TLS 1.2 and 1.3 work.
    for flag, ok in (("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)):
        out = openssl_s_client(edge.https_port, servername="web.epsilon.test", cafile=pebble.roots_file,
                               extra=[flag, "-cipher", "DEFAULT:@SECLEVEL=0"] if flag == "-tls1_1" else [flag])
        assert ("Cipher is (NONE)" not in out and "BEGIN CERTIFICATE" in out) == ok, (flag, out[-800:])


def test_without_edge_target_only_this_machines_addresses_count(edge_factory, pebble, dns):
    edge = edge_factory("notarget", EDGECERT_EDGE_TARGET="")
    dns.add_a("far.notarget.test", ["192.0.2.77"])
    orders = pebble.order_count()
    edge.add_domain("far.notarget.test", tenant="nt")
    edge.add_domain("near.notarget.test", tenant="nt")  # challtestsrv answers 127.0.0.1: this machine
    edge.wait_status("near.notarget.test", "active", timeout=30)
    d = edge.wait_status("far.notarget.test", "pending_dns", timeout=10)
    assert "192.0.2.77" in d["last_error"] and "EDGECERT_EDGE_TARGET" in d["last_error"]
    assert pebble.order_count() - orders == 1
