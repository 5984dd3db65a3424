"""``bench/bench_serve.py``: the real edge (store -> SNI index -> TLS listener -> HTTP layer), for bench/.

Certificates from ``--certs-dir`` (``live/<name>/fullchain.pem`` + ``privkey.pem``) are imported once into a store
(``<certs-dir>.edgecert-store/``; keys encrypted at rest as in production). Then N TLS edge workers serve
(``edge/edge_worker.py``, the process ``edgecert serve`` runs for its workers 1..N-1): the SNI index loaded from that
store, the same SniIndex/context build/selection, the lean HTTP layer (``edge/fasthttp.py``), the prewarm thread.
``--full`` runs the whole service per process instead (API, plain HTTP, manager and the TLS edge, as ``edgecert
serve`` with one worker). Every request gets 200 ``ok\\n``, or with ``--upstream URL`` (or ``$EDGECERT_UPSTREAM``)
is proxied to that origin; TLS session tickets are off so every handshake is a full one. With ``--workers N`` the N processes share the port (SO_REUSEPORT). On SIGTERM one JSON line
``{"bench_stats": {...}}`` totalled over the workers goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["bench_serve_main", "import_certs"]


def _log(msg: str) -> None:
    print(f"bench-serve[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def import_certs(certs_dir: Path, store_url: str, state_dir: Path) -> int:
    """Import every ``live/<name>/`` of ``certs_dir`` into the store as an active domain (bulk, idempotent)."""
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from sqlalchemy import insert, select

    from acme_client.keys import split_pem_chain
    from store import load_keybox, make_engine, migrate
    from store.models import CertificateVersion, Domain, Tenant

    engine = make_engine(store_url)
    migrate(engine)
    kb = load_keybox(secret_key=None, state_dir=state_dir)
    with engine.begin() as conn:
        if conn.execute(select(Domain.__table__.c.id).limit(1)).first() is not None:
            return 0
        conn.execute(insert(Tenant.__table__).values(name="bench", created_at=dt.datetime.now(dt.timezone.utc)))
        tenant_id = conn.execute(select(Tenant.__table__.c.id)).scalar_one()
    live = certs_dir / "live"
    names = sorted(p.name for p in live.iterdir() if (p / "fullchain.pem").exists())
    now = dt.datetime.now(dt.timezone.utc)
    batch = 2000
    for i in range(0, len(names), batch):
        chunk = names[i:i + batch]
        doms, certs = [], []
        for j, h in enumerate(chunk):
            pems = split_pem_chain((live / h / "fullchain.pem").read_text())
            leaf = x509.load_pem_x509_certificate(pems[0].encode())
            key = (live / h / "privkey.pem").read_bytes()
            cid = i + j + 1
            certs.append(dict(id=cid, domain_id=cid, names=json.dumps([h]), serial=format(leaf.serial_number, "x"),
                              not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
                              issuer=leaf.issuer.rfc4514_string(), sha256=leaf.fingerprint(hashes.SHA256()).hex(),
                              cert_pem=pems[0], chain_pem="".join(pems[1:]),
                              key_enc=kb.encrypt(key, purpose=f"cert-key:{h}".encode()), key_type="ecdsa-p256",
                              source="upload", created_at=now))
            doms.append(dict(id=cid, hostname=h, tenant_id=tenant_id, status="active", current_cert_id=cid,
                             attempts=0, dns_attempts=0, renew_requested=False, hook_pending=False,
                             created_at=now, updated_at=now, next_check_at=None))
        with engine.begin() as conn:
            conn.execute(insert(Domain.__table__), doms)
            conn.execute(insert(CertificateVersion.__table__), certs)
    engine.dispose()
    return len(names)


def _store_has_domains(store_url: str) -> bool:
    """True when the store already holds domains (no ORM/alembic import on this path)."""
    from store.readonly import EdgeStore
    st = EdgeStore(store_url)
    try:
        return st.has_domains()
    finally:
        st.close()


def _settings(args, store_url: str, state_dir: Path):
    from edge.config import Settings
    return Settings.load(env={}, database_url=store_url, state_dir=str(state_dir), https_listen=args.listen,
                         api_listen="127.0.0.1:0", http_listen="127.0.0.1:0", sweep_interval=args.sweep_interval,
                         context_cache_size=args.context_cache, admin_token=None,
                         acme_directory="https://127.0.0.1:1/dir", log_level="WARNING",
                         placeholder_text="ok\n", probe_interval=0, reuse_port=args.workers > 1, exports=False,
                         bench_stats=True, tls_tickets=False, prewarm=not args.no_prewarm,
                         context_cache_mib=args.context_mib, edge_memory_mib=args.memory_mib,
                         tls_engine=not args.no_engine, upstream=_upstream(args), edge_http2=not args.no_http2)


def _upstream(args) -> str | None:
    """``--upstream URL``, else ``$EDGECERT_UPSTREAM``, else none (every request answers the placeholder)."""
    return args.upstream or os.environ.get("EDGECERT_UPSTREAM") or None


async def _serve_full(settings) -> dict:
    """The whole service in this process (API, HTTP, manager, TLS edge): ``--full``."""
    from edge.app import Server
    server = Server(settings)  # build_services applies tls_tickets = false (set by _settings)
    t0 = time.monotonic()
    services = await server.start()
    waiter = None
    if settings.prewarm:
        from edge.tls_edge.worker import report_warm
        services.index.start_prewarm()
        waiter = asyncio.create_task(report_warm(services.index, t0, bench=True))
    _log(f"listening on {settings.https_listen} with {len(services.index)} certificates "
         f"(full service, started in {time.monotonic() - t0:.2f}s)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    stats = dict(services.bench_stats)
    stats["handshakes"] = sum(services.metrics.handshakes.values())
    stats.update({k: v for k, v in services.index.stats().items()
                  if k in ("contexts_built", "built_on_handshake", "prewarmed")})
    services.index.stop_prewarm()
    services.index.warm_done.set()
    if waiter is not None:
        await asyncio.gather(waiter, return_exceptions=True)
    await server.stop()
    return stats


async def _serve_edge(settings) -> dict:
    from edge.tls_edge.worker import serve_edge
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await serve_edge(settings, stop=stop)


def bench_serve_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/bench_serve.py", description=__doc__.splitlines()[0])
    p.add_argument("--certs-dir", required=True, help="directory with live/<name>/fullchain.pem + privkey.pem")
    p.add_argument("--listen", default="127.0.0.1:8443", help="host:port of the TLS listener")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--store", help="store URL (default: sqlite in <certs-dir>.edgecert-store/)")
    p.add_argument("--context-cache", type=int, default=20000, help="SSLContexts kept built (LRU), at most")
    p.add_argument("--context-mib", type=float, default=None,
                   help="memory budget of the SSLContext LRU, MiB (context_cache_mib; ~25 KiB per context)")
    p.add_argument("--memory-mib", type=float, default=None,
                   help="RSS target per edge worker, MiB (edge_memory_mib): the context LRU gets what the index leaves")
    p.add_argument("--no-engine", action="store_true",
                   help="drive TLS with Python's ssl module (an SSLContext per name) instead of the C engine")
    p.add_argument("--no-prewarm", action="store_true", help="build contexts only on the handshake path (on a miss)")
    p.add_argument("--full", action="store_true",
                   help="run the whole service per worker (API, HTTP, manager, TLS edge) instead of edge workers")
    p.add_argument("--sweep-interval", type=float, default=30.0, help="how often workers follow the store, s")
    p.add_argument("--import-only", action="store_true", help="import the certificates into the store and exit")
    p.add_argument("--import-if-missing", action="store_true",
                   help="import the certificates only if the store has none, then exit (bench/: untimed preparation)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--upstream", default=None,
                   help="origin URL to proxy every request to (default: $EDGECERT_UPSTREAM; none: answer 'ok')")
    p.add_argument("--no-http2", action="store_true", help="ALPN offers http/1.1 only (edge_http2 = false)")
    p.add_argument("--decoder-spki", action="store_true",
                   help="A/B: decode each leaf's public key through OpenSSL 3.0's OSSL_DECODER even when names are "
                        "evicted, as before session 5 (C engine, one worker)")
    p.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.decoder_spki:
        if args.workers > 1 or args.no_engine:
            p.error("--decoder-spki is for one worker on the C engine")
        from edge.tls_edge.index import SniIndex
        SniIndex.evicting = lambda self: False  # the index never asks for the legacy decode
    certs_dir = Path(args.certs_dir).resolve()
    store_dir = Path(str(certs_dir) + ".edgecert-store")
    store_dir.mkdir(parents=True, exist_ok=True)
    state_dir = store_dir / "state"
    store_url = args.store or f"sqlite:///{store_dir}/edgecert.db"
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.worker_child and (args.import_only or not _store_has_domains(store_url)):
        t0 = time.monotonic()
        n = import_certs(certs_dir, store_url, state_dir)
        if n:
            _log(f"imported {n} certificates into {store_url} in {time.monotonic() - t0:.1f}s")
    if args.import_only or args.import_if_missing:
        return 0
    settings = _settings(args, store_url, state_dir)
    if not args.worker_child:
        # Created once here, not raced by the workers: the key box's key file and the default certificate.
        from edge.tls_edge.certificates import load_default_certificate
        from store.crypto import load_keybox
        load_keybox(secret_key=None, state_dir=state_dir)
        load_default_certificate(None, None, state_dir)
    children: list[subprocess.Popen] = []
    if args.workers > 1 and not args.worker_child:
        if args.full:
            cmd = [sys.executable, __file__, "--certs-dir", str(certs_dir), "--listen", args.listen,
                   "--workers", str(args.workers), "--context-cache", str(args.context_cache), "--loop", args.loop,
                   "--full", "--sweep-interval", str(args.sweep_interval), "--worker-child"]
            cmd += (["--store", args.store] if args.store else []) + (["--no-prewarm"] if args.no_prewarm else [])
            cmd += ["--context-mib", str(args.context_mib)] if args.context_mib else []
            cmd += ["--memory-mib", str(args.memory_mib)] if args.memory_mib else []
            cmd += ["--no-engine"] if args.no_engine else []
            cmd += ["--upstream", args.upstream] if args.upstream else []
            cmd += ["--no-http2"] if args.no_http2 else []
            children = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(args.workers - 1)]
        else:
            from edge.tls_edge.worker import spawn_edge_workers
            children = spawn_edge_workers(settings, args.workers - 1, stdout=subprocess.PIPE)
    from edge.tls_edge.worker import limit_malloc_arenas
    limit_malloc_arenas(settings)
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    stats = asyncio.run(_serve_full(settings) if args.full else _serve_edge(settings))
    for c in children:
        c.send_signal(signal.SIGTERM)
    for c in children:
        out, _ = c.communicate(timeout=15)
        for line in out.decode().splitlines():
            if line.startswith("{"):
                for k, v in json.loads(line)["bench_stats"].items():
                    stats[k] = stats.get(k, 0) + v
    print(json.dumps({"bench_stats": stats}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(bench_serve_main(sys.argv[1:]))
