"""One process: the API listener, the plain-HTTP listener and the TLS edge, sharing one set of services."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import signal
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import web

from acme_client.issuer import AcmeIssuer
from acme_client.issuers import IssuerChain
from acme_client.ratelimit import load_limits
from store import SQLStorage, load_keybox, open_storage
from store.crypto import KeyBox
from store.models import utcnow

from edge import __version__
from edge.api import make_api_app
from edge.config import ConfigError, Settings, parse_hostport
from edge.names import format_hostport
from edge.lifecycle.dnscheck import DnsChecker
from edge.lifecycle.dns01 import dns01_publisher
from edge.events import EventBus
from edge.lifecycle.files import LiveFiles, atomic_write
from edge.lifecycle.hooks import ReloadHook
from edge.listenfds import pick, take_inherited
from edge.api.http01 import make_http_app
from edge.api.percap import capped_site
from edge.lifecycle.manager import DomainManager
from edge.metrics import Metrics
from edge.lifecycle.probes import Prober
from edge.tls_edge.certificates import apply_settings as apply_tls_settings
from edge.tls_edge.certificates import load_default_certificate
from edge.tls_edge.engine import use_tls_engine
from edge.tls_edge.handshake_rules import HandshakeRules
from edge.tls_edge.http import EdgeHttpServer
from edge.tls_edge.index import SniIndex
from edge.lifecycle.webhooks import WebhookSender

__all__ = ["Services", "build_services", "run_server", "Server"]

log = logging.getLogger("edgecert")


class StorePublisher:
    """HTTP-01 answers go into the store, where every node's plain-HTTP listener finds them, and into this node's
    memory (bounded: at most ``max_entries``, each until withdrawn or ``ttl`` seconds), so that this node keeps
    answering the validations it started while the database is unreachable (``edge/api/http01.py`` asks
    :meth:`answer` first, then the store). TLS-ALPN-01 answers are also installed in this process's SNI path
    (``tls_alpn``: :class:`edge.tls_edge.handshake_rules.HandshakeRules`, memory only in the handshake) before they
    are stored, and the publish waits (bounded) until the other processes following the store have them too."""

    def __init__(self, storage: SQLStorage, *, max_entries: int = 10000, ttl: float = 3600.0,
                 tls_alpn: HandshakeRules | None = None) -> None:
        self.storage = storage
        self.tls_alpn = tls_alpn
        self.max_entries = max(1, max_entries)
        self.ttl = ttl
        # token -> (hostname, kind, key_authorization, expires at (monotonic)); oldest first.
        self._mem: OrderedDict[str, tuple[str, str, str, float]] = OrderedDict()

    def answer(self, token: str) -> tuple[str, str, str] | None:
        """(hostname, kind, key_authorization) of a token this node published and has not withdrawn."""
        got = self._mem.get(token)
        if got is None:
            return None
        if got[3] < time.monotonic():
            self._mem.pop(token, None)
            return None
        return got[0], got[1], got[2]

    def __len__(self) -> int:
        return len(self._mem)

    async def publish(self, *, hostname: str, kind: str, token: str, key_authorization: str) -> None:
        alpn = self.tls_alpn if kind == "tls-alpn-01" else None
        if alpn is not None:  # this process answers in its handshakes from now on
            await alpn.publish(hostname=hostname, token=token, key_authorization=key_authorization)
        self._mem.pop(token, None)
        self._mem[token] = (hostname, kind, key_authorization, time.monotonic() + self.ttl)
        while len(self._mem) > self.max_entries:
            self._mem.popitem(last=False)  # the oldest: its order is the likeliest to be over
        try:
            await self.storage.put_challenge(token, key_authorization, hostname, kind=kind, ttl=self.ttl)
        except BaseException:
            self._mem.pop(token, None)  # not published: the other nodes could not answer it
            if alpn is not None:
                alpn.withdraw(hostname=hostname, token=token)
            raise
        if alpn is not None:
            await alpn.settle()  # the other processes / nodes have looked at the store (bounded wait)

    async def withdraw(self, *, hostname: str, kind: str, token: str) -> None:
        if kind == "tls-alpn-01" and self.tls_alpn is not None:
            self.tls_alpn.withdraw(hostname=hostname, token=token)
        self._mem.pop(token, None)
        await self.storage.delete_challenge(token)


@dataclass(eq=False)
class Services:
    settings: Settings
    storage: SQLStorage
    keybox: KeyBox
    index: SniIndex
    files: LiveFiles
    dns: DnsChecker
    events: EventBus
    hook: ReloadHook
    issuer: IssuerChain
    manager: DomainManager
    metrics: Metrics
    prober: Prober | None = None
    webhooks: WebhookSender | None = None
    publisher: StorePublisher | None = None
    handshake_rules: HandshakeRules | None = None
    version: str = __version__
    https_bound: tuple[str, int] | None = None
    bench_stats: dict = field(default_factory=lambda: {"connections": 0, "resumed": 0})
    _issuers_cache: tuple[float, list[str]] = field(default=(0.0, []))

    def public_address(self) -> str | None:
        """host:port where this process's TLS edge can be reached (for self-checks and diagnostics)."""
        if self.https_bound is None:
            host, port = parse_hostport(self.settings.https_listen)
        else:
            host, port = self.https_bound
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def edge_issuers(self) -> list[str]:
        pairs = await self.storage.current_certificates()
        return sorted({c.issuer for _, c in pairs})

    async def refresh_metrics(self) -> None:
        m = self.metrics
        counts = await self.storage.count_domains_by_status()
        from store.models import DomainStatus
        for st in DomainStatus.ALL:
            m.domains.labels(status=st).set(counts.get(st, 0))
        now = utcnow()
        pairs = await self.storage.current_certificates()
        if m.per_domain:
            m.cert_expiry.clear()
        soonest = None
        for d, c in pairs:
            left = (c.not_after - now).total_seconds()
            soonest = left if soonest is None else min(soonest, left)
            if m.per_domain:
                m.cert_expiry.labels(hostname=d.hostname).set(left)
        if soonest is not None:
            m.cert_expiry_min.set(soonest)


