"""The reload hook: after certificates were swapped, run ``EDGECERT_RELOAD_COMMAND`` so other servers reload.

Swaps that land close together are batched into one run; runs never overlap; output is captured into the event
log; a failed run is retried with backoff and shows on every affected domain.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Callable, Sequence

from acme_client.retry import RetrySchedule

from edge.tasks import cancel_and_wait

__all__ = ["ReloadHook", "HookResult"]

log = logging.getLogger(__name__)


class HookResult:
    def __init__(self, ok: bool, exit_code: int | None, output: str, hostnames: list[str], error: str | None):
        self.ok, self.exit_code, self.output, self.hostnames, self.error = ok, exit_code, output, hostnames, error


class ReloadHook:
    """Batches hostnames and runs the command in one managed task (started/stopped by the app's cleanup_ctx)."""

    def __init__(self, *, command: str | None, state_dir: str, timeout: float = 60.0, batch_window: float = 1.0,
                 retry_delays: RetrySchedule | Sequence[float] = (5, 30, 120, 600),
                 on_result: Callable[[HookResult], Awaitable[None]] | None = None,
                 webhook_url: str | None = None, webhook_secret: str | None = None) -> None:
        self.command = command
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.state_dir = state_dir
        self.timeout = timeout
        self.batch_window = batch_window
        self.retry_schedule = RetrySchedule.parse("reload-hook", retry_delays)  # the last delay repeats
        self.on_result = on_result
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._failures = 0
        self.runs = 0

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook_url)

    def notify(self, hostnames: list[str]) -> None:
        if not self.enabled:
            return
        self._pending.update(hostnames)
        self._wake.set()

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="reload-hook")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.batch_window)  # gather swaps that land close together
            self._wake.clear()
            batch = sorted(self._pending)
            self._pending.clear()
            if not batch:
                continue
            result = await self.run(batch)
            if self.on_result is not None:
                await self.on_result(result)
            if not result.ok:
                self._failures += 1
                delay = self.retry_schedule.base(self._failures)
                self._pending.update(batch)
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                self._wake.set()
            else:
                self._failures = 0

    async def run(self, hostnames: list[str]) -> HookResult:
        """Run the command and/or the webhook once for ``hostnames``; ok only if every configured part is ok."""
        self.runs += 1
        results = []
        if self.command:
            results.append(await self._run_command(hostnames))
        if self.webhook_url:
            results.append(await self._post_webhook(hostnames))
        if len(results) == 1:
            return results[0]
        ok = all(r.ok for r in results)
        return HookResult(ok, results[0].exit_code, "\n".join(r.output for r in results), hostnames,
                          "; ".join(r.error for r in results if r.error) or None)

    async def _post_webhook(self, hostnames: list[str]) -> HookResult:
        """JSON POST signed like the event webhooks (``X-Edgecert-Signature: t=<unix>,v1=<HMAC-SHA256 hex>``)."""
        import json
        import time as _time

        import aiohttp
        body = json.dumps({"type": "certificates_swapped", "hostnames": hostnames, "timestamp": int(_time.time()),
                           "live_dir": os.path.join(os.path.abspath(self.state_dir), "live")}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "edgecert-reload-hook"}
        if self.webhook_secret:
            from edge.lifecycle.webhooks import SIGNATURE_HEADER, sign  # one signature scheme for every webhook
            headers[SIGNATURE_HEADER] = sign(self.webhook_secret, body, int(_time.time()))
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as http:
                async with http.post(self.webhook_url, data=body, headers=headers) as r:
                    text = (await r.text())[-2000:]
                    if 200 <= r.status < 300:
                        return HookResult(True, 0, text, hostnames, None)
                    return HookResult(False, None, text, hostnames, f"reload webhook answered HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return HookResult(False, None, "", hostnames, f"reload webhook failed: {type(e).__name__}: {e}")

    async def _run_command(self, hostnames: list[str]) -> HookResult:
        """Run the command once for ``hostnames`` (``sh -c``, bounded by ``timeout``)."""
        env = dict(os.environ)
        env["EDGECERT_HOSTNAMES"] = " ".join(hostnames)
        env["EDGECERT_STATE_DIR"] = os.path.abspath(self.state_dir)
        env["EDGECERT_LIVE_DIR"] = os.path.join(os.path.abspath(self.state_dir), "live")
        if len(hostnames) == 1:
            live = os.path.join(env["EDGECERT_LIVE_DIR"], hostnames[0])
            env["EDGECERT_FULLCHAIN"] = os.path.join(live, "fullchain.pem")
            env["EDGECERT_PRIVKEY"] = os.path.join(live, "privkey.pem")
        for secret in ("EDGECERT_ADMIN_TOKEN", "EDGECERT_SECRET_KEY", "EDGECERT_RELOAD_WEBHOOK_SECRET",
                       "EDGECERT_WEBHOOK_SECRET", "EDGECERT_DATABASE_URL"):
            env.pop(secret, None)
        try:
            proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", self.command or "true", env=env,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT,
                                                        stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            return HookResult(False, None, "", hostnames, f"reload command could not start: {e}")
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            await proc.wait()
            return HookResult(False, None, "", hostnames, f"reload command timed out after {self.timeout:g}s")
        text = out.decode(errors="replace")[-4000:]
        if proc.returncode != 0:
            return HookResult(False, proc.returncode, text, hostnames,
                              f"reload command exited {proc.returncode}: {text.strip()[-300:]}")
        return HookResult(True, 0, text, hostnames, None)
