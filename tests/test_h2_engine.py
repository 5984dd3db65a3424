"""The nghttp2 session type (edge/tls_edge/_edgeh2.c) on its own, in memory: python-hyper's ``h2`` as the client
(a second, independent HTTP/2 implementation), raw frames for what a well-behaved client never sends."""

from __future__ import annotations

import random
import struct

import pytest

from tests.helpers import IN_CI

h2 = pytest.importorskip("h2")

from h2.config import H2Configuration  # noqa: E402
from h2.connection import H2Connection  # noqa: E402
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged, ResponseReceived,  # noqa: E402
                       StreamEnded, StreamReset)
from h2.settings import SettingCodes  # noqa: E402

from edge.tls_edge import h2 as h2mod  # noqa: E402

if h2mod.AVAILABLE:
    from edge.tls_edge import _edgeh2 as E
elif IN_CI:
    pytest.fail("edge.tls_edge._edgeh2 (libnghttp2) is not built in CI", pytrace=False)
else:
    pytest.skip("edge.tls_edge._edgeh2 is not built (libnghttp2-dev missing)", allow_module_level=True)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LIMITS = dict(max_streams=100, header_table=4096, stream_window=65535, conn_window=1 << 20, max_head=65536,
              max_resets=200, max_controls=500, flood_window=10.0)


def _req(path: str = "/x", method: str = "GET", extra=()) -> list[tuple[bytes, bytes]]:
    return [(b":method", method.encode()), (b":path", path.encode()), (b":scheme", b"https"),
            (b":authority", b"a.test"), *extra]


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


class Pair:
    """A server Session and an h2 client, connected in memory."""

    def __init__(self, **limits) -> None:
        self.s = E.Session(**{**LIMITS, **limits})
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.c.initiate_connection()
        self.cev: list = []

    def up(self) -> list:
        """Client -> server: everything the client has queued; returns the server's events."""
        return list(self.s.feed(self.c.data_to_send()))

    def down(self) -> list:
        """Server -> client: everything the server has queued (send() gives ~64 KiB at a time and says ``more``
        while frames are left, as H2Session.flush reads it); returns the client's events."""
        chunks = [self.s.send()]
        while self.s.more:
            chunks.append(self.s.send())
        assert all(len(c) <= 65536 + 16384 + 9 for c in chunks)
        ev = self.c.receive_data(b"".join(chunks))
        self.cev += ev
        return ev

    def handshake(self) -> None:
        assert self.up() == []
        self.down()
        self.up()


def test_settings_request_response_and_close():
    p = Pair(max_streams=7, header_table=1024, max_head=30000)
    assert p.up() == []
    ev = p.down()
    changed = next(e for e in ev if isinstance(e, RemoteSettingsChanged)).changed_settings
    assert changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 7   # the placeholder id rewritten
    assert changed[SettingCodes.HEADER_TABLE_SIZE].new_value == 1024
    assert changed[SettingCodes.MAX_HEADER_LIST_SIZE].new_value == 30000
    p.up()
    p.c.send_headers(1, _req(extra=[(b"user-agent", b"t")]), end_stream=True)
    ev = p.up()
    assert ev == [(E.EV_REQUEST_END, 1, _req(extra=[(b"user-agent", b"t")]))]
    assert p.s.open_streams == 1
    assert p.s.submit_response(1, [(b":status", b"200"), (b"content-length", b"5")], False) is True
    assert p.s.submit_data(1, b"hello", True) == 5
    ev = p.down()
    assert [type(e) for e in ev] == [ResponseReceived, DataReceived, StreamEnded]
    assert ev[1].data == b"hello"
    assert p.s.events() == [(E.EV_CLOSED, 1, 0)]   # closed by what send() sent
    assert p.s.open_streams == 0 and p.s.pending(1) == 0
    assert p.s.submit_data(1, b"late", False) == -1 and p.s.submit_response(1, [(b":status", b"200")], True) is False


