"""The HTTP/1.1 proxy path's fast lane (edge/tls_edge/_edgehttp.c): one C call parses and rewrites a plain request
or response head, and anything else goes to httptools as before. Checked here: what it takes, what it refuses
(smuggling vectors, NUL/CR/LF in values, obs-fold, overlong lines and heads, many headers, bodies and chunking),
that whatever it takes httptools parses the same way (a corpus of valid heads, then random mutations of them), and
that the edge without it (the httptools path alone) still proxies end to end."""

from __future__ import annotations

import asyncio
import os
import random
import types

import httptools
import pytest

from edge.tls_edge import upstream
from edge.tls_edge.upstream import HOP_BY_HOP, request_head
from tests.test_edge_hostile import origin, tls_driver  # noqa: F401  (fixtures)
from tests.test_fasthttp import NAME, _client_ctx, _edge
from tests.test_fasthttp import test_reverse_proxy_streams_forwards_headers_and_passes_websockets as _proxy_e2e

if upstream.fast_request is None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("edge.tls_edge._edgehttp is not built in CI (setup.py build_ext)", pytrace=False)
    pytest.skip("edge.tls_edge._edgehttp is not built", allow_module_level=True)

parse_request, parse_response = upstream.fast_request, upstream.fast_response
LINE, HEAD = 8192, 65536

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: App.Test:443\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nhost: a.test.\r\naccept-encoding: gzip, deflate\r\n\r\n",
    b"GET /~user/%7e;p=1 HTTP/1.1\r\nHost: [::1]:8443\r\nCookie: a=1; b=2\r\nX-Empty:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:\ta.test\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: http\r\nForwarded: for=x\r\n"
    b"X-Real-IP: 9.9.9.9\r\nTrue-Client-IP: 1\r\nProxy-Authorization: Basic eA==\r\nX-Keep: 1\r\n\r\n",
    b"GET /%E2%82%AC HTTP/1.1\r\nHost: a.test\r\nCONNECTION: Keep-Alive\r\nAccept-Language: en-GB,en;q=0.9\r\n"
    b"Sec-Fetch-Mode: navigate\r\nUpgrade-Insecure-Requests: 1\r\n\r\n",
    b"GET /" + b"p" * 4000 + b" HTTP/1.1\r\nHost: a.test\r\n" + b"".join(b"X-H%d: v%d\r\n" % (i, i) for i in range(200))
    + b"\r\n",    # "Connection: close": taken, with the keep-alive flag off (one-shot clients: urllib, health checks, probes)
    b"GET /once HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\nUser-Agent: Python-urllib/3.11\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nhost: a.test\r\nconnection: Close\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 21:00:00 GMT\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\nConnection: keep-alive\r\nETag: \"1\"\r\nAccept-Ranges: bytes\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nKeep-Alive: timeout=5\r\nContent-Length: 12\r\n"
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
    b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nTrailer: x\r\nContent-Length:\t3\r\n\r\n",
]


class _Collect:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1


def _slow_request(head: bytes):
    """httptools' reading of ``head``, as the edge's _Request holds it (raises HttpParserError)."""
    c = _Collect()
    c.on_headers_complete = lambda: setattr(c, "keep_alive", p.should_keep_alive())  # as the edge reads it
    p = httptools.HttpRequestParser(c)
    p.feed_data(head)
    r = types.SimpleNamespace(method=p.get_method(), url=c.url, headers=c.headers, chunked=False,
                              version=p.get_http_version(), keep_alive=c.keep_alive,
                              upgrade=p.should_upgrade(), complete=c.complete)
    return r


def _fast_r(m) -> types.SimpleNamespace:
    _, method, url, host_raw, kept, _keep_alive = m
    return types.SimpleNamespace(method=method, url=url, headers=[], chunked=False, kept=kept, host_raw=host_raw)


def _check_request_agrees(head: bytes, m) -> None:
    """What the fast lane made of ``head`` is what httptools and the Python head builder make of it."""
    end = m[0]
    slow = _slow_request(head[:end])
    assert slow.complete == 1 and slow.keep_alive == m[5] and not slow.upgrade and slow.version == "1.1"
    assert slow.method == m[1] and slow.url == m[2]
    hosts = [v for n, v in slow.headers if n.lower() == b"host"]
    assert hosts == [m[3]]
    assert not any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in slow.headers)
    for prefix in (b"", b"/base"):
        assert request_head(_fast_r(m), "a.test", False, prefix, "192.0.2.1") == \
            request_head(slow, "a.test", False, prefix, "192.0.2.1")


