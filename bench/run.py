"""One command: edgecert's TLS edge vs nginx, full handshakes, side by side.

    python bench/run.py --names 10000 --duration 10              # edge vs nginx (needs `bench/bench_serve.py`)
    python bench/run.py --names 1000 --duration 5 --server nginx # nginx alone
    bash bench/run.sh ...                                        # same, installing gcc/libssl-dev/nginx first

What it does: builds bench/loadgen if needed, generates N tenant certificates (cached in
bench/out/n<N>/), then for each round and each server (order alternating, A B / B A ...):
start the server pinned to --server-cpus (default core 0), time start -> first verified handshake,
check a few names end to end (chain, hostname, 200 "ok"), measure the first handshake of names it
never saw (cold, concurrency 1) and the same names again (warm), then the throughput pass:
loadgen pinned to --gen-cpus (default core 1), random SNI over all names, full handshakes only.
Then a two-workers-vs-one phase with server and generator sharing all cores (see README).

Prints a table of medians and ratios; the raw per-round figures go to bench/out/results/*.json.
No figure is asserted anywhere: this is a measuring tool, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gencerts  # noqa: E402
from nginx import NginxServer  # noqa: E402
from servers import EdgeServer, ServerError, ServerUnderTest, free_port, https_get  # noqa: E402

LOADGEN = HERE / "loadgen"
OUT = HERE / "out"
GEN_SATURATED_PCT = 85.0
OTHERS_NOISY_PCT = 15.0
DEFAULT_EDGECERT = str(HERE.parent / ".venv" / "bin" / "edgecert")


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- preflight ---------------------------------------------------------------------------------

def build_loadgen() -> None:
    src = HERE / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= max(src.stat().st_mtime, (HERE / "Makefile").stat().st_mtime):
        return
    missing = [t for t in ("gcc", "make") if shutil.which(t) is None]
    if not Path("/usr/include/openssl/ssl.h").exists():
        missing.append("libssl-dev (OpenSSL headers)")
    if missing:
        raise BenchError(f"cannot build bench/loadgen: missing {', '.join(missing)}. "
                         "Run bench/run.sh (installs them with apt-get) or: apt-get install -y gcc make libssl-dev")
    log("building bench/loadgen")
    p = subprocess.run(["make", "-C", str(HERE), "loadgen"], capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"make -C bench failed:\n{p.stdout}\n{p.stderr}")


def cpu_lists(args) -> tuple[str | None, str | None, str | None]:
    """(server cpus, generator cpus, shared cpus) for taskset; None = no pinning."""
    n = os.cpu_count() or 1
    if shutil.which("taskset") is None:
        log("WARNING: taskset not found (util-linux): nothing is pinned; figures are less reliable")
        return None, None, None
    if n < 2:
        log("WARNING: fewer than 2 CPUs: server and generator share one core; ratios only")
        return "0", "0", "0"
    shared = ",".join(sorted(set(args.server_cpus.split(",")) | set(args.gen_cpus.split(",")), key=int))
    return args.server_cpus, args.gen_cpus, shared


# --- loadgen ----------------------------------------------------------------------------------

def run_loadgen(port: int, names_file: Path, *, duration: float, warmup: float, concurrency: int,
                cpu_list: str | None, tls12: bool, unique: bool = False, check_names: bool = False,
                on_start=None, on_end=None) -> dict:
    argv = [str(LOADGEN), "--host", "127.0.0.1", "--port", str(port), "--names", str(names_file),
            "--duration", str(duration), "--warmup", str(warmup), "--concurrency", str(concurrency),
            "--json", "--markers"]
    if tls12:
        argv.append("--tls12")
    if unique:
        argv.append("--unique-names")
    if check_names:
        argv.append("--check-names")
    if cpu_list:
        argv = ["taskset", "-c", cpu_list] + argv
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(duration + warmup + 60, p.kill)  # belt and braces: loadgen stops by itself
    killer.start()
    other = []
    try:
        for line in p.stderr:
            line = line.strip()
            if line == "MEASURE_START":
                if on_start:
                    on_start()
            elif line == "MEASURE_END":
                if on_end:
                    on_end()
            elif line:
                other.append(line)
        out = p.stdout.read()
        p.wait()
    finally:
        killer.cancel()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"loadgen produced no result (exit {p.returncode}): {' | '.join(other)[-1000:]}")
    res = json.loads(lines[-1])
    res["exit_code"] = p.returncode
    if other:
        res["stderr"] = other[-5:]
    return res


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


def wait_quiet(max_wait: float, threshold_pct: float = OTHERS_NOISY_PCT) -> float:
    """Wait (up to max_wait s) until the machine is nearly idle; return the last busy % seen."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(1.0)
        busy = 100 * (machine_busy_s() - b0) / (time.monotonic() - t0)
        if busy <= threshold_pct or time.monotonic() >= deadline:
            return busy
        log(f"  machine busy ({busy:.0f}% of a core used by other processes); waiting (--wait-quiet)")