def test_request_body_flow_control_is_manual():
    p = Pair()
    p.handshake()
    p.c.send_headers(1, _req(method="POST"), end_stream=False)
    body = b"b" * 60000
    for i in range(0, len(body), 15000):
        p.c.send_data(1, body[i:i + 15000])
    ev = p.up()
    assert ev[0] == (E.EV_REQUEST, 1, _req(method="POST"))
    got = b"".join(x for k, sid, x in ev if k == E.EV_DATA)
    assert got == body
    p.down()
    assert p.c.local_flow_control_window(1) == 65535 - 60000  # nothing acknowledged until consume()
    p.s.consume(1, 60000)
    p.down()
    assert p.c.local_flow_control_window(1) == 65535
    p.c.end_stream(1)
    assert p.up() == [(E.EV_END, 1, None)]


def test_response_respects_the_client_window_and_reports_pending():
    p = Pair()
    p.handshake()
    p.c.send_headers(1, _req(), end_stream=True)
    p.up()
    assert p.s.submit_response(1, [(b":status", b"200")], False)
    data = bytes(range(256)) * 1024  # 256 KiB
    assert p.s.submit_data(1, data, True) == len(data)
    ev = p.down()
    sent = sum(len(e.data) for e in ev if isinstance(e, DataReceived))
    assert sent == 65535 and p.s.pending(1) == len(data) - 65535
    got = b"".join(e.data for e in ev if isinstance(e, DataReceived))
    while p.s.pending(1):
        p.c.acknowledge_received_data(65535, 1)
        p.up()
        ev = p.down()
        got += b"".join(e.data for e in ev if isinstance(e, DataReceived))
    assert got == data and any(isinstance(e, StreamEnded) for e in p.cev)


def test_big_responses_go_out_in_bounded_buffers_and_are_not_copied_in():
    """Several streams of 1 MiB each with the client's windows wide open: every send() gives ~64 KiB or less and
    says ``more`` while frames are left; a bytes object is queued by reference (its [start:stop] part), any other
    buffer copied; the client gets every byte in order."""
    p = Pair()
    p.handshake()
    p.c.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    p.c.increment_flow_control_window(2**31 - 1 - 65535)
    for sid in (1, 3, 5):
        p.c.send_headers(sid, _req(), end_stream=True)
    p.up()
    p.down()
    p.up()
    want = {}
    for sid in (1, 3, 5):
        body = bytes([sid]) * 100 + random.randbytes(1 << 20)
        assert p.s.submit_response(sid, [(b":status", b"200")], False)
        assert p.s.submit_data(sid, body, False, 100, len(body)) == 1 << 20
        tail = bytearray(b"tail%d" % sid)
        assert p.s.submit_data(sid, tail, True) == (1 << 20) + len(tail)
        tail[:] = b"XXXXX"  # copied when queued: changing it now changes nothing
        want[sid] = body[100:] + b"tail%d" % sid
    sizes = []
    data = p.s.send()
    sizes.append(len(data))
    while p.s.more:
        chunk = p.s.send()
        sizes.append(len(chunk))
        data += chunk
    assert len(sizes) > 40 and max(sizes) <= 65536 + 1024 and not p.s.more
    ev = p.c.receive_data(data)
    got = {sid: b"".join(e.data for e in ev if isinstance(e, DataReceived) and e.stream_id == sid) for sid in want}
    assert got == want and all(p.s.pending(sid) == 0 for sid in want)
    assert p.s.send() == b"" and not p.s.more
    p.c.send_headers(7, _req(), end_stream=True)
    p.up()
    assert p.s.submit_response(7, [(b":status", b"200")], False)
    with pytest.raises(ValueError):
        p.s.submit_data(7, b"x", False, 2, 1)


