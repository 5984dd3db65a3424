"""A small fault-injecting ACME reverse proxy in front of a real Pebble.

Pebble 2.4.0 has no ARI (RFC 9773 ``renewalInfo``), no rate limits, never answers 429 or
``Retry-After``.  :class:`AcmeProxy` adds exactly that around the real server, for tests:

* every request is forwarded to the upstream ACME server unchanged -- method, raw path and
  query, body, and the **Host header as the client sent it**.  Pebble builds every URL it
  returns (directory, ``Location``, ``Link``, order/authz/challenge/certificate URLs in
  bodies) from the request's Host header and checks the JWS protected header ``url``
  against ``https://<Host><RequestURI>``; so with the Host forwarded, all URLs point at the
  proxy and the JWS ``url`` the client signed (the proxy's URL) matches.  No body or header
  rewriting is needed (verified end to end in ``tests/test_acmeproxy.py``).
* the directory gains ``"renewalInfo": "https://<proxy>/renewal-info"`` and
  ``GET /renewal-info/<certID>`` answers ``{"suggestedWindow": {"start", "end"}}`` (RFC
  3339) with a ``Retry-After`` header.  certID = base64url(AKI keyIdentifier) "." +
  base64url(serial DER content octets) (RFC 9773 section 4.1).  The proxy learns each
  certificate's serial, notBefore and notAfter from the certificate downloads passing
  through it (and, if given ``upstream_management_url``, asks Pebble's management API
  ``/cert-status-by-serial/<hex>`` about unknown serials).  Windows come from
  :meth:`AcmeProxy.set_renewal_window` (per certificate) or the ``default_window``
  function (default :func:`normal_window`: from 2/3 to 3/4 of the lifetime); helpers
  :func:`renew_now_window` ("start now, end in N seconds") and :func:`fixed_window`.
* faults: ``proxy.inject(kind="newOrder", status=429, retry_after=7, times=1)`` answers the
  next matching request itself with an RFC 7807 ``application/problem+json`` body
  (default type ``urn:ietf:params:acme:error:rateLimited`` for 429,
  ``...:serverInternal`` otherwise), ``Retry-After`` if asked, a ``Link: <dir>;rel="index"``
  and a fresh ``Replay-Nonce`` fetched from the upstream (so the client's nonce pool keeps
  working).  Kinds: see :data:`KINDS`.
* it records every request (monotonic time, UTC wall time, kind, method, path, status,
  injected or not, the ``replaces`` field of newOrder payloads), so tests can assert that a
  client waited as told.

Use it in-process (``await proxy.start()`` / ``await proxy.stop()`` in the running event
loop), in a background thread with its own loop (:class:`ProxyThread`, the usual way in
tests: the synchronous ``acme`` client or an ``edgecert serve`` subprocess talks to it), or
as a command::

    python -m tests.support.acmeproxy --upstream https://127.0.0.1:14000 --upstream-ca ca.pem \
        --listen 127.0.0.1:14443 --cert cert.pem --key key.pem [--inject newOrder:429:7:1]

All state-reading and fault-setting methods are thread-safe.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import datetime as _dt
import json
import os
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from acme_client.keys import ari_cert_id, parse_ari_cert_id

__all__ = [
    "KINDS",
    "AcmeProxy",
    "ProxyThread",
    "FaultRule",
    "RequestRecord",
    "CertInfo",
    "cert_id",
    "parse_cert_id",
    "normal_window",
    "renew_now_window",
    "fixed_window",
    "classify",
    "main",
]

UTC = _dt.timezone.utc

#: Request kinds the proxy distinguishes (for counting and for :meth:`AcmeProxy.inject`).
KINDS = (
    "directory", "newNonce", "newAccount", "account", "newOrder", "order", "authz",
    "challenge", "finalize", "certificate", "revokeCert", "keyChange", "orders",
    "renewalInfo", "other",
)

# Pebble's fixed routes (wfe/wfe.go); top-level ones are also learned from the directory.
_EXACT_PATHS = {
    "/dir": "directory",
    "/directory": "directory",
    "/nonce-plz": "newNonce",
    "/sign-me-up": "newAccount",
    "/order-plz": "newOrder",
    "/revoke-cert": "revokeCert",
    "/rollover-account-key": "keyChange",
}
_PREFIX_PATHS = (
    ("/my-account/", "account"),
    ("/my-order/", "order"),
    ("/finalize-order/", "finalize"),
    ("/authZ/", "authz"),
    ("/chalZ/", "challenge"),
    ("/certZ/", "certificate"),
    ("/list-orderz/", "orders"),
    ("/renewal-info", "renewalInfo"),
)
RENEWAL_INFO_PATH = "/renewal-info"

_PROBLEM_NS = "urn:ietf:params:acme:error:"
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "content-length", "accept-encoding",
}


def classify(method: str, path: str, extra: Mapping[str, str] | None = None) -> str:
    """The kind (one of :data:`KINDS`) of a request for ``path`` (no query string)."""
    if extra and path in extra:
        return extra[path]
    if path in _EXACT_PATHS:
        return _EXACT_PATHS[path]
    for prefix, kind in _PREFIX_PATHS:
        if path.startswith(prefix):
            return kind
    return "other"


# --------------------------------------------------------------------------- certificates


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _load_cert(cert: Any):
    from cryptography import x509

    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, str):
        cert = cert.encode()
    if isinstance(cert, (bytes, bytearray)):
        if b"-----BEGIN" in cert:
            return x509.load_pem_x509_certificates(bytes(cert))[0]
        return x509.load_der_x509_certificate(bytes(cert))
    raise TypeError(f"not a certificate: {type(cert).__name__}")


def cert_id(cert: Any) -> str:
    """RFC 9773 certID of a certificate (PEM str/bytes, DER bytes or ``x509.Certificate``;
    for a chain, the first certificate): :func:`acme_client.keys.ari_cert_id`, the one the client sends."""
    cid = ari_cert_id(_load_cert(cert))
    if cid is None:
        raise ValueError("the certificate has no Authority Key Identifier; it has no certID")
    return cid


#: Split a certID into (AKI keyIdentifier bytes, serial number); ValueError if bad.
parse_cert_id = parse_ari_cert_id


@dataclass(frozen=True)
class CertInfo:
    """What the proxy knows about an issued certificate."""

    cert_id: str
    serial: int
    aki: bytes
    not_before: _dt.datetime
    not_after: _dt.datetime
    pem: str

    @property
    def lifetime(self) -> _dt.timedelta:
        return self.not_after - self.not_before

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    @classmethod
    def from_cert(cls, cert: Any) -> "CertInfo":
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        c = _load_cert(cert)
        aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        return cls(
            cert_id=cert_id(c),
            serial=c.serial_number,
            aki=aki,
            not_before=c.not_valid_before_utc,
            not_after=c.not_valid_after_utc,
            pem=c.public_bytes(serialization.Encoding.PEM).decode(),
        )


Window = tuple[_dt.datetime, _dt.datetime]
WindowFunc = Callable[["CertInfo | None", _dt.datetime], "Window | None"]


def normal_window(start_fraction: float = 2 / 3, end_fraction: float = 3 / 4) -> WindowFunc:
    """Window from ``start_fraction`` to ``end_fraction`` of the certificate's lifetime
    (Let's Encrypt-like: renew at about two thirds).  Unknown certificate -> no window."""

    def fn(info: CertInfo | None, now: _dt.datetime) -> Window | None:
        if info is None:
            return None
        life = info.lifetime
        return info.not_before + life * start_fraction, info.not_before + life * end_fraction

    return fn


def renew_now_window(seconds: float = 60, *, start_offset: float = 0) -> WindowFunc:
    """"Renew now": start at request time (+ ``start_offset`` s), end ``seconds`` later.
    Applies also to certificates the proxy has not seen."""

    def fn(info: CertInfo | None, now: _dt.datetime) -> Window:
        start = now + _dt.timedelta(seconds=start_offset)
        return start, start + _dt.timedelta(seconds=seconds)

    return fn


def fixed_window(start: _dt.datetime, end: _dt.datetime) -> WindowFunc:
    """Always the same window (timezone-aware datetimes; naive ones are taken as UTC)."""
    s, e = _aware(start), _aware(end)
    return lambda info, now: (s, e)


def _aware(d: _dt.datetime) -> _dt.datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _rfc3339(d: _dt.datetime) -> str:
    d = _aware(d).astimezone(UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{d.microsecond:06d}"[:4] if d.microsecond else "") + "Z"


def _retry_after_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return format_datetime(_aware(value).astimezone(UTC), usegmt=True)
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)):
        return str(max(0, int(round(value))))
    return str(value)


