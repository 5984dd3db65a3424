"""Running CPU-heavy work for a request (triage, decoding uploaded certificates) in the app's analysis workers
(``edge.diagnostics.budget.AnalysisPool``), never on the loop; out of budget or out of workers answers 503."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.api.errors import ApiError
from edge.api.state import ANALYSIS
from edge.diagnostics.budget import BudgetExceeded, PoolBusy

__all__ = ["analyse"]


async def analyse(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in the app's analysis workers (never on the loop); ``ApiError`` 503 when it runs out
    of its time budget or no worker is free in time (with ``Retry-After``)."""
    try:
        return await request.app[ANALYSIS].run(fn, *args, **kwargs)
    except BudgetExceeded as e:
        raise ApiError(503, "analysis_timeout", f"this input takes too long to analyse (over {e.budget:g} s of "
                       "work); send a shorter one: only the error message and the tool's output",
                       headers={"Retry-After": "5"}) from None
    except PoolBusy:
        raise ApiError(503, "analysis_busy", "the service is analysing too many inputs right now; try again in "
                       "5 seconds", headers={"Retry-After": "5"}) from None