def test_a_stream_reset_while_its_frame_waits_for_the_next_send_costs_only_that_stream():
    """send() stopped in the middle of a stream's answer (``more``: the client's transport was full) and the client
    resets that stream before the next send(): the frame nghttp2 kept for it is dropped, the connection goes on."""
    p = Pair()
    p.handshake()
    p.c.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    p.c.increment_flow_control_window(2**31 - 1 - 65535)
    p.c.send_headers(1, _req(), end_stream=True)
    p.up()
    p.down()
    p.up()
    assert p.s.submit_response(1, [(b":status", b"200")], False)
    assert p.s.submit_data(1, random.randbytes(1 << 20), True) == 1 << 20
    first = p.s.send()
    assert p.s.more
    p.c.receive_data(first)
    p.c.reset_stream(1)
    assert [k for k, sid, _ in p.up() if sid == 1] == [E.EV_CLOSED]
    while p.s.more:
        p.c.receive_data(p.s.send())  # no error: the session is not failed over one stream
    p.c.send_headers(3, _req(), end_stream=True)
    assert p.up()[0][:2] == (E.EV_REQUEST_END, 3)
    assert p.s.submit_response(3, [(b":status", b"204")], True)
    ev = p.down()
    assert any(isinstance(e, ResponseReceived) and e.stream_id == 3 for e in ev)


