"""``bench/bench_handshake_rules.py``: what TLS-ALPN-01 answers and per-name TLS floors cost a handshake in the C engine.

Counted by callgrind (deterministic instruction counts: usable on a shared, noisy machine): N full TLS 1.3 handshakes
in memory against the engine, only ``Conn.feed`` collected (the server side: the ClientHello, certificate and ALPN
callbacks and the index's ``select``), 50 warm names. Prints instructions per handshake for each scenario:

- ``none``: no answer, no floor;
- ``floors``: 1,000 TLS floors on other names;
- ``floor_hit``: a floor on every name served (TLS 1.3 clients) plus the 1,000 others;
- ``alpn``: the 1,000 floors plus one pending TLS-ALPN-01 answer (normal clients).

    .venv/bin/python bench/bench_handshake_rules.py [--handshakes 300] [--scenario none ...]

Set PYTHONPATH to the tree to measure (e.g. a checkout of the code before a change: ``none`` runs there too).
Needs valgrind. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import subprocess
import sys
import tempfile

SCENARIOS = ("none", "floors", "floor_hit", "alpn")


def run_scenario(scenario: str, n: int) -> None:
    """The measured body (run under callgrind by :func:`main`)."""
    from edge.tls_edge import certificates
    from edge.tls_edge import engine as tlsengine
    from edge.tls_edge.index import CertEntry, SniIndex
    certificates.TICKETS = False  # full handshakes only
    dpem, dkey = certificates.generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=True)
    if index.engine is None:
        raise SystemExit(f"the C engine is not available: {tlsengine.unavailable_reason()}")
    names = [f"t{i:04d}.bench.test" for i in range(50)]
    for h in names:
        pem, key = certificates.generate_default_certificate(common_name=h)
        index.put(CertEntry(hostname=h, fullchain_pem=pem, key_pem=key, serial="1"))
    if scenario != "none":
        for i in range(1000):
            index.set_min_tls(f"n{i}.other.test", "1.3")
    if scenario == "floor_hit":
        for h in names:
            index.set_min_tls(h, "1.3")
    if scenario == "alpn":
        cert, key = certificates.make_challenge_certificate("z.other.test", "token.thumbprint")
        index.put_challenge("z.other.test", cert, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    for i in range(n):
        _client, conn, _, _ = tlsengine.handshake_with(index.engine, names[i % len(names)], ctx=ctx)
        assert conn.established and not conn.session_reused


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    ap.add_argument("--run", choices=SCENARIOS, help=argparse.SUPPRESS)  # the child under callgrind
    args = ap.parse_args(argv)
    if args.run:
        run_scenario(args.run, args.handshakes)
        return 0
    base = None
    for scenario in args.scenario or SCENARIOS:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "cg.out")
            r = subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=Conn_feed",
                                f"--callgrind-out-file={out}", sys.executable, __file__, "--run", scenario,
                                "--handshakes", str(args.handshakes)], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                return 1
            with open(out) as f:
                total = int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
        per = total / args.handshakes
        base = per if base is None else base
        print(f"{scenario:10s} {per:12,.0f} instructions per handshake  ({per - base:+,.0f} vs the first)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