# --------------------------------------------------------------------------- rules, records


@dataclass
class FaultRule:
    """One injected fault; see :meth:`AcmeProxy.inject`."""

    kind: str
    status: int = 429
    retry_after: Any = None
    times: int | None = 1
    skip: int = 0
    problem_type: str | None = None
    detail: str | None = None
    methods: tuple[str, ...] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seen: int = 0  #: matching requests seen so far (including skipped ones)
    fired: int = 0  #: times this rule answered

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def problem(self) -> dict:
        ptype = self.problem_type
        if ptype is None:
            ptype = _PROBLEM_NS + ("rateLimited" if self.status == 429 else "serverInternal")
        elif ":" not in ptype:
            ptype = _PROBLEM_NS + ptype
        detail = self.detail or (
            "injected by edge.acmeproxy: too many requests" if self.status == 429
            else f"injected by edge.acmeproxy: HTTP {self.status}"
        )
        return {"type": ptype, "detail": detail, "status": self.status}


@dataclass(frozen=True)
class RequestRecord:
    """One request the proxy answered."""

    time: float  #: ``time.monotonic()`` when the request arrived
    wall: _dt.datetime  #: UTC wall-clock time when it arrived
    kind: str
    method: str
    path: str
    status: int
    injected: bool
    retry_after: str | None = None  #: the Retry-After header sent back, if any
    replaces: str | None = None  #: newOrder payload's ``replaces`` (RFC 9773), if any
    payload: Any = None  #: decoded JWS payload for newOrder (dict), else None


