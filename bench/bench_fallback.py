"""N onboardings with two CAs, the first going down halfway (issue 14, item 6): two real Pebbles (CA 1 behind the
fault-injecting proxy, so it can be made unreachable and its requests counted; CA 2 requiring External Account
Binding) and a real ``edgecert serve`` configured with ``[[issuers]]``.

    .venv/bin/python bench/bench_fallback.py --names 20

The first half of the names is added and waited for (all issued by CA 1); then CA 1 becomes unreachable (every
connection reset) and the second half is added. Printed: the time until every name is active (from the moment CA 1
went down), orders per name (from both Pebbles' own logs), which CA issued each name, and how many requests went to
the dead CA (with ``issuer_fallback_wait`` and ``issuer_down_cooldown`` as given). No figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.demo.components import ChallTestSrv, Pebble, free_port  # noqa: E402
from tests.helpers import EdgeProcess  # noqa: E402
from tests.support.acmeproxy import ProxyThread  # noqa: E402

EAB_KID = "bench-kid"
EAB_KEY = base64.urlsafe_b64encode(b"bench HMAC key, 32 bytes long!!!").decode().rstrip("=")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", type=int, default=20)
    ap.add_argument("--fallback-wait", type=float, default=30.0, help="issuer_fallback_wait, seconds")
    ap.add_argument("--cooldown", type=float, default=60.0, help="issuer_down_cooldown, seconds")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgecert-bench-fallback-"))
    dns = ChallTestSrv(work_dir=work / "dns").start()
    http = free_port()
    a = Pebble(dns_server=dns, work_dir=work / "ca1", http_port=http, authz_reuse_percent=0).start()
    b = Pebble(dns_server=dns, work_dir=work / "ca2", http_port=http, authz_reuse_percent=0,
               eab_keys={EAB_KID: EAB_KEY}).start()
    proxy = ProxyThread(a.base_url, upstream_ca=a.ca_bundle, tls=a.tls).start()
    cfg = work / "edgecert.toml"
    cfg.write_text("\n".join([
        "[[issuers]]", f"directory = {json.dumps(proxy.directory_url)}", f"ca_bundle = {json.dumps(proxy.ca_bundle)}",
        "", "[[issuers]]", f"directory = {json.dumps(b.directory_url)}", f"ca_bundle = {json.dumps(b.ca_bundle)}",
        f"eab_kid = {json.dumps(EAB_KID)}", f"eab_hmac_key = {json.dumps(EAB_KEY)}", ""]))
    edge = EdgeProcess(work_dir=work / "edge", pebble=a, dns=dns, env={
        "EDGECERT_CONFIG": str(cfg), "EDGECERT_LOG_LEVEL": "WARNING", "EDGECERT_PROBE_INTERVAL": "0",
        "EDGECERT_ISSUER_FALLBACK_WAIT": str(args.fallback_wait), "EDGECERT_ISSUER_DOWN_COOLDOWN": str(args.cooldown)})
    for k in ("EDGECERT_ACME_DIRECTORY", "EDGECERT_ACME_CA_BUNDLE"):
        edge.env.pop(k, None)
    names = [f"n{i:03d}.fallback.bench.test" for i in range(args.names)]
    half = args.names // 2
    try:
        edge.start()
        t0 = time.monotonic()
        for h in names[:half]:
            edge.add_domain(h, tenant="bench")
        for h in names[:half]:
            edge.wait_status(h, "active", timeout=args.timeout)
        t_first = time.monotonic() - t0
        proxy.set_unreachable(True)
        down_at = time.monotonic()
        before = len(proxy.records())
        for h in names[half:]:
            edge.add_domain(h, tenant="bench")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            ds = [edge.domain(h) for h in names]
            if all(d["status"] == "active" for d in ds):
                break
            time.sleep(0.2)
        t_all = time.monotonic() - down_at
        ds = [edge.domain(h) for h in names]
        dead = [r for r in proxy.records()[before:] if r.status == 0]
        by_ca = {}
        for d in ds:
            key = (d.get("certificate") or {}).get("issuer_directory") or "(none)"
            by_ca[key] = by_ca.get(key, 0) + 1
        out = {
            "names": args.names, "issuer_fallback_wait_s": args.fallback_wait, "issuer_down_cooldown_s": args.cooldown,
            "first_half_all_active_s": round(t_first, 2),
            "after_ca1_down_all_active_s": round(t_all, 2),
            "active": sum(d["status"] == "active" for d in ds),
            "orders_ca1": a.order_count(), "orders_ca2": b.order_count(),
            "orders_per_name": round((a.order_count() + b.order_count()) / args.names, 3),
            "issued_by": {("ca1" if k == proxy.directory_url else "ca2" if k == b.directory_url else k): v
                          for k, v in by_ca.items()},
            "requests_to_dead_ca": len(dead),
            "dead_ca_requests_by_kind": {k: sum(r.kind == k for r in dead) for k in sorted({r.kind for r in dead})},
        }
        print(json.dumps(out, indent=2))
    finally:
        edge.stop()
        proxy.stop()
        a.stop()
        b.stop()
        dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
