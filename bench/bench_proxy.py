"""Proxied keep-alive requests, edge vs nginx vs Caddy, side by side: server CPU per request (HTTP/1.1 and HTTP/2,
1 KB and 64 KB answers), in interleaved rounds.

    python bench/bench_proxy.py --certs bench/out/n100 --rounds 3 --requests 20000 [--servers edge,nginx,caddy]
                                [--json out.json]

Layout (2 cores): the server under test (the edge through ``bench/bench_serve.py --upstream``; nginx 1.22 with
``proxy_pass`` to an upstream ``keepalive 128`` pool, ``http2`` on its listener; or Caddy 2.6 with
``reverse_proxy``) is pinned to core 0; the origin (nginx serving static ``/1k`` and ``/64k`` files over plain
HTTP/1.1 keep-alive) and the load generator (``h2load``: ``--h1`` for HTTP/1.1 keep-alive, ``-m 10`` streams per
connection for HTTP/2) share core 1. The figure is the server's own CPU time (utime + stime from /proc/<pid>/stat,
all its processes, all their threads) divided by the requests answered: on a shared, noisy machine that is steadier
than requests/s, and one client core cannot saturate nginx anyway. Every round runs each server back to back on the
same work, the order rotated by one each round (edge nginx caddy, nginx caddy edge, ...) so that drift within a
round does not always favour the same server; ratios are taken within a round, medians over rounds. Before each
measurement, curl fetches the path once through the server (``--http1.1`` or ``--http2``) and checks the status,
the protocol and the body, so a misconfigured server stops the run instead of measuring errors.

Caddy (``_caddy_conf``: JSON, the configuration ``caddy adapt`` makes of the equivalent Caddyfile, plus what a
Caddyfile cannot say) is set up like the nginx proxy: the same certificate and key for the same name (``tls`` with
explicit files: automatic HTTPS, redirects and ACME off), TLS 1.2 and 1.3, session tickets off (nginx:
``ssl_session_tickets off``), HTTP/1.1 and HTTP/2 only (no HTTP/3, which 2.6 enables by default), no access log
(errors at WARN to a file), the admin endpoint off, and ``reverse_proxy`` to the same origin over HTTP/1.1
keep-alive with up to 128 idle connections kept (nginx: ``keepalive 128``; Caddy's default per-host idle pool is
smaller). It runs with ``GOMAXPROCS=1``: it is pinned to one core, as the edge and nginx run one worker on one
core; Go would derive 1 from the affinity mask anyway, the variable makes that explicit and keeps a second P from
spinning for work on the same core if the pinning ever changes. GOGC stays at Go's default, as a deployed Caddy
runs. Its CPU is the Go process's, all threads (GC workers included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"
SIZES = {"1k": 1024, "64k": 65536}


def _cpu(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children(pid: int) -> list[int]:
    out = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for k in kids:
        out += _children(int(k))
    return out


def _wait_port(port: int, timeout: float = 120.0) -> None:
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def _free_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _origin_conf(run: Path, port: int) -> str:
    (run / "www").mkdir(parents=True, exist_ok=True)
    (run / "www" / "1k").write_bytes(b"a" * SIZES["1k"])
    (run / "www" / "64k").write_bytes(b"b" * SIZES["64k"])
    return f"""worker_processes 1; daemon off; pid {run}/origin.pid; error_log {run}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300;
  client_body_temp_path {run}/tmp-o; proxy_temp_path {run}/tmp-o; fastcgi_temp_path {run}/tmp-o;
  uwsgi_temp_path {run}/tmp-o; scgi_temp_path {run}/tmp-o;
  server {{ listen 127.0.0.1:{port} reuseport; root {run}/www; default_type application/octet-stream; }} }}
"""


def _proxy_conf(run: Path, port: int, origin: int, name: str, certs: Path) -> str:
    d = certs / "live" / name
    return f"""worker_processes 1; daemon off; pid {run}/nginx.pid; error_log {run}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300; server_tokens off;
  client_body_temp_path {run}/tmp-p; proxy_temp_path {run}/tmp-p; fastcgi_temp_path {run}/tmp-p;
  uwsgi_temp_path {run}/tmp-p; scgi_temp_path {run}/tmp-p;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} ssl http2; server_name {name};
    ssl_certificate {d}/fullchain.pem; ssl_certificate_key {d}/privkey.pem;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https; proxy_buffers 16 8k; }} }} }}