def test_plain_requests_are_taken_and_agree_with_httptools():
    for head in REQUESTS:
        m = parse_request(head + b"GET /next", 0, LINE, HEAD)
        assert m is not None, head[:80]
        assert m[0] == len(head)
        _check_request_agrees(head, m)
    # from an offset (pipelining): the second head
    both = REQUESTS[0] + REQUESTS[1]
    m = parse_request(both, len(REQUESTS[0]), LINE, HEAD)
    assert m is not None and m[0] == len(both) and m[2] == b"/a/b?c=d&e=%20f"


def test_forwarded_headers_are_rewritten():
    m = parse_request(REQUESTS[5], 0, LINE, HEAD)
    assert m[4] == b"X-Keep: 1\r\n"   # every client forwarding header and hop-by-hop header dropped
    m = parse_request(REQUESTS[4], 0, LINE, HEAD)
    assert m[3] == b"a.test" and m[4] == b""


@pytest.mark.parametrize("head", [
    # bodies and framing: httptools' path (smuggling protections stay there)
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tTransfer-Encoding: chunked\r\n\r\n",      # obs-fold
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    # NUL, CR, LF, DEL, obs-text in values or names; bare LF; bare CR
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",                          # trailing whitespace
    b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    # Host: none or two
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    # version, method, target forms
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    b"GET / http/1.1\r\nHost: a\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    # connection management, upgrades, expectations
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    # incomplete heads, leading empty lines
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"",
])
def test_everything_else_goes_to_httptools(head):
    assert parse_request(head, 0, LINE, HEAD) is None


def test_limits_are_httptools_paths_business():
    line = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 200 + b"\r\n\r\n"
    assert parse_request(line, 0, LINE, HEAD) is not None
    assert parse_request(line, 0, 200, HEAD) is None             # a header line over max_line
    target = b"GET /" + b"p" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert parse_request(target, 0, 256, HEAD) is None           # the request line over max_line
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"
    assert parse_request(many, 0, LINE, len(many)) is not None    # many headers: only the head size bounds them
    assert parse_request(many, 0, LINE, len(many) - 1) is None    # the head over max_head
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, LINE, HEAD) is None
    with pytest.raises(ValueError):
        parse_request(b"GET", 10, LINE, HEAD)


def _slow_response(data: bytes):
    c = _Collect()
    reason: list[bytes] = []
    c.on_status = reason.append
    c.on_headers_complete = lambda: setattr(c, "keep_alive", p.should_keep_alive())  # as UpstreamConn reads it
    p = httptools.HttpResponseParser(c)
    p.feed_data(data)
    return p, c, b"".join(reason)


def _check_response_agrees(head: bytes, m) -> None:
    end, status, out, length, has_date = m
    assert end == len(head)
    p, c, reason = _slow_response(head + b"x" * length)
    assert c.complete == 1 and c.keep_alive and p.get_status_code() == status and c.body == b"x" * length
    cl = [v for n, v in c.headers if n.lower() == b"content-length"]
    assert len(cl) == 1 and int(cl[0].strip()) == length
    want = b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(
        n + b": " + v + b"\r\n" for n, v in c.headers if n.lower() not in HOP_BY_HOP)
    want += b"Content-Length: %d\r\n" % length
    assert out == want
    assert has_date == any(n.lower() == b"date" for n, _ in c.headers)


def test_plain_responses_are_taken_and_agree_with_httptools():
    for head in RESPONSES:
        m = parse_response(head + b"body...", 0, HEAD)
        assert m is not None, head[:60]
        _check_response_agrees(head, m)


def test_response_with_date_is_the_whole_downstream_write():
    """Given the Date value, the lane returns what goes downstream: the rewritten head, Date when the origin sent
    none, Connection: close when the client's connection ends, the blank line, and the body bytes of this read."""
    plain = b"HTTP/1.1 200 OK\r\nServer: o\r\nContent-Length: 10\r\nKeep-Alive: timeout=5\r\n\r\n"
    end, status, out, length, has_date, took = parse_response(plain + b"0123", 0, HEAD, b"D", True)
    assert (end, status, length, has_date, took) == (len(plain), 200, 10, False, 4)
    assert out == b"HTTP/1.1 200 OK\r\nServer: o\r\nContent-Length: 10\r\nDate: D\r\n\r\n0123"
    m = parse_response(RESPONSES[0] + b"12345EXTRA", 0, HEAD, b"D", False)
    assert m[5] == 5 and m[2].endswith(b"Accept-Ranges: bytes\r\nContent-Length: 5\r\nConnection: close\r\n\r\n12345")
    assert b"Date: D" not in m[2]  # the origin's Date is kept
    assert parse_response(RESPONSES[1], 0, HEAD, b"D", True)[5] == 0
    with pytest.raises(TypeError):
        parse_response(RESPONSES[1], 0, HEAD, "D", True)


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5 \r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",                                    # close-delimited
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 \r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 600 Odd\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\x00\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
])
def test_other_responses_go_to_httptools(head):
    assert parse_response(head, 0, HEAD) is None


