"""A work queue that is fair across tenants: renewals first, then round-robin over tenants within a priority,
so one tenant adding 5,000 names cannot starve another tenant's renewal or onboarding."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, Hashable, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T", bound=Hashable)


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._levels: dict[int, OrderedDict[Hashable, deque[T]]] = {}
        self._members: dict[T, int] = {}
        self._event = asyncio.Event()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, item: T) -> bool:
        return item in self._members

    def put_nowait(self, item: T, *, group: Hashable, priority: int = 1) -> bool:
        """Queue ``item`` (deduplicated; a queued item moved to a more urgent priority). Returns False if it was
        already queued at the same or a more urgent priority."""
        old = self._members.get(item)
        if old is not None:
            if old <= priority:
                return False
            for g, dq in self._levels[old].items():
                if item in dq:
                    dq.remove(item)
                    if not dq:
                        del self._levels[old][g]
                    break
        level = self._levels.setdefault(priority, OrderedDict())
        level.setdefault(group, deque()).append(item)
        self._members[item] = priority
        self._notify()
        return True

    def _notify(self) -> None:
        self._event.set()

    def get_nowait(self) -> T | None:
        for prio in sorted(self._levels):
            level = self._levels[prio]
            while level:
                group, dq = next(iter(level.items()))
                if not dq:
                    del level[group]
                    continue
                item = dq.popleft()
                del level[group]
                if dq:
                    level[group] = dq  # to the back of the round
                self._members.pop(item, None)
                return item
        return None

    async def get(self) -> T:
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            self._event.clear()
            await self._event.wait()
