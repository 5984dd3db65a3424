"""One in-process TLS edge proxying to an origin, driven by h2load: for callgrind instruction counts (deterministic
on a noisy machine) and cProfile, per proxied request (bench/RESULTS.md, issue 18).

    # an origin on 127.0.0.1:18090 serving /1k (e.g. nginx, see bench/bench_proxy.py), certificates from gencerts:
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/proxy_inprocess.py \\
        --certs /tmp/certs10 --proto h1 --requests 300      # then 1300: (Ir(1300) - Ir(300)) / 1000
    .venv/bin/python bench/proxy_inprocess.py --certs /tmp/certs10 --proto h2 --requests 20000 --profile
    # --no-fast: every HTTP/1.1 head through httptools' callbacks (as without edge/tls_edge/_edgehttp.c built)

The edge (C TLS engine, uvloop) answers ``h2load`` (8 connections; ``--h1`` keep-alive, or HTTP/2 with 10 streams
each) after 200 warm-up requests; prints h2load's summary and the process CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import resource
import subprocess
import time
import types
from pathlib import Path


async def _main(args) -> None:
    from edge.config import Settings
    from edge.tls_edge.certificates import generate_default_certificate
    from edge.tls_edge.http import EdgeHttpServer
    from edge.tls_edge.index import CertEntry, SniIndex
    if args.no_fast:
        from edge.tls_edge import upstream
        upstream.fast_request = upstream.fast_response = None
    name = (args.certs / "names.txt").read_text().split()[0]
    d = args.certs / "live" / name
    dpem, dkey = generate_default_certificate()
    index = SniIndex(default_fullchain=dpem, default_key=dkey, engine=True)
    index.put(CertEntry(hostname=name, fullchain_pem=(d / "fullchain.pem").read_bytes(),
                        key_pem=(d / "privkey.pem").read_bytes(), serial="1"))
    srv = EdgeHttpServer(types.SimpleNamespace(settings=Settings(upstream=args.origin), index=index, bench_stats={}))
    await srv.start("127.0.0.1", args.port, index.default_context)
    cmd = ["h2load", "-c", "8", f"--connect-to=127.0.0.1:{args.port}"]
    cmd += ["--h1"] if args.proto == "h1" else ["-m", "10"]
    cmd.append(f"https://{name}:{args.port}{args.path}")
    warm = await asyncio.create_subprocess_exec(*cmd, "-n", "200", stdout=subprocess.DEVNULL)
    await warm.wait()
    p = await asyncio.create_subprocess_exec(*cmd, "-n", str(args.requests), stdout=subprocess.PIPE)
    prof = cProfile.Profile() if args.profile else None
    t0 = time.process_time()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if prof:
        prof.enable()
    out, _ = await p.communicate()
    if prof:
        prof.disable()
    spent = time.process_time() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    for line in out.decode().splitlines():
        if line.startswith(("requests:", "status codes:")):
            print(line)
    print(f"edge process CPU per request: {spent / args.requests * 1e6:.1f} us (user "
          f"{(r1.ru_utime - r0.ru_utime) / args.requests * 1e6:.1f}, system "
          f"{(r1.ru_stime - r0.ru_stime) / args.requests * 1e6:.1f}; minor page faults per request "
          f"{(r1.ru_minflt - r0.ru_minflt) / args.requests:.2f})")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    await srv.stop(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--certs", type=Path, required=True, help="bench/gencerts.py output")
    p.add_argument("--origin", default="http://127.0.0.1:18090")
    p.add_argument("--path", default="/1k")
    p.add_argument("--proto", choices=("h1", "h2"), default="h1")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--port", type=int, default=18445)
    p.add_argument("--profile", action="store_true", help="cProfile the edge while h2load runs")
    p.add_argument("--no-fast", action="store_true", help="no fast lane: httptools parses every HTTP/1.1 head")
    args = p.parse_args()
    import uvloop
    uvloop.run(_main(args))


if __name__ == "__main__":
    main()
