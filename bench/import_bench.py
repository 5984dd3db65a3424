"""``bench/import_bench.py``: how long ``edgecert domains import`` takes for N names (default 10,000).

Starts a real ``edgecert serve`` (SQLite in a temporary directory, free loopback ports, a DNS resolver that does not
answer and an ACME directory nobody serves: every name stays ``pending_dns``, no order is placed), writes N JSON
lines, and times the CLI import (batches of 500 through ``POST /v1/domains/batch``), then a re-run (every name
``already there``) and ``domains list --all --json``. Prints one line per phase, with names per second.

    .venv/bin/python bench/import_bench.py [--count 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-admin-token-0123456789"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--database-url", help="default: SQLite in the temporary directory")
    args = ap.parse_args()
    from edge.demo.process import free_port
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        work = Path(tmp)
        api_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
        env.update({
            "PYTHONPATH": str(ROOT),
            "EDGECERT_DATABASE_URL": args.database_url or f"sqlite:///{work}/edgecert.db",
            "EDGECERT_STATE_DIR": str(work / "state"),
            "EDGECERT_ACME_DIRECTORY": f"http://127.0.0.1:{free_port()}/dir",
            "EDGECERT_API_LISTEN": f"127.0.0.1:{api_port}",
            "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "EDGECERT_HTTPS_LISTEN": f"127.0.0.1:{free_port()}",
            "EDGECERT_DNS_RESOLVER": f"127.0.0.1:{free_port()}",
            "EDGECERT_EDGE_TARGET": "edge.bench.test",
            "EDGECERT_ADMIN_TOKEN": TOKEN,
            "EDGECERT_LOG_LEVEL": "WARNING",
        })
        log = open(work / "serve.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "edge", "serve"], env=env, cwd=work, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print((work / "serve.log").read_text()[-3000:], file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            src = work / "fleet.jsonl"
            src.write_text("".join(json.dumps({"hostname": f"n{i}.bench{i % 97}.example.com",
                                               "tenant": f"tenant{i % 20}"}) + "\n" for i in range(args.count)))
            cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")},
                       "PYTHONPATH": str(ROOT), "EDGECERT_API_URL": f"http://127.0.0.1:{api_port}",
                       "EDGECERT_ADMIN_TOKEN": TOKEN}
            for phase, cmd, want in (
                    ("import", ["domains", "import", str(src), "--json"], ("added", args.count)),
                    ("re-import", ["domains", "import", str(src), "--json"], ("exists", args.count)),
                    ("list --all", ["domains", "list", "--all", "--json"], ("count", args.count))):
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "edge", *cmd], env=cli_env, capture_output=True, text=True)
                secs = time.perf_counter() - t0
                doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
                ok = doc.get(want[0]) == want[1]
                print(f"{phase:<11} {args.count} names: {secs:6.1f} s  ({args.count / secs:7.0f} names/s)"
                      f"{'' if ok else '  UNEXPECTED: ' + (r.stderr[-300:] or r.stdout[:300])}", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
