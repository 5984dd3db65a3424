"""Events: the one place where the event log, logs, metrics and webhooks attach (like CertMagic's OnEvent)."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from store.protocol import StoreUnavailable

__all__ = ["EventBus", "Subscriber"]

log = logging.getLogger("edgecert.events")
Subscriber = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


class EventBus:
    """``emit(hostname, kind, message, data)`` stores the event, logs it, and calls every subscriber."""

    def __init__(self, storage) -> None:
        self.storage = storage
        self._subs: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> None:
        self._subs.append(fn)

    async def emit(self, hostname: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        log.info("%s %s: %s", hostname, kind, message)
        try:
            await self.storage.add_event(hostname, kind, message, data)
        except StoreUnavailable as e:  # a database outage: one line, the event is in the log above
            log.warning("could not store event %s for %s: %s", kind, hostname, e)
        except Exception:
            log.exception("could not store event %s for %s", kind, hostname)
        for fn in self._subs:
            try:
                await fn(hostname, kind, message, data)
            except Exception:
                log.exception("event subscriber failed on %s", kind)
