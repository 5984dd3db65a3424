"""Test helpers: an ``edgecert serve`` subprocess with a tiny API client, openssl runners."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ADMIN_TOKEN = "test-admin-token-0123456789"
REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI but is not installed")
        pytest.skip(f"{name} is not installed")
    return path


def openssl_s_client(port: int, *, servername: str | None, cafile: str | None = None, verify_name: str | None = None,
                     host: str = "127.0.0.1", extra: list[str] | None = None, timeout: float = 20) -> str:
    cmd = ["openssl", "s_client", "-connect", f"{host}:{port}", "-showcerts"]
    if servername:
        cmd += ["-servername", servername]
    else:
        cmd += ["-noservername"]
    if cafile:
        cmd += ["-CAfile", cafile]
    if verify_name:
        cmd += ["-verify_hostname", verify_name, "-verify_return_error"]
    cmd += extra or []
    r = subprocess.run(cmd, input=b"", capture_output=True, timeout=timeout)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def served_leaf(port: int, servername: str | None, host: str = "127.0.0.1"):
    """The leaf certificate the server sends for ``servername`` (cryptography object)."""
    import ssl
    import socket
    from cryptography import x509
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=servername) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


class EdgeProcess:
    """``edgecert serve`` as a real subprocess on free ports, talking to the test Pebble and DNS."""

    def __init__(self, *, work_dir: Path, pebble, dns, env: dict[str, str] | None = None) -> None:
        from edge.demo.process import free_port
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.pebble = pebble
        self.dns = dns
        self.api_port = free_port()
        self.https_port = free_port()
        self.http_port = pebble.http_port
        self.env = {
            "EDGECERT_DATABASE_URL": f"sqlite:///{self.work_dir}/edgecert.db",
            "EDGECERT_STATE_DIR": str(self.work_dir / "state"),
            "EDGECERT_ACME_DIRECTORY": pebble.directory_url,
            "EDGECERT_ACME_CA_BUNDLE": pebble.ca_bundle,
            "EDGECERT_API_LISTEN": f"127.0.0.1:{self.api_port}",
            "EDGECERT_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "EDGECERT_HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "EDGECERT_DNS_RESOLVER": dns.dns_address,
            "EDGECERT_EDGE_TARGET": "edge.test",
            "EDGECERT_ADMIN_TOKEN": ADMIN_TOKEN,
            "EDGECERT_SWEEP_INTERVAL": "0.5",
            "EDGECERT_DNS_RECHECK_INITIAL": "1",
            "EDGECERT_DNS_RECHECK_MAX": "5",
            "EDGECERT_LOG_LEVEL": "DEBUG",
        }
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.work_dir / "serve.log"
        #: (name, listening socket) pairs handed to the process as systemd socket activation does (fds 3, 4, ...,
        #: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES); they stay open here, across restarts of the process.
        self.listen_sockets: list[tuple[str, Any]] = []

    def hand_over_sockets(self) -> "EdgeProcess":
        """Bind the three listeners' addresses here (as the service manager would) and hand them over at start."""
        import socket
        self.listen_sockets = []
        for name, port in (("api", self.api_port), ("http", self.http_port), ("https", self.https_port)):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(128)
            self.listen_sockets.append((name, s))
        return self

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 30) -> "EdgeProcess":
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "address already in use" not in str(e).lower() or attempt == 2:
                    raise
                self._new_ports()  # a port chosen by free_port() was taken meanwhile: try others
        return self

    def _new_ports(self) -> None:
        from edge.demo.process import free_port
        if self.env.get("EDGECERT_API_LISTEN") == f"127.0.0.1:{self.api_port}":
            self.api_port = free_port()
            self.env["EDGECERT_API_LISTEN"] = f"127.0.0.1:{self.api_port}"
        if self.env.get("EDGECERT_HTTPS_LISTEN") == f"127.0.0.1:{self.https_port}":
            self.https_port = free_port()
            self.env["EDGECERT_HTTPS_LISTEN"] = f"127.0.0.1:{self.https_port}"

    def _start(self, timeout: float) -> "EdgeProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
        env.update(self.env)
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "edge", "serve"]
        kw: dict[str, Any] = {}
        if self.listen_sockets:
            fds = [s.fileno() for _, s in self.listen_sockets]
            env["LISTEN_FDS"] = str(len(fds))
            env["LISTEN_FDNAMES"] = ":".join(n for n, _ in self.listen_sockets)
            cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *cmd]

            def place() -> None:  # in the child, before exec: the sockets at 3, 4, ... as systemd puts them
                for i, fd in enumerate([os.dup(fd) for fd in fds]):
                    os.dup2(fd, 3 + i)
            kw = {"preexec_fn": place, "pass_fds": tuple(range(3, 3 + len(fds)))}
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.work_dir, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, **kw)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgecert serve exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.api + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"edgecert serve did not become healthy:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> "EdgeProcess":
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN_TOKEN,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.api + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                b = r.read()
                ctype = r.headers.get("Content-Type", "")
                return r.status, (json.loads(b) if b and "json" in ctype else b.decode(errors="replace"))
        except urllib.error.HTTPError as e:
            b = e.read()
            try:
                return e.code, json.loads(b)
            except json.JSONDecodeError:
                return e.code, b.decode(errors="replace")

    def add_domain(self, hostname: str, tenant: str = "acme-corp", token: str | None = ADMIN_TOKEN) -> dict:
        st, body = self.call("POST", "/v1/domains", {"hostname": hostname, "tenant": tenant}, token=token)
        assert st == 201, (st, body)
        return body

    def domain(self, hostname: str, token: str | None = ADMIN_TOKEN) -> dict:
        st, body = self.call("GET", f"/v1/domains/{hostname}", token=token)
        assert st == 200, (st, body)
        return body

    def wait_status(self, hostname: str, statuses: str | tuple[str, ...], timeout: float = 60) -> dict:
        if isinstance(statuses, str):
            statuses = (statuses,)
        deadline = time.monotonic() + timeout
        d: dict = {}
        while time.monotonic() < deadline:
            d = self.domain(hostname)
            if d["status"] in statuses:
                return d
            time.sleep(0.2)
        raise AssertionError(f"{hostname} still {d.get('status')} ({d.get('last_error')}) after {timeout}s; "
                             f"wanted {statuses}\n{self.log_tail()}")

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition", interval: float = 0.2):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what} (last={last!r})\n{self.log_tail()}")

    def events(self, hostname: str) -> list[dict]:
        st, body = self.call("GET", f"/v1/domains/{hostname}/events?limit=1000")
        assert st == 200, (st, body)
        return body["events"]
