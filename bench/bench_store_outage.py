"""HTTP-01 answers and API answers while PostgreSQL is stopped (a throwaway cluster, stopped with pg_ctl).

    PYTHONPATH=. .venv/bin/python bench/bench_store_outage.py [--tokens 200] [--seconds 10]

Starts the real service in-process (API + plain-HTTP listeners) on a fresh PostgreSQL, publishes ``--tokens``
HTTP-01 answers through the node's publisher (as the issuer does), stops PostgreSQL for ``--seconds`` while asking
for every answer and for ``GET /v1/domains`` in a loop, starts it again, and prints the status codes seen.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    from edge.app import Server
    from edge.config import Settings
    from edge.demo.process import free_port
    from tests.support.postgres import PostgresServer, find_postgres_bin_dir
    work = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    pg = PostgresServer(work_dir=work / "pg").start()
    bin_dir = find_postgres_bin_dir()

    def pg_ctl(*args: str) -> None:
        argv = [str(bin_dir / "pg_ctl"), "-D", str(pg.cluster_dir / "data"), "-w", "-t", "60", *args]
        if os.geteuid() == 0:
            argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, cwd="/")

    http_port, api_port = free_port(), free_port()
    token = "bench-admin-token-0123456789"
    server = Server(Settings(database_url=pg.create_database(), state_dir=str(work / "state"), admin_token=token,
                             api_listen=f"127.0.0.1:{api_port}", http_listen=f"127.0.0.1:{http_port}",
                             https_listen="127.0.0.1:0", acme_directory="https://127.0.0.1:9/dir", probe_interval=0))
    services = await server.start()
    try:
        for i in range(a.tokens):
            await services.publisher.publish(hostname=f"t{i}.bench.test", kind="http-01", token=f"tok{i}",
                                             key_authorization=f"tok{i}.thumb")
        seen: dict[str, collections.Counter] = {"http01": collections.Counter(), "api": collections.Counter()}
        async with aiohttp.ClientSession() as s:
            await asyncio.to_thread(pg_ctl, "-m", "fast", "stop")
            t0 = time.monotonic()
            while time.monotonic() - t0 < a.seconds:
                for i in range(a.tokens):
                    async with s.get(f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/tok{i}",
                                     headers={"Host": f"t{i}.bench.test"}) as r:
                        ok = r.status == 200 and await r.text() == f"tok{i}.thumb"
                        seen["http01"][r.status if ok or r.status != 200 else "200-wrong"] += 1
                async with s.get(f"http://127.0.0.1:{api_port}/v1/domains",
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                    seen["api"][f"{r.status} Retry-After={r.headers.get('Retry-After')}"] += 1
            await asyncio.to_thread(pg_ctl, "-l", str(pg.log_path), "start")
            async with s.get(f"http://127.0.0.1:{api_port}/v1/domains",
                             headers={"Authorization": f"Bearer {token}"}) as r:
                after = r.status
        print(f"PostgreSQL stopped {a.seconds:.0f} s: HTTP-01 answers {dict(seen['http01'])}; "
              f"GET /v1/domains {dict(seen['api'])}; after the restart GET /v1/domains -> {after}")
    finally:
        await server.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
