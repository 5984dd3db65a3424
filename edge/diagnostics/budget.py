"""CPU-heavy analysis off the event loop, with a time budget: a small pool of worker processes.

A regular expression or a certificate parser holds the GIL for as long as it runs, so a thread would still stall the
loop that serves handshakes; only another process bounds it. ``AnalysisPool.run(fn, *args)`` sends the call to an
idle worker (``spawn``ed, so it shares nothing with the server's threads) and waits for its answer without blocking
the loop. A call that is still running after ``budget`` seconds has its worker killed (a new one replaces it on the
next call) and raises :class:`BudgetExceeded`; a call that finds every worker busy for its whole budget, or finds
too many calls already waiting, raises :class:`PoolBusy`. ``fn`` must be a module-level function (it is pickled by
name); its exceptions come back as they were raised (or as ``ValueError`` with their text when they do not pickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import multiprocessing
import pickle
import resource
from multiprocessing.connection import Connection
from typing import Any, Callable

__all__ = ["AnalysisPool", "BudgetExceeded", "PoolBusy"]

log = logging.getLogger("edge.diagnostics.budget")


class BudgetExceeded(Exception):
    """The call ran out of its time budget; its worker was killed."""

    def __init__(self, budget: float) -> None:
        super().__init__(f"the analysis took longer than {budget:g} s")
        self.budget = budget


class PoolBusy(Exception):
    """Every worker stayed busy for the call's whole budget, or too many calls were already waiting."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"all analysis workers are busy ({waiting} calls waiting)")
        self.waiting = waiting


def _worker_main(conn: Connection, warm: tuple[str, ...]) -> None:
    """A worker: answer ``(fn, args, kwargs)`` with ``(True, result)`` or ``(False, exception)``, until the pipe
    closes. ``warm``: modules imported first, so that the first call does not pay for them."""
    for name in warm:
        importlib.import_module(name)
    conn.send(("ready", None))
    while True:
        try:
            fn, args, kwargs, budget = conn.recv()
        except (EOFError, OSError):
            return
        # The kernel enforces the budget too: past it (in CPU seconds, rounded up) SIGXCPU ends this worker.
        with contextlib.suppress(ValueError, OSError):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(usage.ru_utime + usage.ru_stime) + math.ceil(budget) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        try:
            out: tuple[bool, Any] = (True, fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - returned to the caller, which decides
            try:
                pickle.loads(pickle.dumps(e))
                out = (False, e)
            except Exception:  # noqa: BLE001
                out = (False, ValueError(str(e)))
        conn.send(out)


class _Worker:
    def __init__(self, ctx: Any, warm: tuple[str, ...]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, warm), daemon=True, name="edgecert-analysis")
        self.proc.start()
        child.close()

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.join(0.5)  # SIGKILL: reaped at once
        with contextlib.suppress(Exception):
            self.conn.close()


class AnalysisPool:
    """At most ``workers`` analysis processes, started on first use; ``budget`` seconds per call (default)."""

    def __init__(self, workers: int = 2, budget: float = 5.0, *, max_waiting: int = 64,
                 start_timeout: float = 60.0, warm: tuple[str, ...] = ()) -> None:
        self.warm = warm
        self.workers, self.budget, self.max_waiting, self.start_timeout = workers, budget, max_waiting, start_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._sem: asyncio.Semaphore | None = None
        self._waiting = 0
        self.killed = 0  # workers killed for overrunning their budget

    async def _readable(self, w: _Worker, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        fd = w.conn.fileno()
        loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)

    async def _start(self) -> _Worker:
        w = _Worker(self._ctx, self.warm)
        if not await self._readable(w, self.start_timeout):
            w.kill()
            raise PoolBusy(self._waiting)
        try:
            w.conn.recv()  # "ready"
        except (EOFError, OSError):
            w.kill()
            raise PoolBusy(self._waiting) from None
        return w

    async def run(self, fn: Callable[..., Any], *args: Any, budget: float | None = None, **kwargs: Any) -> Any:
        budget = self.budget if budget is None else budget
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.workers)
        if self._waiting >= self.max_waiting:
            raise PoolBusy(self._waiting)
        self._waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), budget)
        except TimeoutError:
            raise PoolBusy(self._waiting) from None
        finally:
            self._waiting -= 1
        w: _Worker | None = None
        try:
            w = self._idle.pop() if self._idle else await self._start()
            try:
                w.conn.send((fn, args, kwargs, budget))
            except (OSError, ValueError):
                w.kill()
                w = None
                w = await self._start()
                w.conn.send((fn, args, kwargs, budget))
            if not await self._readable(w, budget):
                log.warning("analysis %s ran out of its %g s budget; worker killed", fn.__name__, budget)
                w.kill()
                w = None
                self.killed += 1
                raise BudgetExceeded(budget)
            try:
                ok, value = w.conn.recv()
            except (EOFError, OSError):
                w.kill()
                w = None
                raise BudgetExceeded(budget) from None
            self._idle.append(w)
            w = None
            if ok:
                return value
            raise value
        finally:
            if w is not None and w not in self._idle:
                w.kill()
            self._sem.release()

    def close(self) -> None:
        """Stop every idle worker (busy ones are killed when their call ends)."""
        while self._idle:
            self._idle.pop().kill()