"""


def _caddy_conf(run: Path, port: int, origin: int, name: str, certs: Path) -> str:
    """Caddy's JSON configuration: the nginx proxy's settings (see the module docstring), nothing automatic."""
    d = certs / "live" / name
    proxy = {"handler": "reverse_proxy", "upstreams": [{"dial": f"127.0.0.1:{origin}"}],
             "transport": {"protocol": "http",
                           "keep_alive": {"enabled": True, "idle_timeout": "300s", "max_idle_conns_per_host": 128}}}
    conf = {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "WARN",
                                         "writer": {"output": "file", "filename": str(run / "caddy-error.log")}}}},
        "storage": {"module": "file_system", "root": str(run / "caddy-data")},
        "apps": {
            "http": {"grace_period": "2s", "servers": {"bench": {
                "listen": [f"127.0.0.1:{port}"], "protocols": ["h1", "h2"],
                "automatic_https": {"disable": True},
                "tls_connection_policies": [{"match": {"sni": [name]}, "certificate_selection": {"any_tag": ["bench"]},
                                             "protocol_min": "tls1.2", "protocol_max": "tls1.3"}],
                "routes": [{"handle": [proxy], "terminal": True}]}}},
            "tls": {"certificates": {"load_files": [{"certificate": str(d / "fullchain.pem"),
                                                     "key": str(d / "privkey.pem"), "tags": ["bench"]}]},
                    "session_tickets": {"disabled": True}},
        },
    }
    return json.dumps(conf, indent=1)


def caddy_command(run: Path, port: int, origin: int, name: str, certs: Path) -> tuple[list[str], dict]:
    """Writes Caddy's configuration into ``run``; returns the command and environment that start it (one P, its
    data and config directories inside ``run`` rather than the user's home)."""
    if not Path(CADDY).exists():
        raise SystemExit("caddy is not installed (apt-get install caddy; scripts/setup.sh does)")
    (run / "caddy.json").write_text(_caddy_conf(run, port, origin, name, certs))
    env = dict(os.environ, GOMAXPROCS="1", XDG_DATA_HOME=str(run / "caddy-xdg"), XDG_CONFIG_HOME=str(run / "caddy-xdg"))
    return [CADDY, "run", "--config", str(run / "caddy.json")], env


def verify(port: int, name: str, path: str, proto: str, body: bytes) -> None:
    """One request through the server with curl: 200, the protocol asked for, and exactly the origin's body."""
    with tempfile.NamedTemporaryFile() as out:
        cmd = ["curl", "-sk", "--http2" if proto == "h2" else "--http1.1", "--resolve", f"{name}:{port}:127.0.0.1",
               "-o", out.name, "-w", "%{http_code} %{http_version}", f"https://{name}:{port}{path}"]
        got = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.split()
        want = ["200", "2" if proto == "h2" else "1.1"]
        if got != want or Path(out.name).read_bytes() != body:
            raise SystemExit(f"{' '.join(cmd)}: status/version {got} (want {want}), "
                             f"{len(Path(out.name).read_bytes())} body bytes (want {len(body)})")


