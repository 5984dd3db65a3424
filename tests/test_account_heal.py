"""The account heals (issue 14, item 2): when the CA no longer knows edgecert's ACME account (a CA reset, a wiped
staging CA), edgecert registers a new account once, records ``account_recreated`` and carries on, over a real Pebble
that is restarted (a restarted Pebble has no accounts)."""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import require_binary


@pytest.mark.slow
def test_a_ca_that_forgot_the_account_gets_a_new_one_once_and_the_domain_becomes_active(dns, tmp_path):
    require_binary("pebble")
    from edge.demo.components import Pebble, free_port
    from tests.helpers import EdgeProcess

    a = Pebble(dns_server=dns, work_dir=tmp_path / "pebble-a", http_port=free_port(), authz_reuse_percent=0).start()
    b = None
    edge = EdgeProcess(work_dir=tmp_path / "edge", pebble=a, dns=dns)
    try:
        edge.start()
        edge.add_domain("first.heal.test", tenant="heal")
        edge.wait_status("first.heal.test", "active")
        db = sqlite3.connect(tmp_path / "edge" / "edgecert.db")
        (first_uri,), = db.execute("SELECT uri FROM acme_accounts").fetchall()

        # The CA is reset: same directory URL, same HTTPS certificate, no accounts.
        a.stop()
        b = Pebble(dns_server=dns, work_dir=tmp_path / "pebble-b", http_port=a.http_port, port=a.port,
                   management_port=a.management_port, tls=a.tls, authz_reuse_percent=0).start()
        assert b.directory_url == a.directory_url

        edge.add_domain("second.heal.test", tenant="heal")
        d = edge.wait_status("second.heal.test", ("active", "failed"), timeout=90)
        assert d["status"] == "active", (d, edge.log_tail())
        assert d["last_error"] is None
        kinds = [e["kind"] for e in edge.events("second.heal.test")]
        assert kinds.count("account_recreated") == 1, kinds
        rows = db.execute("SELECT name, uri FROM acme_accounts ORDER BY id").fetchall()
        assert len(rows) == 2, rows  # exactly one new account; the old one kept (renamed) for the record
        assert rows[0][1] == first_uri and rows[0][0] != "default"
        assert rows[1][0] == "default" and rows[1][1] != first_uri
        st, metrics = edge.call("GET", "/metrics")
        text = metrics if isinstance(metrics, str) else str(metrics)
        assert 'edgecert_events_total{kind="account_recreated"} 1.0' in text, text[:2000]
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()
        (b or a).stop()
        a.stop()


def _closed_port() -> int:
    from edge.demo.components import free_port
    return free_port()  # nothing listens there


@pytest.mark.slow
def test_fresh_install_with_an_unreachable_ca_waits_on_the_ca_not_on_the_tenant(edge_factory, pebble, dns):
    port = _closed_port()
    edge = edge_factory("edge-noca", EDGECERT_ACME_DIRECTORY=f"https://127.0.0.1:{port}/dir")
    host = "fresh.noca.test"
    edge.add_domain(host, tenant="noca")
    d = edge.wait_for(lambda: (lambda d: d if d["last_error_code"] == "ca_unreachable" else None)(edge.domain(host)),
                      timeout=30, what="ca_unreachable on the domain")
    assert d["status"] == "pending_issuance", d
    assert d["retry_at"], d
    err = d["last_error"]
    assert "certificate authority" in err and "Nothing is wrong with your domain" in err
    for leak in ("HTTPSConnectionPool", "127.0.0.1", str(port), "Traceback", "Errno", "https://"):
        assert leak not in err, err
    # Retried with backoff: a second attempt comes, later than the first.
    edge.wait_for(lambda: sum(e["kind"] == "issuance_failed" for e in edge.events(host)) >= 2, timeout=30,
                  what="a second attempt")
    failed = [e for e in edge.events(host) if e["kind"] == "issuance_failed"]
    assert all(e["data"].get("transient") for e in failed), failed
    # The tenant's page: the CA is named, nobody (the operator if it lasts) acts, no internal address.
    st, page = edge.call("GET", f"/status/{host}", token=None)
    page = page if isinstance(page, str) else str(page)
    assert "Waiting for your DNS record" not in page
    assert "nobody (the operator if it lasts)" in page, page
    for leak in ("HTTPSConnectionPool", f"127.0.0.1:{port}", "Traceback"):
        assert leak not in page
    log = edge.log_text()
    assert "Traceback" not in log, edge.log_tail(80)
    attempts = [ln for ln in log.splitlines() if f"{host} issuance_failed" in ln]
    assert len(attempts) == len(failed), attempts  # one line per attempt