def build_issuers(settings: Settings, *, storage, keybox: KeyBox, publisher, metrics: Metrics) -> IssuerChain:
    """One :class:`AcmeIssuer` per configured CA (``[[issuers]]`` or ``acme_directory``), in order, as a chain
    (acme_client/issuers.py): each with its own account, EAB, profile, ledger scope, limits and pacing."""
    default_limits = load_limits(settings.rate_limits)
    several = len(settings.issuer_specs()) > 1
    issuers, limits = [], {}
    for spec in settings.issuer_specs():
        directory = spec["directory"]

        def on_request(kind: str, status: int, _d: str = directory) -> None:
            metrics.acme_requests.labels(kind=kind, status=str(status)).inc()
            metrics.issuer_requests.labels(directory=_d).inc()
        issuers.append(AcmeIssuer(
            storage=storage, keybox=keybox, publisher=publisher, directory_url=directory,
            ca_bundle=spec["ca_bundle"], email=settings.acme_email, max_workers=settings.max_concurrent_orders,
            order_timeout=settings.order_timeout, on_request=on_request, eab_kid=spec["eab_kid"],
            eab_hmac_key=spec["eab_hmac_key"], profile=spec["profile"], caa_identities=spec["caa_identities"],
            setting=spec["setting"], new_order_wait=settings.issuer_fallback_wait if several else None,
            on_account_recreated=lambda d: metrics.account_recreated.labels(directory=d).inc()))
        if spec["rate_limits"] is not None:
            limits[directory] = load_limits({**settings.rate_limits, **spec["rate_limits"]})
    return IssuerChain(issuers, storage=storage, limits=limits, default_limits=default_limits,
                       orders_per_10s=settings.orders_per_10s,
                       pacing={sp["directory"]: sp["orders_per_10s"] for sp in settings.issuer_specs()},
                       down_cooldown=settings.issuer_down_cooldown,
                       on_skip=lambda d, code: metrics.issuer_skips.labels(directory=d, reason=code).inc())


