"""Real local components for the demo command and the tests: Pebble, its DNS, PostgreSQL.

Nothing here is a mock: every class starts the real program (``pebble``,
``pebble-challtestsrv``, ``initdb``/``pg_ctl``), captures its output in a log file inside a
work directory, waits until it really answers (with a timeout), and stops it with
SIGTERM, then SIGKILL.  Every failure raises :class:`DevEnvError` naming what failed, with
the tail of the component's log.

Public API
==========

* :func:`free_port` -- a free TCP (optionally also UDP) port on 127.0.0.1.
* :func:`generate_local_ca` -> :class:`TLSFiles` -- a CA and a ``localhost`` server
  certificate (SAN ``DNS:localhost``, ``IP:127.0.0.1``, ``IP:::1``).
* :class:`ChallTestSrv` -- ``pebble-challtestsrv`` as the mock DNS server (HTTP-01,
  HTTPS-01 and TLS-ALPN-01 responders are disabled: the code under test answers those).
* :class:`Pebble` -- the ACME test CA, resolving names through a :class:`ChallTestSrv`.
* :class:`PostgresServer` -- a throwaway PostgreSQL cluster (or the server named by
  ``EDGECERT_TEST_DATABASE_URL``) with per-test databases.

All three server classes are context managers (``with Pebble(...) as p:``) and also offer
``start()`` / ``stop()``; ``stop()`` is idempotent and also runs at interpreter exit.

pebble-challtestsrv 2.4.0 DNS behaviour (checked with dnspython against the real binary)
=====================================================================================

* It is authoritative for every name and **never answers NXDOMAIN**.  Every answer carries
  a fake SOA (``challtestsrv.invalid.``) in the authority section.  Rcodes seen: NOERROR,
  SERVFAIL (``set_servfail``), NOTIMP (query types other than A, AAAA, CNAME, TXT, CAA,
  e.g. MX, NS, SOA).
* ``/add-a``, ``/add-aaaa`` and ``/add-caa`` **append** to the name's earlier mocks (use
  :meth:`ChallTestSrv.set_a` / :meth:`ChallTestSrv.set_aaaa` to replace); ``/set-cname``
  replaces the name's alias.
* **A**: the mocked addresses (``add_a``) or else the default IPv4 (127.0.0.1 here; change
  it with ``set_default_ipv4``).  With ``set_default_ipv4("")`` an unmocked name gets an
  empty NOERROR answer (NODATA; dnspython's resolver raises ``NoAnswer``).
* **AAAA**: mocked addresses (``add_aaaa``) or the default IPv6, which :class:`ChallTestSrv`
  disables (``-defaultIPv6 ""``), so unmocked names get NODATA.  (Pebble's validator asks
  AAAA before A and dials the first address it gets, so a mocked AAAA wins over the A.)
* **CNAME** (``set_cname(host, target)``): a CNAME query for ``host`` answers the single
  CNAME RR; a CNAME query for a name without a CNAME mock answers NODATA.  Any other query
  for ``host`` answers the CNAME RR *followed by* the target's records of the asked type
  (the target's mocked A or the default IPv4 for an A query; nothing for AAAA unless
  mocked).  The alias is followed exactly **one** level: a chain ``c -> b -> a`` answers
  ``c CNAME b`` plus b's own A records (mocked or default), never ``b CNAME a``.  For a
  query type it does not implement (MX...) the answer is NOTIMP but still carries the CNAME.
* **TXT**: ``set-txt`` *appends* a value (several values per name are possible) and keys
  the name **exactly as given**, without making it fully qualified, while every query name
  is fully qualified: a TXT mock stored without the trailing dot is never answered.  This
  module always sends the trailing dot, so :meth:`ChallTestSrv.set_txt` works.
* **SERVFAIL** (``set_servfail``) overrides every other mock for that name, for every
  query type (dnspython's resolver raises ``NoNameservers``).
* Names are matched **case-sensitively** (a mock for ``a.example.com`` does not answer
  ``A.EXAMPLE.COM``, which then gets the default address).  This module lower-cases and
  fully qualifies every name it sends to the management API.
* TTLs are 0.  All mocks live in memory until cleared or the process stops.

So, for "the domain does not point at the edge" tests: ``add_a(host, ["192.0.2.10"])``
(points elsewhere), ``set_cname(host, "elsewhere.example.net")`` with an A mock on the
target (CNAME elsewhere), ``set_default_ipv4("")`` (no A record at all, NOERROR/NODATA),
``set_servfail(host)`` (SERVFAIL).  A genuine NXDOMAIN cannot be produced.

Management API (POST, JSON body; 200 on success, 400 on a bad body, 404 unknown path):
``/add-a`` and ``/add-aaaa`` ``{"host", "addresses": [...]}``, ``/clear-a``,
``/clear-aaaa``, ``/clear-cname``, ``/clear-txt``, ``/set-servfail``, ``/clear-servfail``,
``/clear-caa`` ``{"host"}``, ``/set-cname`` ``{"host", "target"}``, ``/set-txt``
``{"host", "value"}``, ``/add-caa`` ``{"host", "policies": [{"tag", "value"}]}``,
``/set-default-ipv4`` / ``/set-default-ipv6`` ``{"ip"}`` (``""`` disables),
``/clear-request-history`` ``{"host", "type": "dns"}`` and ``/dns-request-history``
``{"host"}`` (history names have no trailing dot).

Pebble 2.4.0 log lines (stdout, prefix ``Pebble <date> <time> ``)
==================================================================

* per new order: ``Added order "<id>" to the db`` then ``There are now N orders in the db``
  (-> :meth:`Pebble.order_count`);
* per *new* authorization (not for a reused valid one; Pebble reuses a valid authz of the
  same account 50% of the time unless ``PEBBLE_AUTHZREUSE`` says otherwise):
  ``There are now N authorizations in the db`` (-> :meth:`Pebble.authz_count`);
* per issued certificate: ``Issued certificate serial <hex> for order <id>``
  (-> :meth:`Pebble.issued_count`, :meth:`Pebble.issued_serials`);
* per completed validation: ``authz <id> set VALID by completed challenge <id>`` or
  ``authz <id> set INVALID by completed challenge <id>`` (then ``order <id> set INVALID by
  invalid authz <id>``) (-> :meth:`Pebble.validation_count`); with
  ``PEBBLE_VA_ALWAYS_VALID`` also ``PEBBLE_VA_ALWAYS_VALID is enabled. Skipping real
  validation of challenge <id>`` three times (3 concurrent validations per challenge);
* per finalization: ``Order <id> is fully authorized. Processing finalization``;
* per new account: ``There are now N accounts in memory``;
* per request: ``<METHOD> <path pattern> -> calling handler()`` e.g.
  ``POST /order-plz -> calling handler()`` (-> :meth:`Pebble.request_count`);
* start-up: ``ACME directory available at: https://<listen>/dir`` (last start-up line).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "DevEnvError",
    "TLSFiles",
    "free_port",
    "generate_local_ca",
    "ChallTestSrv",
    "Pebble",
    "PostgresServer",
    "find_postgres_bin_dir",
    "TEST_DATABASE_URL_ENV",
]

TEST_DATABASE_URL_ENV = "EDGECERT_TEST_DATABASE_URL"


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


def free_port(*, host: str = "127.0.0.1", udp: bool = False) -> int:
    """Return a port on ``host`` that is free right now for TCP (and for UDP if ``udp``).

    Ports are drawn at random from *below* the kernel's ephemeral range (10000 up to it), so an outgoing
    connection of some client cannot take the port between this call and the server's bind (its source port comes
    from the ephemeral range). There is still a race with other callers; the server classes here retry start-up on
    a fresh port when the program reports "address already in use".
    """
    lo, _ = _ephemeral_range()
    top = max(lo - 1, 10001)
    for _ in range(200):
        port = _rng.randint(10000, top)
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


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _wait_for(
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
                f"log {log}:\n{_tail(log)}"
            )
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise DevEnvError(
                f"{what}: not ready after {timeout:.1f}s{detail}; log {log}:\n{_tail(log)}"
            )
        time.sleep(interval)


def _stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
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


def _find_binary(name: str, explicit: str | os.PathLike | None) -> str:
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


def _make_work_dir(work_dir: str | os.PathLike | None, prefix: str) -> Path:
    if work_dir is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    p = Path(work_dir)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _http(
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


class _ManagedProcess:
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
        self._finalizer = weakref.finalize(self, _stop_process, proc, 2.0)
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
        _stop_process(proc, timeout)
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
        return _tail(self.log_path, lines)

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


def _address_in_use(text: str) -> bool:
    return "address already in use" in text.lower()


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TLSFiles:
    """PEM files made by :func:`generate_local_ca`."""

    ca_pem: Path  #: the CA certificate: what a client must trust
    cert_pem: Path  #: the server certificate (leaf only)
    key_pem: Path  #: the server private key (PKCS#8, unencrypted)
    ca_key_pem: Path  #: the CA private key (to sign more certificates in tests)


def generate_local_ca(
    dir: str | os.PathLike,
    *,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
    prefix: str = "",
    common_name: str = "edgecert local test CA",
    valid_days: int = 365,
) -> TLSFiles:
    """Create a CA and a server certificate for ``localhost`` signed by it, in ``dir``.

    Files: ``{prefix}ca.pem``, ``{prefix}ca-key.pem``, ``{prefix}cert.pem``,
    ``{prefix}key.pem``.  Keys are ECDSA P-256.  The server certificate has SAN
    ``DNS:localhost, IP:127.0.0.1, IP:::1`` by default, EKU serverAuth, AKI/SKI (so it also
    passes strict X.509 verification).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    until = now + _dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cn = dns_names[0] if dns_names else (ip_addresses[0] if ip_addresses else "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def _key_bytes(k) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    files = TLSFiles(
        ca_pem=d / f"{prefix}ca.pem",
        cert_pem=d / f"{prefix}cert.pem",
        key_pem=d / f"{prefix}key.pem",
        ca_key_pem=d / f"{prefix}ca-key.pem",
    )
    files.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, k in ((files.key_pem, key), (files.ca_key_pem, ca_key)):
        path.write_bytes(_key_bytes(k))
        os.chmod(path, 0o600)
    return files