_NOISE = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"a", b"\x7f", b"\x80", b"\r\n", b"\r\n ", b"-", b"0",
          b"Content-Length: 1\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: b\r\n", b"HTTP/1.1", b"\r\n\r\n"]


def _mutants(seed: bytes, rng: random.Random, n: int):
    for _ in range(n):
        b = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b) + 1)
            op = rng.random()
            if op < 0.4:
                b[i:i] = rng.choice(_NOISE)
            elif op < 0.7 and i < len(b):
                del b[i:i + rng.randint(1, 3)]
            elif i < len(b):
                b[i:i + 1] = rng.choice(_NOISE)
        yield bytes(b)


def test_mutated_heads_taken_by_the_fast_lane_parse_the_same_in_httptools():
    """Differential: a few thousand random mutations (the smuggling alphabet: CR, LF, NUL, whitespace, colons,
    framing headers); whenever the fast lane takes one, httptools reads the same message and the same headers."""
    rng = random.Random(18)
    taken = refused = 0
    for seed in REQUESTS[:7] + REQUESTS[-2:]:
        for head in _mutants(seed, rng, 600):
            m = parse_request(head, 0, LINE, HEAD)
            if m is None:
                refused += 1
                continue
            taken += 1
            _check_request_agrees(head, m)
    for seed in RESPONSES:
        for head in _mutants(seed, rng, 600):
            m = parse_response(head, 0, HEAD)
            if m is None:
                refused += 1
                continue
            taken += 1
            _check_response_agrees(head[:m[0]], m)
    assert taken > 200 and refused > 1000  # both sides of the lane were exercised


async def test_the_edge_without_the_fast_lane_still_proxies(origin, tls_driver, monkeypatch):  # noqa: F811
    """The httptools path alone (the extension not built): the whole proxy test."""
    monkeypatch.setattr(upstream, "fast_request", None)
    monkeypatch.setattr(upstream, "fast_response", None)
    await _proxy_e2e(origin, tls_driver)


_SMUGGLE = b"GET /admin HTTP/1.1\r\nHost: %s\r\n\r\n" % NAME.encode()
_H = NAME.encode()
_VECTORS = {
    "invalid chunk size": b"POST /up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" % _H,
    "chunk size overflow": b"POST /up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"ffffffffffffffffff1\r\nx\r\n0\r\n\r\n" % _H,
    "CL and TE": b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n" % _H,
    "two CL": b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nabcde" % _H,
    "TE with a space": b"POST /up HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" % _H,
    "obs-fold": b"GET /f HTTP/1.1\r\nHost: %s\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n" % _H,
    "NUL in a value": b"GET /f HTTP/1.1\r\nHost: %s\r\nX: a\x00b\r\n\r\n" % _H,
    "bare CR in a value": b"GET /f HTTP/1.1\r\nHost: %s\r\nX: a\rb\r\n\r\n" % _H,
    "bare LF line ends": b"GET /f HTTP/1.1\nHost: %s\n\n" % _H,
}


@pytest.mark.parametrize("vector", sorted(_VECTORS))
async def test_smuggling_vectors_after_a_fast_lane_request_get_400(vector, origin, tls_driver):  # noqa: F811
    """On one connection: a plain GET (the fast lane takes it), then a smuggling vector (httptools refuses it):
    the GET is answered by the origin, the vector with 400 and the close (a broken chunked body: the close), and
    the request hidden behind it never reaches the origin."""
    url, seen = origin
    srv, port, _ = await _edge(url)
    try:
        head = b"GET /first HTTP/1.1\r\nHost: %s\r\n\r\n" % _H
        assert parse_request(head, 0, LINE, HEAD) is not None
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(), server_hostname=NAME)
        w.write(head)
        first = await asyncio.wait_for(r.readuntil(b'"/first"'), 10)
        assert first.startswith(b"HTTP/1.1 200 ")
        await asyncio.wait_for(r.read(65536), 10)  # the rest of the answer, if any
        w.write(_VECTORS[vector] + _SMUGGLE)
        out = await asyncio.wait_for(r.read(), 10)  # up to the close
        w.close()
        paths = [x["path"] for x in seen]
        if "chunk" in vector:
            # a valid head: already on its way to the origin when the body breaks; the connection is cut
            assert out == b"" and paths in (["/first"], ["/first", "/up"]), (out[:200], paths)
        else:
            assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out[:200]
            assert paths == ["/first"]
    finally:
        await srv.stop()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "httptools"])
