"""Where a full handshake's server CPU goes, edge vs nginx (or edge vs edge from another tree), interleaved.

    python bench/hs_split.py --certs bench/out/n10000 --conns 12000 --order nginx,edge,nginx,edge
    python bench/hs_split.py --certs bench/out/n10000 --order edge@/tmp/base,edge,edge@/tmp/base,edge   # A/B trees

For each server in ``--order`` (``edge`` = this checkout, ``edge@DIR`` = the checkout in DIR, ``nginx``): start it
pinned to ``--server-cpus`` (nginx with ``master_process off``, so that one pid is the whole server), handshake every
name once (each key's first use out of the window), then run exactly ``--conns`` full TLS 1.3 handshakes (loadgen,
``--concurrency``, pinned to ``--gen-cpus``) while reading, per thread of the server, user and system CPU, minor page
faults and context switches from /proc, and prints one JSON line: those per connection. A fixed number of
connections (not a duration) makes the per-connection figures comparable whatever the rate. Wall-clock figures on a
shared machine are noisy: interleave several rounds and read medians; decide with callgrind (bench/cg_cost.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import ServerUnderTest  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TCK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[str, tuple]:
    """tid -> (name, utime ticks, stime ticks, minor faults, voluntary, involuntary context switches)."""
    out = {}
    for d in glob.glob(f"/proc/{pid}/task/*"):
        try:
            stat = Path(d, "stat").read_text()
            status = Path(d, "status").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        vcs = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        nvcs = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        out[d.rsplit("/", 1)[1]] = (stat[stat.index("(") + 1:stat.rindex(")")], int(f[11]), int(f[12]), int(f[7]),
                                    vcs, nvcs)
    return out


def loadgen(args, extra: list[str]) -> dict:
    p = subprocess.run(["taskset", "-c", args.gen_cpus, str(HERE / "loadgen"), "--host", "127.0.0.1", "--port",
                        str(args.port), "--names", str(Path(args.certs) / "names.txt"), "--json", *extra],
                       capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"loadgen: no result: {p.stderr[-500:]}")
    return json.loads(lines[-1])


def start(label: str, args) -> subprocess.Popen:
    pin = ["taskset", "-c", args.server_cpus]
    if label.startswith("edge"):
        tree = Path(label.split("@", 1)[1]) if "@" in label else ROOT
        cmd = pin + [sys.executable, str(tree / "bench" / "bench_serve.py"), "--certs-dir", args.certs,
                     "--listen", f"127.0.0.1:{args.port}"]
        env = dict(os.environ, PYTHONPATH=str(tree))
    elif label == "nginx":
        run = Path(args.run_dir)
        subprocess.run([sys.executable, str(HERE / "nginx.py"), "--certs", args.certs, "--port", str(args.port),
                        "--run-dir", str(run)], check=True, capture_output=True)
        conf = run / "nginx.conf"
        conf.write_text(conf.read_text().replace("master_process on;", "master_process off;"))
        cmd = pin + ["nginx", "-p", str(run), "-e", str(run / "error.log"), "-c", str(conf)]
        env = dict(os.environ)
    else:
        raise SystemExit(f"unknown server {label!r}")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # taskset execs: the pid is the server's


def one(label: str, args) -> dict:
    p = start(label, args)
    try:
        for _ in range(600):
            if p.poll() is not None:
                raise SystemExit(f"{label} exited ({p.returncode})")
            r = loadgen(args, ["--duration", "1", "--warmup", "0", "--concurrency", "1", "--max-conns", "1"])
            if r["handshakes"] >= 1:
                break
            time.sleep(0.2)
        time.sleep(args.settle)
        loadgen(args, ["--duration", "120", "--warmup", "0", "--concurrency", "8", "--unique-names"])
        t0, w0 = threads(p.pid), time.monotonic()
        r = loadgen(args, ["--duration", "300", "--warmup", "0", "--concurrency", str(args.concurrency),
                           "--max-conns", str(args.conns)])
        t1, w1 = threads(p.pid), time.monotonic()
    finally:
        ServerUnderTest._reap_group(p.pid)  # SIGTERM to the group (started with setsid), then SIGKILL
        p.wait()
    n = max(1, r["handshakes"])
    per_thread, user, system = [], 0.0, 0.0
    for tid, v in t1.items():
        a = t0.get(tid, (v[0], 0, 0, 0, 0, 0))
        du, ds = (v[1] - a[1]) / TCK, (v[2] - a[2]) / TCK
        user, system = user + du, system + ds
        if du + ds > 0:
            per_thread.append({"thread": v[0], "user_us": round(du * 1e6 / n, 1), "sys_us": round(ds * 1e6 / n, 1),
                               "minflt": round((v[3] - a[3]) / n, 3), "vcsw": round((v[4] - a[4]) / n, 3),
                               "ivcsw": round((v[5] - a[5]) / n, 3)})
    return {"server": label, "conns": r["handshakes"], "errors": r["errors_total"], "wall_s": round(w1 - w0, 2),
            "user_us": round(user * 1e6 / n, 1), "sys_us": round(system * 1e6 / n, 1),
            "cpu_us": round((user + system) * 1e6 / n, 1), "threads": per_thread,
            "loadavg": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--certs", default=str(HERE / "out" / "n10000"), help="made by gencerts.py (and imported)")
    ap.add_argument("--conns", type=int, default=12000, help="measured connections per server run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--order", default="nginx,edge,nginx,edge,nginx,edge")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--gen-cpus", default="1")
    ap.add_argument("--port", type=int, default=9871)
    ap.add_argument("--settle", type=float, default=1.5, help="seconds after ready before warming")
    ap.add_argument("--run-dir", default="/tmp/hs_split_nginx", help="nginx's config and logs")
    args = ap.parse_args()
    if not (HERE / "loadgen").exists():
        subprocess.run(["make", "-C", str(HERE)], check=True)
    for label in args.order.split(","):
        print(json.dumps(one(label, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
