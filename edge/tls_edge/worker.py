"""A TLS-edge-only worker process: the SNI index loaded from the store, the lean HTTP layer, nothing else.

``edgecert serve`` with ``workers`` > 1 (setting) runs worker 0 as the full service (API, plain HTTP, manager,
TLS edge) and workers 1..N-1 as this: the same port (SO_REUSEPORT), the same store. ``bench/bench_serve.py`` runs
its N workers as this. What it does, in order:

1. opens the store read-only (:mod:`store.readonly`: sqlite3 or SQLAlchemy Core, no ORM, no migrations: the full
   service owns the schema) and the key box (:mod:`store.crypto`; neither pulls in alembic/sqlmodel);
2. loads the SNI index in one streamed query, compact entries (leaf PEM, interned chain, key still encrypted);
3. listens (TLS, SO_REUSEPORT) with :class:`edge.tls_edge.http.EdgeHttpServer`; ``gc.freeze()`` moves the index out
   of the garbage collector's way;
4. starts the prewarm thread (contexts built off the handshake path up to the memory budget);
5. every ``sweep_interval`` seconds, follows the store: the domains whose ``updated_at`` moved (the same
   ``changed_domains`` sweep as the manager's) are reloaded or removed.

Why a separate lean process: importing the full service (aiohttp, SQLAlchemy ORM + sqlmodel + alembic, acme,
APScheduler...) costs ~1.3 s and ~100 MB RSS before the first certificate is loaded. This worker starts in ~0.3 s and
~45 MB, which is what lets 100,000 names be ready in under 2 s within 250 MB.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from store.crypto import load_keybox
from store.readonly import EdgeStore

from edge.tasks import cancel_and_wait
from edge.tls_edge.certificates import apply_settings, load_default_certificate
from edge.tls_edge.engine import use_tls_engine
from edge.tls_edge.handshake_rules import HandshakeRules
from edge.tls_edge.index import SniIndex, load_host_settings, load_index_rows

#: How a worker learns the descriptor of the TLS edge's handed-over listening socket (spawn_edge_workers).
SOCKET_FD_VAR = "EDGECERT_HTTPS_SOCKET_FD"

__all__ = ["run_edge_worker", "serve_edge", "spawn_edge_workers", "apply_memory_target", "limit_malloc_arenas",
           "report_warm"]

log = logging.getLogger("edgecert.edge")

CHANGE_OVERLAP = dt.timedelta(seconds=2)


async def serve_edge(settings, *, stop: asyncio.Event, stats_out: dict | None = None) -> dict:
    """Run one TLS edge worker until ``stop`` is set; returns its counters."""
    from edge.config import parse_hostport
    from edge.tls_edge.http import EdgeHttpServer
    t0 = time.monotonic()
    apply_settings(settings)
    state = Path(settings.state_dir)
    keybox = load_keybox(secret_key=settings.secret_key, state_dir=state)
    default_cert, default_key = load_default_certificate(settings.default_cert, settings.default_key, state)
    outcomes: dict[str, int] = {}

    def on_outcome(o: str) -> None:
        outcomes[o] = outcomes.get(o, 0) + 1

    budget_mib = settings.context_cache_mib
    index = SniIndex(default_fullchain=default_cert, default_key=default_key,
                     max_contexts=settings.context_cache_size,
                     memory_budget=int(float(budget_mib) * 1024 * 1024) if budget_mib else None,
                     on_outcome=on_outcome, engine=use_tls_engine(settings))
    store = EdgeStore(settings.database_url)
    synced_at = dt.datetime.now(dt.timezone.utc)
    n = await asyncio.to_thread(lambda: load_index_rows(index, store.served_rows(), keybox))
    await asyncio.to_thread(lambda: load_host_settings(index, store.host_settings_rows()))  # origins (issue 17)
    gc.freeze()  # the index is long-lived: keep it out of every later collection
    t_loaded = time.monotonic()
    apply_memory_target(index, settings)
    # TLS-ALPN-01 answers and per-name TLS floors (edge/tls_edge/handshake_rules.py), in place before listening.
    rules = HandshakeRules(index, database_url=settings.database_url, floors_interval=settings.sweep_interval)
    await rules.start()
    services = SimpleNamespace(settings=settings, index=index, bench_stats={"connections": 0, "resumed": 0})
    server = EdgeHttpServer(services)
    host, port = parse_hostport(settings.https_listen, setting="https")
    fd = os.environ.pop(SOCKET_FD_VAR, "")
    sock = socket.socket(fileno=int(fd)) if fd.isdigit() else None  # the parent's handed-over socket
    if sock is not None:
        sock.setblocking(False)
    await server.start(host, port, index.default_context, reuse_port=True, sock=sock)
    log.info("edge worker %d: %d certificates loaded in %.2fs, listening on %s (ready %.2fs after start of serve_edge)",
             os.getpid(), n, t_loaded - t0, settings.https_listen, time.monotonic() - t0)
    warm_waiter = None
    if settings.prewarm:
        index.start_prewarm()

        warm_waiter = asyncio.create_task(report_warm(index, t0, bench=settings.bench_stats))

    async def follow() -> None:
        nonlocal synced_at
        interval = max(0.2, float(settings.sweep_interval))
        while True:
            await asyncio.sleep(interval)
            try:
                now = dt.datetime.now(dt.timezone.utc)
                changed = await asyncio.to_thread(store.changed_since, synced_at - CHANGE_OVERLAP)
                synced_at = now
                if changed:
                    k = await asyncio.to_thread(
                        lambda: load_index_rows(index, store.served_rows(changed), keybox, hostnames=changed))
                    await asyncio.to_thread(lambda: load_host_settings(  # origins (issue 17)
                        index, store.host_settings_rows(changed), hostnames=changed))
                    log.info("edge worker %d: %d changed domain(s), %d reloaded", os.getpid(), len(changed), k)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep following; the store may be briefly unavailable
                log.exception("edge worker: following the store failed")

    follower = asyncio.create_task(follow())
    try:
        await stop.wait()
    finally:
        index.stop_prewarm()
        index.warm_done.set()
        await asyncio.gather(cancel_and_wait(follower), cancel_and_wait(warm_waiter))
        await rules.stop()
        await server.stop()
        store.close()
    out = dict(services.bench_stats)
    out["handshakes"] = sum(outcomes.values())
    out.update({k: v for k, v in index.stats().items() if k in ("contexts_built", "built_on_handshake", "prewarmed")})
    if stats_out is not None:
        stats_out.update(out)
    return out


async def report_warm(index: SniIndex, t0: float, *, bench: bool = False) -> None:
    """Log once the prewarm thread has run out of work (or of room); bench/run.py waits for this line."""
    await asyncio.to_thread(index.warm_done.wait)
    msg = (f"edge worker {os.getpid()}: prewarm complete: {index.context_count()} TLS contexts "
           f"(bound {index.max_contexts}) for {len(index)} names, {time.monotonic() - t0:.2f}s after start")
    log.info(msg)
    if bench:
        print("edgecert " + msg, file=sys.stderr, flush=True)


MEMORY_HEADROOM = 24 * 1024 * 1024  # connections in flight, buffers, allocator slack


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def limit_malloc_arenas(settings) -> None:
    """With a memory target (``edge_memory_mib``), one glibc malloc arena for every thread (``M_ARENA_MAX = 1``,
    as ``MALLOC_ARENA_MAX=1`` would). Certificates built by the prewarm thread and freed by the event loop's thread
    otherwise stay in the prewarm thread's arena while the loop's cold builds fill its own: measured at 100k names
    with a 250 MiB target, peak RSS 264 MiB with per-thread arenas. The GIL already serialises these threads, so one
    arena costs no contention worth measuring. Call before any thread starts; a no-op off glibc."""
    if not settings.edge_memory_mib:
        return
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def apply_memory_target(index: SniIndex, settings) -> None:
    """``edge_memory_mib`` (setting): the whole worker's RSS target. Once the index is loaded, what is left
    (minus headroom) becomes the context LRU's budget. ``context_cache_mib`` alone bounds the LRU directly."""
    target = settings.edge_memory_mib
    if not target:
        return
    left = int(float(target) * 1024 * 1024) - rss_bytes() - MEMORY_HEADROOM
    explicit = settings.context_cache_mib
    if explicit:
        left = min(left, int(float(explicit) * 1024 * 1024))
    cap = index.set_memory_budget(max(left, 64 * index.unit_bytes), max_contexts=settings.context_cache_size)
    log.info("edge worker %d: RSS %.0f MiB after loading %d names; memory target %s MiB leaves room for %d "
             "TLS contexts", os.getpid(), rss_bytes() / 2**20, len(index), target, cap)