class CpuWindow:
    """Server CPU seconds (whole process tree) between loadgen's MEASURE_START and MEASURE_END."""

    def __init__(self, server: ServerUnderTest):
        self.server = server
        self.c0: dict[int, float] = {}
        self.c1: dict[int, float] = {}
        self.t0 = self.t1 = 0.0
        self.mem: dict = {}

    def start(self):
        self.t0 = time.monotonic()
        self.m0 = machine_busy_s()
        self.c0 = self.server.cpu_seconds()

    def end(self):
        self.t1 = time.monotonic()
        self.m1 = machine_busy_s()
        self.c1 = self.server.cpu_seconds()
        self.mem = self.server.rss()

    def result(self, handshakes: int, gen_cpu_s: float) -> dict:
        per = {pid: self.c1[pid] - self.c0.get(pid, 0.0) for pid in self.c1}
        total = sum(per.values())
        wall = max(self.t1 - self.t0, 1e-9)
        busy = sorted((v for v in per.values() if v > 0.02 * max(total, 1e-9)), reverse=True)
        return {
            "server_cpu_s": round(total, 3),
            "server_cpu_pct": round(100 * total / wall, 1),
            "server_cpu_us_per_handshake": round(total * 1e6 / handshakes, 1) if handshakes else None,
            "server_cpu_per_process_s": [round(v, 3) for v in busy],
            "worker_balance": round(statistics.mean(busy) / busy[0], 3) if busy else None,
            # everything else the machine ran meanwhile (other users, this script): the noisy-neighbour check
            "others_cpu_pct": round(100 * max(0.0, (self.m1 - self.m0) - total - gen_cpu_s) / wall, 1),
        }


# --- one server run ----------------------------------------------------------------------------

def sanity_check(port: int, names: list[str], cafile: Path) -> dict:
    """Full verification (bench CA + hostname) and the exact body, on a few names."""
    infos = []
    for name in names:
        try:
            status, body, info = https_get("127.0.0.1", port, name, cafile)
        except Exception as e:  # noqa: BLE001 - report any failure verbatim
            raise BenchError(f"sanity check failed for {name}: {type(e).__name__}: {e}") from e
        if status != 200 or body != b"ok\n":
            raise BenchError(f"sanity check for {name}: expected 200 'ok\\n', got {status} {body[:80]!r}")
        if info["reused"]:
            raise BenchError(f"sanity check for {name}: session was resumed")
        infos.append(info)
    return {"names": len(names), "ok": True, "version": infos[0]["version"] if infos else None}


