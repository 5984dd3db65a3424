"""Obtaining a certificate: the ``Issuer`` seam and its ACME implementation.

``AcmeIssuer.issue`` runs the domain's order journal (one ``acme_orders`` entry per order, its ``step`` persisted
BEFORE each effect at the CA, see :class:`store.models.JournalStep`): intent (key and CSR kept) -> ordered (the URL,
stored the moment newOrder answers, before any authorization is fetched) -> authorizing (answers journaled, then
published, then sent) -> finalizing -> downloaded (the certificate kept in the entry). A restart continues the open
entry from its last durable step: a downloaded certificate is returned as it is (never ordered again); an order the
CA has is read again by its URL and continued from whatever state it is in (pending, ready, processing, valid).
Transient errors (transport, 5xx, bad nonce, timeout) retry the same order within the attempt
(:class:`OrderAttempt`, :mod:`acme_client.journal`); only the CA's verdict ends an entry (``invalid``). The
synchronous ``acme`` package runs in a dedicated thread pool, one :class:`AcmeSession` per attempt.

One concern: obtaining certificates from ONE CA (its account, healed when the CA forgot it; its directory: ARI,
profiles, CAA identities; the order journal). Several CAs in order are :mod:`acme_client.issuers`.
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
from store.models import AcmeAccount, AcmeOrder, JournalStep

from . import errors
from .challenges import ChallengePublisher, answer_value, pick_challenge
from .client import POLL_SCHEDULE, AcmeSession, validation_error
from .journal import BAD_NONCE_RETRIES, CA_RETRY_SCHEDULE, NEW_ORDER_ANSWERED, TRANSIENT, crash_point
from .keys import CertInfo, generate_private_key, make_csr, private_key_pem, read_certificate, split_pem_chain

__all__ = ["Issuer", "AcmeIssuer", "IssuedCertificate", "EventSink", "account_gone"]

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
    directory: str | None = None   #: the ACME directory (issuer) that issued it
    profile: str | None = None     #: the ACME profile it was ordered with (None: the CA's default)
    challenge: str | None = None   #: the challenge method that validated it (http-01, dns-01, tls-alpn-01)

    @property
    def fullchain_pem(self) -> str:
        return self.cert_pem + self.chain_pem


class Issuer(Protocol):
    """Obtains a certificate for ``names``. One method; anything else is an implementation detail."""

    async def issue(self, *, domain_id: int, names: list[str], key_type: str, replaces: str | None = None,
                    is_renewal: bool = False, on_event: EventSink | None = None,
                    challenges: tuple[str, ...] | None = None, directories: list[str] | None = None,
                    profile: str | None = None) -> IssuedCertificate: ...


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
        eab_kid / eab_hmac_key: External Account Binding at registration (base64url HMAC key).
        profile: the ACME profile asked for when the caller names none (checked against ``meta.profiles``).
        caa_identities: overrides the directory's ``meta.caaIdentities`` (the CAA check reads them).
        setting: how the operator names this issuer in messages (e.g. ``issuers[2]``, ``EDGECERT_ACME_DIRECTORY``).
        new_order_wait: seconds transient errors (unreachable, 5xx) are retried before a NEW order is placed (an
            order the CA already has is retried up to ``order_timeout``); a chain then tries the next issuer.
        on_account_recreated: called with the directory URL when the account was registered again (metric).
    """

    def __init__(self, *, storage, keybox: KeyBox, publisher: ChallengePublisher, directory_url: str,
                 ca_bundle: str | None = None, email: str | None = None, max_workers: int = 4,
                 order_timeout: float = 300.0, on_request: Callable[[str, int], None] | None = None,
                 preferred_challenges: tuple[str, ...] = ("http-01",), eab_kid: str | None = None,
                 eab_hmac_key: str | None = None, profile: str | None = None,
                 caa_identities: list[str] | None = None, setting: str = "acme_directory (EDGECERT_ACME_DIRECTORY)",
                 new_order_wait: float | None = None,
                 on_account_recreated: Callable[[str], None] | None = None) -> None:
        self.storage = storage
        self.eab_kid = eab_kid
        self.eab_hmac_key = eab_hmac_key
        self.profile = profile
        self.caa_override = list(caa_identities) if caa_identities is not None else None
        self.setting = setting
        self.new_order_wait = new_order_wait
        self.on_account_recreated = on_account_recreated
        self._directory_json: dict[str, Any] | None = None
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
        self._healed_account_id: int | None = None  # registered by a heal, not yet seen working

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def current_account(self) -> AcmeAccount | None:
        """The account in use (None until first loaded or registered)."""
        return self._account

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
                    acct.uri = await self._register(key_pem)
                    acct = await self.storage.save_account(acct)
                    log.info("registered ACME account %s", acct.uri)
                self._account = acct
                return acct

    async def _register(self, key_pem: bytes) -> str:
        """newAccount (with External Account Binding when configured). A refusal that is not the CA being down
        becomes :class:`errors.AccountProblem` naming the setting to check."""
        def register() -> str:
            return self._session(key_pem, None).register(email=self.email, eab_kid=self.eab_kid,
                                                         eab_hmac_key=self.eab_hmac_key)
        try:
            return await self._in_thread(register)
        except errors.AcmeError as e:
            if e.retryable and not isinstance(e, (errors.OrderFailed, errors.ChallengeFailed)):
                raise  # unreachable, 5xx, rate limited: the CA's trouble, tried again later
            short = (e.problem_type or e.code).rsplit(":", 1)[-1]
            if self.eab_kid or short == "externalAccountRequired" or "external account" in (e.detail or "").lower():
                what = (f"the External Account Binding of {self.setting} (eab_kid / eab_hmac_key; "
                        "EDGECERT_ACME_EAB_KID / EDGECERT_ACME_EAB_HMAC_KEY for the first issuer): the CA wants the "
                        "key ID and the base64url HMAC key it gave you for this account")
            else:
                what = f"{self.setting} and acme_email (EDGECERT_ACME_EMAIL)"
            raise errors.AccountProblem(
                f"the CA at {self.directory_url} refused to register edgecert's ACME account ({short}: "
                f"{(e.detail or e.message)[:200]}); an operator must check {what}, then run "
                "`edgecert domains renew HOSTNAME`", problem_type=e.problem_type, detail=e.detail,
                status=e.status) from e

    async def directory_json(self, *, max_age: float = 3600.0) -> dict[str, Any]:
        """The CA's directory (read at most once per ``max_age`` seconds; unauthenticated GET)."""
        now = time.monotonic()
        if self._directory_json is not None and self._ari_checked_at is not None \
                and now - self._ari_checked_at <= max_age:
            return self._directory_json

        def directory() -> dict[str, Any]:
            import requests
            try:
                r = requests.get(self.directory_url, timeout=30, verify=self.ca_bundle or True)
            except requests.RequestException as e:
                raise errors.NetworkError(f"directory: cannot reach the CA: {e}") from e
            if self.on_request is not None:
                self.on_request("directory", r.status_code)
            if r.status_code >= 500:
                raise errors.ServerUnavailable(f"directory: the CA answered HTTP {r.status_code}",
                                               status=r.status_code)
            try:
                r.raise_for_status()
                doc = r.json()
            except (requests.RequestException, ValueError) as e:
                raise errors.NetworkError(f"directory: {e}") from e
            return doc if isinstance(doc, dict) else {}
        self._directory_json = await self._in_thread(directory)
        self._ari_url = self._directory_json.get("renewalInfo")
        self._ari_checked_at = now
        return self._directory_json

    async def profiles(self) -> dict[str, str] | None:
        """The directory's ``meta.profiles`` (name -> description), or None when the CA offers none."""
        meta = (await self.directory_json()).get("meta") or {}
        profiles = meta.get("profiles") if isinstance(meta, dict) else None
        return dict(profiles) if isinstance(profiles, dict) else None

    async def caa_identities(self) -> list[str]:
        """The issuer domain names this CA's CAA records must allow: the ``caa_identities`` setting, else the
        directory's ``meta.caaIdentities`` (empty when neither says)."""
        if self.caa_override is not None:
            return list(self.caa_override)
        meta = (await self.directory_json()).get("meta") or {}
        ids = meta.get("caaIdentities") if isinstance(meta, dict) else None
        return [str(x) for x in ids] if isinstance(ids, list) else []

    def _session(self, account_key_pem: bytes, account_uri: str | None) -> AcmeSession:
        return AcmeSession(self.directory_url, account_key_pem, ca_bundle=self.ca_bundle, account_uri=account_uri,
                           on_request=self.on_request)

    async def renewal_window(self, cert_id: str, *, on_event: EventSink | None = None
                             ) -> tuple[dt.datetime, dt.datetime, dt.datetime | None] | None:
        """The CA's ARI window for an RFC 9773 certID, or None when the CA has no renewalInfo.

        The directory is read at most once an hour; the renewalInfo GET is unauthenticated (RFC 9773 4.1). A CA
        that answers it with ``accountDoesNotExist`` (it forgot edgecert's account) gets the same heal as an order:
        the account is registered again once (event ``account_recreated``) and the window asked again."""
        try:
            return await self._renewal_window(cert_id)
        except errors.AcmeError as e:
            if not account_gone(e):
                raise
            stale = self._account or await self.storage.get_account(self.directory_url)
            if stale is None or stale.id == self._healed_account_id:
                raise self._operator_error(e) from e
            await self.recreate_account(stale, e, on_event or _noop)
            return await self._renewal_window(cert_id)

    async def _renewal_window(self, cert_id: str) -> tuple[dt.datetime, dt.datetime, dt.datetime | None] | None:
        await self.directory_json()
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
                try:
                    doc = r.json()
                except ValueError:
                    doc = None
                ptype = doc.get("type") if isinstance(doc, dict) else None
                detail = doc.get("detail") if isinstance(doc, dict) else r.text[:200]
                raise errors.from_problem(ptype, detail, status=r.status_code,
                                          retry_after=parse_retry_after(r.headers.get("Retry-After")),
                                          context="renewalInfo")
            win = r.json()["suggestedWindow"]
            start = dt.datetime.fromisoformat(win["start"].replace("Z", "+00:00"))
            end = dt.datetime.fromisoformat(win["end"].replace("Z", "+00:00"))
            return start, end, parse_retry_after(r.headers.get("Retry-After"))
        return await self._in_thread(fetch)

    # -- issuance ------------------------------------------------------------------------------------------------
    def issued_from(self, order: AcmeOrder, *, acme_requests: int = 0) -> IssuedCertificate:
        """The certificate a journal entry downloaded (step ``downloaded`` or later), with its key."""
        if order.fullchain_pem is None or order.key_enc is None:
            raise errors.OrderFailed(f"order {order.id} has no downloaded certificate")
        certs = split_pem_chain(order.fullchain_pem)
        if not certs:
            raise errors.OrderFailed("the CA returned no certificate")
        key_pem = self.keybox.decrypt(order.key_enc, purpose=f"order-key:{order.domain_id}".encode())
        info = read_certificate(certs[0])
        return IssuedCertificate(names=tuple(json.loads(order.names)), cert_pem=certs[0],
                                 chain_pem="".join(certs[1:]), key_pem=key_pem, info=info,
                                 order_id=order.id, key_type=info.key_type, acme_requests=acme_requests,
                                 directory=order.directory_url or self.directory_url, profile=order.profile,
                                 challenge=order.challenge)

    async def issue(self, *, domain_id: int, names: list[str], key_type: str, replaces: str | None = None,
                    is_renewal: bool = False, on_event: EventSink | None = None,
                    challenges: tuple[str, ...] | None = None, directories: list[str] | None = None,
                    profile: str | None = None) -> IssuedCertificate:
        """:meth:`issue_once`, healing the account once: when the CA no longer knows it (``accountDoesNotExist``,
        a CA reset, a wiped staging CA), a new account is registered (event ``account_recreated``) and the same
        step is tried again. A second failure in a row (the account registered just now is refused too) raises
        :class:`errors.AccountProblem` naming what an operator must check."""
        sink = on_event or _noop
        if directories is not None and self.directory_url not in directories:
            raise errors.NoIssuer(f"this issuer ({self.directory_url}) is not among the directories asked for: "
                                  f"{', '.join(directories) or '(none)'}")
        profile = profile or self.profile
        try:
            issued = await self.issue_once(domain_id=domain_id, names=names, key_type=key_type, replaces=replaces,
                                           is_renewal=is_renewal, on_event=on_event, challenges=challenges,
                                           profile=profile)
        except errors.AcmeError as e:
            if not account_gone(e):
                raise
            stale = self._account
            if stale is None or stale.id == self._healed_account_id:
                raise self._operator_error(e) from e
            await self.recreate_account(stale, e, sink)
            try:
                issued = await self.issue_once(domain_id=domain_id, names=names, key_type=key_type,
                                               replaces=replaces, is_renewal=is_renewal, on_event=on_event,
                                               challenges=challenges, profile=profile)
            except errors.AcmeError as e2:
                if account_gone(e2):
                    raise self._operator_error(e2) from e2
                raise
        self._healed_account_id = None  # the account works: a later reset may heal again
        return issued

    def _operator_error(self, e: errors.AcmeError) -> errors.AccountProblem:
        return errors.AccountProblem(
            "the CA refused the ACME account edgecert registered just now "
            f"({(e.problem_type or e.code).rsplit(':', 1)[-1]}); an operator must check {self.setting} "
            "and that the CA accepts new accounts (External Account Binding, contact email: acme_email), then run "
            "`edgecert domains renew HOSTNAME`", problem_type=e.problem_type, detail=e.detail, status=e.status)

    async def recreate_account(self, stale: AcmeAccount, cause: errors.AcmeError, on_event: EventSink) -> AcmeAccount:
        """Register a new account (new key) in place of ``stale``, which the CA no longer knows. Once: concurrent
        callers (other workers, other processes) that saw the same stale account use the one registered first."""
        async with self._account_lock:
            if self._account is not None and self._account.id != stale.id and self._account.uri:
                return self._account
            async with self.storage.lock(f"acme-account:{self.directory_url}", ttl=120, timeout=120):
                current = await self.storage.get_account(self.directory_url)
                if current is not None and current.id != stale.id and current.uri:
                    self._account = current
                    return current
                if current is not None:
                    # Kept (renamed) for the record: its orders in the journal still point at it.
                    current.name = f"gone-{current.id}-{int(time.time())}"
                    await self.storage.save_account(current)
                key_pem = private_key_pem(generate_private_key("ecdsa-p256"))
                uri = await self._register(key_pem)
                acct = await self.storage.save_account(AcmeAccount(
                    directory_url=self.directory_url, email=self.email, uri=uri,
                    key_enc=self.keybox.encrypt(key_pem, purpose=b"acme-account")))
                self._account = acct
                self._healed_account_id = acct.id
        log.warning("the CA no longer knows ACME account %s (%s); registered a new account %s",
                    stale.uri, cause.code, acct.uri)
        if self.on_account_recreated is not None:
            try:
                self.on_account_recreated(self.directory_url)
            except Exception:  # noqa: BLE001 - a metric must never break the heal
                log.exception("on_account_recreated hook failed")
        await on_event("account_recreated", "the CA no longer knew edgecert's ACME account; a new account was "
                       "registered and the step is tried again",
                       {"old_account": stale.uri, "new_account": acct.uri, "problem_type": cause.problem_type,
                        "directory": self.directory_url})
        return acct

    async def issue_once(self, *, domain_id: int, names: list[str], key_type: str, replaces: str | None = None,
                         is_renewal: bool = False, on_event: EventSink | None = None,
                         challenges: tuple[str, ...] | None = None, profile: str | None = None
                         ) -> IssuedCertificate:
        """Run the domain's order journal to ``downloaded`` (see :class:`store.models.JournalStep`): continue the
        open entry from its last durable step (a downloaded certificate is returned as it is, an order the CA has
        is fetched again by its URL), or start one. Transient errors retry the same order within this call
        (:mod:`acme_client.journal`) and, when they outlast it, leave the entry open for the next call; only a
        verdict of the CA ends it (step ``invalid``)."""
        on_event = on_event or _noop
        acct = await self.account()
        account_key_pem = self.keybox.decrypt(acct.key_enc, purpose=b"acme-account")
        purpose = f"order-key:{domain_id}".encode()

        order = await self.storage.open_order(domain_id)
        if order is not None and order.step in (JournalStep.DOWNLOADED, JournalStep.INSTALLED):
            await on_event("order_resumed", f"order {order.url} was downloaded before a restart; installing it",
                           {"order_url": order.url, "step": order.step, "order_id": order.id})
            if order.tokens:
                await self._withdraw(_journal_tokens(order))
                order.tokens = None
                order = await self.storage.save_order(order)
            return self.issued_from(order)
        if order is not None and order.url and order.directory_url and order.directory_url != self.directory_url:
            # Exactly one order per name: an order open at another CA is continued there (acme_client/issuers.py).
            raise errors.OrderFailed(f"an order for these names is open at another CA ({order.directory_url})")
        if order is not None and (order.account_id != acct.id or order.key_enc is None or order.csr_pem is None):
            order.step = JournalStep.ABANDONED
            order.error = "made with another ACME account"
            await self.storage.save_order(order)
            order = None
        reopened = order is not None  # an entry left at ``intent``: its newOrder may have reached the CA
        if order is None:
            key = generate_private_key(key_type)
            key_pem = private_key_pem(key)
            csr_pem = make_csr(key, names)
            order = await self.storage.save_order(AcmeOrder(
                domain_id=domain_id, account_id=acct.id, status="creating", step=JournalStep.INTENT,
                names=json.dumps(names), replaces=replaces, csr_pem=csr_pem.decode(),
                key_enc=self.keybox.encrypt(key_pem, purpose=purpose), is_renewal=is_renewal,
                directory_url=self.directory_url, profile=profile))
            crash_point(JournalStep.INTENT)
        else:
            assert order.key_enc is not None and order.csr_pem is not None
            key_pem = self.keybox.decrypt(order.key_enc, purpose=purpose)
            csr_pem = order.csr_pem.encode()
            names = json.loads(order.names)
            replaces = order.replaces
            profile = order.profile
            if order.url:
                await on_event("order_resumed", f"continuing order {order.url} from step {order.step}",
                               {"order_url": order.url, "step": order.step, "order_id": order.id})
        resumed = order.url is not None
        full_deadline = time.monotonic() + self.order_timeout
        run = OrderAttempt(self, order, deadline=full_deadline, challenges=challenges)
        if order.url is None and self.new_order_wait is not None:
            # Nothing at the CA yet: a CA that stays down (unreachable, 5xx) this long is given up for this
            # attempt, so a chain can try the next one. Once the order exists, it is waited for in full.
            run.deadline = min(full_deadline, time.monotonic() + self.new_order_wait)
        sess: AcmeSession = await run.call(lambda: self._session(account_key_pem, acct.uri))
        tokens: dict[str, tuple[str, str]] = {}   # token -> (identifier, kind): withdrawn once the order is over
        verdict = False
        try:
            if order.url is None:
                if profile:
                    offered = await self.profiles()
                    if not offered or profile not in offered:
                        raise errors.ProfileUnknown(
                            f"profile {profile!r} is not offered by the CA at {self.directory_url} (it offers: "
                            f"{', '.join(sorted(offered)) if offered else 'none'}); "
                            f"check the domain's profile or the profile of {self.setting}")
                # A newOrder sent before (an earlier call that left the entry at ``intent``, or a try of this call
                # that failed in transit) may have created an order whose URL never reached the journal: the
                # account's open orders are looked at first, so the CA keeps exactly one order for these names.
                sent = [reopened]

                def place() -> tuple[messages.OrderResource, bool]:
                    if sent[0]:
                        found = sess.find_open_order(names)
                        if found is not None:
                            return found, True
                    sent[0] = True
                    placed = sess.create_order(csr_pem, replaces=replaces, profile=profile)
                    crash_point(NEW_ORDER_ANSWERED)
                    return placed, False
                created, adopted = await run.call(place)
                run.deadline = full_deadline
                order.url = created.uri
                order.status = created.body.status.name if created.body.status else "pending"
                order.expires_at = created.body.expires
                order.step = JournalStep.ORDERED
                order = run.order = await self.storage.save_order(order)
                crash_point(JournalStep.ORDERED)
                found = (" (its answer had not reached the journal before a restart or was lost on the way: found "
                         "among the account's open orders)") if adopted else ""
                await on_event("order_placed", f"order placed with the CA for {', '.join(names)}{found}",
                               {"order_url": created.uri, "replaces": replaces, "order_id": order.id,
                                "adopted": adopted})
            orderr = messages.OrderResource(uri=order.url, csr_pem=csr_pem, body=messages.Order())
            validated = False
            while True:
                orderr, retry_after = await run.call(lambda: sess.get_order(orderr))
                body = orderr.body
                run.expires = body.expires or run.expires
                if body.status == messages.STATUS_INVALID:
                    verdict = True
                    raise await self._verdict(run, sess, orderr, tokens)
                if body.status == messages.STATUS_PENDING:
                    for url in body.authorizations:
                        authzr = await run.call(lambda u=url: sess.get_authorization(u))
                        self._remember_token(authzr, tokens)
                        if authzr.body.status == messages.STATUS_INVALID:
                            verdict = True
                            raise await self._verdict(run, sess, orderr, tokens)
                        if authzr.body.status != messages.STATUS_PENDING:
                            continue
                        await self._answer(run, sess, authzr, on_event)
                    await run.pause(retry_after)
                    continue
                if not validated:
                    validated = True
                    await on_event("challenge_valid", f"the CA validated {', '.join(names)}", {})
                if body.status == messages.STATUS_READY:
                    if run.order.step != JournalStep.FINALIZING:
                        await run.step(JournalStep.FINALIZING)
                    try:
                        await run.call(lambda: sess.begin_finalize(orderr))
                    except errors.OrderFailed as e:
                        if not (e.problem_type or "").endswith("orderNotReady"):
                            raise
                    continue  # read the order again: processing or valid
                if body.status == messages.STATUS_VALID and body.certificate is not None:
                    if not tokens and resumed:
                        # Answers published before a restart: find their tokens, to withdraw them below.
                        for url in body.authorizations:
                            try:
                                self._remember_token(await run.call(lambda u=url: sess.get_authorization(u)), tokens)
                            except errors.AcmeError:
                                pass
                    fullchain = await run.call(lambda: sess.download(body.certificate))
                    if not split_pem_chain(fullchain):
                        raise errors.ServerUnavailable("the CA returned no certificate")
                    order = run.order
                    order.fullchain_pem = fullchain
                    order.status = "valid"
                    order.step = JournalStep.DOWNLOADED
                    order = run.order = await self.storage.save_order(order)
                    crash_point(JournalStep.DOWNLOADED)
                    await on_event("order_downloaded", f"certificate downloaded from order {order.url}",
                                   {"order_url": order.url, "order_id": order.id})
                    verdict = True  # the order is over at the CA: its answers can go
                    return self.issued_from(order, acme_requests=sess.requests_made)
                await run.pause(retry_after)  # processing (or valid without a certificate yet)
        except errors.AcmeError as e:
            if e.retryable is False and not verdict:
                verdict = True  # a final problem type (badCSR, rejectedIdentifier, ...): the order is over
                await run.end(JournalStep.INVALID, str(e))
            elif not verdict:
                run.order.retries += 1
                run.order.error = str(e)
                run.order = await self.storage.save_order(run.order)
            raise
        finally:
            if verdict:
                tokens.update(_journal_tokens(run.order))
                await self._withdraw(tokens)
                if run.order.tokens:
                    run.order.tokens = None
                    try:
                        run.order = await self.storage.save_order(run.order)
                    except Exception:
                        log.exception("could not update order %s", run.order.id)

    async def _withdraw(self, tokens: dict[str, tuple[str, str]]) -> None:
        for token, (ident, kind) in tokens.items():
            try:
                await self.publisher.withdraw(hostname=ident, kind=kind, token=token)
            except Exception:
                log.exception("could not withdraw challenge token for %s", ident)

    @staticmethod
    def _remember_token(authzr: messages.AuthorizationResource, tokens: dict[str, tuple[str, str]]) -> None:
        for challb in authzr.body.challenges:
            token = getattr(challb.chall, "token", None)
            if token is not None:
                tokens[challb.chall.encode("token")] = (authzr.body.identifier.value, challb.chall.typ)

    async def _answer(self, run: "OrderAttempt", sess: AcmeSession, authzr: messages.AuthorizationResource,
                      on_event: EventSink) -> None:
        try:
            challb = pick_challenge(authzr, run.challenges or self.preferred)
        except LookupError as e:
            raise errors.RejectedIdentifier(str(e)) from None
        kind = challb.chall.typ
        validation = answer_value(challb, sess.account_key)
        ident = authzr.body.identifier.value
        token = challb.chall.encode("token")
        if token not in run.published:
            # Journaled first, so that the answer is withdrawn once the order is over, whatever happens meanwhile.
            known = _journal_tokens(run.order)
            if token not in known or run.order.challenge != kind:
                known[token] = (ident, kind)
                run.order.tokens = json.dumps([[i, k, t] for t, (i, k) in known.items()])
                run.order.challenge = kind
                run.order = await self.storage.save_order(run.order)
            await self.publisher.publish(hostname=ident, kind=kind, token=token, key_authorization=validation)
            run.published.add(token)
        if challb.status != messages.STATUS_PENDING:
            return  # the CA is validating it already (answered before a restart or a retry)
        if run.order.step != JournalStep.AUTHORIZING:
            await run.step(JournalStep.AUTHORIZING)
        try:
            await run.call(lambda: sess.answer(challb))
        except errors.OrderFailed as e:
            # Answered before (the answer reached the CA, its reply did not): the CA says it is not pending.
            if (e.problem_type or "").rsplit(":", 1)[-1] != "malformed":
                raise
            return
        await on_event("challenge_answered", f"{kind} challenge for {ident} answered",
                       {"type": kind, "identifier": ident})

    async def _verdict(self, run: "OrderAttempt", sess: AcmeSession, orderr: messages.OrderResource,
                       tokens: dict[str, tuple[str, str]]) -> errors.AcmeError:
        """The CA ended the order (invalid order or authorization): journal it and return the typed error."""
        failed = []
        for url in orderr.body.authorizations:
            try:
                a = await run.call(lambda u=url: sess.get_authorization(u))
            except errors.AcmeError:
                continue
            self._remember_token(a, tokens)
            if a.body.status not in (messages.STATUS_VALID, messages.STATUS_PENDING):
                failed.append(a)
        err: errors.AcmeError
        if failed:
            err = validation_error(failed, "authorization")
        elif orderr.body.error is not None:
            err = errors.from_problem(orderr.body.error.typ, orderr.body.error.detail, context="order")
        else:
            err = errors.OrderFailed(f"order {orderr.uri} is invalid at the CA")
        await run.end(JournalStep.INVALID, str(err))
        return err


