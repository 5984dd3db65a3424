"""Running a real local program for the demo and the tests: free ports, start, wait until it answers, stop.

Every failure raises :class:`DevEnvError` naming what failed, with the tail of the program's log."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


__all__ = ["DevEnvError", "ManagedProcess", "free_port", "port_range", "tail_log", "wait_for", "stop_process",
           "find_binary", "make_work_dir", "http_call", "address_in_use"]


class DevEnvError(RuntimeError):
    """A local component could not be started, did not answer, or refused a request."""


# --------------------------------------------------------------------------- helpers


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_rng = __import__("random").Random()


def port_range() -> tuple[int, int]:
    """Where :func:`free_port` draws from: 10000 up to the ephemeral range, or ``$EDGECERT_DEMO_PORT_RANGE``
    ("LO-HI", inclusive) when it names a valid part of that. Programs that start servers in parallel (the test
    suite's workers) give each a disjoint part, so two of them never draw the same port between the draw and the
    bind."""
    lo, _ = _ephemeral_range()
    bottom, top = 10000, max(lo - 1, 10001)
    want = os.environ.get("EDGECERT_DEMO_PORT_RANGE", "")
    try:
        a, b = (int(x) for x in want.split("-"))
    except ValueError:
        return bottom, top
    if bottom <= a < b <= top:
        return a, b
    return bottom, top


def free_port(*, host: str = "127.0.0.1", udp: bool = False) -> int:
    """Return a port on ``host`` that is free right now for TCP (and for UDP if ``udp``).

    Ports are drawn at random from *below* the kernel's ephemeral range (10000 up to it, or the part of that
    ``$EDGECERT_DEMO_PORT_RANGE`` names), so an outgoing connection of some client cannot take the port between
    this call and the server's bind (its source port comes from the ephemeral range). There is still a race with
    other callers drawing from the same range; the server classes here retry start-up on a fresh port when the
    program reports "address already in use".
    """
    bottom, top = port_range()
    for _ in range(200):
        port = _rng.randint(bottom, top)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, port))
            if udp:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((host, port))
        except OSError:
            continue
        return port
    for _ in range(50):  # fall back to the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not udp:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
        except OSError:
            continue
        return port
    raise DevEnvError(f"could not find a free {'TCP+UDP' if udp else 'TCP'} port on {host}")


def tail_log(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``check()`` until it returns True; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise DevEnvError(
                f"{what}: process exited with code {proc.returncode} before it was ready; "
                f"log {log}:\n{tail_log(log)}"
            )
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise DevEnvError(
                f"{what}: not ready after {timeout:.1f}s{detail}; log {log}:\n{tail_log(log)}"
            )
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL one child process (by its own pid only)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def find_binary(name: str, explicit: str | os.PathLike | None) -> str:
    if explicit is not None:
        p = Path(explicit)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        raise DevEnvError(f"{name}: {p} is not an executable file")
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not found:
        raise DevEnvError(
            f"{name} not found on PATH (on Debian/Ubuntu: apt-get install -y pebble)"
        )
    return found


def make_work_dir(work_dir: str | os.PathLike | None, prefix: str) -> Path:
    if work_dir is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    p = Path(work_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def http_call(
    method: str,
    url: str,
    *,
    body: Any = None,
    cafile: str | os.PathLike | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """Tiny stdlib HTTP(S) client: returns (status, body); never raises on HTTP errors."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    ctx = None
    if url.startswith("https:"):
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class ManagedProcess:
    """Common start/stop/log handling for one long-running child process."""

    _name = "process"

    def __init__(self, work_dir: Path, log_name: str) -> None:
        self.work_dir = work_dir
        self.log_path = work_dir / log_name
        self._proc: subprocess.Popen | None = None
        self._log_fh = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle
    def _spawn(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, *, drop_env_prefix: str | None = None
    ) -> subprocess.Popen:
        full_env = dict(os.environ)
        if drop_env_prefix:  # e.g. a PEBBLE_VA_ALWAYS_VALID in the caller's shell must not leak in
            full_env = {k: v for k, v in full_env.items() if not k.startswith(drop_env_prefix)}
        if env:
            full_env.update(env)
        # Append, so that the log of a failed attempt stays readable after a retry.
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self._log_fh.write(f"==== {_dt.datetime.now().isoformat()} {' '.join(argv)}\n".encode())
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(self.work_dir),
                # Same process group as the caller: a runner that kills its group on timeout
                # takes these along instead of leaving orphans listening on ports.
            )
        except OSError as exc:
            self._log_fh.close()
            self._log_fh = None
            raise DevEnvError(f"{self._name}: cannot execute {argv[0]}: {exc}") from exc
        self._proc = proc
        self._finalizer = weakref.finalize(self, stop_process, proc, 2.0)
        return proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout`` s). Idempotent."""
        proc, self._proc = self._proc, None
        stop_process(proc, timeout)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def log_text(self) -> str:
        """The whole captured log (stdout+stderr) so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return tail_log(self.log_path, lines)

    def _current_run_log(self) -> str:
        text = self.log_text()
        idx = text.rfind("\n==== ")
        return text[idx + 1 :] if idx >= 0 else text

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


def address_in_use(text: str) -> bool:
    return "address already in use" in text.lower()


# --------------------------------------------------------------------------- TLS
