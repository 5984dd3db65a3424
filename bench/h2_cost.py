"""CPU of the ``h2`` library per request, server side, no I/O and no TLS: what HTTP/2 in Python costs before anything
of the edge's runs (bench/RESULTS.md, issue 18).

    .venv/bin/python bench/h2_cost.py [--requests 10000]

An in-memory client sends ``GET`` with 8 headers; the server ``H2Connection`` (configured as edge/tls_edge/h2.py
does: header validation on) decodes it and answers 5 headers + 1 KB; only the server's calls are timed
(``time.process_time``). Prints microseconds of CPU per request.
"""

from __future__ import annotations

import argparse
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10000)
    n = p.parse_args().requests
    sc = H2Connection(H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                                      normalize_inbound_headers=True, validate_outbound_headers=False,
                                      normalize_outbound_headers=False))
    cc = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    sc.initiate_connection()
    cc.initiate_connection()
    sc.receive_data(cc.data_to_send())
    cc.receive_data(sc.data_to_send())
    sc.receive_data(cc.data_to_send())
    body = b"x" * 1024
    req = [(b":method", b"GET"), (b":path", b"/asset/1.css"), (b":scheme", b"https"),
           (b":authority", b"shop.example.test"), (b"user-agent", b"Mozilla/5.0 bench"), (b"accept", b"*/*"),
           (b"accept-encoding", b"gzip, deflate, br"), (b"accept-language", b"en-US,en;q=0.9")]
    resp = [(b":status", b"200"), (b"content-type", b"text/css"), (b"content-length", b"1024"),
            (b"date", b"Thu, 03 Dec 2026 18:00:00 GMT"), (b"server", b"origin")]
    spent = 0.0
    cpu = time.process_time
    for _ in range(n):
        sid = cc.get_next_available_stream_id()
        cc.send_headers(sid, req, end_stream=True)
        frames = cc.data_to_send()
        t = cpu()
        for ev in sc.receive_data(frames):
            if type(ev) is RequestReceived:
                sc.send_headers(ev.stream_id, resp)
                sc.send_data(ev.stream_id, body, end_stream=True)
        out = sc.data_to_send()
        spent += cpu() - t
        for ev in cc.receive_data(out):
            if type(ev) is DataReceived:
                cc.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        frames = cc.data_to_send()
        t = cpu()
        sc.receive_data(frames)
        spent += cpu() - t
    print(f"h2 library, server side: {spent / n * 1e6:.1f} us CPU per request ({n} requests)")


if __name__ == "__main__":
    main()
