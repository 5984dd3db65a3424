"""Self-probes: real TLS handshakes, with SNI, against the edge's public face for every active domain.

Each probe records the result, the served serial and the days to expiry on the domain (``last_probe``). A probe
that finds the wrong certificate or no handshake runs the full diagnosis to name the failure mode
(``probe_failed`` event with ``failure_mode``; metric by mode). Expiry warnings are emitted once per threshold
(30 / 14 / 7 / 3 / 1 days, scaled down for certificates shorter than 90 days). Events are emitted on changes only
(ok -> failed, failed -> ok, a new warning), so the timeline stays readable at any probe frequency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
from typing import Any

from cryptography import x509

from store.models import DomainStatus, utcnow

from edge.config import parse_hostport
from edge.tasks import cancel_and_wait

__all__ = ["Prober", "WARN_DAYS", "warning_thresholds", "probe_handshake"]

log = logging.getLogger(__name__)

WARN_DAYS = (30, 14, 7, 3, 1)
FULL_LIFETIME = dt.timedelta(days=90)


def warning_thresholds(lifetime: dt.timedelta) -> list[dt.timedelta]:
    """The expiry warning points for a certificate of this lifetime (scaled for short-lived certificates)."""
    scale = min(1.0, lifetime / FULL_LIFETIME)
    return [dt.timedelta(days=d) * scale for d in WARN_DAYS]


async def probe_handshake(address: str, hostname: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """One handshake with SNI ``hostname`` at ``address``: the served leaf's serial and validity, or the error."""
    host, port = parse_hostport(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    started = asyncio.get_running_loop().time()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), port, ssl=ctx,
                                                                   server_hostname=hostname), timeout)
    except (OSError, ssl.SSLError, TimeoutError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        return {"ok": True, "serial": format(cert.serial_number, "x"), "not_after": cert.not_valid_after_utc,
                "not_before": cert.not_valid_before_utc, "version": sslobj.version(),
                "ms": round((asyncio.get_running_loop().time() - started) * 1000, 2)}
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, ssl.SSLError, TimeoutError):
            pass


class Prober:
    """Probes every active domain each ``interval`` seconds (a managed task), and on demand after a swap."""

    def __init__(self, *, settings, storage, events, metrics, address_fn, concurrency: int = 8) -> None:
        self.s = settings
        self.storage = storage
        self.events = events
        self.metrics = metrics
        self.address_fn = address_fn
        self.interval = settings.probe_interval
        self.rate = settings.probe_rate
        self._sem = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task | None = None
        self.rounds = 0

    async def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._loop(), name="self-probes")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(min(self.interval, 5))
        while True:
            try:
                await self.probe_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probe round failed")
            await asyncio.sleep(self.interval)

    async def probe_all(self) -> int:
        pairs = await self.storage.current_certificates()
        todo = [(d, c) for d, c in pairs if d.status in (DomainStatus.ACTIVE, DomainStatus.EXPIRED)]

        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(i: int, d) -> None:
            # Paced: at most ``probe_rate`` handshakes per second against our own edge, however many domains.
            await asyncio.sleep(max(0.0, start + i / self.rate - loop.time()))
            async with self._sem:
                await self.probe(d.hostname)
        await asyncio.gather(*(one(i, d) for i, (d, _c) in enumerate(todo)))
        self.rounds += 1
        return len(todo)

    async def probe(self, hostname: str) -> dict[str, Any] | None:
        address = self.address_fn()
        d = await self.storage.get_domain(hostname)
        if d is None or d.current_cert_id is None or not address:
            return None
        cert = await self.storage.get_certificate(d.current_cert_id)
        if cert is None:
            return None
        now = utcnow()
        res = await probe_handshake(address, hostname)
        failure_mode = None
        detail = None
        if not res["ok"]:
            failure_mode, detail = await self._classify(hostname, address, cert.sha256)
        elif res["serial"] != cert.serial:
            failure_mode, detail = await self._classify(hostname, address, cert.sha256)
            if failure_mode in (None, "ok"):
                failure_mode = "served_certificate_stale"
                detail = f"served serial {res['serial']}, current certificate {cert.serial}"
        elif res["not_after"] <= now:
            failure_mode, detail = "expired", f"the served certificate expired at {res['not_after'].isoformat()}"
        ok = failure_mode is None
        days_left = round((cert.not_after - now).total_seconds() / 86400, 3)
        record = {"ok": ok, "at": now.isoformat(), "address": address, "served_serial": res.get("serial"),
                  "days_to_expiry": days_left, "failure_mode": failure_mode, "detail": detail or res.get("error"),
                  "handshake_ms": res.get("ms"), "tls_version": res.get("version")}
        fields: dict[str, Any] = {"last_probe_at": now, "last_probe_ok": ok, "last_probe": json.dumps(record)}
        if not ok:
            self.metrics.probe_failures.labels(failure_mode=failure_mode).inc()
            if d.last_probe_ok is not False:
                await self.events.emit(hostname, "probe_failed", f"self-probe failed: {failure_mode}: {detail}",
                                       record)
        elif d.last_probe_ok is False:
            await self.events.emit(hostname, "probe_ok", f"self-probe ok again: serving {res['serial']}", record)
        elif d.last_probe_ok is None:
            await self.events.emit(hostname, "probe_ok", f"self-probe ok: serving {res['serial']}, "
                                   f"{days_left:g} days to expiry", record)
        # Expiry warnings, once per threshold for the current certificate.
        left = cert.not_after - now
        crossed = [w for w, t in zip(WARN_DAYS, warning_thresholds(cert.not_after - cert.not_before)) if left <= t]
        if crossed:
            level = min(crossed)
            if d.expiry_warned_days is None or level < d.expiry_warned_days:
                fields["expiry_warned_days"] = level
                await self.events.emit(hostname, "expiry_warning",
                                       f"the certificate expires in {left.total_seconds() / 86400:.2f} days "
                                       f"(warning level {level} days{' scaled' if left < dt.timedelta(days=1) and level > 1 else ''})",
                                       {"level_days": level, "not_after": cert.not_after.isoformat(),
                                        "seconds_left": int(left.total_seconds())})
        elif d.expiry_warned_days is not None:
            fields["expiry_warned_days"] = None  # a new certificate
        await self.storage.update_domain(hostname, **fields)
        return record

    async def _classify(self, hostname: str, address: str, sha256: str) -> tuple[str, str]:
        from edge.diagnostics import diagnose
        try:
            result = await asyncio.wait_for(diagnose(hostname, connect=address, expected_sha256=sha256,
                                                     allow_private=True, timeout=5.0), 60)
        except Exception as e:  # the probe must always record something
            return "handshake_failure", f"diagnosis failed: {e}"
        return result.get("failure_mode") or "unknown", result.get("summary") or ""
