"""CPU of the HTTP/2 layer per request, server side, no I/O and no TLS: what HTTP/2 costs before anything of the
edge's own runs (bench/RESULTS.md, issue 18): the edge's nghttp2 session (``edge.tls_edge._edgeh2``), and
python-hyper's ``h2`` library (what the edge used before) when it is installed.

    .venv/bin/python bench/h2_cost.py [--requests 10000]

An in-memory client (python-hyper's ``h2``) sends ``GET`` with 8 headers; the server (an ``_edgeh2.Session`` with
the edge's default limits, or an ``H2Connection`` configured as the edge's h2.py was: header validation on)
decodes it and answers 5 headers + 1 KB; only the server's calls are timed (``time.process_time``). Prints
microseconds of CPU per request for each. Wall-clock CPU on a shared machine is noisy: compare the two in one run.
"""

from __future__ import annotations

import argparse
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived

REQ = [(b":method", b"GET"), (b":path", b"/asset/1.css"), (b":scheme", b"https"),
       (b":authority", b"shop.example.test"), (b"user-agent", b"Mozilla/5.0 bench"), (b"accept", b"*/*"),
       (b"accept-encoding", b"gzip, deflate, br"), (b"accept-language", b"en-US,en;q=0.9")]
RESP = [(b":status", b"200"), (b"content-type", b"text/css"), (b"content-length", b"1024"),
        (b"date", b"Thu, 03 Dec 2026 18:00:00 GMT"), (b"server", b"origin")]
BODY = b"x" * 1024


class _H2Lib:
    """The server side on python-hyper's h2."""

    def __init__(self) -> None:
        self.c = H2Connection(H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                                              normalize_inbound_headers=True, validate_outbound_headers=False,
                                              normalize_outbound_headers=False))
        self.c.initiate_connection()

    def feed(self, data: bytes) -> bytes:
        c = self.c
        for ev in c.receive_data(data):
            if type(ev) is RequestReceived:
                c.send_headers(ev.stream_id, RESP)
                c.send_data(ev.stream_id, BODY, end_stream=True)
        return c.data_to_send()


class _Nghttp2:
    """The server side on the edge's nghttp2 session, driven as edge/tls_edge/h2.py drives it."""

    def __init__(self, E) -> None:
        self.E = E
        self.s = E.Session(100, 4096, 65535, 1048576, 65536, 200, 500, 10.0)

    def feed(self, data: bytes) -> bytes:
        s, E = self.s, self.E
        for kind, sid, x in s.feed(data):
            if kind == E.EV_REQUEST_END:
                s.submit_response(sid, RESP, False)
                s.submit_data(sid, BODY, True)
        out = s.send()
        s.events()
        return out


def run(server, n: int) -> float:
    cc = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    cc.initiate_connection()
    cc.receive_data(server.feed(cc.data_to_send()))
    server.feed(cc.data_to_send())
    spent = 0.0
    cpu = time.process_time
    for _ in range(n):
        sid = cc.get_next_available_stream_id()
        cc.send_headers(sid, REQ, end_stream=True)
        frames = cc.data_to_send()
        t = cpu()
        out = server.feed(frames)
        spent += cpu() - t
        for ev in cc.receive_data(out):
            if type(ev) is DataReceived:
                cc.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        frames = cc.data_to_send()
        if frames:
            t = cpu()
            server.feed(frames)
            spent += cpu() - t
    return spent / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10000)
    n = p.parse_args().requests
    try:
        from edge.tls_edge import _edgeh2
    except ImportError:
        _edgeh2 = None
        print("edge.tls_edge._edgeh2 is not built (setup.py build_ext; libnghttp2-dev)")
    if _edgeh2 is not None:
        print(f"nghttp2 {_edgeh2.NGHTTP2_VERSION} (edge _edgeh2), server side: {run(_Nghttp2(_edgeh2), n):.1f} us CPU "
              f"per request ({n} requests)")
    print(f"h2 library (python-hyper), server side: {run(_H2Lib(), n):.1f} us CPU per request ({n} requests)")


if __name__ == "__main__":
    main()
