"""``bench/abuse.py``: a real edge under hostile clients; a normal visitor's latency and the edge's RSS while each
attack runs.

The edge is ``bench/bench_serve.py --full`` (the whole service in one process, as ``edgecert serve`` with one worker:
API, plain HTTP, manager, TLS edge with the C engine) over a few generated certificates (``bench/gencerts.py``),
answering ``ok`` on every served name. A visitor (this process, from 127.0.0.1) makes real HTTPS requests, one new
TLS connection each, for ``--seconds`` per phase; meanwhile the attack runs in another process from 127.0.0.2 (one
hostile address), and the edge's VmRSS is sampled from /proc:

- ``baseline``: no attack;
- ``endless-header``: 4 connections each sending a header that never ends (64 KiB writes, up to ``--mib`` each);
- ``unread-pipeline``: 4 connections pipelining requests answered 421 and never reading the answers (up to
  ``--mib`` each), held open once the edge stops reading;
- ``slowloris``: 300 connections sending one header line per second and never finishing the head;
- ``handshake-only``: 300 connections (half finish the TLS handshake and send nothing, half send no ClientHello).

Every loop is bounded (time and bytes), everything is on loopback. ``--repo`` runs another checkout's edge (e.g. the
code before a change) with this script's attacks. Prints one table: visitor p50/p99 (ms), requests answered and
failed, the edge's peak RSS during the attack and its RSS 3 s after it ended.

    .venv/bin/python bench/abuse.py [--seconds 8] [--mib 16] [--repo PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ATTACKER = "127.0.0.2"
PHASES = ("baseline", "endless-header", "unread-pipeline", "slowloris", "handshake-only")


def _ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls(port: int, sni: str, *, timeout: float = 5, source: str = ATTACKER) -> ssl.SSLSocket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return _ctx().wrap_socket(s, server_hostname=sni)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- attacks (each runs in its own process until ``stop`` is set) ------------------------------------------------

def _endless_header(port: int, sni: str, stop, mib: int) -> None:
    def one() -> None:
        while not stop.is_set():
            try:
                s = _tls(port, sni)
                s.settimeout(2)
                s.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nX-Endless: ".encode())
                sent = 0
                while sent < mib << 20 and not stop.is_set():
                    s.sendall(b"a" * 65536)
                    sent += 65536
                s.close()
            except (OSError, ssl.SSLError):
                time.sleep(0.05)
    _threads(one, 4, stop)


def _unread_pipeline(port: int, sni: str, stop, mib: int) -> None:
    req = f"GET / HTTP/1.1\r\nHost: other.{sni}\r\n\r\n".encode()  # answered 421 by the edge
    chunk = req * (65536 // len(req))

    def one() -> None:
        while not stop.is_set():
            try:
                s = _tls(port, sni)
                s.settimeout(2)
                sent = 0
                try:
                    while sent < mib << 20 and not stop.is_set():
                        s.sendall(chunk)
                        sent += len(chunk)
                except socket.timeout:
                    pass  # the edge stopped reading: hold the connection, still not reading
                t_end = time.monotonic() + 15
                while time.monotonic() < t_end and not stop.is_set():
                    time.sleep(0.2)
                s.close()
            except (OSError, ssl.SSLError):
                time.sleep(0.05)
    _threads(one, 4, stop)


def _held(port: int, sni: str, stop, n: int, make, tick) -> None:
    """Keep ``n`` connections made by ``make()`` open (replacing those the edge cuts), ``tick(s)`` on each every
    second."""
    socks: list = []
    while not stop.is_set():
        while len(socks) < n and not stop.is_set():
            try:
                socks.append(make())
            except (OSError, ssl.SSLError):
                time.sleep(0.01)
                break
        t_next = time.monotonic() + 1
        while time.monotonic() < t_next and not stop.is_set():
            live = [s for s in socks if s.fileno() >= 0]
            readable = select.select(live, [], [], 0.2)[0] if live else []
            for s in readable:  # only a close (or an alert) can come: we never asked anything
                try:
                    s.close()
                except OSError:
                    pass
            socks = [s for s in socks if s.fileno() >= 0]
        for s in list(socks):
            try:
                tick(s)
            except (OSError, ssl.SSLError):
                s.close()
        socks = [s for s in socks if s.fileno() >= 0]
    for s in socks:
        s.close()


def _slowloris(port: int, sni: str, stop, mib: int) -> None:
    def make():
        s = _tls(port, sni)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\n".encode())
        s.setblocking(False)
        return s
    _held(port, sni, stop, 300, make, lambda s: s.send(b"X-Slow: 1\r\n"))


def _handshake_only(port: int, sni: str, stop, mib: int) -> None:
    flip = [0]

    def make():
        flip[0] ^= 1
        if flip[0]:
            return _tls(port, sni)
        return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0))
    _held(port, sni, stop, 300, make, lambda s: None)


def _threads(fn, n: int, stop) -> None:
    ts = [threading.Thread(target=fn, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    stop.wait()
    for t in ts:
        t.join(5)


ATTACKS = {"endless-header": _endless_header, "unread-pipeline": _unread_pipeline, "slowloris": _slowloris,
           "handshake-only": _handshake_only}


# -- the visitor -------------------------------------------------------------------------------------------------

def visit(port: int, names: list[str], seconds: float, pid: int) -> dict:
    """Real HTTPS requests (a new TLS connection each, to a served name) for ``seconds``; the edge's RSS sampled."""
    lat: list[float] = []
    errors = 0
    peak = rss_mib(pid)
    ctx = _ctx()
    t_end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < t_end:
        name = names[i % len(names)]
        i += 1
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait after Finished
                with ctx.wrap_socket(raw, server_hostname=name) as s:
                    s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                    out = b""
                    while True:
                        b = s.recv(65536)
                        if not b:
                            break
                        out += b
            if out.startswith(b"HTTP/1.1 200"):
                lat.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1
        except (OSError, ssl.SSLError):
            errors += 1
        peak = max(peak, rss_mib(pid))
        time.sleep(0.01)  # a visitor, not a load generator: ~100 requests/s at most
    lat.sort()
    return {"n": len(lat), "errors": errors, "peak": peak,
            "p50": statistics.median(lat) if lat else float("nan"),
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="visitor measurement per phase")
    ap.add_argument("--mib", type=int, default=16, help="bytes each endless-header/pipeline connection sends, MiB")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout whose edge runs (default: this one)")
    ap.add_argument("--phases", default=",".join(PHASES))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import gencerts
    work = Path(tempfile.mkdtemp(prefix="edgecert-abuse-"))
    certs = work / "certs"
    gencerts.generate(certs, 8, shared_key=True, quiet=True)
    names = sorted(p.name for p in (certs / "live").iterdir())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, PYTHONPATH=str(args.repo.resolve()))
    edge = subprocess.Popen([sys.executable, str(args.repo / "bench" / "bench_serve.py"), "--certs-dir", str(certs),
                             "--listen", f"127.0.0.1:{port}", "--full"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _tls(port, names[0], source="127.0.0.1").close()
                break
            except (OSError, ssl.SSLError):
                if edge.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the edge did not start: {edge.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
        time.sleep(1)
        rows = []
        for phase in args.phases.split(","):
            stop = mp.Event()
            proc = None
            if phase != "baseline":
                proc = mp.Process(target=ATTACKS[phase], args=(port, names[0], stop, args.mib), daemon=True)
                proc.start()
                time.sleep(2)  # the attack ramps up
            before = rss_mib(edge.pid)
            v = visit(port, names, args.seconds, edge.pid)
            stop.set()
            if proc is not None:
                proc.join(20)
                if proc.is_alive():
                    proc.kill()
            time.sleep(3)
            v.update(phase=phase, before=before, after=rss_mib(edge.pid))
            rows.append(v)
            print(f"{phase}: done", file=sys.stderr, flush=True)
    finally:
        edge.send_signal(signal.SIGTERM)
        try:
            edge.wait(15)
        except subprocess.TimeoutExpired:
            edge.kill()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(str(certs) + ".edgecert-store", ignore_errors=True)
    print(f"edge: {args.repo.resolve()} (bench_serve.py --full, C TLS engine), visitor {args.seconds:g} s per phase, "
          f"attacks from {ATTACKER}, --mib {args.mib}")
    print(f"| {'attack':<16} | visitor p50 ms | visitor p99 ms | answered | failed | edge RSS peak MiB | "
          f"RSS 3 s after MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']:<16} | {r['p50']:14.1f} | {r['p99']:14.1f} | {r['n']:8d} | {r['errors']:6d} | "
              f"{r['peak']:17.0f} | {r['after']:17.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
