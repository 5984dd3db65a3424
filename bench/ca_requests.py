"""Requests to the CA per issuance under faults: a real Pebble (behind the fault-injecting ACME proxy) and a real
``edgecert serve``, N names per scenario, counted from the proxy's request log and checked from Pebble's log.

    .venv/bin/python bench/ca_requests.py --names 10

Scenarios: ``clean``; ``nonce30`` (Pebble refuses 30% of nonces); ``outage`` (the CA unreachable for --outage
seconds, starting at the first challenge answer); ``5xx`` (503s on order polls and a 500 on finalize); ``kill``
(``edgecert serve`` killed right after each name's order URL is journaled, then restarted); ``renew`` (every name
issued, then renewed once: the row counts the renewals only, ``requests per issuance`` is per renewal). For each: orders and
certificates at the CA (should both be N), names active, requests per issuance (all, and by kind), requests the CA
never answered (the outage), and the wall time until every name is active (or --timeout). No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.demo.components import ChallTestSrv, Pebble, free_port  # noqa: E402
from tests.helpers import EdgeProcess  # noqa: E402
from tests.support.acmeproxy import ProxyThread  # noqa: E402

KINDS = ("newNonce", "newAccount", "newOrder", "order", "authz", "challenge", "finalize", "certificate")


def run(name: str, work: Path, dns: ChallTestSrv, n: int, *, outage: float, timeout: float) -> dict:
    env = {"PEBBLE_WFE_NONCEREJECT": "30"} if name == "nonce30" else {}
    pebble = Pebble(dns_server=dns, work_dir=work / f"pebble-{name}", http_port=free_port(),
                    authz_reuse_percent=0, env=env).start()
    proxy = ProxyThread(pebble.base_url, upstream_ca=pebble.ca_bundle, tls=pebble.tls).start()
    edge_env = {"EDGECERT_ACME_DIRECTORY": proxy.directory_url, "EDGECERT_ACME_CA_BUNDLE": proxy.ca_bundle,
                "EDGECERT_LOG_LEVEL": "WARNING", "EDGECERT_PROBE_INTERVAL": "0"}
    if name == "kill":
        edge_env["EDGECERT_TEST_CRASH_AT"] = "ordered"
        edge_env["EDGECERT_MAX_CONCURRENT_ORDERS"] = "1"
    edge = EdgeProcess(work_dir=work / f"edge-{name}", pebble=pebble, dns=dns, env=edge_env)
    names = [f"n{i}.{name.replace('5xx', 'fivexx')}.bench.test" for i in range(n)]
    stop = threading.Event()
    try:
        edge.start()
        if name == "5xx":
            proxy.inject(kind="order", status=503, times=2 * n, skip=1)
            proxy.inject(kind="finalize", status=500, times=n)
        if name == "outage":
            def down() -> None:
                while not stop.is_set() and proxy.count("challenge") < 1:
                    time.sleep(0.005)
                proxy.set_unreachable(True)
                stop.wait(outage)
                proxy.set_unreachable(False)
            threading.Thread(target=down, daemon=True).start()
        t0 = time.monotonic()
        for h in names:
            edge.add_domain(h)
        if name == "kill":
            kills = 0
            while kills < n:  # each restart continues one order, is killed after placing the next one
                assert edge.proc is not None
                try:
                    if edge.proc.wait(timeout=120) != 137:
                        break
                except subprocess.TimeoutExpired:
                    break  # no test hook in this build: nothing was killed
                kills += 1
                edge.start()
            edge.env.pop("EDGECERT_TEST_CRASH_AT")
            edge.stop()
            edge.start()
        deadline = time.monotonic() + timeout
        active = 0
        while time.monotonic() < deadline:
            active = sum(edge.domain(h)["status"] == "active" for h in names)
            if active == len(names):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        issued0 = 0
        if name == "renew":
            # Every name renewed once (POST .../renew), counted on its own: requests to the CA per renewal.
            serials = {h: edge.domain(h)["certificate"]["serial"] for h in names}
            issued0 = pebble.issued_count()
            proxy.reset_records()
            t0 = time.monotonic()
            for h in names:
                edge.call("POST", f"/v1/domains/{h}/renew")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ds = [edge.domain(h) for h in names]
                active = sum(d["status"] == "active" and d["certificate"]["serial"] != serials[d["hostname"]]
                             for d in ds)
                if active == len(names):
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - t0
        by_kind = {k: proxy.count(k) for k in KINDS}
        issued = pebble.issued_count() - issued0
        return {"scenario": name, "names": n, "active": active,
                "orders": pebble.order_count() - (n if name == "renew" else 0), "certificates": issued,
                "requests": proxy.count(), "unanswered": proxy.count(status=0),
                "per_issuance": proxy.count() / max(1, issued), "by_kind": by_kind,
                "seconds": seconds}
    finally:
        stop.set()
        proxy.set_unreachable(False)
        edge.stop()
        proxy.stop()
        pebble.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=10)
    p.add_argument("--outage", type=float, default=10.0, help="seconds the CA is unreachable (outage scenario)")
    p.add_argument("--scenarios", default="clean,nonce30,outage,5xx,kill,renew")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every name to be active")
    args = p.parse_args()
    # ``edgecert serve`` runs from this checkout (not whatever the virtualenv has installed).
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    work = Path(tempfile.mkdtemp(prefix="edgecert-ca-requests-"))
    dns = ChallTestSrv(work_dir=work / "dns").start()
    rows = []
    try:
        for name in args.scenarios.split(","):
            rows.append(run(name.strip(), work, dns, args.names, outage=args.outage, timeout=args.timeout))
            r = rows[-1]
            print(f"{r['scenario']:8} names={r['names']} active={r['active']} orders={r['orders']} certificates={r['certificates']} "
                  f"requests={r['requests']} unanswered={r['unanswered']} per_issuance={r['per_issuance']:.1f} "
                  f"all_active_after={r['seconds']:.1f}s", flush=True)
    finally:
        dns.stop()
    print()
    print("| scenario | names | active | orders at the CA | certificates | requests per issuance | unanswered | "
          + " | ".join(KINDS) + " | all active after |")
    print("|---" * (8 + len(KINDS)) + "|")
    for r in rows:
        n = max(1, r["certificates"])
        print(f"| {r['scenario']} | {r['names']} | {r['active']} | {r['orders']} | {r['certificates']} | {r['per_issuance']:.1f} | "
              f"{r['unanswered']} | " + " | ".join(f"{r['by_kind'][k] / n:.1f}" for k in KINDS)
              + f" | {r['seconds']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
