"""Obtaining a certificate: the ``Issuer`` seam and its ACME implementation.

``AcmeIssuer.issue`` runs one order end to end: account (registered once, then reused), new order (persisted as
soon as the CA answers, so a restart resumes the same order URL instead of placing a new one), challenge answers
published through a :class:`ChallengePublisher`, finalize, full chain. The synchronous ``acme`` package runs in a
dedicated thread pool, one :class:`AcmeSession` per issuance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from acme import messages

from store.crypto import KeyBox
from store.models import AcmeAccount, AcmeOrder

from . import errors
from .challenges import ChallengePublisher, pick_challenge
from .client import AcmeSession
from .keys import CertInfo, generate_private_key, make_csr, private_key_pem, read_certificate, split_pem_chain

__all__ = ["Issuer", "AcmeIssuer", "IssuedCertificate", "EventSink"]

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class IssuedCertificate:
    names: tuple[str, ...]
    cert_pem: str
    chain_pem: str
    key_pem: bytes
    info: CertInfo
    order_id: int | None
    key_type: str
    acme_requests: int = 0

    @property
    def fullchain_pem(self) -> str:
        return self.cert_pem + self.chain_pem


class Issuer(Protocol):
    """Obtains a certificate for ``names``. One method; anything else is an implementation detail."""

    async def issue(self, *, domain_id: int, names: list[str], key_type: str, replaces: str | None = None,
                    is_renewal: bool = False, on_event: EventSink | None = None) -> IssuedCertificate: ...


async def _noop(kind: str, message: str, data: dict[str, Any]) -> None:
    return None


class AcmeIssuer:
    """:class:`Issuer` over RFC 8555 with HTTP-01.

    Args:
        storage: the :class:`store.Storage` (accounts, orders).
        keybox: encrypts account and certificate keys at rest.
        publisher: publishes challenge answers.
        directory_url / ca_bundle / email: the CA.
        max_workers: threads for the synchronous protocol client (= orders in flight at once).
        order_timeout: seconds one order may take.
        on_request: ``(kind, status)`` callback for every CA request (metrics, pacing).
        before_request: called (in the protocol thread) before every order is placed (pacing hook).
    """

    def __init__(self, *, storage, keybox: KeyBox, publisher: ChallengePublisher, directory_url: str,
                 ca_bundle: str | None = None, email: str | None = None, max_workers: int = 4,
                 order_timeout: float = 300.0, on_request: Callable[[str, int], None] | None = None,
                 preferred_challenges: tuple[str, ...] = ("http-01",)) -> None:
        self.storage = storage
        self.keybox = keybox
        self.publisher = publisher
        self.directory_url = directory_url
        self.ca_bundle = ca_bundle
        self.email = email
        self.order_timeout = order_timeout
        self.on_request = on_request
        self.preferred = preferred_challenges
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="acme")
        self._account: AcmeAccount | None = None
        self._ari_url: str | None = None
        self._ari_checked_at: float | None = None
        self._account_lock = asyncio.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    # -- account ---------------------------------------------------------------------------------------------
    async def account(self) -> AcmeAccount:
        """The account for this CA: loaded from the store, or registered once (lock, re-check, then register)."""
        if self._account is not None and self._account.uri:
            return self._account
        async with self._account_lock:
            async with self.storage.lock(f"acme-account:{self.directory_url}", ttl=120, timeout=120):
                acct = await self.storage.get_account(self.directory_url)
                if acct is None:
                    key = generate_private_key("ecdsa-p256")
                    acct = AcmeAccount(directory_url=self.directory_url, email=self.email,
                                       key_enc=self.keybox.encrypt(private_key_pem(key),
                                                                   purpose=b"acme-account"))
                    acct = await self.storage.save_account(acct)
                if not acct.uri:
                    key_pem = self.keybox.decrypt(acct.key_enc, purpose=b"acme-account")

                    def register() -> str:
                        sess = self._session(key_pem, None)
                        return sess.register(email=self.email)
                    acct.uri = await self._in_thread(register)
                    acct = await self.storage.save_account(acct)
                    log.info("registered ACME account %s", acct.uri)
                self._account = acct
                return acct

    def _session(self, account_key_pem: bytes, account_uri: str | None) -> AcmeSession:
        return AcmeSession(self.directory_url, account_key_pem, ca_bundle=self.ca_bundle, account_uri=account_uri,
                           on_request=self.on_request)

    async def renewal_window(self, cert_id: str) -> tuple[dt.datetime, dt.datetime, dt.datetime | None] | None:
        """The CA's ARI window for an RFC 9773 certID, or None when the CA has no renewalInfo.

        The directory is read at most once an hour; the renewalInfo GET is unauthenticated (RFC 9773 4.1)."""
        now = time.monotonic()
        if self._ari_checked_at is None or now - self._ari_checked_at > 3600:
            def directory() -> str | None:
                import requests
                try:
                    r = requests.get(self.directory_url, timeout=30, verify=self.ca_bundle or True)
                    r.raise_for_status()
                    return r.json().get("renewalInfo")
                except (requests.RequestException, ValueError) as e:
                    raise errors.NetworkError(f"directory: {e}") from e
            self._ari_url = await self._in_thread(directory)
            self._ari_checked_at = now
        if not self._ari_url:
            return None
        url = self._ari_url.rstrip("/") + "/" + cert_id

        def fetch():
            import requests
            from .client import parse_retry_after
            try:
                r = requests.get(url, timeout=30, verify=self.ca_bundle or True)
            except requests.RequestException as e:
                raise errors.NetworkError(f"renewalInfo: {e}") from e
            if self.on_request is not None:
                self.on_request("renewalInfo", r.status_code)
            if r.status_code != 200:
                raise errors.from_problem(None, r.text[:200], status=r.status_code,
                                          retry_after=parse_retry_after(r.headers.get("Retry-After")),
                                          context="renewalInfo")
            win = r.json()["suggestedWindow"]
            start = dt.datetime.fromisoformat(win["start"].replace("Z", "+00:00"))
            end = dt.datetime.fromisoformat(win["end"].replace("Z", "+00:00"))
            return start, end, parse_retry_after(r.headers.get("Retry-After"))
        return await self._in_thread(fetch)

    # -- issuance --------------------------------------------------------------------------------------------
    async def issue(self, *, domain_id: int, names: list[str], key_type: str, replaces: str | None = None,
                    is_renewal: bool = False, on_event: EventSink | None = None) -> IssuedCertificate:
        on_event = on_event or _noop
        acct = await self.account()
        account_key_pem = self.keybox.decrypt(acct.key_enc, purpose=b"acme-account")
        purpose = f"order-key:{domain_id}".encode()

        order = await self.storage.open_order(domain_id)
        resumed = order is not None and order.url is not None and order.account_id == acct.id
        if resumed:
            assert order is not None and order.key_enc is not None and order.csr_pem is not None
            key_pem = self.keybox.decrypt(order.key_enc, purpose=purpose)
            csr_pem = order.csr_pem.encode()
            await on_event("order_resumed", f"resuming order {order.url} after a restart", {"order_url": order.url})
        else:
            if order is not None:  # a half-created order row from a crash before the CA answered
                order.status = "abandoned"
                await self.storage.save_order(order)
            key = generate_private_key(key_type)
            key_pem = private_key_pem(key)
            csr_pem = make_csr(key, names)
            order = await self.storage.save_order(AcmeOrder(
                domain_id=domain_id, account_id=acct.id, status="creating", names=json.dumps(names),
                replaces=replaces, csr_pem=csr_pem.decode(), key_enc=self.keybox.encrypt(key_pem, purpose=purpose),
                is_renewal=is_renewal))

        deadline = time.monotonic() + self.order_timeout
        published: list[tuple[str, str]] = []
        box: dict[str, Any] = {}

        def start() -> messages.OrderResource:
            sess = self._session(account_key_pem, acct.uri)
            box["sess"] = sess
            if resumed:
                return sess.load_order(order.url, csr_pem)
            return sess.new_order(csr_pem, replaces=replaces)

        try:
            try:
                orderr = await self._in_thread(start)
            except errors.AcmeError:
                if not resumed:
                    order.status = "failed"
                    await self.storage.save_order(order)
                raise
            sess: AcmeSession = box["sess"]
            if not resumed:
                order.url = orderr.uri
                order.status = orderr.body.status.name if orderr.body.status else "pending"
                order = await self.storage.save_order(order)
                await on_event("order_placed", f"order placed with the CA for {', '.join(names)}",
                               {"order_url": orderr.uri, "replaces": replaces})
            if orderr.body.status == messages.STATUS_INVALID:
                # A resumed order that died meanwhile: drop it; the caller retries with a new one.
                order.status = "invalid"
                await self.storage.save_order(order)
                raise errors.OrderFailed(f"order {orderr.uri} is invalid at the CA")
            for authzr in orderr.authorizations:
                if authzr.body.status != messages.STATUS_PENDING:
                    continue
                try:
                    challb = pick_challenge(authzr, self.preferred)
                except LookupError as e:
                    raise errors.RejectedIdentifier(str(e)) from None
                kind = challb.chall.typ
                response, validation = challb.response_and_validation(sess.account_key)
                token = challb.chall.encode("token")
                ident = authzr.body.identifier.value
                await self.publisher.publish(hostname=ident, kind=kind, token=token, key_authorization=validation)
                published.append((ident, token))
                if challb.status != messages.STATUS_PENDING:
                    continue  # resumed: the CA is already validating this challenge
                await self._in_thread(sess.answer, challb)
                await on_event("challenge_answered", f"{kind} challenge for {ident} answered",
                               {"type": kind, "identifier": ident})
            try:
                orderr = await self._in_thread(lambda: sess.poll_authorizations(orderr, deadline=deadline))
            except errors.AcmeError as e:
                order.status = "invalid"
                order.error = str(e)
                await self.storage.save_order(order)
                raise
            await on_event("challenge_valid", f"the CA validated {', '.join(names)}", {})
            orderr = await self._in_thread(lambda: sess.finalize(orderr, deadline=deadline))
            fullchain = orderr.fullchain_pem
            certs = split_pem_chain(fullchain)
            if not certs:
                raise errors.OrderFailed("the CA returned no certificate")
            info = read_certificate(certs[0])
            order.status = "valid"
            await self.storage.save_order(order)
            return IssuedCertificate(names=tuple(names), cert_pem=certs[0], chain_pem="".join(certs[1:]),
                                     key_pem=key_pem, info=info, order_id=order.id, key_type=key_type,
                                     acme_requests=sess.requests_made)
        except errors.AcmeError as e:
            if e.retryable is False or isinstance(e, (errors.ChallengeFailed,)):
                if order.status not in ("invalid", "failed"):
                    order.status = "failed"
                    order.error = str(e)
                    await self.storage.save_order(order)
            raise
        finally:
            for ident, token in published:
                try:
                    await self.publisher.withdraw(hostname=ident, kind="http-01", token=token)
                except Exception:
                    log.exception("could not withdraw challenge token for %s", ident)
            box.clear()
