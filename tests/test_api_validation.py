"""The operator API's input handling over a real ``edgecert serve``: bad input is a clear 4xx and changes nothing."""

from __future__ import annotations

import pytest

from tests.helpers import ADMIN_TOKEN, EdgeProcess


@pytest.fixture(scope="module")
def api_edge(tmp_path_factory, pebble, dns):
    from edge.demo.process import free_port
    p = EdgeProcess(work_dir=tmp_path_factory.mktemp("api"), pebble=pebble, dns=dns,
                    env={"EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}"}).start()
    yield p
    p.stop()


BAD_HOSTNAMES = [
    ("1.2.3.4", "ip_literal"), ("[::1]", "ip_literal"), ("::1", "ip_literal"), ("co.uk", "public_suffix"),
    ("github.io", "public_suffix"), ("com", "not_fully_qualified"), ("*.wild.example.com", "wildcard_not_allowed"),
    ("a" * 64 + ".example.com", "label_too_long"), (("a" * 60 + ".") * 5 + "com", "hostname_too_long"),
    ("xn--zz.example.com", "invalid_idna"), ("-bad.example.com", "invalid_idna"),
    ("under_score.example.com", "invalid_idna"), ("https://shop.example.com/", "invalid_hostname"),
    ("shop..example.com", "empty_label"), ("", "invalid_hostname"), ("shop.example.com:443", "invalid_hostname"),
]


@pytest.mark.parametrize("hostname,code", BAD_HOSTNAMES)
def test_bad_hostnames_are_422_with_a_code(api_edge, hostname, code):
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": hostname, "tenant": "t1"})
    assert st == 422, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


def test_bad_requests_change_nothing(api_edge):
    st, before = api_edge.call("GET", "/v1/domains")
    assert st == 200
    for raw in (b"{not json", b"", b"[1,2]", b'"str"', b"\xff\xfe"):
        st, body = api_edge.call("POST", "/v1/domains", raw=raw)
        assert st == 400 and body["error"]["code"] == "invalid_json", (raw, st, body)
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": 42, "tenant": "t1"})
    assert st == 422
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": "ok.example.com"})
    assert st == 422 and body["error"]["code"] == "invalid_tenant"
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": "ok.example.com", "tenant": "bad tenant!"})
    assert st == 422
    st, body = api_edge.call("POST", "/v1/domains", raw=b"{" + b'"a":' * 10 + b"1" + b"}" * 10)
    assert st == 400
    st, body = api_edge.call("POST", "/v1/domains", raw=b'{"hostname": "' + b"a" * 300000 + b'"}')
    assert st == 413
    st, after = api_edge.call("GET", "/v1/domains")
    assert after == before


def test_tokens(api_edge):
    st, body = api_edge.call("GET", "/v1/domains", token=None)
    assert st == 401 and body["error"]["code"] == "missing_token"
    st, body = api_edge.call("GET", "/v1/domains", token="wrong")
    assert st == 401 and body["error"]["code"] == "invalid_token"
    st, body = api_edge.call("GET", "/v1/domains", headers={"Authorization": "Basic abc"}, token=None)
    assert st == 401
    st, t = api_edge.call("POST", "/v1/tenants", {"name": "tok-tenant"})
    assert st == 201 and t["token"].startswith("ect_")
    st, body = api_edge.call("POST", "/v1/tenants", {"name": "x"}, token=t["token"])
    assert st == 403 and body["error"]["code"] == "forbidden"
    st, body = api_edge.call("GET", "/v1/domains", token=t["token"])
    assert st == 200 and body["domains"] == []


def test_idn_is_stored_in_ascii_and_duplicates_conflict(api_edge):
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": "Bücher.Example.COM.", "tenant": "idn"})
    assert st == 201, body
    assert body["hostname"] == "xn--bcher-kva.example.com"
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": "xn--bcher-kva.example.com", "tenant": "idn"})
    assert st == 409 and body["error"]["code"] == "already_exists"
    st, body = api_edge.call("GET", "/v1/domains/b%C3%BCcher.example.com")
    assert st == 200 and body["hostname"] == "xn--bcher-kva.example.com"
    st, body = api_edge.call("DELETE", "/v1/domains/xn--bcher-kva.example.com")
    assert st == 204
    st, body = api_edge.call("POST", "/v1/domains", {"hostname": "xn--bcher-kva.example.com", "tenant": "t1"})
    assert st == 201
    st, body = api_edge.call("DELETE", "/v1/domains/xn--bcher-kva.example.com?report=true")
    assert st == 200 and body["removed"] is True and body["revoked"] is False
    st, body = api_edge.call("GET", "/v1/domains/xn--bcher-kva.example.com")
    assert st == 404 and body["error"]["code"] == "not_found"


def test_operator_api_refuses_everything_without_admin_token(tmp_path, pebble, dns):
    from edge.demo.process import free_port
    p = EdgeProcess(work_dir=tmp_path / "noadmin", pebble=pebble, dns=dns, env={"EDGECERT_ADMIN_TOKEN": "",
                                                                  "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}"}).start()
    try:
        for token in (None, "anything", ADMIN_TOKEN):
            st, body = p.call("GET", "/v1/domains", token=token)
            assert st == 403 and body["error"]["code"] == "admin_token_not_configured"
        st, body = p.call("POST", "/v1/domains", {"hostname": "a.example.com", "tenant": "t"})
        assert st == 403
        st, body = p.call("GET", "/healthz", token=None)
        assert st == 200 and body["ok"] is True
        from edge.tls_edge import engine as tlsengine
        assert body["tls"] == ("engine" if tlsengine.available() else "python-ssl")
    finally:
        p.stop()
