"""A hostile-client sweep against a real ``edgecert serve``, generated from the aiohttp routers themselves (not from
the OpenAPI document, so an undocumented route is swept too): every API route x every method x {no token, a wrong
token, the operator's, tenant A's, tenant B's} x hostile path parameters, bodies and content types answers below
500 (or 503 with Retry-After), in the ``{"error": {"code", "message"}}`` shape, with no traceback in the answer or
the log and no token or key in either; tenant B asking for tenant A's name gets exactly the answer of a missing name
on every route; the plain-HTTP listener (port 80) answers odd methods, paths and Host headers below 500 and never
echoes a header into its redirect; slow clients on the API and port-80 listeners are cut off; ``edgecert domains
import`` of a malformed file exits 2 and imports nothing, without a traceback."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tests.helpers import ADMIN_TOKEN, REPO, EdgeProcess
from tests.test_api_hostile import api_records, raw_request

pytestmark = pytest.mark.real

HOST_A = "owned-a.redteam.test"
MISSING = "nobody-.redteam.test"  # same length as HOST_A: the answers must be identical byte for byte after a swap
assert len(HOST_A) == len(MISSING)
WRONG_TOKEN = "ect_" + "w" * 43


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for r in app.router.routes():
        info = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and r.method != "HEAD":
            out.append((r.method, path))
    return sorted(set(out))


def api_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route of the API app, straight from its router."""
    from edge.api import make_api_app
    settings = SimpleNamespace(public_rate_per_s=1.0, public_burst=1, analysis_workers=1, analysis_budget=1.0)
    return _routes(make_api_app(SimpleNamespace(settings=settings)))


def http_routes() -> list[tuple[str, str]]:
    from edge.api.http01 import make_http_app
    return _routes(make_http_app(SimpleNamespace(settings=None)))


@pytest.fixture(scope="module")
def edge(tmp_path_factory, pebble, dns):
    from edge.demo.process import free_port
    work = tmp_path_factory.mktemp("redteam")
    for h in (HOST_A, "owned-b.redteam.test"):
        dns.add_a(h, ["192.0.2.47"])  # not pointing at the edge: no CA order competes
    p = EdgeProcess(work_dir=work / "edge", pebble=pebble, dns=dns,
                    env={"EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}", "EDGECERT_PUBLIC_BURST": "100000",
                         "EDGECERT_LOG_LEVEL": "INFO", "EDGECERT_LISTENER_HEAD_TIMEOUT": "2",
                         "EDGECERT_LISTENER_BODY_TIMEOUT": "2"}).start()
    p.http_port = int(p.env["EDGECERT_HTTP_LISTEN"].rsplit(":", 1)[1])
    p.add_domain(HOST_A, tenant="red-a")
    p.add_domain("owned-b.redteam.test", tenant="red-b")
    p.tokens = {}
    for t in ("red-a", "red-b", "red-x"):
        st, body = p.call("POST", "/v1/tenants", {"name": t})
        assert st in (200, 201), body
        p.tokens[t] = body["token"]
    yield p
    p.stop()


def _request(port: int, method: str, target: str, *, token: str | None = None, body: bytes | None = None,
             ctype: str | None = "application/json", extra: str = "", host: str | None = "127.0.0.1",
             timeout: float = 30) -> tuple[int, dict, bytes]:
    head = [f"{method} {target} HTTP/1.1", "Connection: close"]
    if host is not None:
        head.append(f"Host: {host}")
    if token:
        head.append(f"Authorization: Bearer {token}")
    if body is not None:
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head.append(f"Content-Length: {len(body)}")
    return raw_request(port, ("\r\n".join(head) + "\r\n" + extra + "\r\n").encode("utf-8", "surrogateescape")
                       + (body or b""), timeout=timeout)


#: What a tenant must never read in an error message: exception class names and reprs, library internals (Rust /
#: OpenSSL / ASN.1 parser text from ``cryptography``), internal URLs.
LIBRARY_TEXT = (r"\b\w+(Error|Exception)\b|<\w+ object at|<\w+\(|https?://127\.0\.0\.1|ParseError|InvalidData\(|"
                r"MalformedFraming|\{ kind:|ASN\.1 parsing|Could not deserialize|cryptography\.io|"
                r"candidates exhausted|Traceback")


def _check_answer(edge: EdgeProcess, what: str, st: int, headers: dict, payload: bytes) -> None:
    """The promises every answer keeps, whatever was asked."""
    if st >= 500:
        assert st == 503 and "retry-after" in headers, f"{st} for {what}: {payload[:300]!r}"
    text = payload.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text, what
    assert ADMIN_TOKEN not in text, what
    assert not re.search(r"PRIVATE KEY-----\s*[A-Za-z0-9+/]{16}", text), what  # no key material
    if st >= 400 and headers.get("content-type", "").startswith("application/json"):
        doc = json.loads(payload)
        assert set(doc) == {"error"}, (what, doc)
        err = doc["error"]
        assert isinstance(err.get("code"), str) and err["code"], (what, doc)
        assert isinstance(err.get("message"), str) and err["message"], (what, doc)
        # plain words: no exception class, no internal URL, no Python repr of an object
        assert not re.search(LIBRARY_TEXT, err["message"]), (what, doc)


