"""Onboarding and renewal cost against a real Pebble: how many CA requests one issuance / one renewal costs, and
how long N queued onboardings take end to end (DNS check, order, HTTP-01, finalize, swap).

    .venv/bin/python bench/onboarding.py --names 1000 --concurrency 8

Pebble runs with real HTTP-01 validation (PEBBLE_VA_NOSLEEP=1). Our own rate-limit ledger and order pacing are
raised out of the way here (Pebble has no limits); with Let's Encrypt's defaults the ledger would hold onboarding
at 300 new orders per account per 3 hours and the pacer at 10 orders per 10 s: the script prints that bound too.
No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.demo.components import ChallTestSrv, Pebble, free_port  # noqa: E402
from tests.helpers import EdgeProcess  # noqa: E402


def acme_requests(edge: EdgeProcess) -> dict[str, float]:
    st, text = edge.call("GET", "/metrics", token=None)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("edgecert_acme_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            kind = labels.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = out.get(kind, 0) + float(value)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8, help="EDGECERT_MAX_CONCURRENT_ORDERS")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgecert-onboarding-"))
    dns = ChallTestSrv(work_dir=work / "dns").start()
    pebble = Pebble(dns_server=dns, work_dir=work / "pebble", http_port=free_port(), authz_reuse_percent=0).start()
    limits = {k: {"capacity": 10 ** 7} for k in ("certificates_per_registered_domain", "new_orders_per_account",
                                                  "duplicate_certificates")}
    edge = EdgeProcess(work_dir=work / "edge", pebble=pebble, dns=dns, env={
        "EDGECERT_MAX_CONCURRENT_ORDERS": str(args.concurrency), "EDGECERT_ORDERS_PER_10S": "100000",
        "EDGECERT_RATE_LIMITS": json.dumps(limits), "EDGECERT_LOG_LEVEL": "WARNING",
        "EDGECERT_PROBE_INTERVAL": "0"}).start()
    try:
        # 1. one issuance, counted request by request
        before = acme_requests(edge)
        edge.add_domain("first.onboard.test", tenant="t0")
        edge.wait_status("first.onboard.test", "active", timeout=60)
        after = acme_requests(edge)
        first = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
        # 2. one renewal (forced), counted
        before = acme_requests(edge)
        serial = edge.domain("first.onboard.test")["certificate"]["serial"]
        edge.call("POST", "/v1/domains/first.onboard.test/renew")
        edge.wait_for(lambda: edge.domain("first.onboard.test")["certificate"]["serial"] != serial, timeout=60)
        after = acme_requests(edge)
        renewal = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
        # 3. N queued onboardings, 10 tenants
        names = [f"n{i:05d}.t{i % 10}.onboard.test" for i in range(args.names)]
        t0 = time.monotonic()
        for i, n in enumerate(names):
            edge.add_domain(n, tenant=f"t{i % 10}")
        queued = time.monotonic() - t0
        done_at: dict[str, float] = {}
        while len(done_at) < len(names) and time.monotonic() - t0 < 3600:
            st, body = edge.call("GET", "/v1/domains?status=active&limit=10000")
            wanted = set(names)
            for d in body["domains"]:
                if d["hostname"] in wanted:
                    done_at.setdefault(d["hostname"], time.monotonic() - t0)
            time.sleep(1)
        total = max(done_at.values()) if len(done_at) == len(names) else float("nan")
        per_tenant_first = {}
        for n, t in done_at.items():
            tenant = n.split(".")[1]
            per_tenant_first[tenant] = min(per_tenant_first.get(tenant, 1e9), t)
        print(json.dumps({
            "ca_requests_first_issuance": {"total": sum(first.values()), "by_kind": first},
            "ca_requests_renewal": {"total": sum(renewal.values()), "by_kind": renewal},
            "onboardings": args.names, "concurrency": args.concurrency,
            "seconds_to_queue_via_api": round(queued, 1), "seconds_until_all_active": round(total, 1),
            "issuances_per_second": round(args.names / total, 2) if total == total else None,
            "first_active_per_tenant_s": {k: round(v, 1) for k, v in sorted(per_tenant_first.items())},
            "pebble_orders": pebble.order_count(),
            "lets_encrypt_bound": "with default limits: 300 orders at once, then 1 per 36 s (300 / 3 h): "
                                  f"{args.names} onboardings need >= {max(0, args.names - 300) * 36 / 3600:.1f} h",
        }, indent=2))
    finally:
        edge.stop()
        pebble.stop()
        dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
