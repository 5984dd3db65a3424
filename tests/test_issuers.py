"""Several CAs in order (issue 14, item 1), External Account Binding, profiles, paused identifiers, the heal on the
ARI path: over TWO real Pebbles (one requiring External Account Binding, as ZeroSSL and Google Trust Services do) and
a real ``edgecert serve``; profiles and Let's Encrypt's problem documents through the fault-injecting proxy
(Pebble 2.4 has neither). Every count of orders is read from the CA's own log."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acme_client.journal import CRASH_ENV
from tests.helpers import ADMIN_TOKEN, EdgeProcess, require_binary, served_leaf

pytestmark = [pytest.mark.real, pytest.mark.slow]

EAB_KID = "kid-edgecert-1"
EAB_KEY = base64.urlsafe_b64encode(b"an HMAC key of 32 bytes, for EAB").decode().rstrip("=")
WRONG_KEY = base64.urlsafe_b64encode(b"not the HMAC key the CA gave us!").decode().rstrip("=")


def _pebble(dns, work: Path, http_port: int, **kw):
    require_binary("pebble")
    from edge.demo.components import Pebble
    return Pebble(dns_server=dns, work_dir=work, http_port=http_port, authz_reuse_percent=0, **kw).start()


def _toml(path: Path, issuers: list[dict]) -> Path:
    lines = ['[edgecert]', 'acme_email = "ops@issuers.test"', '']
    for t in issuers:
        lines.append("[[issuers]]")
        for k, v in t.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _edge(tmp_path: Path, pebble, dns, name: str = "edge", *, config: Path | None = None, **env: str) -> EdgeProcess:
    e = EdgeProcess(work_dir=tmp_path / name, pebble=pebble, dns=dns,
                    env={"EDGECERT_ISSUER_FALLBACK_WAIT": "2", "EDGECERT_ISSUER_DOWN_COOLDOWN": "3",
                         "EDGECERT_TRANSIENT_RETRY_SCHEDULE": "1,2", **env})
    if config is not None:
        for k in ("EDGECERT_ACME_DIRECTORY", "EDGECERT_ACME_CA_BUNDLE"):
            e.env.pop(k, None)
        e.env["EDGECERT_CONFIG"] = str(config)
    return e


def _journal(edge: EdgeProcess) -> list[tuple[str, str]]:
    with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
        return list(db.execute("SELECT step, directory_url FROM acme_orders ORDER BY id"))


def _metrics(edge: EdgeProcess) -> str:
    st, text = edge.call("GET", "/metrics")
    return text if isinstance(text, str) else str(text)


def test_first_ca_down_second_issues_with_eab_then_renewal_returns_to_the_first(dns, tmp_path):
    from edge.demo.components import Pebble, free_port
    http = free_port()
    a = _pebble(dns, tmp_path / "ca-a", http)
    b = _pebble(dns, tmp_path / "ca-b", http, eab_keys={EAB_KID: EAB_KEY})
    a2 = None
    cfg = _toml(tmp_path / "edgecert.toml", [
        {"directory": a.directory_url, "ca_bundle": a.ca_bundle},
        {"directory": b.directory_url, "ca_bundle": b.ca_bundle, "eab_kid": EAB_KID, "eab_hmac_key": EAB_KEY}])
    edge = _edge(tmp_path, a, dns, config=cfg)
    try:
        edge.start()
        # Both up: the first issues.
        edge.add_domain("one.order.test", tenant="fallback")
        d1 = edge.wait_status("one.order.test", "active", timeout=60)
        assert d1["certificate"]["issuer_directory"] == a.directory_url
        assert a.order_count() == 1 and b.order_count() == 0

        # The first CA goes down (connection refused): the second issues, with External Account Binding.
        a.stop()
        t0 = time.monotonic()
        edge.add_domain("two.order.test", tenant="fallback")
        d2 = edge.wait_status("two.order.test", ("active", "failed"), timeout=90)
        assert d2["status"] == "active", (d2, edge.log_tail(80))
        assert time.monotonic() - t0 < 60
        assert d2["certificate"]["issuer_directory"] == b.directory_url
        assert b.order_count() == 1 and b.issued_count() == 1
        leaf = served_leaf(edge.https_port, "two.order.test")
        assert format(leaf.serial_number, "x") == d2["certificate"]["serial"]
        skipped = [e for e in edge.events("two.order.test") if e["kind"] == "issuer_skipped"]
        assert len(skipped) == 1 and skipped[0]["data"]["directory"] == a.directory_url, skipped
        assert skipped[0]["data"]["error"]["code"] == "ca_unreachable"
        # While the first is in its cool-down, a name goes straight to the second: no request to the dead CA.
        m = _metrics(edge)
        assert f'edgecert_issuer_skips_total{{directory="{a.directory_url}",reason="ca_unreachable"}}' in m, m

        # The first CA is back (a restarted Pebble: a new CA at the same URL, which forgot the account): the
        # renewal goes to the first again; the account heals once.
        a2 = Pebble(dns_server=dns, work_dir=tmp_path / "ca-a2", http_port=http, port=a.port,
                    management_port=a.management_port, tls=a.tls, authz_reuse_percent=0).start()
        time.sleep(3.5)  # past the cool-down
        st, _ = edge.call("POST", "/v1/domains/two.order.test/renew")
        assert st == 202
        d3 = edge.wait_for(lambda: (lambda d: d if d["certificate"]["serial"] != d2["certificate"]["serial"]
                                    and d["status"] == "active" else None)(edge.domain("two.order.test")),
                           timeout=90, what="the renewed certificate")
        assert d3["certificate"]["issuer_directory"] == a.directory_url
        assert a2.order_count() == 1 and b.order_count() == 1
        kinds = [e["kind"] for e in edge.events("two.order.test")]
        assert kinds.count("account_recreated") == 1, kinds
        assert f'edgecert_acme_account_recreated_total{{directory="{a.directory_url}"}} 1.0' in _metrics(edge)
        # One order per certificate, each at one CA, all over (an intent that never reached CA 1 is abandoned; the
        # renewal's first try, refused for the forgotten account before any order, is ended).
        edge.wait_for(lambda: _journal(edge)[-1][0] == "current", timeout=30, what="the last entry closed")
        done = [(s, d) for s, d in _journal(edge) if s == "current"]
        assert done == [("current", a.directory_url), ("current", b.directory_url), ("current", a.directory_url)]
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()
        for p in (a2, a, b):
            if p is not None:
                p.stop()


def test_wrong_eab_key_is_an_operator_error_naming_the_setting(dns, tmp_path):
    from edge.demo.components import free_port
    b = _pebble(dns, tmp_path / "ca-b", free_port(), eab_keys={EAB_KID: EAB_KEY})
    edge = _edge(tmp_path, b, dns, EDGECERT_ACME_EAB_KID=EAB_KID, EDGECERT_ACME_EAB_HMAC_KEY=WRONG_KEY)
    try:
        edge.start()
        st, tenant = edge.call("POST", "/v1/tenants", {"name": "eab"})
        assert st == 201
        edge.add_domain("wrong.eab.test", tenant="eab")
        d = edge.wait_status("wrong.eab.test", "failed", timeout=60)
        assert d["last_error_code"] == "account_problem", d
        # The operator reads which setting to fix; the secret itself is never shown or logged.
        assert "EDGECERT_ACME_EAB_HMAC_KEY" in d["last_error"] and "eab_kid" in d["last_error"], d["last_error"]
        assert WRONG_KEY not in edge.log_text() and WRONG_KEY not in json.dumps(edge.events("wrong.eab.test"))
        assert b.order_count() == 0
        # The tenant reads plain words: no setting names of the operator, no URL.
        st, td = edge.call("GET", "/v1/domains/wrong.eab.test", token=tenant["token"])
        assert st == 200 and "://" not in (td["last_error"] or "") and "EAB_HMAC" not in td["last_error"], td
        st, page = edge.call("GET", "/status/wrong.eab.test", token=None)
        assert st == 200 and b.directory_url not in page and "Traceback" not in page
        assert "Traceback" not in edge.log_text()
    finally:
        edge.stop()
        b.stop()


def test_a_bad_eab_or_issuers_setting_exits_2_naming_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "EDGECERT_STATE_DIR": str(tmp_path / "s"),
           "EDGECERT_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    r = subprocess.run([sys.executable, "-m", "edge", "serve"], env={**env, "EDGECERT_ACME_EAB_KID": "k",
                       "EDGECERT_ACME_EAB_HMAC_KEY": "not base64url!"}, capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2, r.stderr
    assert "EDGECERT_ACME_EAB_HMAC_KEY" in r.stderr and "not base64url!" not in r.stderr
    assert "Traceback" not in r.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[issuers]]\ndirectory = "https://ca.example/dir"\nprofil = "tlsserver"\n')
    r = subprocess.run([sys.executable, "-m", "edge", "serve", "--config", str(cfg)], env=env, capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2 and "profil" in r.stderr and "did you mean profile" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_crash_between_ordered_and_downloaded_resumes_at_the_same_ca(dns, tmp_path):
    """Killed at step ``authorizing`` at CA 1, restarted while CA 1 is unreachable: the order is continued at
    CA 1 once it is back, never placed again at CA 2; one order in all."""
    from edge.demo.components import free_port
    from tests.support.acmeproxy import ProxyThread
    http = free_port()
    a = _pebble(dns, tmp_path / "ca-a", http)
    b = _pebble(dns, tmp_path / "ca-b", http, eab_keys={EAB_KID: EAB_KEY})
    with ProxyThread(a.base_url, upstream_ca=a.ca_bundle, tls=a.tls) as proxy:
        cfg = _toml(tmp_path / "edgecert.toml", [
            {"directory": proxy.directory_url, "ca_bundle": proxy.ca_bundle},
            {"directory": b.directory_url, "ca_bundle": b.ca_bundle, "eab_kid": EAB_KID, "eab_hmac_key": EAB_KEY}])
        edge = _edge(tmp_path, a, dns, config=cfg, **{CRASH_ENV: "authorizing"})
        host = "crash.resume.test"
        try:
            edge.start()
            edge.add_domain(host, tenant="crash")
            assert edge.proc is not None and edge.proc.wait(timeout=90) == 137, edge.log_tail()
            assert _journal(edge) == [("authorizing", proxy.directory_url)]
            proxy.set_unreachable(True)
            del edge.env[CRASH_ENV]
            edge.start()
            time.sleep(6)  # several attempts while CA 1 is unreachable: none may go to CA 2
            assert b.order_count() == 0
            proxy.set_unreachable(False)
            d = edge.wait_status(host, "active", timeout=120)
            assert d["certificate"]["issuer_directory"] == proxy.directory_url
            assert a.order_count() == 1 and b.order_count() == 0
            assert a.issued_count() == 1
            edge.wait_for(lambda: _journal(edge) == [("current", proxy.directory_url)], timeout=30,
                          what="one entry, closed, at CA 1")
            assert "order_resumed" in [e["kind"] for e in edge.events(host)]
        finally:
            edge.stop()
            a.stop()
            b.stop()


def test_profiles_are_read_from_the_directory_sent_in_new_orders_and_checked(pebble, dns, tmp_path):
    from tests.support.acmeproxy import ProxyThread
    meta = {"profiles": {"classic": "the usual 90 days", "shortlived": "6 days"},
            "caaIdentities": ["ca-one.example"]}
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls, directory_meta=meta) as proxy:
        edge = _edge(tmp_path, pebble, dns, EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                     EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle)
        try:
            edge.start()
            st, d = edge.call("POST", "/v1/domains", {"hostname": "short.profile.test", "tenant": "p",
                                                      "profile": "shortlived"})
            assert st == 201 and d["profile"] == "shortlived"
            st, d0 = edge.call("POST", "/v1/domains", {"hostname": "plain.profile.test", "tenant": "p"})
            assert st == 201 and d0["profile"] is None
            for bad in ("two words", "x" * 65, 7, "", "caf\u00e9"):
                st, err = edge.call("POST", "/v1/domains", {"hostname": "bad.profile.test", "tenant": "p",
                                                            "profile": bad})
                assert st == 422 and err["error"]["code"] == "invalid_profile", (bad, st, err)
            st, _ = edge.call("GET", "/v1/domains/bad.profile.test")
            assert st == 404  # refused input changes nothing
            d = edge.wait_status("short.profile.test", "active", timeout=60)
            assert d["certificate"]["profile"] == "shortlived"
            edge.wait_status("plain.profile.test", "active", timeout=60)
            seen = proxy.profiles_seen()
            assert sorted(seen, key=str) == sorted(["shortlived", None], key=str), seen
            # A profile this CA does not offer: no order; the operator is told which setting to check.
            orders = proxy.count("newOrder")
            st, _ = edge.call("POST", "/v1/domains", {"hostname": "tls.profile.test", "tenant": "p",
                                                      "profile": "tlsserver"})
            assert st == 201
            d = edge.wait_status("tls.profile.test", "failed", timeout=60)
            assert d["last_error_code"] == "profile_unknown", d
            assert "tlsserver" in d["last_error"] and "shortlived" in d["last_error"]
            assert proxy.count("newOrder") == orders
        finally:
            edge.stop()


def test_an_issuer_without_the_profile_is_skipped_for_that_name(dns, tmp_path):
    from edge.demo.components import free_port
    from tests.support.acmeproxy import ProxyThread
    http = free_port()
    a = _pebble(dns, tmp_path / "ca-a", http)
    b = _pebble(dns, tmp_path / "ca-b", http)
    with ProxyThread(b.base_url, upstream_ca=b.ca_bundle, tls=b.tls,
                     directory_meta={"profiles": {"tlsserver": "server auth only"}}) as proxy:
        cfg = _toml(tmp_path / "edgecert.toml", [
            {"directory": a.directory_url, "ca_bundle": a.ca_bundle},
            {"directory": proxy.directory_url, "ca_bundle": proxy.ca_bundle}])
        edge = _edge(tmp_path, a, dns, config=cfg)
        try:
            edge.start()
            st, _ = edge.call("POST", "/v1/domains", {"hostname": "srv.skip.test", "tenant": "p",
                                                      "profile": "tlsserver"})
            assert st == 201
            d = edge.wait_status("srv.skip.test", "active", timeout=60)
            assert d["certificate"]["issuer_directory"] == proxy.directory_url
            assert d["certificate"]["profile"] == "tlsserver"
            assert a.order_count() == 0 and proxy.profiles_seen() == ["tlsserver"]
            skipped = [e for e in edge.events("srv.skip.test") if e["kind"] == "issuer_skipped"]
            assert skipped and skipped[0]["data"]["error"]["code"] == "profile_unknown"
        finally:
            edge.stop()
            a.stop()
            b.stop()


def test_paused_identifier_unpause_url_for_the_operator_plain_words_for_the_tenant(pebble, dns, tmp_path):
    from tests.support.acmeproxy import ProxyThread
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls) as proxy:
        edge = _edge(tmp_path, pebble, dns, EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                     EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle)
        try:
            edge.start()
            st, tenant = edge.call("POST", "/v1/tenants", {"name": "paused"})
            assert st == 201
            host = "paused.names.test"
            proxy.inject_paused(host, times=None)
            edge.add_domain(host, tenant="paused")
            d = edge.wait_status(host, "failed", timeout=60)
            assert d["last_error_code"] == "identifier_paused", d
            assert "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=" in d["last_error"]  # the operator's view
            evs = edge.events(host)
            failed = [e for e in evs if e["kind"] == "issuance_failed"]
            assert failed and failed[-1]["data"]["error"]["unpause_url"].startswith(
                "https://portal.letsencrypt.org/sfe/v1/unpause")
            # The tenant: plain words, no URL anywhere (domain, list, events, status page).
            tok = tenant["token"]
            st, td = edge.call("GET", f"/v1/domains/{host}", token=tok)
            assert st == 200 and "paused" in td["last_error"] and "://" not in td["last_error"], td
            st, lst = edge.call("GET", "/v1/domains", token=tok)
            assert "://" not in json.dumps([x["last_error"] for x in lst["domains"]])
            st, tev = edge.call("GET", f"/v1/domains/{host}/events", token=tok)
            assert st == 200 and tev["events"]
            text = json.dumps(tev)
            assert "portal.letsencrypt.org" not in text and proxy.directory_url not in text, text
            assert "Traceback" not in text and "the CA said" not in text
            st, page = edge.call("GET", f"/status/{host}", token=None)
            assert "portal.letsencrypt.org" not in page and "the service operator" in page
            assert pebble.order_count() >= 0  # (no order reached the CA: the proxy answered newOrder itself)
            assert proxy.count("newOrder", status=429) >= 1
        finally:
            edge.stop()


def test_a_5xx_ca_or_a_paused_name_sends_the_name_to_the_next_ca(dns, tmp_path):
    from edge.demo.components import free_port
    from tests.support.acmeproxy import ProxyThread
    http = free_port()
    a = _pebble(dns, tmp_path / "ca-a", http)
    b = _pebble(dns, tmp_path / "ca-b", http)
    with ProxyThread(a.base_url, upstream_ca=a.ca_bundle, tls=a.tls) as proxy:
        cfg = _toml(tmp_path / "edgecert.toml", [
            {"directory": proxy.directory_url, "ca_bundle": proxy.ca_bundle},
            {"directory": b.directory_url, "ca_bundle": b.ca_bundle}])
        edge = _edge(tmp_path, a, dns, config=cfg, EDGECERT_ISSUER_DOWN_COOLDOWN="0")
        try:
            edge.start()
            proxy.inject_paused("p.next.test", times=1)
            edge.add_domain("p.next.test", tenant="n")
            d = edge.wait_status("p.next.test", "active", timeout=60)
            assert d["certificate"]["issuer_directory"] == b.directory_url
            sk = [e for e in edge.events("p.next.test") if e["kind"] == "issuer_skipped"]
            assert sk and sk[0]["data"]["error"]["code"] == "identifier_paused"
            assert sk[0]["data"]["error"]["unpause_url"].startswith("https://portal.letsencrypt.org/")
            proxy.inject(kind="newOrder", status=503, times=None, retry_after=1)
            edge.add_domain("s.next.test", tenant="n")
            d = edge.wait_status("s.next.test", "active", timeout=60)
            assert d["certificate"]["issuer_directory"] == b.directory_url
            assert a.order_count() == 0 and b.order_count() == 2
        finally:
            edge.stop()
            a.stop()
            b.stop()


def test_the_account_heals_on_the_ari_path(pebble, dns, tmp_path):
    from tests.support.acmeproxy import ProxyThread
    with ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls) as proxy:
        edge = _edge(tmp_path, pebble, dns, EDGECERT_ACME_DIRECTORY=proxy.directory_url,
                     EDGECERT_ACME_CA_BUNDLE=proxy.ca_bundle)
        try:
            proxy.inject(kind="renewalInfo", status=400, problem_type="accountDoesNotExist",
                         detail="No account exists with the provided key", times=1)
            edge.start()
            host = "ari.heal.test"
            edge.add_domain(host, tenant="ari")
            edge.wait_status(host, "active", timeout=60)
            edge.wait_for(lambda: any(e["kind"] == "account_recreated" for e in edge.events(host)), timeout=30,
                          what="account_recreated after the ARI answer")
            edge.wait_for(lambda: proxy.count("renewalInfo", status=200) >= 1, timeout=30,
                          what="the window asked again after the heal")
            with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
                assert db.execute("SELECT count(*) FROM acme_accounts").fetchone()[0] == 2
            # The proxy has answered; the window is stored a moment later (no read of it before then).
            edge.wait_for(lambda: edge.domain(host)["renewal"]["ari_window"] is not None, timeout=30,
                          what="the ARI window stored on the domain")
            assert f'edgecert_acme_account_recreated_total{{directory="{proxy.directory_url}"}} 1.0' \
                in _metrics(edge)
        finally:
            edge.stop()