def assert_clean_log(edge: EdgeProcess) -> None:
    text = edge.log_text()
    bad = [r for r in api_records(text) if " ERROR " in r.split("\n")[0] or "Traceback" in r]
    assert not bad, bad[:3]
    assert "Traceback" not in text, text[text.find("Traceback") - 500:][:3000]
    assert ADMIN_TOKEN not in text
    for tok in edge.tokens.values():
        assert tok not in text


def _served(routes: list[tuple[str, str]], method: str, target: str) -> str | None:
    """The route template that serves ``method target`` (None: no route; 404 or 405 expected)."""
    for m, p in routes:
        if m == method and re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)), target.split("?")[0]):
            return p
    return None


def _fill(path: str, value: str) -> str:
    return path.replace("{hostname}", value).replace("{name}", value)


BODIES: list[tuple[bytes | None, str | None]] = [
    (None, None), (b"", "application/json"), (b"{}", "application/json"), (b"[]", "application/json"),
    (b"null", "application/json"), (b"\"x\"", "application/json"), (b"{\"a\": 1", "application/json"),
    (b"\xff\xfe{}", "application/json"), (b"hostname=x.example.com&tenant=t", "application/x-www-form-urlencoded"),
    (b"{\"hostname\": \"x.example.com\"}", "text/plain"),
    (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--b--\r\n", "multipart/form-data; boundary=b"),
    (b"{\"a\": \"" + b"x" * 300_000 + b"\"}", "application/json"),  # past the body limit
]
PATH_VALUES = ["a%2Fb", "%2F", "..", "%2e%2e", ".", "%00", "%ff", "é.example", "%C3%A9.example", "a" * 300,
               ("a" * 63 + ".") * 4 + "com", "a" * 64 + ".com", "xn--", "xn--zz.example", "-a-.example",
               "*.redteam.test", "**", "127.0.0.1", "%5B::1%5D", "a..b", HOST_A.upper(), HOST_A + ".",
               "%0d%0aX-Injected:%201", "%20", "~", "a%20b.example"]


def test_the_router_lists_the_routes_the_sweep_expects():
    routes = api_routes()
    assert ("GET", "/v1/domains/{hostname}") in routes and ("POST", "/v1/triage") in routes
    assert any("{name}" in p for _, p in routes)
    assert http_routes()


def test_every_route_method_token_and_body_answers_below_500(edge):
    """Every route x {every method} x {tokens} x {bodies}: < 500, the error shape, nothing leaks, nothing changes."""
    before = edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]
    routes = api_routes()
    paths = sorted({p for _, p in routes})
    tokens = [None, WRONG_TOKEN, ADMIN_TOKEN, edge.tokens["red-a"], edge.tokens["red-b"]]
    accepted: set[str] = set()
    n = 0
    for path in paths:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
            if method == "DELETE" and "{" in path:
                targets = [_fill(path, MISSING)]  # HOST_A must survive; another tenant's delete is swept below
            else:
                targets = [_fill(path, HOST_A if "{hostname}" in path else "red-x")]  # red-x: tokens rotated
            for target in targets:
                for token in tokens:
                    for body, ctype in (BODIES if method in ("POST", "PUT", "PATCH") else BODIES[:1]):
                        if method == "POST" and path == "/v1/tenants" and token == ADMIN_TOKEN and body == b"{}":
                            pass
                        st, headers, payload = _request(edge.api_port, method, target, token=token, body=body,
                                                        ctype=ctype)
                        n += 1
                        if st < 300 and method == "POST" and target == "/v1/domains":
                            accepted.add(json.loads(body)["hostname"])  # a JSON object sent as text/plain
                        what = f"{method} {target} token={'?' if token is None else token[:6]} body={body!r:.60}"
                        _check_answer(edge, what, st, headers, payload)
                        served = _served(routes, method, target)
                        if not served:
                            assert st in (404, 405), (what, st)
                        if token in (None, WRONG_TOKEN) and served and served.startswith("/v1/") and \
                                not served.startswith(("/v1/diagnose", "/v1/triage", "/v1/openapi")):
                            assert st == 401, (what, st, payload[:200])
                        if body is not None and len(body) > 256 * 1024 and served:
                            assert st in (401, 403, 404, 413) or st < 300, (what, st)  # < 300: reads no body
    assert n > 1500
    after = edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]
    assert {d["hostname"] for d in after} == {d["hostname"] for d in before} | accepted
    assert_clean_log(edge)


def _scrub(payload: bytes) -> bytes:
    return payload.replace(HOST_A.encode(), b"<name>").replace(MISSING.encode(), b"<name>")


