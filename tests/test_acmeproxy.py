"""Tests of edge.acmeproxy in front of a real Pebble, driven by the `acme` library."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time

import josepy as jose
import pytest
import requests
from acme import client, messages

from tests.support.acmeproxy import (
    AcmeProxy,
    ProxyThread,
    cert_id,
    parse_cert_id,
    renew_now_window,
)
from edge.demo.components import ChallTestSrv, Pebble, free_port
from tests.test_devenv import AcmeTestClient, pem_certs, require_pebble

pytestmark = pytest.mark.real

LIFETIME = 600  # Pebble's certificateValidityPeriod here: 10-minute certificates


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    require_pebble()
    work = tmp_path_factory.mktemp("acmeproxy")
    with ChallTestSrv(work_dir=work) as cts, Pebble(
        dns_server=cts, work_dir=work, always_valid=True, certificate_validity_period=LIFETIME
    ) as p:
        yield p


@pytest.fixture
def proxy(pebble):
    # Same TLS files as Pebble: one CA file (pebble.ca_bundle) trusts both.
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls) as px:
        yield px


def acme_via(proxy) -> AcmeTestClient:
    return AcmeTestClient(proxy.directory_url, proxy.ca_bundle).register()


def test_directory_gains_renewal_info_and_points_at_proxy(proxy, pebble):
    d = requests.get(proxy.directory_url, verify=proxy.ca_bundle, timeout=5).json()
    assert d["renewalInfo"] == proxy.base_url + "/renewal-info"
    for key in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
        assert d[key].startswith(proxy.base_url + "/"), d[key]
    assert "renewalInfo" not in pebble.directory()  # Pebble itself has no ARI
    # Requests through "localhost" get localhost URLs: Pebble builds them from the Host header.
    d2 = requests.get(proxy.directory_url.replace("127.0.0.1", "localhost"),
                      verify=proxy.ca_bundle, timeout=5).json()
    assert d2["newOrder"] == f"https://localhost:{proxy.port}/order-plz"
    assert proxy.count("directory") == 2


def test_order_end_to_end_through_proxy(proxy, pebble):
    orders0, issued0 = pebble.order_count(), pebble.issued_count()
    acme = acme_via(proxy)
    order = acme.new_order(["proxied.example.com"])
    # The JWS "url" the client signed is the proxy's URL and Pebble accepted it; every URL
    # Pebble returned points at the proxy, because the proxy forwards the Host header.
    assert order.uri.startswith(proxy.base_url + "/my-order/")
    assert all(a.uri.startswith(proxy.base_url + "/authZ/") for a in order.authorizations)
    done = acme.complete(order)
    leaf = pem_certs(done.fullchain_pem)[0]
    assert pebble.order_count() == orders0 + 1 and pebble.issued_count() == issued0 + 1
    counts = proxy.counts()
    for kind in ("directory", "newNonce", "newAccount", "newOrder", "authz", "challenge",
                 "finalize", "certificate"):
        assert counts.get(kind, 0) >= 1, (kind, counts)
    assert all(r.status < 400 and not r.injected for r in proxy.records())
    # The certificate download taught the proxy the certificate's lifetime.
    info = proxy.known_certificates()[cert_id(leaf)]
    assert info.serial == leaf.serial_number
    assert info.not_after - info.not_before == leaf.not_valid_after_utc - leaf.not_valid_before_utc


def test_injected_429_reaches_acme_client_and_client_waits(proxy, pebble):
    acme = acme_via(proxy)
    orders0 = pebble.order_count()
    rule = proxy.inject(kind="newOrder", status=429, retry_after=1, times=1,
                        detail="too many new orders for this account")
    with pytest.raises(messages.Error) as err:
        acme.new_order(["limited.example.com"])
    assert err.value.code == "rateLimited"
    assert err.value.typ == "urn:ietf:params:acme:error:rateLimited"
    assert err.value.detail == "too many new orders for this account"
    # acme.messages.Error has no HTTP status or headers: the client reads them from the
    # requests response hook (AcmeTestClient.responses), e.g. with ClientV2.retry_after.
    resp = acme.responses[-1]
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["Replay-Nonce"]
    not_before = client.ClientV2.retry_after(resp, default=60)
    time.sleep(max(0.0, (not_before - dt.datetime.now()).total_seconds()))

    acme.complete(acme.new_order(["limited.example.com"]))
    assert rule.fired == 1 and rule.exhausted
    assert pebble.order_count() == orders0 + 1  # the injected 429 never reached Pebble
    first, second = proxy.records("newOrder")
    assert (first.status, first.injected, first.retry_after) == (429, True, "1")
    assert (second.status, second.injected) == (201, False)
    assert second.time - first.time >= 1.0  # the client waited as told
    assert proxy.count("newOrder", status=429) == 1


def test_fault_nonce_is_fresh_and_503_skip_times(proxy):
    acme = acme_via(proxy)
    # A 503 with Retry-After on the 2nd and 3rd authz fetches; the first passes.
    order = acme.new_order(["flaky.example.com"])
    authz_url = order.authorizations[0].uri
    rule = proxy.inject(kind="authz", status=503, retry_after=2, times=2, skip=1)
    acme.acme.poll(order.authorizations[0])  # skipped by the rule: goes through
    for _ in range(2):
        with pytest.raises(messages.Error) as err:
            acme.acme.poll(order.authorizations[0])
        assert err.value.code == "serverInternal"
        bad = acme.responses[-1]
        assert bad.status_code == 503 and bad.headers["Retry-After"] == "2"
        # The fault's Replay-Nonce came from Pebble: make it the only nonce the client has
        # (the acme library itself drops nonces of error responses; other clients keep them).
        acme.net._nonces.clear()  # noqa: SLF001
        acme.net._add_nonce(bad)  # noqa: SLF001
    assert rule.fired == 2 and rule.seen == 3
    # Rule exhausted: this poll reaches Pebble, signed with the last fault's nonce, and
    # Pebble accepts it (a rejected nonce would show as a 400 badNonce record below).
    authz = acme.acme.poll(order.authorizations[0])[0]
    assert authz.body.identifier.value == "flaky.example.com"
    statuses = [r.status for r in proxy.records("authz") if r.path.endswith(authz_url.rsplit("/", 1)[1])]
    assert statuses == [200, 200, 503, 503, 200]  # new_order fetched it once, then the polls
    # A directory fault reaches the client as an ACME error, too.
    proxy.inject(kind="directory", status=503, retry_after=dt.timedelta(seconds=3))
    with pytest.raises(messages.Error) as err:
        AcmeTestClient(proxy.directory_url, proxy.ca_bundle).connect()
    assert err.value.code == "serverInternal"


def test_renewal_info_windows(proxy, pebble):
    acme = acme_via(proxy)
    fullchain = acme.issue(["ari.example.com"])
    leaf = pem_certs(fullchain)[0]
    cid = cert_id(leaf)
    assert parse_cert_id(cid)[1] == leaf.serial_number

    # Default ("normal") window: 2/3 .. 3/4 of the lifetime; the acme client picks a time in it.
    when, next_check = acme.acme.renewal_time(fullchain.encode())
    nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    life = na - nb
    assert nb + life * 2 / 3 - dt.timedelta(seconds=1) <= when <= nb + life * 3 / 4 + dt.timedelta(seconds=1)
    r = requests.get(f"{proxy.base_url}/renewal-info/{cid}", verify=proxy.ca_bundle, timeout=5)
    assert r.status_code == 200 and r.headers["Retry-After"] == "21600"
    window = r.json()["suggestedWindow"]
    assert window["start"].endswith("Z") and window["end"].endswith("Z")

    # "Renew now": start now, end in 5 s; and a short Retry-After for the next check.
    proxy.set_renewal_window(cid, window=renew_now_window(5), retry_after=30)
    before = dt.datetime.now(dt.timezone.utc)
    when, next_check = acme.acme.renewal_time(fullchain.encode())
    assert before - dt.timedelta(seconds=1) <= when <= before + dt.timedelta(seconds=6)
    assert 25 <= (next_check - dt.datetime.now()).total_seconds() <= 31
    proxy.clear_renewal_window(cid)

    # Unknown certificate -> 404; malformed certID -> 400; both problem documents.
    unknown = cid.split(".")[0] + ".AQID"
    r = requests.get(f"{proxy.base_url}/renewal-info/{unknown}", verify=proxy.ca_bundle, timeout=5)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
    r = requests.get(f"{proxy.base_url}/renewal-info/not-a-cert-id", verify=proxy.ca_bundle, timeout=5)
    assert r.status_code == 400

    # The newOrder "replaces" field is recorded (the acme library has no parameter for it).
    class NewOrderReplacing(messages.NewOrder):
        replaces: str = jose.field("replaces", omitempty=True)

    idents = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="ari.example.com")]
    resp = acme.acme._post(acme.acme.directory["newOrder"],  # noqa: SLF001
                           NewOrderReplacing(identifiers=idents, replaces=cid))
    assert resp.status_code == 201  # Pebble 2.4.0 ignores the unknown field
    assert proxy.replaces_seen()[-1] == cid
    assert proxy.records("newOrder")[-1].payload["replaces"] == cid


def test_renewal_info_looks_up_certificates_it_did_not_see(pebble):
    # Issued directly against Pebble: the proxy learns it from Pebble's management API.
    fullchain = AcmeTestClient(pebble.directory_url, pebble.ca_bundle).register().issue(["direct.example.com"])
    cid = cert_id(fullchain)
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls,
                     upstream_management_url=pebble.management_url, ari_retry_after=60) as px:
        r = requests.get(f"{px.renewal_info_url}/{cid}", verify=px.ca_bundle, timeout=5)
        assert r.status_code == 200, r.text
        assert r.headers["Retry-After"] == "60"
        assert cid in px.known_certificates()


async def test_in_process_async_proxy(pebble, tmp_path):
    # In the test's own event loop; the synchronous acme client runs in a worker thread.
    proxy = AcmeProxy(pebble.base_url, upstream_ca=pebble.ca_bundle, work_dir=tmp_path)
    async with proxy:
        # Own generated certificate: the bundle holds the proxy's CA and Pebble's.
        assert proxy.ca_bundle != pebble.ca_bundle
        proxy.inject(kind="newAccount", status=429, retry_after=3, problem_type="rateLimited")
        acme = AcmeTestClient(proxy.directory_url, proxy.ca_bundle)
        await asyncio.to_thread(acme.connect)
        with pytest.raises(messages.Error) as err:
            await asyncio.to_thread(acme.register)
        assert err.value.code == "rateLimited"
        await asyncio.to_thread(acme.register)
        assert proxy.count("newAccount") == 2 and proxy.count("newAccount", injected=True) == 1


def test_cli(pebble, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.acmeproxy", "--upstream", pebble.directory_url,
         "--upstream-ca", pebble.ca_bundle, "--listen", f"127.0.0.1:{port}",
         "--cert", str(pebble.tls.cert_pem), "--key", str(pebble.tls.key_pem),
         "--ca", pebble.ca_bundle, "--inject", "newNonce:503:4:1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"https://127.0.0.1:{port}/dir" in line, line
        d = requests.get(f"https://127.0.0.1:{port}/dir", verify=pebble.ca_bundle, timeout=5).json()
        r = requests.head(d["newNonce"], verify=pebble.ca_bundle, timeout=5)
        assert r.status_code == 503 and r.headers["Retry-After"] == "4" and r.headers["Replay-Nonce"]
        assert requests.head(d["newNonce"], verify=pebble.ca_bundle, timeout=5).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "'newNonce': 2" in out  # the request counts it prints when stopping
