"""Servers under test for the TLS-edge benchmark, and the /proc plumbing to watch them.

``ServerUnderTest`` is the seam: ``start(certs_dir, port, workers, cpu_list)`` launches the server
(pinned with ``taskset``), waits until it completes a verified TLS handshake, and returns the
process and the start-to-ready time; ``stop()`` ends it; ``rss()`` and ``cpu_seconds()`` read
its whole process tree (master + workers) from /proc.

Implementations: ``NginxServer`` (bench/nginx.py) and ``EdgeServer`` (here: runs
``bench/bench_serve.py``, whose contract is in bench/README.md).
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ServerUnderTest", "ServerError", "EdgeServer", "ProcTree", "wait_ready", "https_get", "free_port",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class ServerError(RuntimeError):
    """The server under test could not be started, or misbehaved."""


# --- /proc -----------------------------------------------------------------------------------

def _read_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds incl. reaped children) of one process, or None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] = state (field 3); utime = field 14 -> rest[11]
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, (utime + stime + cutime + cstime) / CLK_TCK


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcTree:
    """A root pid and all its live descendants (found by scanning /proc for ppid links)."""

    def __init__(self, root: int):
        self.root = root

    def pids(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            s = _read_stat(int(d))
            if s:
                children.setdefault(s[0], []).append(int(d))
        out, todo = [], [self.root]
        while todo:
            p = todo.pop()
            if Path(f"/proc/{p}").exists():
                out.append(p)
            todo.extend(children.get(p, []))
        return out

    def cpu(self) -> dict[int, float]:
        """CPU seconds per live pid (user+sys, including reaped children of each)."""
        res = {}
        for p in self.pids():
            s = _read_stat(p)
            if s:
                res[p] = s[1]
        return res

    def memory(self) -> dict:
        """Sums over the tree: VmHWM (peak RSS per process), VmRSS, and PSS (shared pages split)."""
        hwm = rss = pss = 0
        per = {}
        for p in self.pids():
            st = _status_kib(p, ("VmHWM", "VmRSS"))
            ps = _pss_kib(p)
            hwm += st.get("VmHWM", 0)
            rss += st.get("VmRSS", 0)
            pss += ps
            per[p] = {"hwm_kib": st.get("VmHWM", 0), "rss_kib": st.get("VmRSS", 0), "pss_kib": ps}
        return {"hwm_kib_sum": hwm, "rss_kib_sum": rss, "pss_kib_sum": pss, "processes": len(per), "per_pid": per}


# --- network helpers -------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _client_ctx(cafile: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else ssl.create_default_context()
    return ctx


def https_get(host: str, port: int, name: str, cafile: Path | None, timeout: float = 5.0) -> tuple[int, bytes, dict]:
    """One verified HTTPS GET / with SNI=name. Returns (status, body, tls-info). Raises on failure."""
    ctx = _client_ctx(cafile)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            info = {"version": s.version(), "cipher": s.cipher()[0], "reused": s.session_reused}
            s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].split()
    status = int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0
    return status, body, info


def wait_ready(proc: subprocess.Popen, host: str, port: int, name: str, cafile: Path | None,
               t0: float, timeout: float, log_path: Path | None = None) -> float:
    """Poll until a VERIFIED handshake for `name` succeeds; return seconds since t0.

    Verification (bench CA + hostname) makes "ready" mean "serves the right certificate for this
    name", not merely "port open"."""
    ctx = _client_ctx(cafile)
    deadline = t0 + timeout
    last_err = "no attempt"
    while True:
        if proc.poll() is not None:
            tail = ""
            if log_path and log_path.exists():
                tail = log_path.read_text(errors="replace")[-2000:]
            raise ServerError(f"server exited with {proc.returncode} before it was ready; log tail:\n{tail}")
        try:
            with socket.create_connection((host, port), timeout=2) as raw:
                with ctx.wrap_socket(raw, server_hostname=name):
                    return time.monotonic() - t0
        except (OSError, ssl.SSLError) as e:
            last_err = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise ServerError(f"not ready after {timeout:.0f} s (last error: {last_err})")
        time.sleep(0.01)