def test_another_tenants_name_answers_exactly_like_a_missing_one_on_every_route(edge):
    """Tenant B (and the public, for the public routes) sees tenant A's name as missing: same status, same body
    (the name aside), on every route with a {hostname} and every method, whatever the body."""
    # (the status page is public by design: anyone may look at any tenant domain's page, token or not)
    routes = [(m, p) for m, p in api_routes() if "{hostname}" in p and not p.startswith("/status/")]
    assert routes
    other = edge.tokens["red-b"]
    for method, path in routes:
        for body in (None, b"{}", b"{\"origin\": \"https://203.0.113.9\"}", b"{\"certificate\": \"x\"}", b"[]",
                     b"not json"):
            if method in ("GET", "DELETE") and body is not None:
                continue
            for query in ("", "?revoke=true", "?report=true", "?limit=1", "?after=-1"):
                for token in (other,):  # (public diagnose, without a token, sees every registered name by design)
                    a = _request(edge.api_port, method, _fill(path, HOST_A) + query, token=token, body=body)
                    m = _request(edge.api_port, method, _fill(path, MISSING) + query, token=token, body=body)
                    what = f"{method} {path}{query} body={body!r}"
                    _check_answer(edge, what, *a)
                    assert a[0] == m[0], (what, a[0], a[2][:300], m[0], m[2][:300])
                    assert _scrub(a[2]) == _scrub(m[2]), (what, a[2][:300], m[2][:300])
                    assert a[0] >= 400
    # and tenant A's name was not touched by any of it
    d = edge.domain(HOST_A)
    assert d["tenant"] == "red-a"
    assert not any(e["kind"] in ("domain_removed", "settings_changed", "renewal_requested")
                   for e in edge.events(HOST_A))
    assert_clean_log(edge)


def test_hostile_path_parameters_on_every_route(edge):
    routes = [(m, p) for m, p in api_routes() if "{" in p]
    for method, path in routes:
        for v in PATH_VALUES:
            for token in (ADMIN_TOKEN, edge.tokens["red-b"]):
                target = _fill(path, v)
                if method == "DELETE" and token == ADMIN_TOKEN and v.lower().rstrip(".") == HOST_A:
                    continue
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                st, headers, payload = _request(edge.api_port, method, target, token=token, body=body)
                _check_answer(edge, f"{method} {target}", st, headers, payload)
    assert edge.domain(HOST_A)["tenant"] == "red-a"
    assert_clean_log(edge)


HOSTILE_QUERIES = ["status=%00", "status=" + "x" * 5000, "tenant=%ff", "tenant=" + "t" * 500, "q=%00", "cursor=%00",
                   "cursor=" + "A" * 3000, "cursor=W10", "cursor=WyJhIl0", "cursor=e30", "cursor=WzEsMl0",
                   "expiring_before=9999999", "expiring_before=9999-12-31T23:59:59", "expiring_before=0001-01-01",
                   "expiring_before=-1d", "limit=1e3", "limit=%EF%BC%91", "limit=١٢", "offset=１", "after=٣",
                   "metadata==", "metadata=a", "probe=%00", "issuer=%00", "revoke=%ff", "report=maybe",
                   "limit=1&limit=2&limit=x", "a=" + "b" * 20000]


def test_hostile_query_strings_on_every_get_and_delete(edge):
    for method, path in api_routes():
        if method not in ("GET", "DELETE"):
            continue
        target = _fill(path, MISSING if method == "DELETE" else HOST_A)
        for q in HOSTILE_QUERIES:
            for token in (ADMIN_TOKEN, edge.tokens["red-a"]):
                st, headers, payload = _request(edge.api_port, method, f"{target}?{q}", token=token)
                _check_answer(edge, f"{method} {target}?{q[:60]}", st, headers, payload)
    assert_clean_log(edge)


def test_hostile_headers(edge):
    target = f"/v1/domains/{HOST_A}"
    for extra in ("Authorization: Bearer \r\n", "Authorization: bearer  " + ADMIN_TOKEN + "  \r\n",
                  "Authorization: Basic " + "QUJD" * 10 + "\r\n", "Authorization: Bearer " + "x" * 8000 + "\r\n",
                  "Content-Length: -1\r\n", "Content-Length: 99999999999999999999\r\n", "Transfer-Encoding: gzip\r\n",
                  "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "Expect: 100-continue\r\n",
                  "Content-Encoding: gzip\r\n", "X-Forwarded-For: 1.2.3.4, ::1, %00\r\n", "Host: \r\n"):
        for method in ("GET", "POST"):
            p = "/v1/triage" if method == "POST" else target
            st, headers, payload = raw_request(edge.api_port, (
                f"{method} {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n").encode())
            _check_answer(edge, f"{method} {p} {extra!r:.80}", st, headers, payload)
            assert st < 500
    # a gzip body the API does not unpack: refused, not a 500
    import gzip
    z = gzip.compress(b"{\"report\": \"ERR_CERT_DATE_INVALID\"}")
    st, headers, payload = _request(edge.api_port, "POST", "/v1/triage", body=z,
                                    extra="Content-Encoding: gzip\r\n")
    _check_answer(edge, "gzip triage", st, headers, payload)
    bomb = gzip.compress(b"{\"report\": \"" + b"a" * 50_000_000 + b"\"}")
    st, headers, payload = _request(edge.api_port, "POST", "/v1/triage", body=bomb,
                                    extra="Content-Encoding: gzip\r\n")
    _check_answer(edge, "gzip bomb triage", st, headers, payload)
    assert st in (400, 413, 415, 422), st
    assert_clean_log(edge)


