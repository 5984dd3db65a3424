"""A hostile client against a real ``edgecert serve``: every input answers a 4xx (or a 503 with Retry-After) in the
usual ``{"error": {...}}`` shape, never a 500, never a traceback in the log, never a token in the log; CPU-heavy
input runs in the analysis workers with a time budget; uploads keep only the chain from the leaf; the SSRF guard
sees IPv4 addresses inside IPv6 ones; AIA/CRL URLs are followed only on the default ports."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from edge.diagnostics.chain import fetchable_url
from edge.diagnostics.target import TargetNotAllowed, check_allowed
from tests.helpers import ADMIN_TOKEN, EdgeProcess
from tests.test_swap_e2e import LocalCA, _key_pem, _pem

HOST = "hostile.example.com"


@pytest.fixture(scope="module")
def edge(tmp_path_factory, pebble, dns):
    from edge.demo.process import free_port
    work = tmp_path_factory.mktemp("hostile")
    ca = LocalCA("hostile")
    roots = work / "roots.pem"
    roots.write_text(_pem(ca.root))
    dns.add_a(HOST, ["192.0.2.45"])  # not pointing at the edge: no CA order competes
    dns.add_a("byo.hostile.test", ["192.0.2.45"])
    p = EdgeProcess(work_dir=work / "edge", pebble=pebble, dns=dns,
                    env={"EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
                         "EDGECERT_UPLOAD_TRUST_ROOTS": str(roots), "EDGECERT_PUBLIC_BURST": "1000"}).start()
    p.ca = ca
    p.add_domain(HOST, tenant="hostile")
    yield p
    p.stop()


def raw_request(port: int, data: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a new connection; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)  # every request says Connection: close: read until the server closes
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post(edge: EdgeProcess, path: str, body: bytes, *, token: str | None = ADMIN_TOKEN,
         extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    req = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode() + auth + extra + b"\r\n" + body
    return raw_request(edge.api_port, req)


def assert_error(status: int, body: bytes | dict, expect: int, code: str | None = None) -> dict:
    doc = json.loads(body) if isinstance(body, (bytes, str)) else body
    assert status == expect, (status, doc)
    assert set(doc) == {"error"} and doc["error"]["message"], doc
    if code:
        assert doc["error"]["code"] == code, doc
    return doc["error"]


def api_records(text: str) -> list[str]:
    """The log records (with their tracebacks) of the API and of aiohttp."""
    records: list[str] = []
    for line in text.splitlines():
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line):
            records.append(line)
        elif records:
            records[-1] += "\n" + line
    return [r for r in records if re.match(r"\S+ \S+ \w+ (edge\.api|aiohttp)", r)]


def assert_clean_log(edge: EdgeProcess) -> None:
    """No API or aiohttp record at ERROR or with a traceback; no token anywhere in the log."""
    text = edge.log_text()
    bad = [r for r in api_records(text) if " ERROR " in r.split("\n")[0] or "Traceback" in r]
    assert not bad, bad
    assert ADMIN_TOKEN not in text


# ---- bad input: 4xx, never 500 ---------------------------------------------------------------------------------
def test_deeply_nested_json_is_400(edge):
    st, _, body = post(edge, "/v1/domains", b"[" * 100_000 + b"]" * 100_000)
    assert_error(st, body, 400, "invalid_json")
    st, _, body = post(edge, "/v1/triage", b'{"report": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", token=None)
    assert_error(st, body, 400, "invalid_json")
    assert_clean_log(edge)


def test_integer_over_4300_digits_is_400(edge):
    st, _, body = post(edge, "/v1/domains", b'{"hostname": ' + b"7" * 5000 + b', "tenant": "t"}')
    assert_error(st, body, 400, "invalid_json")
    assert_clean_log(edge)


def test_non_utf8_authorization_is_401(edge):
    req = (b"GET /v1/domains HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ect_\xff\xfeabc\r\n"
           b"Connection: close\r\n\r\n")
    st, headers, body = raw_request(edge.api_port, req)
    assert_error(st, body, 401, "invalid_token")
    assert headers.get("www-authenticate", "").startswith("Bearer")
    assert_clean_log(edge)


@pytest.mark.parametrize("path", [
    "/v1/domains?offset=9223372036854775808", "/v1/domains?offset=99999999999999999999999",
    "/v1/domains?limit=-1", f"/v1/domains/{HOST}/events?after=9223372036854775808",
    f"/v1/domains/{HOST}/events?limit=-1", f"/v1/domains/{HOST}/events?limit=0",
    "/v1/webhooks/deliveries?after=9223372036854775808", "/v1/webhooks/deliveries?limit=" + "9" * 5000,
])
def test_out_of_range_query_integers_are_422(edge, path):
    st, body = edge.call("GET", path)
    err = assert_error(st, body, 422, "invalid_query")
    assert err["field"] in ("offset", "after", "limit")
    assert_clean_log(edge)


def test_events_limit_minus_one_does_not_mean_everything(edge):
    st, body = edge.call("GET", f"/v1/domains/{HOST}/events?limit=-1")
    assert st == 422 and "events" not in body


@pytest.mark.parametrize("chain", [7, ["x"], {"a": 1}, True])
def test_upload_with_a_chain_that_is_not_text_is_422(edge, chain):
    cert, key = edge.ca.leaf(HOST)
    st, body = edge.call("PUT", f"/v1/domains/{HOST}/certificate",
                         {"certificate": _pem(cert), "private_key": _key_pem(key), "chain": chain})
    assert_error(st, body, 422, "invalid_pem")
    assert_clean_log(edge)


def test_renew_racing_a_delete_never_answers_500(edge):
    outcomes: list[int] = []
    for i in range(12):
        name = f"race{i}.hostile.test"
        edge.add_domain(name, tenant="racer")
        start = threading.Barrier(2)

        def renew() -> None:
            start.wait()
            outcomes.append(edge.call("POST", f"/v1/domains/{name}/renew")[0])

        t = threading.Thread(target=renew)
        t.start()
        start.wait()
        st, _ = edge.call("DELETE", f"/v1/domains/{name}")
        t.join()
        assert st in (204, 404)
    assert set(outcomes) <= {202, 404}, outcomes
    assert_clean_log(edge)
    # The manager, which may have been working on the name when it went, drops it quietly too.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "unexpected error while working on race" not in edge.log_text():
        time.sleep(0.2)
    assert "unexpected error while working on race" not in edge.log_text()


def test_a_malformed_header_line_never_logs_the_token(edge):
    secret = "ect_" + "s3cr3t" * 6
    for bad in (f"Authorization Bearer {secret}\r\n".encode(),           # no colon
                f"Authorization: Bearer {secret}\x01\r\n".encode(),     # a control character
                f"Bad Header: Bearer {secret}\r\n".encode(),            # a space in the name
                f"X-A: b\r\n Authorization: Bearer {secret}\r\n".encode()):  # obsolete line folding
        req = b"GET /v1/domains HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bad + b"Connection: close\r\n\r\n"
        st, _, _ = raw_request(edge.api_port, req)
        assert 400 <= st < 500, (bad, st)
    text = edge.log_text()
    assert secret not in text and "s3cr3t" not in text
    assert_clean_log(edge)
    assert "bad HTTP request from 127.0.0.1: 400" in text  # one line each


# ---- CPU-heavy input: off the loop, linear, with a budget --------------------------------------------------------
@pytest.fixture(scope="module")
def tight_edge(tmp_path_factory, pebble, dns):
    """An edge whose analysis budget is far below what a 64 KiB triage takes."""
    from edge.demo.process import free_port
    p = EdgeProcess(work_dir=tmp_path_factory.mktemp("tight"), pebble=pebble, dns=dns,
                    env={"EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}", "EDGECERT_ANALYSIS_BUDGET": "0.01",
                         "EDGECERT_ANALYSIS_WORKERS": "1", "EDGECERT_PUBLIC_BURST": "10"}).start()
    yield p
    p.stop()


def test_triage_out_of_budget_answers_503_and_the_next_call_works(tight_edge):
    report = ("tls: " * 13_000)[:65_000]
    st, headers, body = post(tight_edge, "/v1/triage", json.dumps({"report": report}).encode(), token=None)
    assert_error(st, body, 503, "analysis_timeout")
    assert int(headers["retry-after"]) >= 1
    # the killed worker is replaced: a short report is answered (its budget is tiny, so allow a timeout too, but
    # never a stall or a 500)
    for _ in range(3):
        st, _, body = post(tight_edge, "/v1/triage", json.dumps({"report": "ERR_CERT_DATE_INVALID"}).encode(),
                           token=None)
        assert st in (200, 503), body
    st, body = tight_edge.call("GET", "/healthz", token=None)
    assert st == 200 and body["ok"]
    assert_clean_log(tight_edge)


def test_429_carries_retry_after_from_the_bucket(tight_edge):
    seen = None
    for _ in range(200):
        st, headers, body = raw_request(tight_edge.api_port, b"GET /v1/diagnose/none.hostile.test HTTP/1.1\r\n"
                                                       b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        if st == 429:
            seen = headers, json.loads(body)
            break
    assert seen is not None, "the public rate limit never answered 429"
    headers, doc = seen
    wait = int(headers["retry-after"])
    assert 1 <= wait <= 2  # the bucket refills at the default 1 token/s
    assert doc["error"]["code"] == "rate_limited" and doc["error"]["retry_after"] == wait
    assert f"try again in {wait} second" in doc["error"]["message"] and "minute" not in doc["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["tls: ", "http request ", "certificate ", "\n", "verify error:num=10:",
                                    "i: ", "valid for ", "curl: (", "current time "])
def test_pathological_triage_reports_are_answered(edge, prefix):
    report = (prefix * (65_000 // len(prefix) + 1))[:65_000]
    if not report.strip():
        report = "x" + report[1:]
    st, _, body = post(edge, "/v1/triage", json.dumps({"report": report, "hostname": HOST}).encode(), token=None)
    assert st == 200, body
    assert json.loads(body)["failure_mode"]


def test_a_report_of_huge_numbers_is_not_a_500(edge):
    report = "curl: (" + "9" * 5000 + ") verify error:num=" + "7" * 5000
    st, _, body = post(edge, "/v1/triage", json.dumps({"report": report}).encode(), token=None)
    assert st == 200, body
    assert_clean_log(edge)


# ---- uploads keep only the chain from the leaf -------------------------------------------------------------------
def test_upload_drops_unrelated_certificates_and_refuses_floods(edge):
    from tests.helpers import served_leaf
    ca = edge.ca
    edge.add_domain("byo.hostile.test", tenant="byo")
    cert, key = ca.leaf("byo.hostile.test")
    strangers = [LocalCA(f"stranger {i}") for i in range(3)]
    chain = _pem(strangers[0].inter) + _pem(ca.inter) + _pem(strangers[1].root) + _pem(strangers[2].inter)
    st, d = edge.call("PUT", "/v1/domains/byo.hostile.test/certificate",
                      {"certificate": _pem(cert), "chain": chain, "private_key": _key_pem(key)})
    assert st == 200, d
    assert d["status"] == "active"
    live = edge.work_dir / "state" / "live" / "byo.hostile.test"
    assert (live / "fullchain.pem").read_text().count("BEGIN CERTIFICATE") == 2  # the leaf and its intermediate
    assert served_leaf(edge.https_port, "byo.hostile.test").serial_number == cert.serial_number

    flood_cert, flood_key = ca.leaf("byo.hostile.test")
    flood = _pem(ca.inter) + _pem(strangers[0].inter) * 200
    st, body = edge.call("PUT", "/v1/domains/byo.hostile.test/certificate",
                         {"certificate": _pem(flood_cert), "chain": flood, "private_key": _key_pem(flood_key)})
    assert_error(st, body, 422, "too_many_certificates")
    # nothing changed: the first upload is still what is served
    assert edge.domain("byo.hostile.test")["certificate"]["serial"] == format(cert.serial_number, "x")
    assert served_leaf(edge.https_port, "byo.hostile.test").serial_number == cert.serial_number
    # a tenant's forced renewal of a fresh certificate is throttled, and the 429 says when in Retry-After too
    st, t = edge.call("POST", "/v1/tenants", {"name": "byo"})
    assert st in (200, 201), t
    st, headers, body = post(edge, "/v1/domains/byo.hostile.test/renew", b"", token=t["token"])
    assert_error(st, body, 429, "renew_throttled")
    assert int(headers["retry-after"]) > 3600  # a day after the certificate was obtained
    assert_clean_log(edge)


# ---- SSRF guard and the AIA/CRL fetcher --------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["2002:7f00:1::", "2002:7f00:0001:0:0:0:0:1", "2002:a00:1::", "2002:c0a8:101::",
                                     "2002:a9fe:a9fe::", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808",
                                     "::ffff:127.0.0.1", "::ffff:10.0.0.1"])
def test_ssrf_guard_sees_the_ipv4_inside(address):
    with pytest.raises(TargetNotAllowed):
        check_allowed([address], allow_private=False)


@pytest.mark.parametrize("address", ["2002:808:808::", "64:ff9b::808:808", "::ffff:8.8.8.8"])
def test_ssrf_guard_allows_public_ipv4_inside(address):
    check_allowed([address], allow_private=False)


def test_diagnose_refuses_a_6to4_loopback_target(edge, dns):
    name = "sixtofour.hostile.test"
    dns.add_a(name, ["8.8.8.8"])  # a public IPv4 (checked with the rest before anything connects)
    dns.add_aaaa(name, ["2002:7f00:1::"])
    edge.add_domain(name, tenant="ssrf")
    st, body = edge.call("GET", f"/v1/diagnose/{name}")
    err = assert_error(st, body, 422, "target_not_allowed")
    assert "6to4" in err["message"]


@pytest.mark.parametrize("url,ok", [
    ("http://ca.example.com/int.der", True), ("https://ca.example.com:443/int.der", True),
    ("http://ca.example.com:80/c.crl", True), ("http://ca.example.com:8080/c.crl", False),
    ("https://ca.example.com:22/", False), ("http://ca.example.com:6379/", False), ("ldap://ca.example.com/", False),
    ("ftp://ca.example.com/c.crl", False), ("http://user@ca.example.com/c.crl", False), ("http:///x", False),
    ("http://ca.example.com:99999/", False),
])
def test_aia_and_crl_urls_only_on_default_ports(url, ok):
    assert fetchable_url(url) is ok


# ---- fuzzed JSON: every field of every body, every JSON type ---------------------------------------------------
ODD_VALUES = [None, 7, -1, 2 ** 64, 1.5e308, True, [], ["x"], {}, {"a": [1]}, "", " ", "\ud800", "\x00",
              "a" * 5000, "é" * 300, "*.example.com", "../../etc/passwd", "hostile.example.com\r\nX: y"]


@pytest.mark.parametrize("method,path,fields,token", [
    ("POST", "/v1/domains", ["hostname", "tenant", "key_type"], ADMIN_TOKEN),
    ("POST", "/v1/tenants", ["name"], ADMIN_TOKEN),
    ("POST", "/v1/triage", ["report", "hostname"], None),
    ("PUT", f"/v1/domains/{HOST}/certificate", ["certificate", "private_key", "chain"], ADMIN_TOKEN),
])
def test_fuzzed_json_fields_never_answer_500(edge, method, path, fields, token):
    base = {"hostname": "fuzz.hostile.test", "tenant": "fuzz", "name": "fuzz", "report": "ERR_CERT_DATE_INVALID",
            "certificate": "x", "private_key": "y"}
    for field in fields:
        for value in ODD_VALUES:
            body = {k: base[k] for k in fields if k in base}
            body[field] = value
            st, doc = edge.call(method, path, body, token=token)
            assert st < 500, (field, value, st, doc)
            if st >= 400:
                assert set(doc) == {"error"} and doc["error"]["code"], (field, value, doc)
    assert_clean_log(edge)


def test_chain_longer_than_the_cap_is_refused():
    from cryptography import x509

    from edge.lifecycle.upload import UploadError, validate_certificate
    ca = LocalCA("cap")
    cert, key = ca.leaf("cap.hostile.test")
    roots = [x509.load_pem_x509_certificate(_pem(ca.root).encode())]
    ok = validate_certificate("cap.hostile.test", _pem(cert) + _pem(LocalCA("other").inter) + _pem(ca.inter),
                              _key_pem(key), roots=roots, max_chain=1)
    assert ok.chain_pem == _pem(ca.inter)  # the unrelated intermediate is dropped, the issuer kept
    with pytest.raises(UploadError) as e:
        validate_certificate("cap.hostile.test", _pem(cert) + _pem(ca.inter), _key_pem(key), roots=roots,
                             max_chain=0)
    assert e.value.code == "chain_too_long"
    with pytest.raises(UploadError) as e:
        validate_certificate("cap.hostile.test", _pem(cert), _key_pem(key), chain_pem=_pem(ca.inter) * 11,
                             roots=roots)
    assert e.value.code == "too_many_certificates"
