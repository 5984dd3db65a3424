"""The protocol client: one synchronous ACME session per task, run off the event loop.

Wraps certbot's ``acme`` package (``ClientV2`` + ``ClientNetwork``) and adds what it lacks: every response is
remembered so ``Retry-After`` and the HTTP status of a problem are read from the CA's answer, not guessed; errors
become the typed errors of :mod:`acme_client.errors`; ``replaces`` (RFC 9773) is sent with new orders; an order can
be resumed from its URL after a restart. One :class:`AcmeSession` must be used by one thread at a time (the
``acme`` nonce pool and requests session are not thread-safe).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from typing import Any, Callable

import josepy as jose
import requests
from acme import client as acme_client_mod
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import errors
from .retry import RetrySchedule

__all__ = ["AcmeSession", "parse_retry_after", "jwk_from_pem", "validation_error", "POLL_SCHEDULE"]

log = logging.getLogger(__name__)
USER_AGENT = "edgecert/0.1 (+acme-python)"
#: Polling an authorization or an order that is still being decided: 0.25 s, then 1.6 times longer, at most 3 s.
POLL_SCHEDULE = RetrySchedule("acme-poll", (0.25,), factor=1.6, cap=3.0)


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """Read an HTTP ``Retry-After`` (seconds or HTTP-date) as an aware UTC datetime; None when absent/invalid."""
    if not value:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    value = value.strip()
    if value.isdigit():
        return now + dt.timedelta(seconds=int(value))
    try:
        t = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t


def jwk_from_pem(pem: bytes) -> tuple[jose.JWK, jose.JWASignature]:
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {256: jose.ES256, 384: jose.ES384}.get(key.curve.key_size, jose.ES256)
        return jose.JWKEC(key=key), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key), jose.RS256
    raise ValueError("unsupported account key type")


def _json_object(response: requests.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when it is not one (a CA's odd answer ends a search, not the order)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


ORPHAN_SCAN_LIMIT = 20  # orders of the account looked at for an orphan (find_open_order)
ORPHAN_SCAN_PAGES = 3


class _NewOrder(messages.NewOrder):
    """newOrder payload with the RFC 9773 ``replaces`` field."""

    replaces: str | None = jose.field("replaces", omitempty=True)


class AcmeSession:
    """One ACME conversation (account + orders) for one thread.

    Args:
        directory_url: the CA's directory.
        account_key_pem: PEM of the account private key.
        ca_bundle: PEM bundle to trust the CA's own HTTPS (Pebble); None for the system store.
        account_uri: the account URL when it is already registered.
        timeout: per-request network timeout, seconds.
        on_request: called as ``on_request(kind, status)`` after every response (metrics, ledgers).

    Raises:
        errors.NetworkError: the directory cannot be fetched.
    """

    def __init__(self, directory_url: str, account_key_pem: bytes, *, ca_bundle: str | None = None,
                 account_uri: str | None = None, timeout: int = 30,
                 on_request: Callable[[str, int], None] | None = None) -> None:
        self.directory_url = directory_url
        jwk, alg = jwk_from_pem(account_key_pem)
        self.net = acme_client_mod.ClientNetwork(jwk, alg=alg, verify_ssl=ca_bundle or True,
                                                 user_agent=USER_AGENT, timeout=timeout)
        self.last_response: requests.Response | None = None
        self._on_request = on_request
        self.net.session.hooks["response"].append(self._remember)
        self.requests_made = 0
        self.directory = self._call("directory", lambda: acme_client_mod.ClientV2.get_directory(directory_url, self.net))
        self.client = acme_client_mod.ClientV2(self.directory, self.net)
        if account_uri:
            self.net.account = messages.RegistrationResource(uri=account_uri, body=messages.Registration())

    # -- plumbing --------------------------------------------------------------------------------------------
    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last_response = response
        self.requests_made += 1
        if self._on_request is not None:
            try:
                self._on_request(_kind_of(response.request.method, response.url, self.directory_urls()),
                                 response.status_code)
            except Exception:  # metrics must never break the protocol
                log.exception("on_request hook failed")

    def directory_urls(self) -> dict[str, str]:
        d = getattr(self, "directory", None)
        if d is None:
            return {}
        out = {}
        for k in ("newNonce", "newAccount", "newOrder", "revokeCert", "renewalInfo", "keyChange"):
            try:
                out[k] = d[k]
            except (KeyError, AttributeError):
                pass
        return out

    def _retry_after(self) -> dt.datetime | None:
        r = self.last_response
        return parse_retry_after(r.headers.get("Retry-After")) if r is not None else None

    def _status(self) -> int | None:
        return self.last_response.status_code if self.last_response is not None else None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except messages.Error as e:
            raise errors.from_problem(e.typ, e.detail, status=self._status(), retry_after=self._retry_after(),
                                      subproblems=[sp.to_partial_json() if hasattr(sp, "to_partial_json") else {}
                                                   for sp in (e.subproblems or [])],
                                      context=what) from e
        except acme_errors.ConflictError:
            raise
        except (acme_errors.BadNonce, acme_errors.MissingNonce) as e:
            raise errors.BadNonce(f"{what}: the CA's nonce was refused or missing: {e}") from e
        except acme_errors.ValidationError as e:
            raise validation_error(e.failed_authzrs, what) from e
        except acme_errors.IssuanceError as e:
            err = e.error
            raise errors.from_problem(err.typ, err.detail, status=self._status(), context=what) from e
        except acme_errors.TimeoutError as e:
            raise errors.OrderTimeout(f"{what}: the CA did not finish in time") from e
        except (requests.ConnectionError, requests.Timeout) as e:
            raise errors.NetworkError(f"{what}: cannot reach the CA at {self.directory_url}: {e}") from e
        except requests.RequestException as e:
            raise errors.NetworkError(f"{what}: {e}") from e
        except acme_errors.ClientError as e:
            status = self._status()
            if status is not None and status >= 500:  # a 5xx without a problem document (a proxy, a balancer)
                raise errors.ServerUnavailable(f"{what}: the CA answered HTTP {status}", status=status,
                                               retry_after=self._retry_after()) from e
            raise errors.OrderFailed(f"{what}: {e}") from e
        except acme_errors.Error as e:
            raise errors.OrderFailed(f"{what}: {e}") from e

    # -- account ---------------------------------------------------------------------------------------------
    def register(self, *, email: str | None = None, eab_kid: str | None = None,
                 eab_hmac_key: str | None = None) -> str:
        """Create (or find, for this key) the account; returns its URL.

        ``eab_kid`` / ``eab_hmac_key`` (base64url, as the CA hands it out): External Account Binding (RFC 8555
        7.3.4), required by ZeroSSL and Google Trust Services; the account key is signed with the HMAC key."""
        eab = None
        if eab_kid and eab_hmac_key:
            try:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=self.net.key.public_key(), kid=eab_kid, hmac_key=eab_hmac_key,
                    directory=self.directory)
            except (ValueError, TypeError) as e:
                raise errors.AccountProblem(f"newAccount: the External Account Binding HMAC key cannot be used "
                                            f"({e}); check eab_hmac_key (base64url, as the CA gave it)") from None
        reg = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True,
                                                 external_account_binding=eab)

        def do() -> str:
            try:
                regr = self.client.new_account(reg)
                return regr.uri
            except acme_errors.ConflictError as e:
                self.net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
                return e.location
        return self._call("newAccount", do)

    def meta(self) -> dict[str, Any]:
        """The directory's ``meta`` object as JSON (``profiles``, ``caaIdentities``, ``externalAccountRequired``)."""
        try:
            meta = self.directory["meta"]
        except (KeyError, AttributeError):
            return {}
        if meta is None:
            return {}
        try:
            return dict(meta.to_partial_json())
        except Exception:  # noqa: BLE001 - an odd meta object is no reason to fail an order
            return {}

    @property
    def account_uri(self) -> str | None:
        return self.net.account.uri if self.net.account is not None else None

    @property
    def account_key(self) -> jose.JWK:
        return self.net.key

    # -- orders ----------------------------------------------------------------------------------------------
    def create_order(self, csr_pem: bytes, *, replaces: str | None = None, profile: str | None = None
                     ) -> messages.OrderResource:
        """POST newOrder and return at once (no authorization fetched): the caller journals the URL first."""
        from acme import crypto_util
        from cryptography import x509

        csr = x509.load_pem_x509_csr(csr_pem)
        dns_names, _ = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
        kwargs: dict[str, Any] = {"identifiers": [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n)
                                                  for n in dns_names]}
        if profile:
            kwargs["profile"] = profile
        if replaces:
            kwargs["replaces"] = replaces
        order = _NewOrder(**kwargs)

        def do() -> messages.OrderResource:
            response = self.client._post(self.directory["newOrder"], order)
            body = messages.Order.from_json(response.json())
            location = response.headers.get("Location")
            if not location:
                raise errors.OrderFailed("newOrder: the CA answered without the order's URL")
            return messages.OrderResource(body=body, uri=location, authorizations=[], csr_pem=csr_pem)
        return self._call("newOrder", do)

    def find_open_order(self, names: list[str], *, limit: int = ORPHAN_SCAN_LIMIT) -> messages.OrderResource | None:
        """An order of this account for exactly ``names`` that is still open at the CA (``pending`` or ``ready``),
        or None: the order a newOrder may have created although its answer never reached the journal (the process
        died, or the answer was lost, between the CA creating it and the journal recording its URL).

        Read from the account's ``orders`` list (RFC 8555 section 7.1.2.1): at most ``limit`` orders from each end of
        it, at most a few pages. A CA without that list (Let's Encrypt) gives None; Boulder hands back the same pending
        order for the same names to a repeated newOrder, so nothing is lost there either. An order found here was
        placed by the same intent (same account, same names) and never got further than ``ready``: nobody answered
        or finalized it, so continuing it is exactly what the journal would have done."""
        want = sorted(n.lower() for n in names)

        def do() -> messages.OrderResource | None:
            acct_uri = self.account_uri
            if not acct_uri:
                return None
            url = _json_object(self.client._post_as_get(acct_uri)).get("orders")
            if not isinstance(url, str) or not url:
                return None
            urls: list[str] = []
            for _page in range(ORPHAN_SCAN_PAGES):
                response = self.client._post_as_get(url)
                listed = _json_object(response).get("orders")
                urls.extend(u for u in (listed if isinstance(listed, list) else []) if isinstance(u, str))
                nxt = response.links.get("next", {}).get("url") if response.links else None
                if not nxt or len(urls) >= limit * 4:
                    break
                url = nxt
            # RFC 8555 does not say in which order the list comes: its newest end may be either one.
            candidates = list(dict.fromkeys(list(reversed(urls[-limit:])) + urls[:limit]))
            for order_url in candidates:
                try:
                    body = messages.Order.from_json(_json_object(self.client._post_as_get(order_url)))
                except jose.DeserializationError:
                    continue  # not an order we can read: not ours to continue
                if body.status not in (messages.STATUS_PENDING, messages.STATUS_READY):
                    continue
                if sorted(str(i.value).lower() for i in (body.identifiers or ())) == want:
                    return messages.OrderResource(body=body, uri=order_url, authorizations=[], csr_pem=None)
            return None
        return self._call("orders", do)

    def get_order(self, orderr: messages.OrderResource) -> tuple[messages.OrderResource, dt.datetime | None]:
        """The order as the CA has it now, and the CA's Retry-After (if it sent one)."""
        def do() -> tuple[messages.OrderResource, dt.datetime | None]:
            response = self.client._post_as_get(orderr.uri)
            body = messages.Order.from_json(response.json())
            return orderr.update(body=body), parse_retry_after(response.headers.get("Retry-After"))
        return self._call("order", do)

    def get_authorization(self, url: str) -> messages.AuthorizationResource:
        return self._call("authz", lambda: self.client._authzr_from_response(self.client._post_as_get(url), uri=url))

    def begin_finalize(self, orderr: messages.OrderResource) -> None:
        """POST the CSR to the order's finalize URL (the order then goes processing -> valid)."""
        self._call("finalize", lambda: self.client.begin_finalization(orderr))

    def download(self, certificate_url: str) -> str:
        return self._call("certificate", lambda: self.client._post_as_get(certificate_url).text)

    def load_order(self, url: str, csr_pem: bytes) -> messages.OrderResource:
        """Fetch an existing order (resume after a restart)."""
        def do() -> messages.OrderResource:
            response = self.client._post_as_get(url)
            body = messages.Order.from_json(response.json())
            authzs = [self.client._authzr_from_response(self.client._post_as_get(u), uri=u)
                      for u in body.authorizations]
            return messages.OrderResource(body=body, uri=url, authorizations=authzs, csr_pem=csr_pem)
        return self._call("order", do)

    def answer(self, challb: messages.ChallengeBody) -> None:
        response = challb.response(self.net.key)
        self._call("challenge", lambda: self.client.answer_challenge(challb, response))

    def poll_authorizations(self, orderr: messages.OrderResource, *, deadline: float) -> messages.OrderResource:
        """Wait until every authorization is decided (monotonic ``deadline``); raise ChallengeFailed if invalid."""
        done = []
        for authzr in orderr.authorizations:
            url = authzr.uri
            polls = 0
            while True:
                if authzr.body.status != messages.STATUS_PENDING:
                    done.append(authzr)
                    break
                if time.monotonic() >= deadline:
                    raise errors.OrderTimeout(
                        f"authorization for {authzr.body.identifier.value} still pending at the deadline")
                polls += 1
                time.sleep(POLL_SCHEDULE.base(polls))
                authzr = self._call("authz", lambda: self.client._authzr_from_response(
                    self.client._post_as_get(url), uri=url))
        failed = [a for a in done if a.body.status != messages.STATUS_VALID]
        if failed:
            raise validation_error(failed, "authorization")
        return orderr.update(authorizations=done)

    def finalize(self, orderr: messages.OrderResource, *, deadline: float) -> messages.OrderResource:
        """Finalize (if not yet) and wait for the certificate; returns the order with ``fullchain_pem``."""
        url = orderr.uri
        body = orderr.body
        polls = 0
        while True:
            if body.status == messages.STATUS_INVALID:
                err = body.error
                if err is not None:
                    raise errors.from_problem(err.typ, err.detail, context="order")
                raise errors.OrderFailed("the CA marked the order invalid without a reason")
            if body.status == messages.STATUS_READY:
                self._call("finalize", lambda: self.client.begin_finalization(orderr))
            elif body.status == messages.STATUS_VALID and body.certificate is not None:
                cert = self._call("certificate", lambda: self.client._post_as_get(body.certificate))
                return orderr.update(body=body, fullchain_pem=cert.text)
            if time.monotonic() >= deadline:
                raise errors.OrderTimeout(f"order {url} not valid at the deadline (status {body.status})")
            polls += 1
            time.sleep(POLL_SCHEDULE.base(polls))
            response = self._call("order", lambda: self.client._post_as_get(url))
            body = messages.Order.from_json(response.json())
            ra = parse_retry_after(response.headers.get("Retry-After"))
            if ra is not None:
                wait = (ra - dt.datetime.now(dt.timezone.utc)).total_seconds()
                if wait > POLL_SCHEDULE.base(polls + 1):
                    time.sleep(min(wait, max(0.0, deadline - time.monotonic())))