# ---- the plain-HTTP listener ---------------------------------------------------------------------------------------
def test_http01_listener_odd_methods_paths_and_hosts(edge):
    port = edge.http_port
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "BREW"):
        for target in ("/", "/.well-known/acme-challenge/", "/.well-known/acme-challenge/x",
                       "/.well-known/acme-challenge/" + "x" * 300, "/.well-known/acme-challenge/..%2F..%2Fetc",
                       "/.well-known/acme-challenge/%00", "/.well-known/acme-challenge/%ff", "/%2e%2e/%2e%2e/",
                       "//evil.example/x", "/\\evil.example", "http://evil.example/", "*", "/a?" + "b" * 6000,
                       "/é", "/%0d%0aSet-Cookie:%20x=y"):
            if method == "CONNECT" and not target.startswith(("http", "*")):
                target = "evil.example:443"
            for host in ("shop.redteam.test", None, "", "127.0.0.1", "[::1]:80", "evil.example:99999",
                         "a" * 300, "shop.redteam.test:80:80", "xn--zz.test", "-bad-.test", "%00.test",
                         "shop.redteam.test.", "SHOP.REDTEAM.TEST"):
                if method == "HEAD":
                    continue  # no body to read to the end of: covered by GET
                st, headers, payload = _request(port, method, target, host=host, body=None)
                what = f"{method} {target[:60]} Host={host!r:.40}"
                assert st < 500, (what, st, payload[:200])
                assert b"Traceback" not in payload, what
                loc = headers.get("location", "")
                assert "\r" not in loc and "\n" not in loc and "Set-Cookie" not in str(headers), (what, loc)
                if loc:
                    # the redirect names the Host the client sent (a DNS name), never another one via the target
                    m = re.match(r"https://([^/:]+)(:\d+)?(/.*)?$", loc)
                    # (an absolute-form target names the host itself, RFC 9112 3.2.2: then that one)
                    named = target.split("/")[2] if target.startswith("http://") else (host or "").split(":")[0]
                    assert m and m.group(1) == named.lower().rstrip("."), (what, loc)
                    assert (m.group(3) or "/").startswith("/"), (what, loc)
    assert_clean_log(edge)