# (fault injected on every newOrder, expected code, expected status, who acts on the status page, words expected)
_LEAKY = "HTTPSConnectionPool(host='ca.internal.example', port=14000): see https://ca.internal.example/acme/x"
_CA_FAULTS = {
    "5xx": (dict(status=503, problem_type="serverInternal"), "ca_unavailable", "pending_issuance",
            "nobody (the operator if it lasts)", "server error"),
    "retry_after": (dict(status=503, problem_type="serverInternal", retry_after=120), "ca_unavailable",
                    "pending_issuance", "nobody (the operator if it lasts)", "asked us to wait"),
    "rate_limited": (dict(status=429, problem_type="rateLimited", retry_after=120), "rate_limited", "rate_limited",
                     "nobody: it is automatic", "rate limit"),
    "caa": (dict(status=403, problem_type="caa"), "caa_refused", "failed", "you (the owner of the domain)",
            "CAA record"),
    "rejected_name": (dict(status=400, problem_type="rejectedIdentifier"), "rejected_identifier", "failed",
                      "the service operator", "refuses to issue"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(_CA_FAULTS))
def test_each_ca_failure_has_plain_words_and_names_who_acts(case, edge_factory, pebble, dns, tmp_path):
    from tests.support.acmeproxy import ProxyThread
    fault, code, status, who, words = _CA_FAULTS[case]
    proxy = ProxyThread(pebble.directory_url, upstream_ca=pebble.ca_bundle, work_dir=tmp_path / "proxy",
                        upstream_management_url=pebble.management_url)
    proxy.start()
    try:
        proxy.inject(kind="newOrder", times=None, detail=_LEAKY, **fault)
        edge = edge_factory(f"edge-{case}", EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                            EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle, EDGECERT_ORDER_TIMEOUT="2")
        host = f"{case.replace('_', '-')}.words.test"
        edge.add_domain(host, tenant="words")
        d = edge.wait_for(lambda: (lambda d: d if d["last_error_code"] == code else None)(edge.domain(host)),
                          timeout=40, what=f"{code} on the domain")
        assert d["status"] == status, d
        err = d["last_error"]
        assert words in err, err
        for leak in ("HTTPSConnectionPool", "ca.internal.example", "https://", "127.0.0.1", "Traceback"):
            assert leak not in err, err
        st, page = edge.call("GET", f"/status/{host}", token=None)
        assert st == 200
        assert f"<strong>Who needs to act:</strong> {who}." in page, page
        assert words in page
        for leak in ("HTTPSConnectionPool", "ca.internal.example", proxy.directory_url, "Traceback"):
            assert leak not in page, leak
        # The operator still gets the CA's own words, in the event (not on the tenant's page).
        assert any("ca.internal.example" in e["message"] for e in edge.events(host)
                   if e["kind"] in ("issuance_failed", "rate_limited"))
        assert "Traceback" not in edge.log_text()
    finally:
        proxy.stop()


def test_a_second_refusal_in_a_row_needs_an_operator_and_says_what_to_check(edge_factory, pebble, tmp_path):
    from tests.support.acmeproxy import ProxyThread
    proxy = ProxyThread(pebble.directory_url, upstream_ca=pebble.ca_bundle, work_dir=tmp_path / "proxy",
                        upstream_management_url=pebble.management_url)
    proxy.start()
    try:
        # The CA forgets every account at once, the new one too: healing once is all edgecert may do.
        proxy.inject(kind="newOrder", status=400, times=None, problem_type="accountDoesNotExist",
                     detail=f"Account {proxy.directory_url}/my-account/1 not found")
        edge = edge_factory("edge-gone", EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                            EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle)
        host = "gone.heal.test"
        edge.add_domain(host, tenant="heal")
        d = edge.wait_status(host, "failed", timeout=40)
        assert d["last_error_code"] == "account_problem", d
        assert "EDGECERT_ACME_DIRECTORY" in d["last_error"] and "edgecert domains renew" in d["last_error"]
        assert "https://" not in d["last_error"] and "my-account" not in d["last_error"]
        kinds = [e["kind"] for e in edge.events(host)]
        assert kinds.count("account_recreated") == 1, kinds
        assert len(proxy.records("newAccount")) == 2  # the first account, and one new one: no registration loop
        assert len(proxy.records("newOrder")) == 2
        st, page = edge.call("GET", f"/status/{host}", token=None)
        assert "<strong>Who needs to act:</strong> the service operator." in page
        assert "Traceback" not in edge.log_text()
    finally:
        proxy.stop()