def one_run(server: ServerUnderTest, *, certs: Path, names: list[str], workers: int, server_cpus: str | None,
            gen_cpus: str | None, args, cold: bool, rng: random.Random) -> dict:
    cafile = certs / "ca" / "root.pem"
    busy_before = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    port = free_port()
    probe = names[-1]
    started_at = time.time()
    info = server.start(certs, port, workers, server_cpus, probe, cafile)
    res: dict = {"server": server.label, "workers": workers, "server_cpus": server_cpus, "gen_cpus": gen_cpus,
                 "port": port, "started_at": started_at, "ready_s": round(info.ready_s, 3),
                 "loadavg_at_start": os.getloadavg()[0], "busy_pct_before": busy_before, "command": info.command}
    try:
        res["mem_ready"] = {k: v for k, v in server.rss().items() if k != "per_pid"}
        pool = names[:-1]
        sanity_names = rng.sample(pool, min(3, len(pool)))
        res["sanity"] = sanity_check(port, sanity_names, cafile)
        if cold:
            skip = set(sanity_names) | {probe}
            cold_names = [n for n in names if n not in skip]
            # Shuffled (seeded): an edge that warms names in store order must not find its cold names pre-built.
            random.Random(args.seed + 7).shuffle(cold_names)
            cold_file = info.run_dir / "cold_names.txt"
            cold_file.write_text("".join(n + "\n" for n in cold_names))
            c = run_loadgen(port, cold_file, duration=args.cold_duration, warmup=0, concurrency=args.cold_concurrency,
                            cpu_list=gen_cpus, tls12=args.tls12, unique=True, check_names=True)
            used = max(1, int(c.get("names_used") or c["handshakes"] or 1))
            warm_file = info.run_dir / "warm_names.txt"
            warm_file.write_text("".join(n + "\n" for n in cold_names[:used]))
            w = run_loadgen(port, warm_file, duration=args.cold_duration, warmup=0, concurrency=args.cold_concurrency,
                            cpu_list=gen_cpus, tls12=args.tls12, check_names=True)
            res["cold"] = c
            res["warm"] = w
        if args.warm_timeout > 0:
            w_s = server.wait_warm(workers, args.warm_timeout)
            res["warm_s"] = round(w_s, 3) if w_s is not None else (
                res["ready_s"] if not isinstance(server, EdgeServer) else None)
        win = CpuWindow(server)
        lg = run_loadgen(port, certs / "names.txt", duration=args.duration, warmup=args.warmup,
                         concurrency=args.concurrency, cpu_list=gen_cpus, tls12=args.tls12,
                         on_start=win.start, on_end=win.end)
        res["load"] = lg
        res.update(win.result(lg["handshakes"], lg["gen_cpu_s"]))
        res["mem_load"] = {k: v for k, v in win.mem.items() if k != "per_pid"}
    finally:
        stopped = server.stop()
    res["server_stats"] = stopped.get("stats") or {}
    res["server_exit"] = stopped.get("returncode")
    lg = res.get("load")
    if lg is None:
        raise BenchError(f"{server.label}: run did not complete; see {info.run_dir}")
    res["gen_saturated"] = lg["gen_cpu_pct"] > GEN_SATURATED_PCT
    res["valid"] = lg["handshakes"] > 0 and lg["errors_total"] == 0 and lg["resumed"] == 0
    ss = res["server_stats"]
    if ss.get("resumed"):
        res["valid"] = False
    for extra in ("cold", "warm"):  # a wrong certificate for a cold name is a correctness failure
        if extra in res and (res[extra]["errors_total"] or res[extra]["resumed"]):
            res["valid"] = False
    if res["valid"] and not args.keep_runs:
        shutil.rmtree(info.run_dir, ignore_errors=True)  # configs/logs for 100k names are large
    else:
        res["run_dir"] = str(info.run_dir)
    return res


def short(res: dict) -> str:
    lg = res["load"]
    s = (f"{res['server']:>5} w{res['workers']}: {lg['handshakes_per_s']:>7.0f} hs/s  p50 {lg['latency_us']['p50'] / 1000:.1f} ms"
         f"  p99 {lg['latency_us']['p99'] / 1000:.1f} ms  gen {lg['gen_cpu_pct']:.0f}%"
         f"  server {res['server_cpu_pct']:.0f}% ({res['server_cpu_us_per_handshake'] or 0:.0f} us/hs)"
         f"  others {res['others_cpu_pct']:.0f}%"
         f"  ready {res['ready_s']:.2f}s  hwm {res['mem_load'].get('hwm_kib_sum', 0) / 1024:.0f} MiB"
         f"  err {lg['errors_total']}  resumed {lg['resumed']}/{res['server_stats'].get('resumed', '?')}")
    if res.get("cold"):
        s += f"  cold p99 {res['cold']['latency_us']['p99'] / 1000:.2f} ms"
    if res["gen_saturated"]:
        s += "  [GENERATOR SATURATED]"
    return s