def spawn_edge_workers(settings, count: int, *, stdout=None, sock=None) -> list:
    """Start ``count`` edge worker processes (children of this one), settings passed on their stdin. ``sock``: the
    TLS edge's listening socket when the service manager handed it over (edge/listenfds.py): the workers accept on
    that same socket (its descriptor passed on, named by ``EDGECERT_HTTPS_SOCKET_FD``) instead of binding their own."""
    import subprocess
    data = settings.to_json().encode()
    env = None
    fds: tuple[int, ...] = ()
    if sock is not None:
        env = {**os.environ, SOCKET_FD_VAR: str(sock.fileno())}
        fds = (sock.fileno(),)
    procs = []
    for _ in range(count):
        p = subprocess.Popen([sys.executable, "-m", "edge.tls_edge.worker"], stdin=subprocess.PIPE, stdout=stdout,
                             env=env, pass_fds=fds)
        assert p.stdin is not None
        p.stdin.write(data)
        p.stdin.close()
        p.stdin = None  # so that communicate() does not touch it
        procs.append(p)
    return procs


def run_edge_worker(settings, *, print_stats: bool = False) -> int:
    """Process entry point: uvloop, signals, serve until SIGTERM/SIGINT."""
    limit_malloc_arenas(settings)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def main() -> dict:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve_edge(settings, stop=stop)

    stats = asyncio.run(main())
    if print_stats:
        print(json.dumps({"bench_stats": stats}), flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge.config import Settings
    _settings = Settings.from_json(sys.stdin.read())
    logging.getLogger().setLevel(getattr(logging, str(_settings.log_level).upper(), logging.INFO))
    sys.exit(run_edge_worker(_settings, print_stats=_settings.bench_stats))