async def build_services(settings: Settings) -> Services:
    """Open the store (running migrations), load keys and the default certificate, assemble the services."""
    apply_tls_settings(settings)
    state = settings.state_path
    try:
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
        if not os.access(state, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable by this user")
    except OSError as e:
        raise ConfigError(f"EDGECERT_STATE_DIR={settings.state_dir}: cannot use it as the state directory: "
                          f"{e.strerror or e}") from None
    storage = await asyncio.to_thread(open_storage, settings.database_url)
    keybox = await asyncio.to_thread(load_keybox, secret_key=settings.secret_key, state_dir=state,
                                     create=lambda p, data: atomic_write(p, data, mode=0o600, exclusive=True))
    default_cert, default_key = await asyncio.to_thread(load_default_certificate, settings.default_cert,
                                                        settings.default_key, state)
    metrics = Metrics(per_domain_labels=settings.expose_domain_metrics)
    index = SniIndex(default_fullchain=default_cert, default_key=default_key,
                     max_contexts=settings.context_cache_size, on_outcome=metrics.on_handshake,
                     engine=use_tls_engine(settings))
    files = LiveFiles(state, on_error=metrics.on_write_error)
    dns = DnsChecker(resolver=settings.dns_resolver_hostport(), edge_target=settings.edge_target,
                     ownership_key=keybox.derive_key(b"edgecert ownership txt v1"),
                     dns01_zone=settings.dns01_zone if settings.dns01_enabled else None)
    events = EventBus(storage)
    events.subscribe(metrics.on_event)
    webhooks = None
    if settings.webhook_url and settings.webhook_secret:
        webhooks = WebhookSender(storage=storage, url=settings.webhook_url, secret=settings.webhook_secret,
                                 events=settings.webhook_events, metrics=metrics,
                                 retry_schedule=settings.webhook_retry_schedule)
        events.subscribe(webhooks.on_event)
    hook = ReloadHook(command=settings.reload_command, state_dir=settings.state_dir, timeout=settings.reload_timeout,
                      batch_window=settings.hook_batch_window,
                      retry_delays=settings.hook_retry_delays,
                      webhook_url=settings.reload_webhook, webhook_secret=settings.reload_webhook_secret)
    handshake_rules = HandshakeRules(index, database_url=settings.database_url, floors_interval=settings.sweep_interval,
                                     peers=settings.workers > 1 or storage.notifies)
    publisher = StorePublisher(storage, max_entries=settings.challenge_memory_max, tls_alpn=handshake_rules)
    issuer = build_issuers(settings, storage=storage, keybox=keybox,
                           publisher=dns01_publisher(settings, storage, publisher), metrics=metrics)
    manager = DomainManager(settings=settings, storage=storage, keybox=keybox, issuer=issuer, index=index,
                            files=files, dns=dns, events=events, hook=hook,
                            retry_schedule=settings.retry_schedule)
    hook.on_result = manager.on_hook_result
    services = Services(settings=settings, storage=storage, keybox=keybox, index=index, files=files, dns=dns,
                        events=events, hook=hook, issuer=issuer, manager=manager, metrics=metrics, webhooks=webhooks,
                        publisher=publisher, handshake_rules=handshake_rules)
    probe_address = settings.probe_address
    services.prober = Prober(settings=settings, storage=storage, events=events, metrics=metrics,
                             address_fn=lambda: probe_address or services.public_address())
    manager.prober = services.prober
    return services


def services_ctx(services: Services):
    """cleanup_ctx: start the background machinery with the API app, stop it (in reverse) on shutdown."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if services.webhooks is not None:
            await services.webhooks.start()
        await services.hook.start()
        await services.manager.start()
        if services.handshake_rules is not None:
            await services.handshake_rules.start()
        listener = None
        if services.storage.notifies:
            from edge.lifecycle.cluster import ChangeListener
            listener = ChangeListener(database_url=services.settings.database_url,
                                      on_change=services.manager.load_index)
            await listener.start()
        if services.prober is not None:
            await services.prober.start()
        yield
        if listener is not None:
            await listener.stop()
        if services.handshake_rules is not None:
            await services.handshake_rules.stop()
        if services.prober is not None:
            await services.prober.stop()
        await services.manager.stop()
        await services.hook.stop()
        if services.webhooks is not None:
            await services.webhooks.stop()
        services.issuer.close()
        await asyncio.to_thread(services.storage.close)
    return ctx


class Server:
    """The three listeners of ``edgecert serve``. ``start()`` returns once all listen; ``stop()`` undoes it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self._runners: list[web.AppRunner] = []
        self._edge: EdgeHttpServer | None = None  # the TLS edge
        self.https_socket = None  # the TLS edge's listening socket when the service manager handed it over
        self.addresses: dict[str, tuple[str, int]] = {}

    async def start(self) -> Services:
        s = self.settings
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="io"))
        services = await build_services(s)
        self.services = services
        api = make_api_app(services)
        api.cleanup_ctx.append(services_ctx(services))
        http = make_http_app(services)
        self._edge = EdgeHttpServer(services)
        inherited = take_inherited()  # systemd socket activation (edge/listenfds.py)
        host, port = parse_hostport(s.https_listen, setting="https")
        sock = pick(inherited, "https", host, port)
        self.https_socket = sock
        _say_handed_over("https", sock)
        try:
            srv = await self._edge.start(host, port, services.index.default_context,
                                         reuse_port=s.reuse_port, sock=sock)
        except OSError as e:
            raise _cannot_listen("https", s.https_listen, e) from None
        bound = srv.sockets[0].getsockname()[:2]
        self.addresses["https"] = (bound[0], bound[1])
        services.https_bound = (bound[0], bound[1])
        services.manager.own_address = services.public_address()
        for name, app, listen in (("http", http, s.http_listen), ("api", api, s.api_listen)):
            # keepalive_timeout: aiohttp closes a connection still waiting for a whole request head that long
            # after it opened or after its previous answer (a silent or slowloris client, an idle keep-alive).
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   keepalive_timeout=s.listener_head_timeout)
            await runner.setup()
            host, port = parse_hostport(listen, setting=name)
            sock = pick(inherited, name, host, port)
            _say_handed_over(name, sock)
            site = capped_site(runner, host=host, port=port, sock=sock, cap=s.listener_max_conns_per_ip)
            try:
                await site.start()
            except OSError as e:
                await runner.cleanup()
                raise _cannot_listen(name, listen, e) from None
            self._runners.append(runner)
            sock = site._server.sockets[0] if site._server and site._server.sockets else None  # type: ignore[union-attr]
            bound = sock.getsockname()[:2] if sock else (host, port)
            self.addresses[name] = (bound[0], bound[1])
        for name, sock in inherited:  # handed over but matching no listener: say so, do not keep them open
            log.warning("socket activation: socket %s (%s) matches no listener (api, http, https); closed",
                        name or "-", sock.getsockname()[:2])
            sock.close()
        # The index is loaded (manager.start): bound the context LRU by the memory target, if any, and build
        # contexts in the background (edge/tls_edge/index.py, SniIndex.start_prewarm).
        from edge.tls_edge.worker import apply_memory_target
        apply_memory_target(services.index, s)
        if s.prewarm:
            services.index.start_prewarm()
        return services

    async def stop(self) -> None:
        if self.services is not None:
            self.services.index.stop_prewarm()
        if self._edge is not None:
            await self._edge.stop()
            self._edge = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