class OrderAttempt:
    """One attempt at a journal entry: persists steps and retries transient errors of the same order."""

    def __init__(self, issuer: AcmeIssuer, order: AcmeOrder, *, deadline: float,
                 challenges: tuple[str, ...] | None = None) -> None:
        self.issuer = issuer
        self.challenges = challenges  # challenge kinds in order of preference (None: the issuer's default)
        self.order = order
        self.deadline = deadline
        self.expires: dt.datetime | None = order.expires_at
        self.polls = 0
        self.published: set[str] = set()

    def bound(self) -> float:
        """Monotonic time after which this attempt stops: the attempt's deadline or the order's expiry."""
        b = self.deadline
        if self.expires is not None:
            exp = self.expires if self.expires.tzinfo else self.expires.replace(tzinfo=dt.timezone.utc)
            b = min(b, time.monotonic() + (exp - dt.datetime.now(dt.timezone.utc)).total_seconds())
        return b

    async def step(self, step: str) -> None:
        self.order.step = step
        self.order = await self.issuer.storage.save_order(self.order)
        crash_point(step)

    async def end(self, step: str, error: str) -> None:
        self.order.step = step
        self.order.status = "invalid"
        self.order.error = error
        self.order = await self.issuer.storage.save_order(self.order)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """``fn`` in the protocol thread; transient errors retried (bad nonce at once, others with backoff)."""
        nonces = transient = 0
        while True:
            try:
                return await self.issuer._in_thread(fn)
            except errors.BadNonce:
                nonces += 1
                if nonces <= BAD_NONCE_RETRIES and time.monotonic() < self.bound():
                    continue
                raise
            except TRANSIENT as e:
                transient += 1
                wait = CA_RETRY_SCHEDULE.delay(transient) or 0.0
                if e.retry_after is not None:
                    wait = max(wait, (e.retry_after - dt.datetime.now(dt.timezone.utc)).total_seconds())
                if time.monotonic() + wait >= self.bound():
                    raise
                log.info("order %s: %s; trying the same order again in %.1fs", self.order.url or "(new)", e, wait)
                await asyncio.sleep(wait)

    async def pause(self, retry_after: dt.datetime | None) -> None:
        """Between two reads of an order or authorization the CA is still deciding."""
        self.polls += 1
        wait = POLL_SCHEDULE.base(self.polls) or 1.0
        if retry_after is not None:
            wait = max(wait, min(30.0, (retry_after - dt.datetime.now(dt.timezone.utc)).total_seconds()))
        if time.monotonic() + wait >= self.bound():
            raise errors.OrderTimeout(f"order {self.order.url} not finished in time (step {self.order.step})")
        await asyncio.sleep(wait)


def account_gone(e: errors.AcmeError) -> bool:
    """The CA no longer knows the account (``accountDoesNotExist``, or ``unauthorized`` about the account key)."""
    short = (e.problem_type or "").rsplit(":", 1)[-1]
    if short == "accountDoesNotExist":
        return True
    detail = (e.detail or "").lower()
    return short == "unauthorized" and ("account" in detail or "registration" in detail) \
        and "authoriz" not in detail


def _journal_tokens(order: AcmeOrder) -> dict[str, tuple[str, str]]:
    """The challenge answers an entry published: token -> (identifier, kind)."""
    try:
        return {t: (i, k) for i, k, t in json.loads(order.tokens or "[]")}
    except (ValueError, TypeError):
        return {}