# --- summary -----------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs: dict[str, list[dict]], scaling: dict[str, dict[int, list[dict]]], labels: list[str]) -> dict:
    s: dict = {}
    for lab in labels:
        rs = runs.get(lab, [])
        if not rs:
            continue
        d = {
            "rounds": len(rs),
            "handshakes_per_s": med(r["load"]["handshakes_per_s"] for r in rs),
            "p50_ms": med(r["load"]["latency_us"]["p50"] / 1000 for r in rs),
            "p99_ms": med(r["load"]["latency_us"]["p99"] / 1000 for r in rs),
            "conn_p50_ms": med(r["load"]["connection_us"]["p50"] / 1000 for r in rs),
            "conn_p99_ms": med(r["load"]["connection_us"]["p99"] / 1000 for r in rs),
            "gen_cpu_pct": med(r["load"]["gen_cpu_pct"] for r in rs),
            "gen_saturated_rounds": sum(1 for r in rs if r["gen_saturated"]),
            "server_cpu_pct": med(r["server_cpu_pct"] for r in rs),
            "others_cpu_pct": med(r["others_cpu_pct"] for r in rs),
            "others_cpu_max": max(r["others_cpu_pct"] for r in rs),
            "server_us_per_hs": med(r["server_cpu_us_per_handshake"] for r in rs),
            "ready_s": med(r["ready_s"] for r in rs),
            "warm_s": med(r.get("warm_s") for r in rs),
            "hwm_mib": med(r["mem_load"].get("hwm_kib_sum", 0) / 1024 for r in rs),
            "pss_mib": med(r["mem_load"].get("pss_kib_sum", 0) / 1024 for r in rs),
            "ready_rss_mib": med(r["mem_ready"].get("rss_kib_sum", 0) / 1024 for r in rs),
            "handshakes": sum(r["load"]["handshakes"] for r in rs),
            "client_resumed": sum(r["load"]["resumed"] for r in rs),
            "tickets": sum(r["load"].get("tickets_received", 0) for r in rs),
            "errors": sum(r["load"]["errors_total"] for r in rs),
            "server_logged": sum(r["server_stats"].get("connections", 0) for r in rs)
            if all("connections" in r["server_stats"] for r in rs) else None,
            "server_resumed": sum(r["server_stats"].get("resumed", 0) for r in rs)
            if all("resumed" in r["server_stats"] for r in rs) else None,
            "built_on_handshake": sum(r["server_stats"].get("built_on_handshake", 0) for r in rs)
            if any("built_on_handshake" in r["server_stats"] for r in rs) else None,
            "prewarmed": sum(r["server_stats"].get("prewarmed", 0) for r in rs)
            if any("prewarmed" in r["server_stats"] for r in rs) else None,
            "version": rs[0]["load"].get("negotiated_version"),
            "cipher": rs[0]["load"].get("cipher"),
        }
        d["capacity_est"] = 1e6 / d["server_us_per_hs"] if d["server_us_per_hs"] else None
        cold = [r for r in rs if r.get("cold")]
        if cold:
            d["cold_p50_ms"] = med(r["cold"]["latency_us"]["p50"] / 1000 for r in cold)
            d["cold_p99_ms"] = med(r["cold"]["latency_us"]["p99"] / 1000 for r in cold)
            d["cold_max_ms"] = med(r["cold"]["latency_us"]["max"] / 1000 for r in cold)
            d["cold_n"] = med(r["cold"]["handshakes"] for r in cold)
            d["cold_errors"] = sum(r["cold"]["errors_total"] for r in cold)
            d["warm_p50_ms"] = med(r["warm"]["latency_us"]["p50"] / 1000 for r in cold)
            d["warm_p99_ms"] = med(r["warm"]["latency_us"]["p99"] / 1000 for r in cold)
            d["warm_errors"] = sum(r["warm"]["errors_total"] for r in cold)
        sc = scaling.get(lab) or {}
        if sc.get(1) and sc.get(2):
            one, two = sc[1], sc[2]
            d["sc_hs_1"] = med(r["load"]["handshakes_per_s"] for r in one)
            d["sc_hs_2"] = med(r["load"]["handshakes_per_s"] for r in two)
            d["sc_ratio"] = med(b["load"]["handshakes_per_s"] / a["load"]["handshakes_per_s"]
                                for a, b in zip(one, two) if a["load"]["handshakes_per_s"])
            d["sc_us_1"] = med(r["server_cpu_us_per_handshake"] for r in one)
            d["sc_us_2"] = med(r["server_cpu_us_per_handshake"] for r in two)
            d["sc_cpu_1"] = med(r["server_cpu_pct"] for r in one)
            d["sc_cpu_2"] = med(r["server_cpu_pct"] for r in two)
            d["sc_gen_1"] = med(r["load"]["gen_cpu_pct"] for r in one)
            d["sc_gen_2"] = med(r["load"]["gen_cpu_pct"] for r in two)
            d["sc_balance_2"] = med(r["worker_balance"] for r in two)
            d["sc_ready_2"] = med(r["ready_s"] for r in two)
            d["sc_hwm_2"] = med(r["mem_load"].get("hwm_kib_sum", 0) / 1024 for r in two)
            if d["sc_us_1"] and d["sc_us_2"] and d["sc_balance_2"]:
                d["sc_projected"] = 2 * d["sc_us_1"] / d["sc_us_2"] * d["sc_balance_2"]
        s[lab] = d
    # per-round ratios edge/nginx (same round = closest in time)
    if "edge" in runs and "nginx" in runs:
        pairs = list(zip(runs["edge"], runs["nginx"]))
        s["ratio"] = {
            "handshakes_per_s": med(e["load"]["handshakes_per_s"] / n["load"]["handshakes_per_s"]
                                    for e, n in pairs if n["load"]["handshakes_per_s"]),
            "server_us_per_hs": med(e["server_cpu_us_per_handshake"] / n["server_cpu_us_per_handshake"]
                                    for e, n in pairs if e["server_cpu_us_per_handshake"] and n["server_cpu_us_per_handshake"]),
        }
    return s