@pytest.mark.parametrize("answer", ["placeholder", "proxied"])
async def test_a_connection_close_request_is_answered_once_then_the_connection_ends(answer, fast, origin, tls_driver,
                                                                                   monkeypatch):  # noqa: F811
    """The fast lane takes a "Connection: close" request: one answer that says "Connection: close", then the edge
    closes; a request pipelined behind it is neither answered nor sent to the origin, and does not cost the first
    its answer (RFC 9112 section 9.6). The same without the fast lane (httptools)."""
    url, seen = origin
    if not fast:
        monkeypatch.setattr(upstream, "fast_request", None)
    srv, port, _ = await _edge(url if answer == "proxied" else None)
    try:
        head = b"GET /once HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % _H
        m = parse_request(head, 0, LINE, HEAD)
        assert m is not None and m[5] is False
        for behind in (b"", _SMUGGLE):
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(), server_hostname=NAME)
            w.write(head + behind)
            out = await asyncio.wait_for(r.read(), 10)  # up to the close: the edge ends the connection
            w.close()
            assert out.startswith(b"HTTP/1.1 200 ") and out.count(b"HTTP/1.1 ") == 1, out[:300]
            assert b"\r\nconnection: close\r\n" in out.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n", out[:300]
        if answer == "proxied":
            assert [x["path"] for x in seen] == ["/once", "/once"]
    finally:
        await srv.stop()


# -- the same lane for HTTP/2 streams (edge/tls_edge/h2.py) -----------------------------------------------------

def test_response_fields_are_the_http11_lane_s_head_as_http2_fields():
    """``response_fields`` takes exactly the responses ``parse_response`` takes (corpus and mutations), and gives the
    same head as HEADERS fields: ``:status`` first, the forwarded headers lower-cased in their order,
    content-length, and Date only when the origin sent none; how many body bytes of the read are this response's."""
    from edge.tls_edge._edgehttp import response_fields
    rng = random.Random(6)
    taken = 0
    for seed in RESPONSES:
        for head in [seed, *_mutants(seed, rng, 400)]:
            data = head + b"0123456789" * 3
            m1, m2 = parse_response(data, 0, HEAD), response_fields(data, 0, HEAD, b"D")
            assert (m1 is None) == (m2 is None), head
            if m1 is None:
                continue
            taken += 1
            end, status, out, length, has_date = m1
            end2, status2, fields, length2, took = m2
            assert (end2, status2, length2) == (end, status, length)
            assert took == len(data[end:end + length])
            lines = out.split(b"\r\n")[1:-1]  # the forwarded header lines, Content-Length last
            want = [(b":status", b"%d" % status)] + [
                (n.lower(), v) for n, _, v in (line.partition(b": ") for line in lines)]
            if not has_date:
                want.append((b"date", b"D"))
            assert fields == want
            assert all(n == n.lower() for n, _ in fields)
            assert not any(n in HOP_BY_HOP and n != b"content-length" for n, _ in fields)
    assert taken > 50
    assert response_fields(RESPONSES[1], 0, HEAD, None)[2] == [(b":status", b"404"), (b"content-length", b"0")]
    with pytest.raises(TypeError):
        response_fields(RESPONSES[1], 0, HEAD, "D")


_H2_NAMES = [b":method", b":path", b":authority", b":scheme", b"host", b"cookie", b"content-length", b"accept",
             b"te", b"keep-alive", b"connection", b"x-forwarded-for", b"x-forwarded-anything", b"forwarded",
             b"x-real-ip", b"expect", b"proxy-authorization", b"user-agent", b"x-long-" + b"n" * 40, b"trailer"]


def test_request_fields_in_c_and_in_python_agree():
    """An HTTP/2 stream's request as the origin gets it: the C function and its Python stand-in (used when the
    extension is not built) agree on random field lists; what they drop and join is checked on one list."""
    from edge.tls_edge._edgehttp import request_fields
    from edge.tls_edge.h2 import _py_request_fields
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/p?q"),
              (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"x-forwarded-for", b"6.6.6.6"), (b"cookie", b"b=2"),
              (b"forwarded", b"for=x"), (b"te", b"trailers"), (b"host", b"h.test"), (b"content-length", b"3"),
              (b"expect", b"100-continue"), (b"x-keep", b"1")]
    want = (b"GET", b"/p?q", b"a.test", b"h.test",
            b"accept: */*\r\ncontent-length: 3\r\nx-keep: 1\r\ncookie: a=1; b=2\r\n", b"3", False)
    assert request_fields(fields, 8192) == _py_request_fields(fields, 8192) == want
    assert request_fields(fields, 20)[6] is True
    assert request_fields([], 8192) == (None, None, None, None, b"", None, False)
    rng = random.Random(9)
    for _ in range(3000):
        fl = [(rng.choice(_H2_NAMES), bytes(rng.choice(b"ab=; 1") for _ in range(rng.randint(0, 12))))
              for _ in range(rng.randint(0, 12))]
        limit = rng.choice([8, 20, 8192])
        assert request_fields(fl, limit) == _py_request_fields(fl, limit), fl
    with pytest.raises(TypeError):
        request_fields([(b"a", "b")], 8192)