def validation_error(failed_authzrs: list, what: str) -> errors.AcmeError:
    parts = []
    first_type = None
    for a in failed_authzrs:
        for ch in a.body.challenges:
            if ch.error is not None:
                first_type = first_type or ch.error.typ
                parts.append(f"{a.body.identifier.value} ({ch.chall.typ}): "
                             f"{(ch.error.typ or '').rsplit(':', 1)[-1]}: {ch.error.detail}")
    if not parts:
        parts = [f"{a.body.identifier.value}: authorization {a.body.status}" for a in failed_authzrs]
    short = (first_type or "").rsplit(":", 1)[-1]
    cls: type[errors.AcmeError] = errors.ChallengeFailed
    if short == "caa":
        cls = errors.CAARefused
    elif short in ("rejectedIdentifier", "unsupportedIdentifier"):
        cls = errors.RejectedIdentifier
    return cls(f"{what}: the CA could not validate " + "; ".join(parts), problem_type=first_type,
               detail="; ".join(parts))


def _kind_of(method: str | None, url: str, directory: dict[str, str]) -> str:
    for k, v in directory.items():
        if url == v or (k == "renewalInfo" and url.startswith(v)):
            return k
    low = url.lower()
    if method == "GET" and (low.endswith("/dir") or low.endswith("/directory")):
        return "directory"
    for part, kind in (("/authz", "authz"), ("/chal", "challenge"), ("/challenge", "challenge"),
                       ("/finalize", "finalize"), ("/cert", "certificate"), ("/my-order", "order"),
                       ("/order", "order"), ("/acct", "account"), ("/my-account", "account")):
        if part in low:
            return kind
    return "other"
