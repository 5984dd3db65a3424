"""What the API apps keep in their state: the services they use (``ApiServices``), the public rate limiter, and the
typed ``web.AppKey``s under which both are stored. Handlers read state only through these keys."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from edge.diagnostics.budget import AnalysisPool

if TYPE_CHECKING:
    from store import Storage

    from edge.config import Settings
    from edge.events import EventBus
    from edge.lifecycle.dnscheck import DnsChecker
    from edge.lifecycle.manager import DomainManager
    from edge.metrics import Metrics
    from edge.tls_edge.index import SniIndex

__all__ = ["ApiServices", "RateLimiter", "SERVICES", "LIMITER", "ANALYSIS"]


class ApiServices(Protocol):
    """The part of the process's services (``edge.app.Services``) that the API and plain-HTTP apps use."""

    settings: Settings
    storage: Storage
    dns: DnsChecker
    events: EventBus
    manager: DomainManager
    index: SniIndex
    metrics: Metrics
    version: str

    async def edge_issuers(self) -> list[str]: ...

    async def refresh_metrics(self) -> None: ...


class RateLimiter:
    """Per-client token bucket for the public endpoints (diagnose, triage, status)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._b: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        """Spend one token of ``key``'s bucket; ``False`` when it has none (see ``retry_after``)."""
        now = time.monotonic()
        tokens, last = self._b.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._b[key] = (tokens, now)
            return False
        self._b[key] = (tokens - 1, now)
        if len(self._b) > 10000:
            self._b.clear()
        return True

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key``'s bucket holds a token again (at least 1): the bucket's real refill time."""
        tokens, last = self._b.get(key, (float(self.burst), time.monotonic()))
        tokens = min(self.burst, tokens + (time.monotonic() - last) * self.rate)
        return max(1, math.ceil((1 - tokens) / self.rate)) if self.rate > 0 else 3600


#: The services, on the API app and on the plain-HTTP app.
SERVICES: web.AppKey[ApiServices] = web.AppKey("services", ApiServices)
#: The API app's limiter for the public endpoints (one bucket per client address, shared by all of them).
LIMITER: web.AppKey[RateLimiter] = web.AppKey("public_limiter", RateLimiter)
#: The API app's worker processes for CPU-heavy analysis (triage, decoding uploaded certificates), off the loop.
ANALYSIS: web.AppKey[AnalysisPool] = web.AppKey("analysis_pool", AnalysisPool)