class Server:
    def __init__(self, kind: str, cmd: list[str], port: int, env: dict | None = None) -> None:
        self.kind, self.port = kind, port
        self.proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        _wait_port(port)
        time.sleep(0.5)

    def pids(self) -> list[int]:
        return _children(self.proc.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _h2load(port: int, name: str, path: str, proto: str, n: int, conns: int) -> dict:
    cmd = ["taskset", "-c", "1", "h2load", "-n", str(n), "-c", str(conns), f"--connect-to=127.0.0.1:{port}"]
    cmd += ["--h1"] if proto == "h1" else ["-m", "10"]
    cmd.append(f"https://{name}:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    ok = 0
    for line in out.splitlines():
        if line.startswith("requests:"):
            ok = int(line.split("succeeded")[0].split(",")[-1].strip())
        if line.startswith("status codes:"):
            if not line.split(":")[1].strip().startswith(f"{n} 2xx"):
                raise SystemExit(f"not all 2xx: {line} ({' '.join(cmd)})")
    return {"succeeded": ok}


def measure(server: Server, name: str, path: str, proto: str, n: int, conns: int) -> dict:
    _h2load(server.port, name, path, proto, max(200, n // 10), conns)  # warm: connections, pools, caches
    pids = server.pids()
    c0, t0 = _cpu(pids), time.monotonic()
    r = _h2load(server.port, name, path, proto, n, conns)
    c1, t1 = _cpu(pids), time.monotonic()
    return {"cpu_us_per_req": round((c1 - c0) / max(1, r["succeeded"]) * 1e6, 2),
            "req_per_s": round(r["succeeded"] / (t1 - t0)), "n": r["succeeded"]}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--certs", required=True, type=Path, help="bench/gencerts.py output (live/<name>/...)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--conns", type=int, default=8, help="client connections (h2load -c)")
    p.add_argument("--work", default="h1:1k,h1:64k,h2:1k,h2:64k", help="comma-separated proto:size")
    p.add_argument("--servers", default="edge,nginx,caddy",
                   help="edge, nginx, caddy, and base (the edge of --baseline-tree: before/after in the same rounds)")
    p.add_argument("--baseline-tree", type=Path, help="another checkout of this repository (with a bench_serve.py "
                   "that takes --upstream), measured as server 'base'")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    certs = args.certs.resolve()
    name = (certs / "names.txt").read_text().split()[0]
    run = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    run.chmod(0o755)  # nginx's workers (nobody) read the origin's files
    for d in ("tmp-o", "tmp-p"):
        (run / d).mkdir()
    oport = _free_port()
    (run / "origin.conf").write_text(_origin_conf(run, oport))
    origin = subprocess.Popen(["taskset", "-c", "1", NGINX, "-p", str(run), "-c", str(run / "origin.conf")],
                              stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_port(oport)
    # the edge imports the certificates into its store once (untimed)
    subprocess.run([sys.executable, str(HERE / "bench_serve.py"), "--certs-dir", str(certs), "--import-if-missing"],
                   check=True, stderr=subprocess.DEVNULL)
    results: dict = {}
    try:
        for rnd in range(args.rounds):
            for work in args.work.split(","):
                proto, size = work.split(":")
                kinds = args.servers.split(",")
                for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
                    port = _free_port()
                    if kind in ("edge", "base"):
                        tree = HERE.parent if kind == "edge" else args.baseline_tree.resolve()
                        env = dict(os.environ, PYTHONPATH=str(tree))
                        srv = Server(kind, [sys.executable, str(tree / "bench" / "bench_serve.py"), "--certs-dir",
                                            str(certs),
                                            "--listen", f"127.0.0.1:{port}", "--no-prewarm",
                                            "--upstream", f"http://127.0.0.1:{oport}"], port, env)
                    elif kind == "caddy":
                        cmd, env = caddy_command(run, port, oport, name, certs)
                        srv = Server(kind, cmd, port, env)
                    elif kind == "nginx":
                        (run / "nginx.conf").write_text(_proxy_conf(run, port, oport, name, certs))
                        srv = Server(kind, [NGINX, "-p", str(run), "-c", str(run / "nginx.conf")], port)
                    else:
                        raise SystemExit(f"unknown server {kind!r} (edge, nginx, caddy, base)")
                    try:
                        verify(port, name, f"/{size}", proto, (run / "www" / size).read_bytes())
                        m = measure(srv, name, f"/{size}", proto, args.requests, args.conns)
                    finally:
                        srv.stop()
                    results.setdefault(work, {}).setdefault(kind, []).append(m)
                    print(f"round {rnd + 1} {work:7s} {kind:5s} {m['cpu_us_per_req']:8.1f} us CPU/req "
                          f"{m['req_per_s']:7d} req/s", flush=True)
    finally:
        os.killpg(origin.pid, signal.SIGTERM)
        origin.wait(10)
    summary = {}
    for work, by in results.items():
        row: dict = {k: statistics.median(x["cpu_us_per_req"] for x in v) for k, v in by.items()}
        for a in ("edge", "base"):
            for b in ("nginx", "caddy"):
                if a in by and b in by:
                    per_round = [e["cpu_us_per_req"] / n["cpu_us_per_req"] for e, n in zip(by[a], by[b])]
                    row[f"{a}/{b}"] = round(statistics.median(per_round), 2)
                    row[f"{a}/{b} per round"] = [round(r, 2) for r in per_round]
        summary[work] = row
        print(f"median {work:7s} " + "  ".join(f"{k} {v}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