def _cannot_listen(name: str, value: str, e: OSError) -> ConfigError:
    """A listener that cannot listen where its setting says, as the error naming that setting (serve exits 2)."""
    setting = f"EDGECERT_{name.upper()}_LISTEN"
    hint = ""
    if e.errno in (errno.EACCES, errno.EPERM):
        hint = (" -- ports below 1024 need root or CAP_NET_BIND_SERVICE (the systemd unit in deploy/ grants it); "
                "or pick a port above 1024")
    elif e.errno == errno.EADDRINUSE:
        hint = " -- another process listens there (nginx?); pick another address or stop that process"
    elif e.errno == errno.EADDRNOTAVAIL:
        hint = " -- no interface of this machine has that address"
    elif isinstance(e, socket.gaierror):
        hint = " -- the host name does not resolve; give an IP address or a resolvable name"
    reason = e.strerror or str(e)
    return ConfigError(f"{setting}={value}: cannot listen there: {reason}{hint}")


def _say_handed_over(name: str, sock) -> None:
    if sock is not None:
        log.info("%s listener: socket %s handed over by the service manager (socket activation)", name,
                 format_hostport(*sock.getsockname()[:2]))


def _log_slow_shutdown() -> None:
    """Shutdown has taken 5 s: say what it is still waiting for (every pending task's stack)."""
    import io
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    out = io.StringIO()
    for t in tasks:
        t.print_stack(limit=8, file=out)
    log.warning("shutdown is taking long; %d task(s) still pending:\n%s", len(tasks), out.getvalue())


async def run_server(settings: Settings) -> None:
    # ``workers`` (setting) > 1: this process serves everything, and workers - 1 more processes serve the TLS
    # edge only (edge/tls_edge/worker.py) on the same port (SO_REUSEPORT), following the store for index changes.
    workers = settings.workers
    if workers > 1:
        settings = settings.replace(reuse_port=True)
    server = Server(settings)
    await server.start()
    children: list = []
    if workers > 1:
        from edge.tls_edge.worker import spawn_edge_workers
        h, p = server.addresses["https"]
        children = spawn_edge_workers(settings.replace(https_listen=format_hostport(h, p)), workers - 1,
                                      sock=server.https_socket)
        log.info("started %d TLS edge worker process(es): %s", len(children), ", ".join(str(c.pid) for c in children))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    a = server.addresses
    log.info("edgecert %s ready: api=%s:%d http=%s:%d https=%s:%d; %d certificates loaded", __version__,
             *a["api"], *a["http"], *a["https"], len(server.services.index) if server.services else 0)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for c in children:
            c.terminate()
        t_stop = time.monotonic()
        watchdog = asyncio.get_running_loop().call_later(5, _log_slow_shutdown)
        try:
            await server.stop()
        finally:
            watchdog.cancel()
        log.info("stopped in %.2fs", time.monotonic() - t_stop)
        for c in children:
            try:
                await asyncio.to_thread(c.wait, 15)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                c.kill()