def _cut_after(port: int, sent: bytes, limit: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes a connection that sent ``sent`` and then went quiet (or sends ``trickle``
    one byte every 0.5 s); None when it still holds it after ``limit`` seconds."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    try:
        s.sendall(sent)
        rest = iter(trickle)
        while time.monotonic() - t0 < limit:
            try:
                data = s.recv(65536)
            except socket.timeout:
                b = next(rest, None)
                if b is not None:
                    try:
                        s.sendall(bytes([b]))
                    except OSError:
                        return time.monotonic() - t0
                continue
            except OSError:
                return time.monotonic() - t0
            if not data:
                return time.monotonic() - t0
        return None
    finally:
        s.close()


SLOW = {"silent": (b"", b""), "half_head": (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""),
        "trickled_head": (b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 200),
        "half_body": (b"POST /v1/triage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"rep", b""),
        "trickled_body": (b"POST /v1/triage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 500\r\n\r\n{\"report\": \"", b"a" * 400)}


def test_slow_clients_are_cut_off_on_the_api_and_port_80(edge):
    """A client that connects and goes quiet or trickles (no request, half a head, half a body) is closed by the
    listener's deadlines (the fixture sets listener_head_timeout and listener_body_timeout to 2 s; the defaults are
    15 and 30 s); without them aiohttp holds such a connection for an hour (an idle one) or for ever (a body)."""
    from concurrent.futures import ThreadPoolExecutor
    cases = [(listener, name) for listener in ("api", "http") for name in SLOW]
    with ThreadPoolExecutor(len(cases)) as pool:
        futs = {c: pool.submit(_cut_after, edge.api_port if c[0] == "api" else edge.http_port, *SLOW[c[1]][:1],
                               16, SLOW[c[1]][1]) for c in cases}
        took = {c: f.result() for c, f in futs.items()}
    held = [c for c, t in took.items() if t is None]
    assert not held, f"still open after 16 s: {held} ({took})"  # deadline + aiohttp's 10 s lingering read
    # a request that keeps to the deadlines is answered as before
    st, _, body = _request(edge.api_port, "POST", "/v1/triage", body=b'{"report": "ERR_CERT_DATE_INVALID"}')
    assert st == 200, body
    assert_clean_log(edge)


# ---- the CLI ------------------------------------------------------------------------------------------------------
def _cli(edge: EdgeProcess, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, timeout=60, env=env,
                          cwd=REPO, input=stdin)


MALFORMED_IMPORTS: dict[str, bytes] = {
    "empty": b"",
    "blank": b"\n\n   \n",
    "binary": bytes(range(256)) * 4,
    "not_utf8": b"hostname,tenant\n\xff\xfe.example.com,t\n",
    "jsonl_not_object": b'{"hostname": "ok1.import.test", "tenant": "imp"}\n[1, 2]\n',
    "jsonl_broken": b'{"hostname": "ok2.import.test", "tenant": "imp"}\n{"hostname": \n',
    "jsonl_deep": b'{"hostname": "ok3.import.test", "tenant": "imp"}\n{"a": ' + b"[" * 100_000 + b"]" * 100_000
                  + b"}\n",
    "jsonl_bigint": b'{"hostname": "ok4.import.test", "tenant": "imp"}\n{"hostname": ' + b"7" * 5000 + b"}\n",
    "csv_no_hostname": b"host,tenant\nok5.import.test,imp\n",
    "csv_ragged": b"hostname,tenant\nok6.import.test,imp\nok7.import.test\n",
    "csv_nul": b"hostname,tenant\nok8.import.test,imp\x00\n",
    "csv_huge_field": b"hostname,tenant\nok9.import.test," + b"a" * 200_000 + b"\n",
    "csv_unterminated_quote": b'hostname,tenant\nok10.import.test,"imp\n',
    "csv_duplicate_column": b"hostname,tenant,hostname\nok11.import.test,imp,ok12.import.test\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_IMPORTS))
def test_domains_import_of_a_malformed_file_exits_2_and_imports_nothing(edge, tmp_path, case):
    f = tmp_path / f"{case}.txt"
    f.write_bytes(MALFORMED_IMPORTS[case])
    for src, stdin in ((str(f), None), ("-", MALFORMED_IMPORTS[case])):
        r = _cli(edge, "domains", "import", src, "--api", edge.api, "--token", ADMIN_TOKEN, stdin=stdin)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 2, (case, src, r.returncode, err[-2000:])
        assert "Traceback" not in err and "Traceback" not in r.stdout.decode(errors="replace"), (case, err[-2000:])
        assert "nothing was imported" in err or "cannot read" in err, err
    names = {d["hostname"] for d in edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]}
    assert not {n for n in names if n.endswith(".import.test")}, names


def test_domains_import_from_stdin_with_a_byte_order_mark(edge):
    """A CSV saved by a spreadsheet starts with a BOM: read from a file or from standard input alike."""
    data = "\ufeffhostname,tenant\nbom.import-ok.test,imp\n".encode()
    r = _cli(edge, "domains", "import", "-", "--api", edge.api, "--token", ADMIN_TOKEN, stdin=data)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert edge.domain("bom.import-ok.test")["tenant"] == "imp"


def test_triage_and_diagnose_cli_with_hostile_input(tmp_path):
    env_edge = SimpleNamespace()
    junk = tmp_path / "junk.pem"
    junk.write_bytes(os.urandom(4096))
    for args, stdin, codes in [
        (("triage", "-"), os.urandom(3_000_000), (2,)),
        (("triage", "-"), b"", (2,)),
        (("triage", "-", "--json"), b"\x00" * 1000, (0, 2)),
        (("triage", "ERR_CERT_DATE_INVALID", "--hostname", "a" * 300), None, (2,)),
        (("triage", "ERR_CERT_DATE_INVALID", "--hostname", "\udcff.test"), None, (2,)),
        (("diagnose",), None, (2,)), (("diagnose", ""), None, (2,)), (("diagnose", "a b"), None, (2,)),
        (("diagnose", "a" * 300 + ".com"), None, (2,)), (("diagnose", "x.test", "--connect", "nope"), None, (2,)),
        (("diagnose", "x.test", "--connect", "127.0.0.1:99999"), None, (2,)),
        (("diagnose", "x.test", "--connect", "[::1"), None, (2,)),
        (("diagnose", "x.test", "--cafile", str(junk), "--connect", "127.0.0.1:1"), None, (2,)),
        (("diagnose", "x.test", "--cafile", str(tmp_path), "--connect", "127.0.0.1:1"), None, (2,)),
        (("diagnose", "x.test", "--timeout", "nan", "--connect", "127.0.0.1:1"), None, (2,)),
        (("diagnose", "x.test", "--timeout", "-1", "--connect", "127.0.0.1:1"), None, (2,)),
        (("diagnose", "x.test", "--timeout", "1e308", "--connect", "127.0.0.1:1"), None, (2,)),
        (("diagnose", "x.test", "--timeout", "inf", "--connect", "127.0.0.1:1"), None, (2,)),
        (("diagnose", "x.test", "--port", "0"), None, (2,)),
        (("diagnose", "x.test", "--resolver", "[::1"), None, (2,)),
        (("diagnose", "x.test", "--expected-sha256", "zz"), None, (2,)),
    ]:
        r = _cli(env_edge, *args, stdin=stdin)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        assert r.returncode in codes, (args[:3], r.returncode, out[-1500:])
        assert "Traceback" not in out, (args[:3], out[-2000:])


# ---- the SSRF rule at connect time is the rule at set time --------------------------------------------------------
SSRF_ADDRESSES = ["2002:7f00:1::", "2002:a9fe:a9fe::", "2002:a00:1::", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
                  "64:ff9b::a00:1", "64:ff9b:1::808:808", "::127.0.0.1", "::ffff:0:7f00:1", "::ffff:127.0.0.1",
                  "169.254.169.254", "fd00:ec2::254", "100.64.0.1", "192.0.0.1", "2001:db8::1", "::", "::1",
                  "ff02::1", "240.0.0.1", "fe80::1%eth0", "2002:808:808::", "64:ff9b::808:808", "::ffff:8.8.8.8",
                  "8.8.8.8", "2606:4700::1111"]


@pytest.mark.parametrize("address", SSRF_ADDRESSES)
def test_tenant_origin_connect_time_guard_agrees_with_the_set_time_guard(address):
    """A tenant's origin is checked when set (``check_allowed``) and again when the edge connects
    (``public_address``, against DNS rebinding): a name that later resolves to a 6to4 or NAT64 address carrying
    loopback / metadata must be refused at connect time too, not only an IPv4-mapped one."""
    from edge.diagnostics.target import TargetNotAllowed, check_allowed
    from edge.tls_edge.upstream import public_address
    try:
        check_allowed([address], allow_private=False)
        allowed = True
    except TargetNotAllowed:
        allowed = False
    assert public_address(address) is allowed, address


def test_broken_certificate_uploads_are_refused_in_plain_words(edge):
    """A tenant pasting a damaged certificate or key gets a 422 that says what to do, not the parser's internals
    (``ParseError { kind: ShortData ... }``, ``InvalidData(Invalid symbol 33 ...)``, ``ASN.1 parsing error``)."""
    from tests.test_swap_e2e import LocalCA, _key_pem, _pem
    host = "owned-b.redteam.test"
    ca = LocalCA("redteam-untrusted")
    cert, key = ca.leaf(host)
    good_cert, good_key = _pem(cert), _key_pem(key)
    cases = [
        ("-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n", good_key, "invalid_pem"),
        ("-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n", good_key, "invalid_pem"),
        (good_cert + "-----BEGIN CERTIFICATE-----\n" + "QUJD" * 20 + "\n-----END CERTIFICATE-----\n", good_key,
         "invalid_pem"),
        (good_cert, "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n", "invalid_key"),
        (good_cert, "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "invalid_key"),
        (good_cert, "-----BEGIN RSA PRIVATE KEY-----\nQUJDRA==\n-----END RSA PRIVATE KEY-----\n", "invalid_key"),
        (good_cert + _pem(ca.inter), good_key, "untrusted_chain"),
    ]
    before = edge.domain(host)
    for cert_pem, key_pem, code in cases:
        for token in (edge.tokens["red-b"], ADMIN_TOKEN):
            body = json.dumps({"certificate": cert_pem, "private_key": key_pem}).encode()
            st, headers, payload = _request(edge.api_port, "PUT", f"/v1/domains/{host}/certificate", token=token,
                                            body=body)
            _check_answer(edge, f"upload {code}", st, headers, payload)
            doc = json.loads(payload)
            assert st == 422 and doc["error"]["code"] == code, (code, st, doc)
            assert "QUJD" not in payload.decode() and good_key.splitlines()[1] not in payload.decode()
    assert edge.domain(host)["certificate"] == before["certificate"]
    assert "QUJDRA" not in edge.log_text()
    assert_clean_log(edge)


def test_a_tenant_whose_dns_fails_reads_plain_words(edge, dns):
    """The tenant's own DNS answers SERVFAIL: its domain object, events and status page say so in words, never
    with dnspython's exception class name (``NoNameservers``)."""
    host = "servfail.redteam.test"
    dns.set_servfail(host)
    try:
        edge.add_domain(host, tenant="red-a")
        d = edge.wait_for(lambda: (lambda x: x if x.get("last_error") else None)(
            edge.domain(host, token=edge.tokens["red-a"])), timeout=20, what="a last_error")
        st, events = edge.call("GET", f"/v1/domains/{host}/events", token=edge.tokens["red-a"])
        st2, page = edge.call("GET", f"/status/{host}", token=None)
        assert st == 200 and st2 == 200
        for text in (d["last_error"], json.dumps(events), page):
            assert not re.search(LIBRARY_TEXT + r"|NoNameservers|LifetimeTimeout", text), text[:2000]
        assert "SERVFAIL" in d["last_error"], d["last_error"]
    finally:
        dns.clear_servfail(host)
        edge.call("DELETE", f"/v1/domains/{host}")


def test_random_sni_names_never_reach_the_ca(edge):
    """Handshakes for names nobody registered (and for registered names that do not point here) create no domain
    and send nothing to the CA."""
    import secrets
    import ssl
    before_names = {d["hostname"] for d in edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]}
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    names = [f"{secrets.token_hex(6)}.redteam-sni.test" for _ in range(40)] + [
        HOST_A, HOST_A.upper(), "owned-b.redteam.test", "www." + HOST_A, "a" * 63 + ".test", "xn--bcher-kva.test",
        "localhost", "edge.test", "*.redteam.test"]
    for n in names:
        try:
            with socket.create_connection(("127.0.0.1", edge.https_port), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=n) as t:
                    t.sendall(f"GET / HTTP/1.1\r\nHost: {n}\r\nConnection: close\r\n\r\n".encode())
                    t.recv(1024)
        except (ssl.SSLError, OSError, ValueError):
            pass  # refusing the handshake is fine; ordering a certificate is not
    time.sleep(2)  # a few manager sweeps (EDGECERT_SWEEP_INTERVAL=0.5)
    # Nothing was ordered for any of these names: the order journal (every order the edge places has an entry
    # BEFORE newOrder is sent) names none of them. (The CA request counter is not the measure: the module's other
    # domains may go on with their own orders meanwhile.)
    with sqlite3.connect(edge.work_dir / "edgecert.db") as db:
        ordered = {n for (row,) in db.execute("SELECT names FROM acme_orders") for n in json.loads(row)}
    random_names = {n.lower() for n in names[:40]} | {"localhost", "edge.test", "xn--bcher-kva.test",
                                                      "a" * 63 + ".test"}
    assert not ordered & random_names, ordered & random_names
    after_names = {d["hostname"] for d in edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]}
    assert after_names == before_names
    assert_clean_log(edge)


@pytest.mark.parametrize("name", ["%3Cscript%3Ealert(1)%3C%2Fscript%3E", "a%22onmouseover%3D%22x.test",
                                  "%3Cimg%20src%3Dx%3E.test", "x'%3E%3Csvg%3E.test"])
def test_status_page_never_reflects_markup(edge, name):
    st, headers, payload = _request(edge.api_port, "GET", f"/status/{name}")
    assert st == 404
    text = payload.decode()
    assert "<script>" not in text and "<img" not in text and "<svg" not in text and '"onmouseover' not in text
    assert "default-src" in headers.get("content-security-policy", "") or "<script>" not in text


def test_list_filter_by_another_tenant_is_like_a_missing_tenant(edge):
    other = edge.tokens["red-b"]
    a = _request(edge.api_port, "GET", "/v1/domains?tenant=red-a", token=other)
    m = _request(edge.api_port, "GET", "/v1/domains?tenant=red-zz", token=other)
    assert a[0] == m[0] == 422
    assert a[2].replace(b"red-a", b"<t>") == m[2].replace(b"red-zz", b"<t>")
    for q in ("q=owned-a", "prefix=owned-a", "status=pending_dns", "metadata=a%3Db", "offset=0&limit=1000"):
        st, _, body = _request(edge.api_port, "GET", f"/v1/domains?{q}", token=other)
        assert st == 200 and HOST_A.encode() not in body, (q, body[:300])


def test_operator_cli_with_hostile_arguments_never_tracebacks(edge, tmp_path):
    """Every operator subcommand with hostile arguments ends with a message and exit 1 or 2, never a traceback,
    never a change."""
    api = ["--api", edge.api, "--token", ADMIN_TOKEN]
    before = {d["hostname"] for d in edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]}
    bad_names = ["", "a b", "a" * 300, "\udcff.test", "-x.test", "..", "http://x.test/", "127.0.0.1", "*.*.test",
                 "x.test\r\nX: y", "%2F"]
    runs: list[tuple[str, ...]] = []
    for n in bad_names:
        runs += [("domains", "add", "--", n, "--tenant", "t"), ("domains", "show", "--", n),
                 ("domains", "remove", "--", n), ("domains", "renew", "--", n), ("domains", "events", "--", n),
                 ("domains", "set", "--", n, "--origin", "http://x.test"), ("tenants", "token", "--", n),
                 ("tenants", "set", "--", n, "--origin", "http://x.test"), ("tenants", "add", "--", n)]
    runs += [("domains", "list", "--limit", v) for v in ("0", "-1", "99999999999999999999", "1e3", "nan")]
    runs += [("domains", "list", "--expiring-before", v) for v in ("garbage", "9" * 50, "-1d", "\udcff")]
    runs += [("domains", "list", "--status", "\x01"), ("domains", "list", "--tenant", "t" * 5000),
             ("domains", "list", "--metadata", "=="), ("domains", "export", "--format", "xml"),
             ("domains", "add", "ok.cli-hostile.test", "--tenant", "t", "--timeout", "nan", "--wait"),
             ("domains", "add", "ok2.cli-hostile.test", "--tenant", "t", "--metadata", "noequals"),
             ("domains", "set", HOST_A, "--min-tls-version", "9"), ("domains", "set", HOST_A, "--origin", "x" * 5000),
             ("domains", "import", str(tmp_path)), ("domains", "import", "/nonexistent/file"),
             ("domains",), ("domains", "bogus"), ("tenants",), ("tenants", "bogus"), ("bogus",)]
    for args in runs:
        extra = api if args and args[0] in ("domains", "tenants") and len(args) > 1 and args[1] != "bogus" else []
        r = _cli(edge, *args, *extra)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        assert "Traceback" not in out, (args, out[-2000:])
        assert r.returncode in (1, 2), (args, r.returncode, out[-500:])
    after = {d["hostname"] for d in edge.call("GET", "/v1/domains?limit=1000")[1]["domains"]}
    assert after == before, after ^ before
    assert_clean_log(edge)


