"""Real local components for the demo command (and the tests): Pebble and its DNS server.

One concern, in one module: starting, driving and reading the two test-CA programs (with what their
behaviour was found to be, below). PostgreSQL for the tests lives in ``tests/support/postgres.py``.

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

Both server classes are context managers (``with Pebble(...) as p:``) and also offer
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

import datetime as _dt
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edge.demo.process import (DevEnvError, ManagedProcess, address_in_use, find_binary, free_port, http_call,
                               make_work_dir, wait_for)


__all__ = [
    "DevEnvError",
    "TLSFiles",
    "free_port",
    "generate_local_ca",
    "ChallTestSrv",
    "Pebble",
]


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


class ChallTestSrv(ManagedProcess):
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
        super().__init__(make_work_dir(work_dir, "edgecert-challtestsrv-"), "challtestsrv.log")
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
        binary = find_binary("pebble-challtestsrv", self._binary)
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
                wait_for(
                    f"pebble-challtestsrv (dns {self.dns_address}, management {self.management_url})",
                    self._ready,
                    timeout=self.start_timeout,
                    proc=proc,
                    log=self.log_path,
                )
                return self
            except DevEnvError:
                retry = attempt + 1 < attempts and address_in_use(self._current_run_log())
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        import dns.message
        import dns.query

        status, _ = http_call("GET", self.management_url + "/dns-request-history", timeout=1.0)
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
            status, data = http_call("POST", self.management_url + path, body=dict(body))
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
        status, data = http_call("POST", self.management_url + "/dns-request-history",
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


class Pebble(ManagedProcess):
    """Pebble 2.4.0, the ACME test CA, on 127.0.0.1 with a generated TLS certificate.

    ``dns_server`` is a running :class:`ChallTestSrv` or a ``"host:port"`` string (passed
    as ``-dnsserver``); without one Pebble uses the system resolver.  ``http_port`` and
    ``tls_port`` are where Pebble's validator connects for HTTP-01 and TLS-ALPN-01.
    ``always_valid`` sets ``PEBBLE_VA_ALWAYS_VALID=1`` (no validation at all).
    ``authz_reuse_percent`` sets ``PEBBLE_AUTHZREUSE`` (Pebble's default is 50: half of the
    orders for an identifier the account already validated reuse that valid authz); pass 0
    for deterministic validation counts.  ``eab_keys`` (``{kid: base64url HMAC key}``) makes
    External Account Binding required.  ``env`` adds/overrides environment variables,
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
        eab_keys: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        binary: str | os.PathLike | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(make_work_dir(work_dir, "edgecert-pebble-"), "pebble.log")
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
        # External Account Binding: {kid: base64url HMAC key}; when given, newAccount requires EAB (as ZeroSSL and
        # Google Trust Services do).
        self.eab_keys = dict(eab_keys or {})
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
            "externalAccountBindingRequired": bool(self.eab_keys),
        }
        if self.eab_keys:
            cfg["externalAccountMACKeys"] = dict(self.eab_keys)
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
        binary = find_binary("pebble", self._binary)
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
                wait_for(
                    f"pebble (directory {self.directory_url}, management {self.management_url})",
                    self._ready,
                    timeout=self.start_timeout,
                    proc=proc,
                    log=self.log_path,
                )
                return self
            except DevEnvError:
                retry = attempt + 1 < attempts and address_in_use(self._current_run_log())
                self.stop()
                if not retry:
                    raise
        raise AssertionError("unreachable")

    def _ready(self) -> bool:
        status, body = http_call("GET", self.directory_url, cafile=self.ca_bundle, timeout=2.0)
        if status != 200 or b"newOrder" not in body:
            return False
        status, _ = http_call("GET", self.management_url + "/roots/0", cafile=self.ca_bundle, timeout=2.0)
        return status == 200

    # -- management API
    def _mgmt_get(self, path: str) -> tuple[int, bytes]:
        if not self.running:
            raise DevEnvError(f"pebble is not running (cannot GET {path})")
        try:
            return http_call("GET", self.management_url + path, cafile=self.ca_bundle)
        except OSError as exc:
            raise DevEnvError(f"pebble management GET {path} failed: {exc}; log:\n{self.log_tail()}") from exc

    def _mgmt_pem(self, path: str) -> str:
        status, body = self._mgmt_get(path)
        if status != 200:
            raise DevEnvError(f"pebble management GET {path} -> HTTP {status} {body[:200]!r}")
        return body.decode()

    def directory(self) -> dict:
        """The ACME directory JSON."""
        status, body = http_call("GET", self.directory_url, cafile=self.ca_bundle)
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
