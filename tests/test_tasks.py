"""Shutdown of managed tasks: a cancellation swallowed by the task (as Python 3.11's ``asyncio.wait_for`` does when
the inner future completes at the same moment) is repeated until the task really ends; and a real edge stopped right
after an issuance (the moment its self-probe and verification race the closing listener) exits on SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import pytest

from edge.tasks import cancel_and_wait


async def test_a_swallowed_cancellation_is_repeated_until_the_task_ends():
    swallowed = 0
    started = asyncio.Event()

    async def worker():
        nonlocal swallowed
        while True:
            try:
                started.set()
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed < 2:  # what wait_for's race does: the cancellation becomes an ordinary result
                    swallowed += 1
                    asyncio.current_task().uncancel()
                    continue
                raise

    t = asyncio.create_task(worker())
    await started.wait()
    await asyncio.wait_for(cancel_and_wait(t, recancel_every=0.01), 5)
    assert t.cancelled() and swallowed == 2


async def test_a_task_that_fails_while_cancelled_is_awaited_without_noise():
    async def worker():
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("cleanup failed")

    t = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await cancel_and_wait(t)
    assert t.done() and isinstance(t.exception(), RuntimeError)
    await cancel_and_wait(None)


@pytest.mark.parametrize("i", range(4))
def test_the_edge_exits_on_sigterm_right_after_an_issuance(edge_factory, i):
    edge = edge_factory(f"stop{i}")
    edge.add_domain(f"s{i}.stop.test", tenant="s")
    edge.wait_status(f"s{i}.stop.test", "active", timeout=30)
    edge.proc.send_signal(signal.SIGTERM)
    assert edge.proc.wait(12) == 0, edge.log_tail(40)  # no SIGKILL needed
    assert "stopped in" in edge.log_text()


async def test_a_slow_shutdown_logs_what_it_still_waits_for(caplog):
    from edge.app import _log_slow_shutdown

    async def stuck_somewhere_recognisable():
        await asyncio.sleep(3600)

    t = asyncio.create_task(stuck_somewhere_recognisable())
    await asyncio.sleep(0)
    with caplog.at_level("WARNING"):
        _log_slow_shutdown()
    await cancel_and_wait(t)
    assert "shutdown is taking long" in caplog.text and "stuck_somewhere_recognisable" in caplog.text