@pytest.mark.parametrize("name,value", [
    ("EDGECERT_DNS_RESOLVER", "nan"), ("EDGECERT_DNS_RESOLVER", "resolver.example:53"),
    ("EDGECERT_UPSTREAM", "http://[::1"), ("EDGECERT_UPSTREAM", "http://origin.example:99999"),
    ("EDGECERT_UPSTREAM", "http://"), ("EDGECERT_ORDER_TIMEOUT", "inf"), ("EDGECERT_LISTENER_BODY_TIMEOUT", "inf"),
    ("EDGECERT_LISTENER_HEAD_TIMEOUT", "nan"), ("EDGECERT_EDGE_BODY_TIMEOUT", "inf"),
    ("EDGECERT_RETRY_SCHEDULE", "1,inf"), ("EDGECERT_PUBLIC_BURST", "nan"), ("EDGECERT_API_LISTEN", "127.0.0.1:99999"),
    ("EDGECERT_RATE_LIMITS", '{"a": {"capacity": 1}}'), ("EDGECERT_RATE_LIMITS", '{"duplicate_certificates": 5}'),
    ("EDGECERT_RATE_LIMITS", '{"duplicate_certificates": {"period": 1e300}}'),
    ("EDGECERT_CONFIG", b"\x9a\xff\x00 not utf-8"),
    ("EDGECERT_ISSUERS", b'[[issuers]]\ndirectory = "https://ca.example/dir"\nrate_limits = {duplicate_certificates = 5}\n'),
])
def test_serve_with_an_unusable_setting_exits_2_naming_it(tmp_path, name, value):
    """Interface: 'edgecert serve with a setting it cannot use exits 2 and names the setting, without a traceback'
    (a resolver given by name, an upstream URL that does not parse, an infinite timeout all started before and
    then failed with a traceback, or ran unbounded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    env.update(PYTHONPATH=str(REPO), EDGECERT_ADMIN_TOKEN="x", EDGECERT_DATABASE_URL=f"sqlite:///{tmp_path}/e.db",
               EDGECERT_STATE_DIR=str(tmp_path / "state"), EDGECERT_API_LISTEN="127.0.0.1:0",
               EDGECERT_HTTP_LISTEN="127.0.0.1:0", EDGECERT_HTTPS_LISTEN="127.0.0.1:0",
               EDGECERT_ACME_DIRECTORY="https://127.0.0.1:1/dir")
    if isinstance(value, bytes):  # a config file with this content
        (tmp_path / "c.toml").write_bytes(value)
        env.pop("EDGECERT_ACME_DIRECTORY")  # (the variable would win over the file's [[issuers]])
        env["EDGECERT_CONFIG"] = str(tmp_path / "c.toml")
    else:
        env[name] = value
    try:
        r = subprocess.run([sys.executable, "-m", "edge", "serve"], capture_output=True, timeout=20, env=env,
                           cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"serve started with {name}={value!r}: {(e.stdout or b'')[-1500:]!r}")
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    named = name in out or (name == "EDGECERT_CONFIG" and "config file" in out)
    assert r.returncode == 2 and named and "Traceback" not in out, (r.returncode, out[-2000:])


def test_cli_with_a_bad_api_url_or_a_server_that_is_not_the_api(tmp_path):
    """``--api`` that is no http(s) URL is bad usage (exit 2); a server answering 200 with something that is not
    JSON is named, not a traceback."""
    import http.server
    import threading

    class NotJson(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"<html>not the API</html>")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotJson)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = SimpleNamespace()
        for api, codes in (("http://[::1", (2,)), ("not a url", (2,)), ("ftp://x", (2,)), ("file:///etc/passwd", (2,)),
                           ("http://127.0.0.1:99999", (2,)), (f"http://127.0.0.1:{srv.server_address[1]}", (1,))):
            for args in (("domains", "list"), ("domains", "show", "x.test"), ("tenants", "list")):
                r = _cli(env, *args, "--api", api, "--token", "x")
                out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
                assert r.returncode in codes and "Traceback" not in out, (api, args, r.returncode, out[-1500:])
    finally:
        srv.shutdown()


@pytest.mark.parametrize("name", [".", "..", "...", "%2e%2e"])
def test_a_tenant_name_made_of_dots_is_refused(edge, name):
    """A tenant called '..' could be created but never managed: /v1/tenants/../tokens is /v1/tokens once the path
    is normalised (404), so its token could not be rotated nor revoked."""
    import urllib.parse
    st, body = edge.call("POST", "/v1/tenants", {"name": urllib.parse.unquote(name)})
    if st in (200, 201):  # then it must be manageable by its name
        q = urllib.parse.quote(urllib.parse.unquote(name), safe="")
        st2, body2 = edge.call("POST", f"/v1/tenants/{q}/tokens")
        assert st2 == 201, (name, st2, body2)
    else:
        assert st == 422 and body["error"]["code"] == "invalid_tenant", body