class _Unlimited(H2Connection):
    """A client that ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


def test_too_many_streams_are_refused_one_by_one():
    p = Pair(max_streams=2)
    p.c = _Unlimited(H2Configuration(client_side=True, header_encoding=None))
    p.c.initiate_connection()
    p.handshake()
    for sid in (1, 3, 5):
        p.c.send_headers(sid, _req(method="POST"), end_stream=False)
    data = p.c.data_to_send()
    ev = p.s.feed(data)
    assert [(k, sid) for k, sid, _ in ev] == [(E.EV_REQUEST, 1), (E.EV_REQUEST, 3)]
    out = p.s.send()
    # the h2 client counts streams itself, so read the frames: RST_STREAM(5, REFUSED_STREAM), no GOAWAY
    frames = _split(out)
    assert (3, 5, struct.pack(">I", E.REFUSED_STREAM)) in frames
    assert not [f for f in frames if f[0] == 7]
    assert p.s.want_io


def _split(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        out.append((data[pos + 3], int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                    data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return out


def _goaway_code(data: bytes) -> int | None:
    for ftype, _, payload in _split(data):
        if ftype == 7:
            return int.from_bytes(payload[4:8], "big")
    return None


def test_rapid_reset_ping_flood_and_header_list_limits_goaway_calm():
    p = Pair(max_resets=10)
    p.handshake()
    ev = []
    for i in range(20):
        sid = 1 + 2 * i
        p.c.send_headers(sid, _req(), end_stream=True)
        p.c.reset_stream(sid)
        ev = list(p.s.feed(p.c.data_to_send()))
        if any(k == E.EV_CALM for k, _, _ in ev):
            break
    assert ev[-1] == (E.EV_CALM, 0, "too many streams reset (rapid reset)")
    assert _goaway_code(p.s.send()) == E.ENHANCE_YOUR_CALM and not p.s.want_io

    p = Pair(max_controls=50)
    p.handshake()
    for i in range(60):
        p.c.ping(b"%08d" % i)
    ev = p.up()
    assert ev[-1][0] == E.EV_CALM and "control frames" in ev[-1][2]
    assert _goaway_code(p.s.send()) == E.ENHANCE_YOUR_CALM

    p = Pair(max_head=4000)
    p.handshake()
    p.c.send_headers(1, _req(extra=[(b"x-a", b"v" * 500)] * 10), end_stream=True)  # small encoded (indexed)
    ev = p.up()
    assert ev[-1][0] == E.EV_CALM and ev[-1][2] == "a header list over the limit"
    assert _goaway_code(p.s.send()) == E.ENHANCE_YOUR_CALM


def test_continuation_flood_is_cut_by_size_and_block_is_tracked():
    p = Pair(max_head=20000)
    p.handshake()
    block = p.c.encoder.encode(_req())
    ev = p.s.feed(_frame(1, 0, 1, block))  # HEADERS without END_HEADERS
    assert ev == () and p.s.block == len(block) and p.s.block_seq == 1
    field = b"\x10\x07x-flood\x64" + b"v" * 100
    ev = ()
    for _ in range(10):
        ev = p.s.feed(_frame(9, 0, 1, field * 60))  # CONTINUATION, ~6.5 KB each
        if ev:
            break
    assert ev[-1][0] == E.EV_CALM
    assert _goaway_code(p.s.send()) == E.ENHANCE_YOUR_CALM


def test_protocol_errors_are_goaway_not_crashes():
    s = E.Session(**LIMITS)
    ev = s.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # not the preface
    assert ev[-1][0] == E.EV_ERROR
    assert _goaway_code(s.send()) == E.PROTOCOL_ERROR and not s.want_io
    assert s.events() == [(E.EV_ERROR, 0, "session over")]
    p = Pair()
    p.handshake()
    assert p.s.feed(_frame(1, 0x5, 2, b"\x82")) == ()  # HEADERS on an even (server-initiated) stream id
    assert _goaway_code(p.s.send()) == E.PROTOCOL_ERROR and not p.s.want_io  # nghttp2's GOAWAY
    assert p.s.events() == [(E.EV_ERROR, 0, "session over")]
    p = Pair()
    p.handshake()
    p.c.send_headers(1, _req(), end_stream=True)
    p.up()
    with pytest.raises(TypeError):
        p.s.submit_response(1, [("str", "not bytes")], True)
    with pytest.raises(TypeError):
        p.s.submit_response(1, None, True)
    assert p.s.submit_response(1, [(b":status", b"204")], True) is True  # the stream is still usable


def test_client_reset_and_goaway_are_reported():
    p = Pair()
    p.handshake()
    p.c.send_headers(1, _req(method="POST"), end_stream=False)
    p.up()
    p.c.reset_stream(1, 8)
    assert p.up() == [(E.EV_CLOSED, 1, 8)]
    p.c.close_connection()
    assert p.up() == [(E.EV_GOAWAY, 0, 0)]
    assert p.s.send() == b"" and p.s.events() == [(E.EV_ERROR, 0, "session over")]


def test_graceful_goaway_and_server_reset():
    p = Pair()
    p.handshake()
    p.c.send_headers(1, _req(method="POST"), end_stream=False)
    p.up()
    p.s.rst_stream(1, E.CANCEL)
    ev = p.down()
    assert any(isinstance(e, StreamReset) and e.error_code == E.CANCEL for e in ev)
    assert p.s.events() == [(E.EV_CLOSED, 1, E.CANCEL)]
    p.s.goaway(E.NO_ERROR, False)
    ev = p.down()
    assert any(isinstance(e, ConnectionTerminated) and e.error_code == 0 and e.last_stream_id == 1 for e in ev)


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_after_the_preface_never_crash_or_hang(seed):
    rnd = random.Random(seed)
    s = E.Session(**LIMITS)
    s.feed(PREFACE + _frame(4, 0, 0))
    s.send()
    for _ in range(20):
        if rnd.random() < 0.5:  # a plausible frame header with a random body
            payload = rnd.randbytes(rnd.randrange(0, 200))
            data = _frame(rnd.randrange(0, 12), rnd.randrange(0, 256), rnd.randrange(0, 8), payload)
        else:
            data = rnd.randbytes(rnd.randrange(1, 300))
        ev = s.feed(data)
        for kind, sid, x in ev:
            assert kind in (E.EV_REQUEST, E.EV_REQUEST_END, E.EV_DATA, E.EV_END, E.EV_CLOSED, E.EV_GOAWAY,
                            E.EV_CALM, E.EV_ERROR)
            if kind == E.EV_DATA:
                s.consume(sid, len(x))
            elif kind in (E.EV_REQUEST, E.EV_REQUEST_END):
                s.submit_response(sid, [(b":status", b"200")], True)
        assert isinstance(s.send(), bytes)
        s.events()
        if not s.want_io:
            break


def test_many_sessions_do_not_leak():
    import resource

    def run(n: int) -> None:
        for _ in range(n):
            p = Pair()
            p.handshake()
            p.c.send_headers(1, _req(method="POST"), end_stream=False)
            p.c.send_data(1, b"x" * 100)
            p.up()
            p.s.submit_response(1, [(b":status", b"200")], False)
            p.s.submit_data(1, b"y" * 70000, False)  # left queued (window): freed with the session
            p.s.send()

    run(300)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(3000)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 20 * 1024, (before, after)  # KiB: 3,000 sessions with queued data leave nothing