def fmt(v, spec="{:,.0f}", none="-"):
    return none if v is None else spec.format(v)


def print_table(s: dict, labels: list[str], args, meta: dict) -> None:
    cols = [lab for lab in labels if lab in s]
    both = "ratio" in s
    rows: list[tuple[str, list[str], str]] = []

    def row(title, key, spec="{:,.0f}", ratio=None):
        vals = [fmt(s[c].get(key), spec) for c in cols]
        r = ""
        if both:
            if ratio is not None:
                r = fmt(ratio, "{:.2f}")
            else:
                a, b = s["edge"].get(key), s["nginx"].get(key)
                r = fmt(a / b if (a is not None and b) else None, "{:.2f}")
        rows.append((title, vals, r))

    def text(title, vals, r=""):
        rows.append((title, vals, r))

    R = s.get("ratio", {})
    row("full handshakes/s (median)", "handshakes_per_s", ratio=R.get("handshakes_per_s"))
    row("  generator CPU % of its core", "gen_cpu_pct", "{:.0f}")
    text("  rounds with generator saturated", [f"{s[c]['gen_saturated_rounds']}/{s[c]['rounds']}" for c in cols])
    row("  server CPU % of its core(s)", "server_cpu_pct", "{:.0f}")
    row("  other processes' CPU % (machine)", "others_cpu_pct", "{:.0f}")
    row("server CPU us per handshake", "server_us_per_hs", "{:,.0f}", ratio=R.get("server_us_per_hs"))
    row("capacity est. hs/s per server core", "capacity_est")
    row("handshake latency p50 (ms)", "p50_ms", "{:.2f}")
    row("handshake latency p99 (ms)", "p99_ms", "{:.2f}")
    row("connection connect->close p50 (ms)", "conn_p50_ms", "{:.2f}")
    row("connection connect->close p99 (ms)", "conn_p99_ms", "{:.2f}")
    text("resumed: client / server log", [
        f"{s[c]['client_resumed']} / {fmt(s[c]['server_resumed'], '{}', 'n/a')} of {s[c]['handshakes']:,}" for c in cols])
    text("session tickets sent by the server", [f"{s[c]['tickets']:,}" for c in cols])
    text("errors (all rounds)", [str(s[c]["errors"]) for c in cols])
    if any(s[c].get("built_on_handshake") is not None for c in cols):
        text("TLS contexts built: on a handshake / prewarmed", [
            f"{fmt(s[c].get('built_on_handshake'), '{:,}', 'n/a')} / {fmt(s[c].get('prewarmed'), '{:,}', 'n/a')}"
            for c in cols])
    row("start-to-ready (s)", "ready_s", "{:.2f}")
    if any(s[c].get("warm_s") is not None for c in cols):
        row("start-to-fully-warm (s) (all TLS contexts built)", "warm_s", "{:.2f}")
    row("RSS sum after start, idle (MiB)", "ready_rss_mib", "{:,.1f}")
    row("peak RSS sum, VmHWM (MiB)", "hwm_mib", "{:,.1f}")
    row("PSS sum under load (MiB)", "pss_mib", "{:,.1f}")
    if any("cold_p99_ms" in s[c] for c in cols):
        row(f"cold-name 1st handshake p50 (ms, c={args.cold_concurrency})", "cold_p50_ms", "{:.2f}")
        row(f"cold-name 1st handshake p99 (ms, c={args.cold_concurrency})", "cold_p99_ms", "{:.2f}")
        row("  cold names handshaken per round", "cold_n")
        row(f"warm-name handshake p50 (ms, c={args.cold_concurrency})", "warm_p50_ms", "{:.2f}")
        row(f"warm-name handshake p99 (ms, c={args.cold_concurrency})", "warm_p99_ms", "{:.2f}")
    if any("sc_hs_1" in s[c] for c in cols):
        text(f"-- 1 vs 2 workers, server AND generator on cpus {meta['shared_cpus']} --", ["" for _ in cols])
        row("  hs/s, 1 worker", "sc_hs_1")
        row("  hs/s, 2 workers", "sc_hs_2")
        row("  measured 2w/1w (same 2-core budget)", "sc_ratio", "{:.2f}")
        row("  server us/hs 1 worker", "sc_us_1")
        row("  server us/hs 2 workers", "sc_us_2")
        row("  server CPU % (200 = 2 cores) 1w", "sc_cpu_1", "{:.0f}")
        row("  server CPU % (200 = 2 cores) 2w", "sc_cpu_2", "{:.0f}")
        row("  generator CPU % 1w", "sc_gen_1", "{:.0f}")
        row("  generator CPU % 2w", "sc_gen_2", "{:.0f}")
        row("  worker balance (mean/max CPU)", "sc_balance_2", "{:.2f}")
        row("  projected 2-core scaling (est.)", "sc_projected", "{:.2f}")
        row("  start-to-ready, 2 workers (s)", "sc_ready_2", "{:.2f}")
        row("  peak RSS sum, 2 workers (MiB)", "sc_hwm_2", "{:,.1f}")

    w0 = max(len(r[0]) for r in rows) + 2
    wc = max(12, *(len(v) for r in rows for v in r[1])) + 2
    head = "".join(c.rjust(wc) for c in cols) + ("edge/nginx".rjust(12) if both else "")
    print()
    print(meta["title"])
    for line in meta["notes"]:
        print(line)
    print()
    print(" " * w0 + head)
    for title, vals, r in rows:
        print(title.ljust(w0) + "".join(v.rjust(wc) for v in vals) + (r.rjust(12) if both else ""))
    print()
    for w in meta["warnings"]:
        print("WARNING: " + w)