# --------------------------------------------------------------------------- challtestsrv


def _fqdn(host: str) -> str:
    host = host.strip().lower()
    if not host:
        raise ValueError("empty host name")
    return host if host.endswith(".") else host + "."


class ChallTestSrv(_ManagedProcess):
    """``pebble-challtestsrv`` as a mock DNS server on 127.0.0.1 (see the module docstring).

    Started as ``pebble-challtestsrv -dns01 127.0.0.1:<dns_port> -http01 "" -https01 ""
    -tlsalpn01 "" -management 127.0.0.1:<management_port> -defaultIPv4 <default_ipv4>
    -defaultIPv6 <default_ipv6>``.
    """

    _name = "pebble-challtestsrv"

    def __init__(
        self,
        *,
        work_dir: str | os.PathLike | None = None,
        dns_port: int | None = None,
        management_port: int | None = None,
        default_ipv4: str = "127.0.0.1",
        default_ipv6: str = "",
        binary: str | os.PathLike | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(_make_work_dir(work_dir, "edgecert-challtestsrv-"), "challtestsrv.log")
        self._fixed_dns_port = dns_port
        self._fixed_mgmt_port = management_port
        self.dns_port: int = dns_port or 0
        self.management_port: int = management_port or 0
        self.default_ipv4 = default_ipv4
        self.default_ipv6 = default_ipv6
        self._binary = binary
        self.start_timeout = start_timeout

    # -- addresses
    @property
    def dns_address(self) -> str:
        """``"127.0.0.1:PORT"``: what to pass to ``pebble -dnsserver``."""
        return f"127.0.0.1:{self.dns_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    # -- lifecycle
    def start(self) -> "ChallTestSrv":
        """Start the server and wait until both DNS (UDP) and the management API answer."""
        if self.running:
            return self
        binary = _find_binary("pebble-challtestsrv", self._binary)
        attempts = 1 if (self._fixed_dns_port and self._fixed_mgmt_port) else 4
        for attempt in range(attempts):
            self.dns_port = self._fixed_dns_port or free_port(udp=True)
            self.management_port = self._fixed_mgmt_port or free_port()
            argv = [
                binary,
                "-dns01", self.dns_address,
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"127.0.0.1:{self.management_port}",
                "-defaultIPv4", self.default_ipv4,
                "-defaultIPv6", self.default_ipv6,
            ]
            proc = self._spawn(argv)
            try:
                _wait_for(
                    f"pebble-challtestsrv (dns {self.dns_address}, management {self.management_url})",
                    self._ready,
                    timeout=self.start_timeout,
                    proc=proc,
                    log=self.log_path,
                )
                return self
            except DevEnvError:
                retry = attempt + 1 < attempts and _address_in_use(self._current_run_log())
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        import dns.message
        import dns.query

        status, _ = _http("GET", self.management_url + "/dns-request-history", timeout=1.0)
        if status >= 500:
            return False
        q = dns.message.make_query("readiness-probe.invalid.", "A")
        dns.query.udp(q, "127.0.0.1", port=self.dns_port, timeout=0.5)
        return True

    # -- management API
    def _post(self, path: str, body: Mapping[str, Any]) -> None:
        if not self.running:
            raise DevEnvError(f"pebble-challtestsrv is not running (cannot POST {path})")
        try:
            status, data = _http("POST", self.management_url + path, body=dict(body))
        except OSError as exc:
            raise DevEnvError(
                f"pebble-challtestsrv management POST {path} failed: {exc}; log:\n{self.log_tail()}"
            ) from exc
        if status != 200:
            raise DevEnvError(
                f"pebble-challtestsrv management POST {path} {json.dumps(dict(body))} -> HTTP "
                f"{status} {data.decode(errors='replace').strip()}"
            )

    @staticmethod
    def _addresses(addresses: str | Iterable[str], version: int) -> list[str]:
        if isinstance(addresses, str):
            addresses = [addresses]
        out = [str(a) for a in addresses]
        if not out:
            raise ValueError("no addresses given (use clear_a / clear_aaaa to remove mocks)")
        for a in out:
            if ipaddress.ip_address(a).version != version:
                # challtestsrv silently ignores addresses of the wrong family; fail loudly.
                raise ValueError(f"{a!r} is not an IPv{version} address")
        return out

    def add_a(self, host: str, addresses: str | Iterable[str]) -> None:
        """Add ``addresses`` to the A answer for ``host`` (challtestsrv *appends* to earlier
        A mocks of the name; see :meth:`set_a` to replace)."""
        self._post("/add-a", {"host": _fqdn(host), "addresses": self._addresses(addresses, 4)})

    def set_a(self, host: str, addresses: str | Iterable[str]) -> None:
        """Make the A answer for ``host`` exactly ``addresses`` (clear, then add)."""
        addrs = self._addresses(addresses, 4)
        self.clear_a(host)
        self.add_a(host, addrs)

    def clear_a(self, host: str) -> None:
        """Remove the A mock of ``host`` (it gets the default IPv4 again)."""
        self._post("/clear-a", {"host": _fqdn(host)})

    def add_aaaa(self, host: str, addresses: str | Iterable[str]) -> None:
        """Add ``addresses`` to the AAAA answer for ``host`` (appends, like :meth:`add_a`)."""
        self._post("/add-aaaa", {"host": _fqdn(host), "addresses": self._addresses(addresses, 6)})

    def set_aaaa(self, host: str, addresses: str | Iterable[str]) -> None:
        """Make the AAAA answer for ``host`` exactly ``addresses`` (clear, then add)."""
        addrs = self._addresses(addresses, 6)
        self.clear_aaaa(host)
        self.add_aaaa(host, addrs)

    def clear_aaaa(self, host: str) -> None:
        self._post("/clear-aaaa", {"host": _fqdn(host)})

    def set_cname(self, host: str, target: str) -> None:
        """Make ``host`` an alias of ``target`` (followed one level, see module docstring)."""
        self._post("/set-cname", {"host": _fqdn(host), "target": _fqdn(target)})

    def clear_cname(self, host: str) -> None:
        self._post("/clear-cname", {"host": _fqdn(host)})

    def add_txt(self, host: str, value: str) -> None:
        """Add one more TXT value for ``host`` (challtestsrv's ``/set-txt`` appends)."""
        self._post("/set-txt", {"host": _fqdn(host), "value": value})

    def set_txt(self, host: str, value: str | Iterable[str]) -> None:
        """Make the TXT answer for ``host`` exactly ``value`` (one string or several)."""
        values = [value] if isinstance(value, str) else list(value)
        self.clear_txt(host)
        for v in values:
            self.add_txt(host, v)

    def clear_txt(self, host: str) -> None:
        self._post("/clear-txt", {"host": _fqdn(host)})

    def add_caa(self, host: str, policies: Iterable[Mapping[str, str]]) -> None:
        """CAA records, e.g. ``[{"tag": "issue", "value": "letsencrypt.org"}]``."""
        self._post("/add-caa", {"host": _fqdn(host), "policies": [dict(p) for p in policies]})

    def clear_caa(self, host: str) -> None:
        self._post("/clear-caa", {"host": _fqdn(host)})

    def set_servfail(self, host: str) -> None:
        """Answer SERVFAIL for every query about ``host`` (overrides all other mocks)."""
        self._post("/set-servfail", {"host": _fqdn(host)})

    def clear_servfail(self, host: str) -> None:
        self._post("/clear-servfail", {"host": _fqdn(host)})

    def set_default_ipv4(self, ip: str) -> None:
        """Address for A queries of unmocked names; ``""`` -> such names get NODATA."""
        if ip:
            self._addresses([ip], 4)
        self._post("/set-default-ipv4", {"ip": ip})
        self.default_ipv4 = ip

    def set_default_ipv6(self, ip: str) -> None:
        """Address for AAAA queries of unmocked names; ``""`` -> such names get NODATA."""
        if ip:
            self._addresses([ip], 6)
        self._post("/set-default-ipv6", {"ip": ip})
        self.default_ipv6 = ip

    def dns_request_history(self, host: str) -> list[dict]:
        """The DNS questions challtestsrv received for ``host``, oldest first, as
        ``{"Question": {"Name", "Qtype", "Qclass"}}`` (history is keyed by the query name
        exactly as asked, without the trailing dot)."""
        status, data = _http("POST", self.management_url + "/dns-request-history",
                             body={"host": host.rstrip(".")})
        if status != 200:
            raise DevEnvError(f"dns-request-history -> HTTP {status} {data[:200]!r}")
        return json.loads(data or b"[]") or []

    def clear_request_history(self, host: str) -> None:
        """Forget the DNS questions received for ``host``."""
        self._post("/clear-request-history", {"host": host.rstrip("."), "type": "dns"})

    def resolver(self, *, timeout: float = 2.0):
        """A ``dns.resolver.Resolver`` that asks only this server (no caching)."""
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.dns_port
        r.timeout = timeout
        r.lifetime = timeout
        r.cache = None
        return r


# --------------------------------------------------------------------------- Pebble

_ORDER_RE = re.compile(r'Added order "?([^"\s]+)"? to the db')
_ISSUED_RE = re.compile(r"Issued certificate serial ([0-9a-fA-F]+) for order (\S+)")
_AUTHZ_RE = re.compile(r"There are now \d+ authorizations in the db")
_ACCOUNT_RE = re.compile(r"There are now \d+ accounts in memory")
_AUTHZ_DONE_RE = re.compile(r"authz \S+ set (VALID|INVALID) by completed challenge")
_REQUEST_RE = re.compile(r"\b(GET|HEAD|POST) (/\S*) -> calling handler\(\)")


class Pebble(_ManagedProcess):
    """Pebble 2.4.0, the ACME test CA, on 127.0.0.1 with a generated TLS certificate.

    ``dns_server`` is a running :class:`ChallTestSrv` or a ``"host:port"`` string (passed
    as ``-dnsserver``); without one Pebble uses the system resolver.  ``http_port`` and
    ``tls_port`` are where Pebble's validator connects for HTTP-01 and TLS-ALPN-01.
    ``always_valid`` sets ``PEBBLE_VA_ALWAYS_VALID=1`` (no validation at all).
    ``authz_reuse_percent`` sets ``PEBBLE_AUTHZREUSE`` (Pebble's default is 50: half of the
    orders for an identifier the account already validated reuse that valid authz); pass 0
    for deterministic validation counts.  ``env`` adds/overrides environment variables,
    e.g. ``{"PEBBLE_CHAIN_LENGTH": "2"}``.  Always set: ``PEBBLE_VA_NOSLEEP=1`` and
    ``PEBBLE_WFE_NONCEREJECT=0`` (override through ``env`` if wanted); ``PEBBLE_*``
    variables of the calling environment are not passed on.  ``tls``: Pebble's HTTPS
    certificate (default: :func:`generate_local_ca` in ``work_dir/tls``).  Pebble generates
    a new root CA at every start.
    """

    _name = "pebble"

    def __init__(
        self,
        *,
        dns_server: "ChallTestSrv | str | None" = None,
        work_dir: str | os.PathLike | None = None,
        port: int | None = None,
        management_port: int | None = None,
        http_port: int = 5002,
        tls_port: int = 5001,
        certificate_validity_period: int | None = None,
        domain_blocklist: Sequence[str] | None = None,
        always_valid: bool = False,
        authz_reuse_percent: int | None = None,
        env: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        binary: str | os.PathLike | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(_make_work_dir(work_dir, "edgecert-pebble-"), "pebble.log")
        self._dns_server = dns_server
        self._fixed_port = port
        self._fixed_mport = management_port
        self.port: int = port or 0
        self.management_port: int = management_port or 0
        self.http_port = http_port
        self.tls_port = tls_port
        self.certificate_validity_period = certificate_validity_period
        self.domain_blocklist = list(domain_blocklist or [])
        self.always_valid = always_valid
        self.authz_reuse_percent = authz_reuse_percent
        self.extra_env = dict(env or {})
        self._tls = tls
        self._binary = binary
        self.start_timeout = start_timeout
        self.config_path = self.work_dir / "pebble-config.json"

    # -- addresses / files
    @property
    def tls(self) -> TLSFiles:
        """The TLS files Pebble serves with (generated on first use)."""
        if self._tls is None:
            self._tls = generate_local_ca(self.work_dir / "tls")
        return self._tls

    @property
    def ca_bundle(self) -> str:
        """Path of the CA that signs Pebble's own HTTPS certificate: what a client trusts."""
        return str(self.tls.ca_pem)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    @property
    def dns_address(self) -> str | None:
        if isinstance(self._dns_server, ChallTestSrv):
            return self._dns_server.dns_address
        return self._dns_server

    def _env(self) -> dict[str, str]:
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        if self.always_valid:
            env["PEBBLE_VA_ALWAYS_VALID"] = "1"
        if self.authz_reuse_percent is not None:
            env["PEBBLE_AUTHZREUSE"] = str(int(self.authz_reuse_percent))
        env.update(self.extra_env)
        return env

    def _write_config(self) -> None:
        cfg: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.tls.cert_pem),
            "privateKey": str(self.tls.key_pem),
            "httpPort": int(self.http_port),
            "tlsPort": int(self.tls_port),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.certificate_validity_period is not None:
            cfg["certificateValidityPeriod"] = int(self.certificate_validity_period)
        if self.domain_blocklist:
            cfg["domainBlocklist"] = list(self.domain_blocklist)
        self.config_path.write_text(json.dumps({"pebble": cfg}, indent=2))

    # -- lifecycle
    def start(self) -> "Pebble":
        """Write the config, start Pebble, wait until the directory and management answer."""
        if self.running:
            return self
        binary = _find_binary("pebble", self._binary)
        if isinstance(self._dns_server, ChallTestSrv) and not self._dns_server.running:
            raise DevEnvError("pebble: the ChallTestSrv given as dns_server is not running")
        attempts = 1 if (self._fixed_port and self._fixed_mport) else 4
        for attempt in range(attempts):
            self.port = self._fixed_port or free_port()
            self.management_port = self._fixed_mport or free_port()
            self._write_config()
            argv = [binary, "-config", str(self.config_path)]
            if self.dns_address:
                argv += ["-dnsserver", self.dns_address]
            proc = self._spawn(argv, env=self._env(), drop_env_prefix="PEBBLE_")
            try:
                _wait_for(
                    f"pebble (directory {self.directory_url}, management {self.management_url})",
                    self._ready,
                    timeout=self.start_timeout,
                    proc=proc,
                    log=self.log_path,
                )
                return self
            except DevEnvError:
                retry = attempt + 1 < attempts and _address_in_use(self._current_run_log())
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        status, body = _http("GET", self.directory_url, cafile=self.ca_bundle, timeout=2.0)
        if status != 200 or b"newOrder" not in body:
            return False
        status, _ = _http("GET", self.management_url + "/roots/0", cafile=self.ca_bundle, timeout=2.0)
        return status == 200

    # -- management API
    def _mgmt_get(self, path: str) -> tuple[int, bytes]:
        if not self.running:
            raise DevEnvError(f"pebble is not running (cannot GET {path})")
        try:
            return _http("GET", self.management_url + path, cafile=self.ca_bundle)
        except OSError as exc:
            raise DevEnvError(f"pebble management GET {path} failed: {exc}; log:\n{self.log_tail()}") from exc

    def _mgmt_pem(self, path: str) -> str:
        status, body = self._mgmt_get(path)
        if status != 200:
            raise DevEnvError(f"pebble management GET {path} -> HTTP {status} {body[:200]!r}")
        return body.decode()

    def directory(self) -> dict:
        """The ACME directory JSON."""
        status, body = _http("GET", self.directory_url, cafile=self.ca_bundle)
        if status != 200:
            raise DevEnvError(f"pebble GET {self.directory_url} -> HTTP {status}")
        return json.loads(body)

    def root_pem(self, index: int = 0) -> str:
        """The root certificate (PEM) that issued certificates chain to (``/roots/<index>``).

        Pebble makes a new root at every start: fetch it after :meth:`start`.
        """
        return self._mgmt_pem(f"/roots/{index}")

    def intermediate_pem(self, index: int = 0) -> str:
        """The intermediate that signs end-entity certificates (``/intermediates/<index>``)."""
        return self._mgmt_pem(f"/intermediates/{index}")

    def write_roots(self, path: str | os.PathLike, *, include_intermediate: bool = False) -> Path:
        """Write the issuing root (optionally + the intermediate) to ``path``; return it."""
        text = self.root_pem()
        if include_intermediate:
            text = text.rstrip("\n") + "\n" + self.intermediate_pem()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def cert_status(self, serial_hex: str | int) -> dict | None:
        """``/cert-status-by-serial/<hex>``: ``{"Status": "Valid"|"Revoked", "Serial",
        "Certificate", "Reason"?, "RevokedAt"?}``, or None if Pebble never issued it."""
        if isinstance(serial_hex, int):
            serial_hex = format(serial_hex, "x")
        serial_hex = serial_hex.lower().removeprefix("0x").replace(":", "")
        status, body = self._mgmt_get(f"/cert-status-by-serial/{serial_hex}")
        if status == 404:
            return None
        if status != 200:
            raise DevEnvError(f"pebble cert-status-by-serial/{serial_hex} -> HTTP {status} {body[:200]!r}")
        return json.loads(body)

    # -- counting from the log (only the current run's log is considered)
    def _lines(self) -> list[str]:
        return self._current_run_log().splitlines()

    def order_count(self) -> int:
        """How many new orders Pebble created (``Added order ... to the db``)."""
        return sum(1 for line in self._lines() if _ORDER_RE.search(line))

    def issued_count(self) -> int:
        """How many certificates Pebble issued (``Issued certificate serial ...``)."""
        return sum(1 for line in self._lines() if _ISSUED_RE.search(line))

    def issued_serials(self) -> list[str]:
        """Hex serials of issued certificates, in order (as Pebble prints them)."""
        return [m.group(1).lower() for line in self._lines() if (m := _ISSUED_RE.search(line))]

    def authz_count(self) -> int:
        """How many new (not reused) authorizations Pebble created."""
        return sum(1 for line in self._lines() if _AUTHZ_RE.search(line))

    def validation_count(self, result: str | None = None) -> int:
        """How many authorizations a challenge validation completed (``authz <id> set
        VALID|INVALID by completed challenge``), optionally only ``"valid"``/``"invalid"``."""
        want = result.upper() if result else None
        return sum(
            1 for line in self._lines()
            if (m := _AUTHZ_DONE_RE.search(line)) and (want is None or m.group(1) == want)
        )

    def account_count(self) -> int:
        """How many newAccount requests created an account."""
        return sum(1 for line in self._lines() if _ACCOUNT_RE.search(line))

    def request_count(self, path: str | None = None, *, method: str | None = None) -> int:
        """Requests Pebble handled, optionally only those whose route pattern starts with
        ``path`` (e.g. ``"/order-plz"``, ``"/chalZ/"``) and/or with ``method``."""
        n = 0
        for line in self._lines():
            m = _REQUEST_RE.search(line)
            if not m:
                continue
            if method and m.group(1) != method.upper():
                continue
            if path and not m.group(2).startswith(path):
                continue
            n += 1
        return n


# --------------------------------------------------------------------------- PostgreSQL


def find_postgres_bin_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Find a directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Order: ``explicit``; ``$EDGECERT_PG_BIN``; ``initdb`` on PATH; ``pg_config --bindir``;
    the newest ``/usr/lib/postgresql/<ver>/bin`` (Debian/Ubuntu); ``/usr/pgsql-<ver>/bin``
    (RHEL); ``/usr/local/pgsql/bin``; Homebrew's ``/opt/homebrew/opt/postgresql*/bin``.
    """
    needed = ("initdb", "pg_ctl", "postgres")

    def ok(d: Path) -> bool:
        return all(os.access(d / n, os.X_OK) for n in needed)

    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("EDGECERT_PG_BIN"):
        candidates.append(Path(os.environ["EDGECERT_PG_BIN"]))
    if explicit or os.environ.get("EDGECERT_PG_BIN"):
        for d in candidates:
            if ok(d):
                return d
        raise DevEnvError(f"PostgreSQL: {candidates[0]} lacks one of {needed}")
    w = shutil.which("initdb")
    if w:
        candidates.append(Path(w).parent)
        candidates.append(Path(os.path.realpath(w)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(Exception):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version_key(p: Path) -> tuple:
        nums = re.findall(r"\d+", p.as_posix())
        return tuple(int(n) for n in nums) if nums else (0,)

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql*/bin",
                    "/usr/local/opt/postgresql*/bin"):
        import glob

        candidates += sorted((Path(p) for p in glob.glob(pattern)), key=version_key, reverse=True)
    candidates += [Path("/usr/local/pgsql/bin"), Path("/usr/bin")]
    for d in candidates:
        if ok(d):
            return d
    raise DevEnvError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; on Debian/Ubuntu: "
        "apt-get install -y postgresql (they land in /usr/lib/postgresql/<ver>/bin), or set "
        "EDGECERT_PG_BIN, or set EDGECERT_TEST_DATABASE_URL to use an existing server"
    )


def _to_sqlalchemy_url(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    u = u.set(drivername="postgresql+psycopg")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _to_libpq_url(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServer:
    """A PostgreSQL server for tests: a throwaway cluster, or an existing one.

    ``PostgresServer.for_tests(work_dir)`` uses ``$EDGECERT_TEST_DATABASE_URL`` if set
    (never stopped by us), otherwise creates a cluster with ``initdb`` in ``work_dir`` and
    starts it with ``pg_ctl`` on a free 127.0.0.1 port: trust authentication, superuser
    ``postgres``, Unix socket in the cluster directory, fsync off.  When running as root
    (initdb/postgres refuse to), the cluster runs as the ``postgres`` system user (created
    with ``useradd --system`` if missing) via ``runuser``/``setpriv``; if that user cannot
    reach ``work_dir`` (e.g. pytest's 0700 temp root), the cluster goes into a private
    directory under the system temp dir instead, removed again by :meth:`stop`.

    ``url`` is the SQLAlchemy URL (``postgresql+psycopg://...``) of the maintenance
    database ``postgres``; :meth:`create_database` gives a fresh database's URL.
    """

    def __init__(
        self,
        *,
        work_dir: str | os.PathLike | None = None,
        port: int | None = None,
        bin_dir: str | os.PathLike | None = None,
        url: str | None = None,
        run_as: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.work_dir = _make_work_dir(work_dir, "edgecert-pg-")
        self.external = url is not None
        self._url = _to_sqlalchemy_url(url) if url else None
        self._fixed_port = port
        self.port = port or 0
        self._bin_dir = bin_dir
        self._run_as = run_as
        self.start_timeout = start_timeout
        self.cluster_dir: Path | None = None
        self._owned_tmp: Path | None = None
        self._started = False
        self._created: set[str] = set()
        self._finalizer: weakref.finalize | None = None

    # -- construction for tests
    @classmethod
    def for_tests(
        cls, work_dir: str | os.PathLike, *, env_var: str = TEST_DATABASE_URL_ENV, **kwargs: Any
    ) -> "PostgresServer":
        """A started server: the one in ``$EDGECERT_TEST_DATABASE_URL`` if set, else a
        throwaway cluster in ``work_dir``.  Call :meth:`stop` when done (or use ``with``)."""
        url = os.environ.get(env_var, "").strip()
        server = cls(work_dir=work_dir, url=url or None, **kwargs)
        return server.start()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the maintenance database (``postgresql+psycopg://...``)."""
        if self._url is None:
            raise DevEnvError("PostgresServer is not started")
        return self._url

    @property
    def log_path(self) -> Path | None:
        return self.cluster_dir / "postgres.log" if self.cluster_dir else None

    # -- lifecycle
    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "PostgresServer":
        if self._started:
            return self
        if self.external:
            self._check_connect(self.url, what=f"${TEST_DATABASE_URL_ENV}")
            self._started = True
            return self
        bin_dir = find_postgres_bin_dir(self._bin_dir)
        user = self._pick_user()
        self.cluster_dir = self._make_cluster_dir(user)
        data = self.cluster_dir / "data"
        sock = self.cluster_dir / "sock"
        sock.mkdir(exist_ok=True)
        self._chown(self.cluster_dir, user)
        self._run(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--locale=C", "--no-sync"], what="initdb", timeout=120)
        pg_ctl = str(bin_dir / "pg_ctl")
        attempts = 1 if self._fixed_port else 4
        for attempt in range(attempts):
            self.port = self._fixed_port or free_port()
            conf = (
                "\n# edgecert devenv\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{sock}'\n"
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
            (data / "postgresql.auto.conf").write_text(conf)
            self._chown(data / "postgresql.auto.conf", user)
            try:
                self._run(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.log_path),
                                 "-w", "-t", str(int(self.start_timeout)), "start"],
                          what="pg_ctl start", timeout=self.start_timeout + 10)
                break
            except DevEnvError:
                # pg_ctl -w may give up while the postmaster still runs: make sure it is gone.
                _pg_stop(pg_ctl, str(data), user, None)
                log = _tail(self.log_path, 200)
                if attempt + 1 < attempts and ("could not bind" in log or "already in use" in log.lower()):
                    continue
                raise
        self._url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._started = True
        self._finalizer = weakref.finalize(
            self, _pg_stop, pg_ctl, str(data), user, self._owned_tmp, self.work_dir
        )
        self._bin = bin_dir
        self._user = user
        self._check_connect(self.url, what="throwaway PostgreSQL")
        return self

    def stop(self) -> None:
        """Stop the throwaway cluster (fast shutdown, then SIGKILL); no-op for an external one."""
        if not self._started:
            return
        self._started = False
        if self.external:
            return
        if self._finalizer is not None:
            self._finalizer()  # runs _pg_stop once
            self._finalizer = None

    # -- databases
    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its ``postgresql+psycopg://`` URL."""
        import psycopg

        if name is None:
            name = f"edgecert_test_{os.getpid()}_{int(time.time() * 1000) % 10**9}_{len(self._created)}"
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME_RE.pattern}")
        with psycopg.connect(_to_libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.add(name)
        return _to_sqlalchemy_url(self.url, name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database (by name or by the URL :meth:`create_database` returned)."""
        import psycopg

        name = name_or_url
        if "://" in name_or_url:
            from sqlalchemy.engine import make_url

            name = make_url(name_or_url).database or ""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"bad database name {name!r}")
        with psycopg.connect(_to_libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # PostgreSQL >= 13
            except psycopg.errors.SyntaxError:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self._created.discard(name)

    # -- internals
    @staticmethod
    def _check_connect(url: str, *, what: str) -> None:
        import psycopg

        try:
            with psycopg.connect(_to_libpq_url(url), connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            raise DevEnvError(f"{what}: cannot connect to {url}: {exc}") from exc

    def _pick_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        user = self._run_as or "postgres"
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            res = subprocess.run(
                [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", user],
                capture_output=True, text=True,
            )
            if res.returncode != 0:
                raise DevEnvError(f"PostgreSQL: cannot create system user {user!r} to run the "
                                  f"cluster as (we are root): {res.stderr.strip()}")
        return user

    def _as_user(self, user: str | None, argv: list[str]) -> list[str]:
        if user is None:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if os.access(runuser, os.X_OK):
            return [runuser, "-u", user, "--", *argv]
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
        raise DevEnvError("PostgreSQL: running as root but neither runuser nor setpriv is available")

    def _user_can_use(self, user: str, path: Path) -> bool:
        res = subprocess.run(self._as_user(user, ["test", "-w", str(path), "-a", "-x", str(path)]),
                             capture_output=True)
        return res.returncode == 0

    def _make_cluster_dir(self, user: str | None) -> Path:
        # Unix socket paths are limited to ~107 bytes: keep the directory short.
        candidate = self.work_dir / "pg"
        n = 1
        while candidate.exists() and any(candidate.iterdir()):  # an earlier cluster's leftovers
            candidate = self.work_dir / f"pg-{n}"
            n += 1
        sock_path_len = len(str(candidate / "sock" / ".s.PGSQL.65535"))
        if user is None and sock_path_len < 100:
            candidate.mkdir(parents=True, exist_ok=True)
            return candidate
        if user is not None and sock_path_len < 100:
            candidate.mkdir(parents=True, exist_ok=True)
            if not any(candidate.iterdir()):
                self._chown(candidate, user)
                if self._user_can_use(user, candidate):
                    return candidate
            with contextlib.suppress(OSError):
                candidate.rmdir()
        d = Path(tempfile.mkdtemp(prefix="edgecert-pg-"))
        self._owned_tmp = d
        # Leave a pointer in the work dir so the logs are easy to find.
        with contextlib.suppress(OSError):
            (self.work_dir / "pg-cluster-dir").write_text(str(d) + "\n")
        return d

    @staticmethod
    def _chown(path: Path, user: str | None) -> None:
        if user is None:
            return
        shutil.chown(path, user, user if _group_exists(user) else None)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                for n in dirs + files:
                    with contextlib.suppress(OSError):
                        shutil.chown(os.path.join(root, n), user, user if _group_exists(user) else None)

    def _run(self, user: str | None, argv: list[str], *, what: str, timeout: float) -> None:
        cmd = self._as_user(user, argv)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 cwd=str(self.cluster_dir), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise DevEnvError(f"PostgreSQL {what} timed out after {timeout}s; log:\n{_tail(self.log_path)}") from exc
        if res.returncode != 0:
            raise DevEnvError(
                f"PostgreSQL {what} failed (exit {res.returncode}): {' '.join(cmd)}\n"
                f"{(res.stdout + res.stderr).strip()[-3000:]}\nserver log {self.log_path}:\n{_tail(self.log_path)}"
            )


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _pg_stop(
    pg_ctl: str, data: str, user: str | None, owned_tmp: Path | None, keep_log_in: Path | None = None
) -> None:
    """Stop a cluster started by PostgresServer (also run at interpreter exit)."""
    argv = [pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "20", "stop"]
    if user is not None:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        argv = [runuser, "-u", user, "--", *argv] if os.access(runuser, os.X_OK) else \
            [shutil.which("setpriv") or "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=30, cwd="/", stdin=subprocess.DEVNULL)
        ok = res.returncode == 0
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        # Kill the postmaster we started, by the pid it recorded.
        pidfile = Path(data) / "postmaster.pid"
        with contextlib.suppress(Exception):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
    if owned_tmp is not None:
        if keep_log_in is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(Path(owned_tmp) / "postgres.log", Path(keep_log_in) / "postgres.log")
        shutil.rmtree(owned_tmp, ignore_errors=True)
