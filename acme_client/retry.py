"""Retry schedules: how long to wait before the n-th retry, in one small named type used by every retrying loop.

A :class:`RetrySchedule` lists its first delays (short then long); after the list each delay is the previous one
times ``factor`` (1: the last delay repeats), never more than ``cap``; ``jitter`` spreads each delay by +-that
fraction so that many names failing at once do not retry at once. A schedule with ``give_up`` stops after its listed
delays. It lives in ``acme_client`` (the lower layer) so that the ACME client and the service (``edge``) share it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

__all__ = ["RetrySchedule"]


@dataclass(frozen=True)
class RetrySchedule:
    """Delays, in seconds, before retry 1, 2, 3, ... (see the module docstring).

    >>> RetrySchedule("issuance", (60, 600, 6000, 21600)).base(7)
    21600.0
    >>> RetrySchedule("dns", (30,), factor=2, cap=3600).base(4)
    240.0
    """

    name: str
    delays: tuple[float, ...]
    factor: float = 1.0
    cap: float = math.inf
    jitter: float = 0.0
    give_up: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "delays", tuple(float(d) for d in self.delays))
        object.__setattr__(self, "cap", float(self.cap))
        if not self.delays and not self.give_up:
            raise ValueError(f"retry schedule {self.name!r} needs at least one delay")

    @classmethod
    def parse(cls, name: str, value: RetrySchedule | str | Sequence[float], **options) -> RetrySchedule:
        """A schedule from ``"10,60,600"`` (blank items ignored) or a sequence of seconds, with ``options`` (the
        other fields); a :class:`RetrySchedule` is returned as it is."""
        if isinstance(value, RetrySchedule):
            return value
        items = value.split(",") if isinstance(value, str) else value
        return cls(name, tuple(float(x) for x in items if not isinstance(x, str) or x.strip()), **options)

    @property
    def retries(self) -> int | None:
        """How many retries the schedule allows (None: no limit)."""
        return len(self.delays) if self.give_up else None

    def base(self, retry: int) -> float | None:
        """The delay before retry number ``retry`` (1 = the first retry) without jitter; None: give up."""
        if retry < 1:
            raise ValueError("retries are counted from 1")
        n = len(self.delays)
        if retry <= n:
            return min(self.delays[retry - 1], self.cap)
        if self.give_up:
            return None
        try:
            d = self.delays[-1] * self.factor ** (retry - n)
        except OverflowError:
            d = math.inf
        return min(d, self.cap)

    def delay(self, retry: int) -> float | None:
        """:meth:`base` spread by the jitter (None: give up)."""
        d = self.base(retry)
        return None if d is None else self.spread(d)

    def spread(self, seconds: float) -> float:
        """``seconds`` times a random factor within 1 +- ``jitter``."""
        return seconds * (1 + random.uniform(-self.jitter, self.jitter)) if self.jitter else seconds