# --- main -------------------------------------------------------------------------------------

def _measure_this_tree() -> None:
    """The edge started by this run imports the ``edge`` package of the checkout this file is in (PYTHONPATH), not
    whatever the venv's editable install points at (another worktree's code, otherwise)."""
    root = str(HERE.parent)
    old = os.environ.get("PYTHONPATH")
    if not old or old.split(os.pathsep)[0] != root:
        os.environ["PYTHONPATH"] = root + (os.pathsep + old if old else "")


def main(argv: list[str] | None = None) -> int:
    _measure_this_tree()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=10000, help="number of tenant names/certificates (default 10000)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per throughput run (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="load seconds before measuring (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are over rounds (default 3)")
    ap.add_argument("--concurrency", type=int, default=16, help="connections in flight (default 16)")
    ap.add_argument("--server", choices=("both", "nginx", "edge"), default="both")
    ap.add_argument("--tls12", action="store_true", help="TLS 1.2 instead of TLS 1.3")
    ap.add_argument("--server-cpus", default="0", help="taskset list for the server (default 0)")
    ap.add_argument("--gen-cpus", default="1", help="taskset list for the generator (default 1)")
    ap.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold/warm first-handshake pass")
    ap.add_argument("--cold-duration", type=float, default=3.0, help="seconds of the cold (and of the warm) pass")
    ap.add_argument("--cold-concurrency", type=int, default=1)
    ap.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the 1-vs-2 workers phase")
    ap.add_argument("--shared-key", action="store_true", help="certs share ONE leaf key (faster generation; see gencerts)")
    ap.add_argument("--edgecert", default=DEFAULT_EDGECERT, help="the edgecert executable")
    ap.add_argument("--warm-timeout", type=float, default=180.0, metavar="S",
                    help="before the throughput pass, wait (up to S s) for the edge's background context builds to "
                         "finish, so that the pass measures the steady state; 0 = do not wait (default 180)")
    ap.add_argument("--edge-variant", action="append", default=[], metavar="LABEL=ARGS",
                    help="also run the edge with extra bench-serve ARGS under LABEL, interleaved in the same rounds "
                         "(repeatable), e.g. --edge-variant 'pyssl=--no-engine' --edge-variant 'full=--full'")
    ap.add_argument("--edge-args", default="", metavar="ARGS",
                    help="extra arguments for `bench/bench_serve.py`, e.g. \"--memory-mib 250\" or \"--no-prewarm\"")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each server run, wait up to S seconds for other processes to go quiet")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-runs", action="store_true", help="keep each server run's config and logs in bench/out/runs/")
    ap.add_argument("--json-out", type=Path, default=None, help="raw results file (default bench/out/results/...)")
    args = ap.parse_args(argv)

    try:
        return _main(args)
    except (BenchError, ServerError) as e:
        print(f"\nrun.py: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    labels = ["edge", "nginx"] if args.server == "both" else [args.server]
    variants = []
    for v in args.edge_variant:
        name, _, vargs = v.partition("=")
        if not name or name in ("edge", "nginx", "ratio"):
            raise BenchError(f"--edge-variant {v!r}: give LABEL=ARGS with a new label")
        variants.append((name, vargs))
    if variants and "edge" in labels:
        labels = ["edge"] + [n for n, _ in variants] + labels[1:]
    run_root = OUT / "runs"
    servers: dict[str, ServerUnderTest] = {}
    if "edge" in labels:
        e = EdgeServer(run_root, args.edgecert, ready_timeout=args.ready_timeout,
                       extra_args=shlex.split(args.edge_args))
        e.check_available()  # clear message if `bench/bench_serve.py` does not exist yet
        servers["edge"] = e
        for name, vargs in variants:
            ev = EdgeServer(run_root, args.edgecert, ready_timeout=args.ready_timeout,
                            extra_args=shlex.split(args.edge_args) + shlex.split(vargs))
            ev.label = name
            servers[name] = ev
    if "nginx" in labels:
        n = NginxServer(run_root, args.nginx, ready_timeout=args.ready_timeout)
        n.check_available()
        servers["nginx"] = n
    build_loadgen()
    server_cpus, gen_cpus, shared_cpus = cpu_lists(args)

    certs = OUT / (f"n{args.names}" + ("-sharedkey" if args.shared_key else ""))
    if gencerts.is_complete(certs, args.names, args.shared_key):
        m = json.loads((certs / "manifest.json").read_text())
        log(f"certificates: reusing {certs} (generated in {m['seconds']} s)")
    else:
        log(f"certificates: generating {args.names} into {certs} ...")
        m = gencerts.generate(certs, args.names, shared_key=args.shared_key)
    names = (certs / "names.txt").read_text().split()
    rng = random.Random(args.seed)

    runs: dict[str, list[dict]] = {lab: [] for lab in labels}
    scaling: dict[str, dict[int, list[dict]]] = {lab: {1: [], 2: []} for lab in labels}
    t_begin = time.time()
    for rnd in range(args.rounds):
        order = labels if rnd % 2 == 0 else list(reversed(labels))
        for lab in order:
            log(f"round {rnd + 1}/{args.rounds}: {lab}, 1 worker on cpu {server_cpus}, generator on cpu {gen_cpus}")
            r = one_run(servers[lab], certs=certs, names=names, workers=1, server_cpus=server_cpus,
                        gen_cpus=gen_cpus, args=args, cold=args.cold, rng=rng)
            r["round"] = rnd + 1
            runs[lab].append(r)
            log("  " + short(r))
    if args.scaling and shared_cpus and "," in shared_cpus:
        for rnd in range(args.rounds):
            order = labels if rnd % 2 == 0 else list(reversed(labels))
            for lab in order:
                for workers in ((1, 2) if rnd % 2 == 0 else (2, 1)):
                    log(f"scaling {rnd + 1}/{args.rounds}: {lab}, {workers} worker(s), server and generator on cpus {shared_cpus}")
                    r = one_run(servers[lab], certs=certs, names=names, workers=workers, server_cpus=shared_cpus,
                                gen_cpus=shared_cpus, args=args, cold=False, rng=rng)
                    r["round"] = rnd + 1
                    scaling[lab][workers].append(r)
                    log("  " + short(r))

    summary = summarize(runs, scaling, labels)
    warnings = []
    for lab in labels:
        d = summary[lab]
        if d["gen_saturated_rounds"]:
            warnings.append(
                f"{lab}: the generator was above {GEN_SATURATED_PCT:.0f}% CPU in {d['gen_saturated_rounds']}/{d['rounds']} "
                f"rounds: its handshakes/s measure the GENERATOR, not {lab} (server at {fmt(d['server_cpu_pct'], '{:.0f}')}% "
                f"of its core). Compare 'server CPU us per handshake' / 'capacity est.' instead.")
        if d["errors"] or d["client_resumed"] or d["server_resumed"]:
            warnings.append(f"{lab}: errors={d['errors']} resumed(client)={d['client_resumed']} "
                            f"resumed(server)={d['server_resumed']}: see the JSON file for first errors")
        if d["others_cpu_max"] > OTHERS_NOISY_PCT:
            warnings.append(
                f"{lab}: other processes used up to {d['others_cpu_max']:.0f}% of a core during a measurement window "
                f"(median {d['others_cpu_pct']:.0f}%): the machine was shared; treat absolute figures with care, "
                f"prefer same-round ratios and CPU-per-handshake, or re-run when it is quiet.")
        if (d["gen_cpu_pct"] or 0) < GEN_SATURATED_PCT and (d["server_cpu_pct"] or 0) < GEN_SATURATED_PCT \
                and (d["others_cpu_pct"] or 0) <= OTHERS_NOISY_PCT:
            warnings.append(
                f"{lab}: neither the generator ({d['gen_cpu_pct']:.0f}%) nor the server ({d['server_cpu_pct']:.0f}%) was "
                f"saturated: connections sat idle (connect->close p50 {d['conn_p50_ms']:.1f} ms vs handshake p50 "
                f"{d['p50_ms']:.1f} ms). Raise --concurrency, or look at how the server closes (a 40 ms gap = Nagle + "
                f"delayed ACK on the close_notify: TCP_NODELAY off on the server's accepted sockets).")
        if d.get("tickets"):
            warnings.append(
                f"{lab}: the server sent {d['tickets']:,} TLS session tickets ({d['tickets'] / max(1, d['handshakes']):.1f} "
                f"per handshake): encrypting them is work the other server may not do; compare like with like.")
        if d["server_resumed"] is None:
            warnings.append(f"{lab}: the server reported no resumption counter (client-side count only)")
        if d.get("cold_errors") or d.get("warm_errors"):
            warnings.append(f"{lab}: cold/warm pass errors cold={d.get('cold_errors')} warm={d.get('warm_errors')}")
    ver = summary[labels[0]]["version"]
    meta = {
        "title": (f"edgecert bench: {args.names:,} names, {ver} ({summary[labels[0]]['cipher']}), full handshakes only; "
                  f"{args.rounds} interleaved rounds x {args.duration:g} s (+{args.warmup:g} s warmup), c={args.concurrency}"),
        "notes": [
            f"server pinned to cpu {server_cpus}, generator to cpu {gen_cpus}; medians over rounds; "
            f"ratios are medians of same-round ratios.",
            f"certs: {m['key']}, generated at {m['per_second']}/s; OpenSSL client: "
            f"{runs[labels[0]][0]['load'].get('openssl')}; machine load avg at start {runs[labels[0]][0]['loadavg_at_start']:.2f}",
            "capacity est. = 1e6 / server CPU us per handshake (what one server core would do if the generator kept up).",
        ],
        "warnings": warnings,
        "shared_cpus": shared_cpus,
    }
    print_table(summary, labels, args, meta)

    out = args.json_out or (OUT / "results" / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.server}-n{args.names}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args) | {"json_out": str(out)}, "certs": m, "summary": summary,
                               "runs": runs, "scaling": scaling, "seconds": round(time.time() - t_begin, 1)},
                              indent=1, default=str) + "\n")
    print(f"raw results: {out}")
    bad = [r for lab in labels for r in runs[lab] + scaling[lab][1] + scaling[lab][2] if not r["valid"]]
    if bad:
        print(f"run.py: {len(bad)} run(s) had errors or resumption; kept for inspection: "
              + ", ".join(r.get("run_dir", "?") for r in bad), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