# --- the seam --------------------------------------------------------------------------------

@dataclass
class StartInfo:
    proc: subprocess.Popen
    ready_s: float
    command: list[str]
    run_dir: Path
    extra: dict = field(default_factory=dict)


class ServerUnderTest(abc.ABC):
    """A TLS server serving every OUT/live/<name>/ certificate, one per SNI name.

    Subclasses implement `command()` (and may override `prepare()` / `server_stats()`)."""

    label = "server"

    def __init__(self, run_root: Path, host: str = "127.0.0.1", ready_timeout: float = 900.0):
        self.run_root = Path(run_root)
        self.host = host
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.tree: ProcTree | None = None
        self.run_dir: Path | None = None
        self._log = None
        self._runs = 0

    # subclass hooks
    def prepare(self, certs_dir: Path, port: int, workers: int, run_dir: Path) -> None:
        """Write whatever config the server needs into run_dir (not timed)."""

    @abc.abstractmethod
    def command(self, certs_dir: Path, port: int, workers: int, run_dir: Path) -> list[str]:
        """The argv that starts the server in the foreground."""

    def server_stats(self) -> dict:
        """Server-side counters after stop(), e.g. {"connections": n, "resumed": m}. {} if unknown."""
        return {}

    def wait_warm(self, workers: int, timeout: float) -> float | None:
        """Block until the server has built everything it builds in the background; return seconds since exec
        (None: timed out). Default: a server that builds everything before it is ready (nginx) is warm at once."""
        return None

    # the seam
    def start(self, certs_dir: Path, port: int, workers: int, cpu_list: str | None,
              probe_name: str | None = None, cafile: Path | None = None) -> StartInfo:
        """Start pinned to cpu_list (taskset list, None = unpinned); return once a verified handshake
        for probe_name (default: the last name of certs_dir/names.txt) succeeds, checked against
        cafile (default: certs_dir/ca/root.pem). StartInfo.ready_s = exec -> that handshake."""
        certs_dir = Path(certs_dir)
        if probe_name is None:
            probe_name = (certs_dir / "names.txt").read_text().split()[-1]
        if cafile is None:
            cafile = certs_dir / "ca" / "root.pem"
        if self.proc is not None:
            raise ServerError(f"{self.label} already running")
        self._runs += 1
        run_dir = self.run_root / f"{self.label}-{os.getpid()}-{self._runs}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        self.run_dir = run_dir
        self.prepare(certs_dir, port, workers, run_dir)
        argv = self.command(certs_dir, port, workers, run_dir)
        if cpu_list:
            argv = ["taskset", "-c", cpu_list] + argv
        log_path = run_dir / "server.log"
        self._log = open(log_path, "wb")
        self._stdout_path = run_dir / "server.stdout"
        self._stdout = open(self._stdout_path, "wb")
        t0 = time.monotonic()
        self._t0 = t0
        try:
            self.proc = subprocess.Popen(argv, stdout=self._stdout, stderr=self._log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            raise ServerError(f"cannot start {self.label}: {argv[0]}: {e}") from e
        self.tree = ProcTree(self.proc.pid)
        try:
            ready = wait_ready(self.proc, self.host, port, probe_name, cafile, t0, self.ready_timeout, log_path)
        except BaseException:
            self.stop()
            raise
        return StartInfo(self.proc, ready, argv, run_dir)

    def stop(self, timeout: float = 15.0) -> dict:
        """SIGTERM, wait (then SIGKILL); return {"returncode", "stats"}."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.proc.wait()
            rc = self.proc.returncode
            self._reap_group(self.proc.pid)
            self.proc = None
        for f in (self._log, getattr(self, "_stdout", None)):
            if f:
                f.close()
        self._log = None
        return {"returncode": rc, "stats": self.server_stats()}

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """Workers orphaned by a master that exited first: the process group we started (setsid)."""
        for sig, pause in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            os.killpg(pgid, sig)
            end = time.monotonic() + pause
            while time.monotonic() < end:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def rss(self) -> dict:
        if self.tree is None:
            return {}
        return self.tree.memory()

    def cpu_seconds(self) -> dict[int, float]:
        if self.tree is None:
            return {}
        return self.tree.cpu()


# --- the edge --------------------------------------------------------------------------------

class EdgeServer(ServerUnderTest):
    """`bench/bench_serve.py --certs-dir DIR --listen 127.0.0.1:PORT --workers N`.

    Contract (see bench/README.md): serves HTTPS on PORT with the certificate of live/<SNI>/
    through the real edge code; answers any request with 200 "ok\\n" and closes when the client
    sent Connection: close; no session resumption; exits on SIGTERM; may print one JSON line
    {"bench_stats": {"connections": N, "resumed": M, ...}} on stdout when it exits."""

    label = "edge"

    def __init__(self, run_root: Path, edgecert: str, extra_args: list[str] | None = None, **kw):
        super().__init__(run_root, **kw)
        self.edgecert = edgecert
        # bench/bench_serve.py run by the interpreter of the edgecert install (the venv beside the executable)
        self.cmd = [str(Path(edgecert).parent / "python"), str(Path(__file__).resolve().parent / "bench_serve.py")]
        self.extra_args = list(extra_args or [])

    def check_available(self) -> None:
        """Raise ServerError with a clear message if `bench/bench_serve.py` does not exist (yet)."""
        exe = self.edgecert
        if os.sep in exe:
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                raise ServerError(f"edge: {exe} not found or not executable (is the project installed in that venv?)")
        elif shutil.which(exe) is None:
            raise ServerError(f"edge: `{exe}` not on PATH")
        try:
            p = subprocess.run([*self.cmd, "--help"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ServerError(f"edge: `{' '.join(self.cmd)} --help` failed: {e}") from e
        text = p.stdout + p.stderr
        missing = [a for a in ("--certs-dir", "--listen", "--workers") if a not in text]
        if p.returncode != 0 or missing:
            last = (text.strip().splitlines() or ["(no output)"])[-1]
            raise ServerError(
                "edge: the `bench/bench_serve.py` subcommand is not available yet "
                f"(`{' '.join(self.cmd)} --help` exited {p.returncode}: {last}"
                + (f"; its --help does not mention {', '.join(missing)}" if missing else "")
                + "). Its contract is in bench/README.md. Until it exists, run with --server nginx.")

    def prepare(self, certs_dir: Path, port: int, workers: int, run_dir: Path) -> None:
        """Import the certificates into the edge's store before the timed start (the first time only: ~30 s at
        100k), so that start-to-ready measures a restart of a loaded edge, not the one-off import."""
        r = subprocess.run([*self.cmd, "--certs-dir", str(certs_dir), "--import-if-missing"],
                           capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise ServerError(f"edge: importing {certs_dir} failed: {(r.stderr or r.stdout).strip()[-500:]}")

    def command(self, certs_dir: Path, port: int, workers: int, run_dir: Path) -> list[str]:
        return [*self.cmd, "--certs-dir", str(certs_dir),
                "--listen", f"{self.host}:{port}", "--workers", str(workers)] + self.extra_args

    def wait_warm(self, workers: int, timeout: float) -> float | None:
        """bench-serve's workers each log "prewarm complete" once their context LRU is full or every name is built."""
        if self.run_dir is None:
            return None
        log_path = self.run_dir / "server.log"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                n = log_path.read_text(errors="replace").count("prewarm complete")
            except OSError:
                n = 0
            if n >= workers:
                return time.monotonic() - self._t0
            if self.proc is not None and self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def server_stats(self) -> dict:
        try:
            lines = self._stdout_path.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        for line in reversed(lines):
            line = line.strip()
            if line.startswith("{") and "bench_stats" in line:
                try:
                    return dict(json.loads(line)["bench_stats"])
                except (ValueError, KeyError, TypeError):
                    pass
        return {}
