"""A page view through the edge, nginx and Caddy: 1 HTML + 50 assets loaded by headless Chromium, HTTP/2 and
HTTP/1.1 (``--disable-http2``), fresh browser profile per view. Reports per view the new connections (TLS
handshakes) Chromium opened and the time from navigation start to the last byte of the last asset, from the
page's own Resource Timing entries (entries whose connectEnd > connectStart: the navigation's own connection is
not seen when Chromium opened it before navigation start, so this can under-count by one; the time includes
Chromium's own work, which dominates on a loaded 2-core machine).

    python bench/bench_pageview.py --certs /tmp/certs10 --views 5 [--servers edge,nginx,caddy]

The origin is nginx serving the page and its assets (static files); the edge runs as ``bench/bench_serve.py
--upstream``; nginx proxies with ``proxy_pass`` (``bench/bench_proxy.py``'s configuration, ``http2`` on); Caddy
with ``reverse_proxy`` (``bench/bench_proxy.py``'s ``_caddy_conf``: HTTP/1.1 and HTTP/2 only, ``GOMAXPROCS=1``).
All three are pinned to core 0, started once, and alternate view by view (the order rotated by one each view);
the time to the last byte is also given as per-view ratios edge/nginx and edge/caddy. The bench names'
certificates are not trusted by Chromium: it is told to accept that one key
(``--ignore-certificate-errors-spki-list``) and to resolve the name to the server (``--host-resolver-rules``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_proxy import (NGINX, Server, _free_port, _origin_conf, _proxy_conf, _wait_port,  # noqa: E402
                         caddy_command)

HERE = Path(__file__).resolve().parent
ASSETS = 50
SCRIPT = ("<script>addEventListener('load',()=>setTimeout(()=>{const r=performance.getEntriesByType('resource');"
          "const n=performance.getEntriesByType('navigation')[0];const all=[n,...r];"
          "document.getElementById('out').textContent=JSON.stringify({n:r.length,"
          "conns:all.filter(e=>e.connectEnd>e.connectStart).length,"
          "ttlb:Math.max(...all.map(e=>e.responseEnd)),protos:[...new Set(all.map(e=>e.nextHopProtocol))]})},0))"
          "</script>")


def _page(www: Path) -> None:
    links = "".join(f"<link rel=stylesheet href='/a/{i}.css'>" for i in range(ASSETS))
    (www / "page.html").write_text(f"<!doctype html><html><head>{links}{SCRIPT}</head><body>"
                                   f"<pre id=out>pending</pre></body></html>")
    (www / "a").mkdir(exist_ok=True)
    for i in range(ASSETS):
        (www / "a" / f"{i}.css").write_text(f".a{i}{{color:red}}/*{'x' * 2000}*/")


def _spki(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def view(chromium: str, name: str, port: int, spki: str, h2: bool) -> dict:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={spki}",
               f"--host-resolver-rules=MAP {name} 127.0.0.1:{port}", "--run-all-compositor-stages-before-draw", "--timeout=15000",
               "--dump-dom", f"https://{name}/page.html"]
        if not h2:
            cmd.insert(1, "--disable-http2")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'<pre id="out">(.*?)</pre>', out)
    if not m or m.group(1) == "pending":
        raise SystemExit(f"the page did not load: {out[-500:]}")
    return json.loads(m.group(1))


def _start(kind: str, run: Path, oport: int, name: str, certs: Path) -> Server:
    """One server under test on its own port, proxying to the origin on ``oport``."""
    port = _free_port()
    if kind == "edge":
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        return Server(kind, [sys.executable, str(HERE / "bench_serve.py"), "--certs-dir", str(certs), "--listen",
                             f"127.0.0.1:{port}", "--no-prewarm", "--upstream", f"http://127.0.0.1:{oport}"], port, env)
    if kind == "nginx":
        (run / "nginx.conf").write_text(_proxy_conf(run, port, oport, name, certs))
        return Server(kind, [NGINX, "-p", str(run), "-c", str(run / "nginx.conf")], port)
    if kind == "caddy":
        cmd, env = caddy_command(run, port, oport, name, certs)
        return Server(kind, cmd, port, env)
    raise SystemExit(f"unknown server {kind!r} (edge, nginx, caddy)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--certs", required=True, type=Path)
    p.add_argument("--views", type=int, default=5)
    p.add_argument("--servers", default="edge,nginx,caddy", help="comma-separated: edge, nginx, caddy")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or "chromium"
    certs = args.certs.resolve()
    name = (certs / "names.txt").read_text().split()[0]
    spki = _spki((certs / "live" / name / "fullchain.pem").read_bytes())
    run = Path(tempfile.mkdtemp(prefix="bench-pageview-"))
    run.chmod(0o755)
    for d in ("tmp-o", "tmp-p"):
        (run / d).mkdir()
    oport = _free_port()
    (run / "origin.conf").write_text(_origin_conf(run, oport))
    _page(run / "www")
    origin = subprocess.Popen([NGINX, "-p", str(run), "-c", str(run / "origin.conf")], stderr=subprocess.DEVNULL,
                              start_new_session=True)
    _wait_port(oport)
    subprocess.run([sys.executable, str(HERE / "bench_serve.py"), "--certs-dir", str(certs), "--import-if-missing"],
                   check=True, stderr=subprocess.DEVNULL)
    kinds = args.servers.split(",")
    servers: dict[str, Server] = {}
    res: dict = {}
    try:
        for kind in kinds:
            servers[kind] = _start(kind, run, oport, name, certs)
        for i in range(args.views):
            for h2 in (True, False):
                for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                    r = view(chromium, name, servers[kind].port, spki, h2)
                    key = f"{kind} {'h2' if h2 else 'h1'}"
                    res.setdefault(key, []).append(r)
                    print(f"view {i + 1} {key:9s} assets {r['n']} new connections {r['conns']} "
                          f"last byte {r['ttlb']:.0f} ms {r['protos']}", flush=True)
    finally:
        for srv in servers.values():
            srv.stop()
        os.killpg(origin.pid, signal.SIGTERM)
        origin.wait(10)
        shutil.rmtree(run, ignore_errors=True)
    for key, rs in res.items():
        print(f"median {key:9s} new connections {statistics.median(r['conns'] for r in rs)} "
              f"last byte {statistics.median(r['ttlb'] for r in rs):.0f} ms")
    for proto in ("h2", "h1"):
        for other in ("nginx", "caddy"):
            if f"edge {proto}" in res and f"{other} {proto}" in res:
                per_view = [e["ttlb"] / o["ttlb"] for e, o in zip(res[f"edge {proto}"], res[f"{other} {proto}"])]
                print(f"last byte edge/{other} {proto}: median {statistics.median(per_view):.2f} per view "
                      + " / ".join(f"{x:.2f}" for x in per_view))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