def _jws_payload(body: bytes) -> Any:
    """Decoded payload of a flattened JWS JSON body; None if absent/undecodable/empty."""
    try:
        jws = json.loads(body)
        raw = jws.get("payload")
        if not raw:
            return None
        return json.loads(_unb64url(raw))
    except (ValueError, AttributeError, binascii.Error):
        return None


# --------------------------------------------------------------------------- the proxy

CertKey = Union[str, bytes, int, Any]


class AcmeProxy:
    """HTTPS reverse proxy in front of an ACME server (Pebble), adding ARI and faults.

    ``upstream``: base URL (``https://127.0.0.1:14000``) or the directory URL of the
    upstream.  ``upstream_ca``: CA file to verify the upstream (None: no verification:
    it is a loopback test server).  ``tls``: the proxy's own certificate
    (:class:`edge.devenv.TLSFiles`, e.g. ``pebble.tls`` so that one CA file trusts both);
    if None one is generated in ``work_dir`` and :attr:`ca_bundle` is a file holding the
    proxy's CA and ``upstream_ca``.  ``host``/``port``: where to listen (port 0: a free
    one).  ``upstream_management_url``: Pebble's management API, to look up certificates
    the proxy has not seen for ``renewalInfo``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        upstream_ca: str | os.PathLike | None = None,
        tls: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
        work_dir: str | os.PathLike | None = None,
        ari: bool = True,
        default_window: WindowFunc | None = None,
        ari_retry_after: Any = 21600,
        upstream_management_url: str | None = None,
        upstream_timeout: float = 30.0,
        directory_meta: Mapping[str, Any] | None = None,
    ) -> None:
        u = URL(upstream)
        self.upstream = str(u.with_path("").with_query(None).with_fragment(None)).rstrip("/")
        self.upstream_directory_path = u.path if u.path not in ("", "/") else "/dir"
        self.upstream_ca = str(upstream_ca) if upstream_ca else None
        self.host = host
        self.port = port
        self.work_dir = Path(work_dir) if work_dir else None
        self.ari = ari
        self.default_window: WindowFunc = default_window or normal_window()
        self.ari_retry_after = ari_retry_after
        self.upstream_management_url = upstream_management_url.rstrip("/") if upstream_management_url else None
        self.upstream_timeout = upstream_timeout
        #: Merged into the relayed directory's ``meta`` (e.g. ``{"profiles": {...}, "caaIdentities": [...]}``):
        #: Pebble 2.4 has neither. Change it at run time with :meth:`set_directory_meta`.
        self.directory_meta: dict[str, Any] = dict(directory_meta or {})
        self._tls = tls
        self._ca_bundle: str | None = None
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._unreachable = False
        self._records: list[RequestRecord] = []
        self._certs: dict[int, CertInfo] = {}
        self._windows: dict[int, tuple[WindowFunc, Any, str | None]] = {}
        self._learned_paths: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._upstream_ssl: ssl.SSLContext | bool = False

    # -- addresses
    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def directory_url(self) -> str:
        return self.base_url + self.upstream_directory_path

    @property
    def renewal_info_url(self) -> str:
        return self.base_url + RENEWAL_INFO_PATH

    @property
    def tls(self):
        """The proxy's TLS files (generated on first use if none were given)."""
        if self._tls is None:
            from edge.demo.components import generate_local_ca

            if self.work_dir is None:
                self.work_dir = Path(tempfile.mkdtemp(prefix="edgecert-acmeproxy-"))
            self._tls = generate_local_ca(self.work_dir, prefix="acmeproxy-")
        return self._tls

    @property
    def ca_bundle(self) -> str:
        """CA file a client should trust to talk to the proxy (and the upstream)."""
        if self._ca_bundle is None:
            tls = self.tls
            if self.upstream_ca and Path(self.upstream_ca).resolve() != Path(tls.ca_pem).resolve():
                d = Path(self.work_dir or Path(tls.ca_pem).parent)
                bundle = d / "acmeproxy-ca-bundle.pem"
                bundle.write_text(
                    Path(tls.ca_pem).read_text().rstrip("\n") + "\n" + Path(self.upstream_ca).read_text()
                )
                self._ca_bundle = str(bundle)
            else:
                self._ca_bundle = str(tls.ca_pem)
        return self._ca_bundle

    # -- lifecycle
    async def start(self) -> "AcmeProxy":
        """Start listening (in the running event loop); checks the upstream answers."""
        if self._runner is not None:
            return self
        if self.upstream.startswith("https:"):
            self._upstream_ssl = (
                ssl.create_default_context(cafile=self.upstream_ca) if self.upstream_ca else False
            )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )
        try:
            await self._learn_directory()
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(str(self.tls.cert_pem), str(self.tls.key_pem))
            app = web.Application(client_max_size=8 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, ssl_context=server_ctx)
            await site.start()
            self._runner = runner
            self.port = runner.addresses[0][1]
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        _ = self.ca_bundle
        return self

    async def stop(self) -> None:
        """Stop listening and close the upstream connections. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> "AcmeProxy":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _learn_directory(self) -> None:
        assert self._session is not None
        url = self.upstream + self.upstream_directory_path
        try:
            async with self._session.get(url, ssl=self._upstream_ssl) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"upstream directory {url} answered HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            raise RuntimeError(f"acmeproxy: upstream directory {url} unreachable: {exc}") from exc
        self._learn_paths(json.loads(body))

    def _learn_paths(self, directory: Mapping[str, Any]) -> None:
        learned = {URL(self.upstream_directory_path).path: "directory"}
        for key in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"):
            v = directory.get(key)
            if isinstance(v, str):
                learned[URL(v).path] = key
        with self._lock:
            self._learned_paths.update(learned)

    # -- faults
    def inject(
        self,
        *,
        kind: str,
        status: int = 429,
        retry_after: Any = None,
        times: int | None = 1,
        skip: int = 0,
        problem_type: str | None = None,
        detail: str | None = None,
        methods: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FaultRule:
        """Answer the next ``times`` requests of ``kind`` (after letting ``skip`` through)
        with HTTP ``status`` and an RFC 7807 problem.

        ``retry_after``: seconds (int/float/timedelta), a datetime (sent as an HTTP-date)
        or a raw header string; None sends no Retry-After.  ``times=None``: forever.
        ``problem_type``: full URN or the short ACME name (``"rateLimited"``); default
        rateLimited for 429, serverInternal otherwise.  ``methods``: only these methods
        (e.g. ``["POST"]``).  Rules are tried in the order they were added.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        if not 400 <= int(status) <= 599:
            raise ValueError("status must be an HTTP error status (4xx/5xx)")
        rule = FaultRule(
            kind=kind, status=int(status), retry_after=retry_after, times=times, skip=skip,
            problem_type=problem_type, detail=detail,
            methods=tuple(m.upper() for m in methods) if methods else None,
            headers=dict(headers or {}),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def inject_lost_answer(self, *, kind: str, times: int | None = 1, skip: int = 0) -> FaultRule:
        """Forward the next ``times`` requests of ``kind`` to the CA (which acts on them) and then drop the
        connection without an answer: the client sees a transport error for a request that took effect (a newOrder
        that created an order, a finalize that started). Recorded with ``status`` = minus the CA's status."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        rule = FaultRule(kind=kind, status=0, times=times, skip=skip)
        with self._lock:
            self._rules.append(rule)
        return rule

    def inject_paused(self, identifier: str, *, kind: str = "newOrder", status: int = 429,
                      times: int | None = 1, jwt: str = "eyJhbGciOiJIUzI1NiJ9.test.paused") -> FaultRule:
        """Let's Encrypt's *paused identifier* answer (after many failed validations, newOrder for the name is
        refused until the subscriber unpauses it): a ``rateLimited`` problem whose detail carries the unpause
        URL ``https://portal.letsencrypt.org/sfe/v1/unpause?jwt=...``."""
        return self.inject(kind=kind, status=status, times=times,
                           problem_type="rateLimited" if status == 429 else "unauthorized",
                           detail=(f"Your account is temporarily prevented from requesting certificates for "
                                   f"{identifier} and possibly others. Please visit: "
                                   f"https://portal.letsencrypt.org/sfe/v1/unpause?jwt={jwt}"))

    def set_directory_meta(self, meta: Mapping[str, Any] | None) -> None:
        """Fields merged into the directory's ``meta`` from now on (``None``: none)."""
        with self._lock:
            self.directory_meta = dict(meta or {})

    def profiles_seen(self) -> list[str | None]:
        """The ``profile`` field of every newOrder payload relayed so far (None when absent), in order."""
        return [r.payload.get("profile") if isinstance(r.payload, dict) else None
                for r in self.records("newOrder") if r.method == "POST"]

    def set_unreachable(self, down: bool = True) -> None:
        """While ``down``: every request's connection is reset without an answer (recorded with status 0), as if
        the CA were unreachable; ``set_unreachable(False)`` brings it back."""
        with self._lock:
            self._unreachable = down

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def faults(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def _match_rule(self, kind: str, method: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.kind != kind or rule.exhausted:
                    continue
                if rule.methods and method not in rule.methods:
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.fired += 1
                return rule
        return None

    # -- records
    def records(self, kind: str | None = None) -> list[RequestRecord]:
        """Requests answered so far (optionally of one kind), by arrival time."""
        with self._lock:
            recs = [r for r in self._records if kind is None or r.kind == kind]
        return sorted(recs, key=lambda r: r.time)

    def count(self, kind: str | None = None, *, status: int | None = None,
              injected: bool | None = None) -> int:
        """How many requests (of ``kind``, with ``status``, injected or not) were answered."""
        return sum(
            1 for r in self.records(kind)
            if (status is None or r.status == status) and (injected is None or r.injected == injected)
        )

    def counts(self) -> dict[str, int]:
        """Requests per kind."""
        out: dict[str, int] = {}
        for r in self.records():
            out[r.kind] = out.get(r.kind, 0) + 1
        return out

    def replaces_seen(self) -> list[str | None]:
        """The ``replaces`` value of every newOrder POST, in order (None when absent)."""
        return [r.replaces for r in self.records("newOrder") if r.method == "POST"]

    def reset_records(self) -> None:
        with self._lock:
            self._records.clear()

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)

    # -- ARI configuration / knowledge
    def remember_certificate(self, cert: Any) -> CertInfo:
        """Tell the proxy about a certificate (PEM/DER/x509; a chain's first cert)."""
        info = CertInfo.from_cert(cert)
        with self._lock:
            self._certs[info.serial] = info
        return info

    def known_certificates(self) -> dict[str, CertInfo]:
        """certID -> CertInfo for every certificate the proxy has seen."""
        with self._lock:
            return {i.cert_id: i for i in self._certs.values()}

    def _serial_of(self, cert: CertKey) -> int:
        if isinstance(cert, int):
            return cert
        if isinstance(cert, str) and "-----BEGIN" not in cert:
            return parse_cert_id(cert)[1]
        return _load_cert(cert).serial_number

    def set_renewal_window(
        self,
        cert: CertKey,
        start: _dt.datetime | None = None,
        end: _dt.datetime | None = None,
        *,
        window: WindowFunc | None = None,
        retry_after: Any = None,
        explanation_url: str | None = None,
    ) -> None:
        """Fix the ARI answer for one certificate (certID string, PEM, x509 or serial int):
        either ``start``/``end`` datetimes or a ``window`` function; ``retry_after`` overrides
        the proxy-wide ``ari_retry_after`` for it."""
        if window is None:
            if start is None or end is None:
                raise ValueError("give start and end, or window")
            window = fixed_window(start, end)
        with self._lock:
            self._windows[self._serial_of(cert)] = (window, retry_after, explanation_url)

    def clear_renewal_window(self, cert: CertKey) -> None:
        with self._lock:
            self._windows.pop(self._serial_of(cert), None)

    # -- request handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        wall = _dt.datetime.now(UTC)
        path = request.path
        method = request.method.upper()
        with self._lock:
            learned = dict(self._learned_paths)
        kind = classify(method, path, learned)
        body = await request.read() if request.can_read_body else b""
        payload = _jws_payload(body) if (kind == "newOrder" and method == "POST") else None
        replaces = payload.get("replaces") if isinstance(payload, dict) else None

        with self._lock:
            down = self._unreachable
        if down:
            # The CA is unreachable: the connection is reset without an answer (the client sees a transport error).
            self._record(RequestRecord(
                time=arrived, wall=wall, kind=kind, method=method, path=request.raw_path,
                status=0, injected=True, retry_after=None, replaces=replaces, payload=payload,
            ))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)  # never sent: the connection is gone

        rule = self._match_rule(kind, method)
        if rule is not None and rule.status == 0:  # inject_lost_answer: the CA acts, the answer is lost
            try:
                resp = await self._forward(request, kind, body)
                status = resp.status
            except Exception:  # noqa: BLE001 - the answer is dropped either way
                status = 0
            self._record(RequestRecord(
                time=arrived, wall=wall, kind=kind, method=method, path=request.raw_path,
                status=-status, injected=True, retry_after=None, replaces=replaces, payload=payload,
            ))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)  # never sent: the connection is gone
        try:
            if rule is not None:
                resp = await self._fault_response(request, rule)
            elif kind == "renewalInfo" and self.ari:
                resp = await self._renewal_info(request)
            else:
                resp = await self._forward(request, kind, body)
        except Exception as exc:  # noqa: BLE001 - answer the client, keep serving
            resp = self._problem_response(
                request, 502, {"type": _PROBLEM_NS + "serverInternal",
                               "detail": f"acmeproxy: upstream request failed: {exc!r}", "status": 502},
                nonce=None,
            )
        self._record(RequestRecord(
            time=arrived, wall=wall, kind=kind, method=method, path=request.raw_path,
            status=resp.status, injected=rule is not None,
            retry_after=resp.headers.get("Retry-After"), replaces=replaces,
            payload=payload,
        ))
        return resp

    def _index_link(self, request: web.Request) -> str:
        return f'<https://{request.host}{self.upstream_directory_path}>;rel="index"'

    async def _fresh_nonce(self) -> str | None:
        assert self._session is not None
        with self._lock:
            nonce_path = next((p for p, k in self._learned_paths.items() if k == "newNonce"), "/nonce-plz")
        try:
            async with self._session.head(self.upstream + nonce_path, ssl=self._upstream_ssl) as resp:
                return resp.headers.get("Replay-Nonce")
        except aiohttp.ClientError:
            return None

    def _problem_response(self, request: web.Request, status: int, problem: dict, *,
                          nonce: str | None, retry_after: str | None = None,
                          extra: Mapping[str, str] | None = None) -> web.Response:
        headers = CIMultiDict()
        headers["Content-Type"] = "application/problem+json"
        headers["Cache-Control"] = "public, max-age=0, no-cache"
        headers["Link"] = self._index_link(request)
        if nonce:
            headers["Replay-Nonce"] = nonce
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        for k, v in (extra or {}).items():
            headers[k] = v
        body = b"" if request.method == "HEAD" else json.dumps(problem, indent=2).encode()
        return web.Response(status=status, body=body, headers=headers)

    async def _fault_response(self, request: web.Request, rule: FaultRule) -> web.Response:
        return self._problem_response(
            request, rule.status, rule.problem(), nonce=await self._fresh_nonce(),
            retry_after=_retry_after_value(rule.retry_after), extra=rule.headers,
        )

    async def _forward(self, request: web.Request, kind: str, body: bytes) -> web.Response:
        assert self._session is not None
        headers = CIMultiDict()
        for k, v in request.headers.items():
            if k.lower() not in _HOP_BY_HOP:
                headers.add(k, v)  # Host included, unchanged: see the module docstring
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with self._session.request(
            request.method, url, headers=headers, data=body if body else None,
            ssl=self._upstream_ssl, allow_redirects=False,
        ) as up:
            data = await up.read()
            out = CIMultiDict()
            for k, v in up.headers.items():
                if k.lower() not in _HOP_BY_HOP:
                    out.add(k, v)
            status = up.status

        if kind == "directory" and status == 200 and request.method == "GET":
            try:
                directory = json.loads(data)
            except ValueError:
                directory = None
            if isinstance(directory, dict):
                if self.ari:
                    directory["renewalInfo"] = f"https://{request.host}{RENEWAL_INFO_PATH}"
                with self._lock:
                    extra_meta = dict(self.directory_meta)
                if extra_meta:
                    meta = directory.get("meta") if isinstance(directory.get("meta"), dict) else {}
                    directory["meta"] = {**meta, **extra_meta}
                data = json.dumps(directory, indent=2).encode()
        elif kind == "certificate" and status == 200 and b"-----BEGIN CERTIFICATE" in data:
            with contextlib.suppress(Exception):
                self.remember_certificate(data)
        if request.method == "HEAD":
            data = b""
        return web.Response(status=status, body=data, headers=out)

    async def _lookup_upstream_cert(self, serial: int) -> CertInfo | None:
        if not self.upstream_management_url or self._session is None:
            return None
        url = f"{self.upstream_management_url}/cert-status-by-serial/{serial:x}"
        try:
            async with self._session.get(url, ssl=self._upstream_ssl) as resp:
                if resp.status != 200:
                    return None
                doc = json.loads(await resp.read())
        except (aiohttp.ClientError, ValueError):
            return None
        pem = doc.get("Certificate") if isinstance(doc, dict) else None
        if not pem:
            return None
        return self.remember_certificate(pem)

    async def _renewal_info(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return self._problem_response(
                request, 405, {"type": _PROBLEM_NS + "malformed",
                               "detail": "renewalInfo is GET only (RFC 9773)", "status": 405},
                nonce=None, extra={"Allow": "GET"})
        rest = request.path[len(RENEWAL_INFO_PATH):].lstrip("/")
        try:
            aki, serial = parse_cert_id(rest)
        except ValueError as exc:
            return self._problem_response(
                request, 400, {"type": _PROBLEM_NS + "malformed", "detail": str(exc), "status": 400},
                nonce=None)
        with self._lock:
            info = self._certs.get(serial)
            configured = self._windows.get(serial)
        if info is None:
            info = await self._lookup_upstream_cert(serial)
        if info is not None and info.aki != aki:
            info = None  # same serial, other issuer: not ours
        now = _dt.datetime.now(UTC)
        window_fn, retry_after, explanation = (
            configured if configured else (self.default_window, None, None)
        )
        window = window_fn(info, now)
        if window is None:
            return self._problem_response(
                request, 404, {"type": _PROBLEM_NS + "malformed",
                               "detail": f"no certificate known for certID {rest}", "status": 404},
                nonce=None)
        start, end = window
        doc: dict[str, Any] = {"suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)}}
        if explanation:
            doc["explanationURL"] = explanation
        headers = CIMultiDict()
        headers["Content-Type"] = "application/json"
        ra = _retry_after_value(retry_after if retry_after is not None else self.ari_retry_after)
        if ra is not None:
            headers["Retry-After"] = ra
        headers["Link"] = self._index_link(request)
        body = b"" if request.method == "HEAD" else json.dumps(doc, indent=2).encode()
        return web.Response(status=200, body=body, headers=headers)


# --------------------------------------------------------------------------- thread wrapper


class ProxyThread:
    """Runs an :class:`AcmeProxy` in a daemon thread with its own event loop.

    Takes the same arguments as :class:`AcmeProxy`.  After :meth:`start`, every public
    attribute and method of the proxy is available here too (``inject``, ``records``,
    ``count``, ``directory_url``, ``ca_bundle``...): they are thread-safe.
    """

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        self.proxy = AcmeProxy(upstream, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, *, timeout: float = 15.0) -> "ProxyThread":
        if self._thread is not None:
            return self
        ready = threading.Event()
        error: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.proxy.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self.proxy.stop())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="acmeproxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"acmeproxy did not start within {timeout}s")
        if error:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"acmeproxy failed to start: {error[0]}") from error[0]
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        thread, loop = self._thread, self._loop
        self._thread = None
        if thread is None or loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> "ProxyThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "proxy":
            raise AttributeError(name)
        return getattr(self.proxy, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``px.default_window = ...`` configures the proxy, not this wrapper.
        if name in ("proxy", "_loop", "_thread") or "proxy" not in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            setattr(self.proxy, name, value)


# --------------------------------------------------------------------------- CLI


def _parse_inject(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if not 1 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError("--inject KIND[:STATUS[:RETRY_AFTER[:TIMES]]]")
    out: dict[str, Any] = {"kind": parts[0]}
    if len(parts) > 1 and parts[1]:
        out["status"] = int(parts[1])
    if len(parts) > 2 and parts[2]:
        out["retry_after"] = int(parts[2])
    if len(parts) > 3 and parts[3]:
        out["times"] = None if parts[3] in ("*", "inf") else int(parts[3])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.support.acmeproxy", description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="upstream ACME base or directory URL")
    ap.add_argument("--upstream-ca", help="CA file for the upstream's HTTPS (default: no verification)")
    ap.add_argument("--upstream-management", help="Pebble management URL (ARI lookups of unseen certs)")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0 = free port)")
    ap.add_argument("--cert", help="proxy TLS certificate (PEM); default: generate one")
    ap.add_argument("--key", help="proxy TLS key (PEM)")
    ap.add_argument("--ca", help="the CA that signed --cert (only reported as what to trust)")
    ap.add_argument("--work-dir", help="where to write generated TLS files")
    ap.add_argument("--no-ari", action="store_true", help="do not add renewalInfo")
    ap.add_argument("--ari-retry-after", type=int, default=21600)
    ap.add_argument("--inject", action="append", type=_parse_inject, default=[],
                    help="KIND[:STATUS[:RETRY_AFTER[:TIMES]]], e.g. newOrder:429:7:1 (repeatable)")
    args = ap.parse_args(argv)

    host, _, port = args.listen.rpartition(":")
    tls = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            ap.error("--cert and --key go together")
        from edge.demo.components import TLSFiles

        tls = TLSFiles(ca_pem=Path(args.ca or args.cert), cert_pem=Path(args.cert),
                       key_pem=Path(args.key), ca_key_pem=Path(args.key))
    proxy = AcmeProxy(
        args.upstream, upstream_ca=args.upstream_ca, tls=tls, host=host or "127.0.0.1",
        port=int(port or 0), work_dir=args.work_dir, ari=not args.no_ari,
        ari_retry_after=args.ari_retry_after, upstream_management_url=args.upstream_management,
    )
    for spec in args.inject:
        proxy.inject(**spec)

    async def run() -> None:
        await proxy.start()
        print(f"acmeproxy: {proxy.directory_url} -> {proxy.upstream} (trust {proxy.ca_bundle})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await proxy.stop()
            print(f"acmeproxy: requests per kind {proxy.counts()}", flush=True)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
