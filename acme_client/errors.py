"""Typed ACME errors that carry data. Retryable and final errors are different types: callers never parse strings.

Root: :class:`AcmeError`. ``retryable`` says whether trying again later can help; ``retry_after`` (aware UTC
datetime) is the earliest time the CA allows, read from its ``Retry-After`` header when it sent one.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["AcmeError", "RetryableError", "FinalError", "RateLimited", "ServerUnavailable", "NetworkError",
           "BadNonce", "ChallengeFailed", "OrderFailed", "Unauthorized", "RejectedIdentifier", "CAARefused",
           "AccountProblem", "OrderTimeout", "DnsNotReady", "from_problem", "PROBLEM_PREFIX", "plain_reason", "is_plain",
           "WHO_ACTS", "PLAIN_TEXT", "IdentifierPaused", "LocalLimit", "NoIssuer", "ProfileUnknown", "OPERATOR_MARK",
           "tenant_text", "tenant_event", "unpause_url"]

PROBLEM_PREFIX = "urn:ietf:params:acme:error:"


class AcmeError(Exception):
    """Root of every error edgecert's ACME client raises."""

    retryable: bool = True
    code: str = "acme_error"

    def __init__(self, message: str, *, problem_type: str | None = None, detail: str | None = None,
                 status: int | None = None, retry_after: dt.datetime | None = None,
                 subproblems: list[dict[str, Any]] | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problem_type = problem_type
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        self.subproblems = subproblems or []
        self.url = url

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "problem_type": self.problem_type,
                "status": self.status, "retryable": self.retryable,
                "retry_after": self.retry_after.isoformat() if self.retry_after else None}


class RetryableError(AcmeError):
    retryable = True


class FinalError(AcmeError):
    """Trying again will not help until a person changes something."""

    retryable = False


class RateLimited(RetryableError):
    code = "rate_limited"


class ServerUnavailable(RetryableError):
    code = "ca_unavailable"


class NetworkError(RetryableError):
    code = "ca_unreachable"


class BadNonce(RetryableError):
    code = "bad_nonce"


class ChallengeFailed(RetryableError):
    """The CA could not validate the name (it counts against the CA's failed-validation limit)."""

    code = "challenge_failed"


class OrderFailed(RetryableError):
    code = "order_failed"


class OrderTimeout(RetryableError):
    code = "order_timeout"


class DnsNotReady(RetryableError):
    code = "dns_not_pointing"


class Unauthorized(FinalError):
    code = "unauthorized"


class RejectedIdentifier(FinalError):
    code = "rejected_identifier"


class CAARefused(FinalError):
    code = "caa_refused"


class AccountProblem(FinalError):
    code = "account_problem"


class IdentifierPaused(FinalError):
    """Let's Encrypt paused new orders for this name at this account after repeated failed validations: nothing
    helps until the operator unpauses it at ``url`` (the CA's self-service page), then asks for a renewal."""

    code = "identifier_paused"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "unpause_url": self.url}


class LocalLimit(RateLimited):
    """Held by edgecert's own copy of the CA's limits (no request was made): its message is safe for tenants."""

    code = "rate_limited"


class ProfileUnknown(FinalError):
    """The ACME profile asked for is not offered by the CA (its directory's ``meta.profiles``)."""

    code = "profile_unknown"


class NoIssuer(FinalError):
    """The caller's ``directories`` list names no configured issuer."""

    code = "no_issuer"


_FINAL = {
    "rejectedIdentifier": RejectedIdentifier,
    "unsupportedIdentifier": RejectedIdentifier,
    "caa": CAARefused,
    "unauthorized": Unauthorized,
    "accountDoesNotExist": AccountProblem,
    "externalAccountRequired": AccountProblem,
    "invalidContact": AccountProblem,
    "unsupportedContact": AccountProblem,
    "userActionRequired": AccountProblem,
    "badCSR": FinalError,
    "badSignatureAlgorithm": FinalError,
    "badPublicKey": FinalError,
    "alreadyReplaced": FinalError,
}
_RETRY = {
    "rateLimited": RateLimited,
    "serverInternal": ServerUnavailable,
    "badNonce": BadNonce,
    "connection": ChallengeFailed,
    "dns": ChallengeFailed,
    "incorrectResponse": ChallengeFailed,
    "tls": ChallengeFailed,
    "orderNotReady": OrderFailed,
}


_URL_RE = re.compile(r"https?://[^\s\"'<>)]+")


def unpause_url(detail: str | None) -> str | None:
    """The self-service unpause URL of a paused-identifier problem (Let's Encrypt: ``https://portal.letsencrypt.org/
    sfe/v1/unpause?jwt=...``), or None when ``detail`` carries none."""
    for u in _URL_RE.findall(detail or ""):
        if "unpause" in u.lower():
            return u.rstrip(".,;")
    return None


def from_problem(problem_type: str | None, detail: str | None, *, status: int | None = None,
                 retry_after: dt.datetime | None = None, subproblems: list[dict[str, Any]] | None = None,
                 url: str | None = None, context: str = "") -> AcmeError:
    """Map an RFC 7807 problem document from the CA to the matching typed error.

    A ``rateLimited`` or ``unauthorized`` problem whose detail carries an unpause URL is Let's Encrypt's *paused
    identifier* (:class:`IdentifierPaused`, ``url`` = the unpause page)."""
    short = (problem_type or "")
    if short.startswith(PROBLEM_PREFIX):
        short = short[len(PROBLEM_PREFIX):]
    cls: type[AcmeError]
    paused = unpause_url(detail) if short in ("rateLimited", "unauthorized", "") else None
    if paused:
        cls = IdentifierPaused
        url = paused
    elif short in _FINAL:
        cls = _FINAL[short]
    elif short in _RETRY:
        cls = _RETRY[short]
    elif status == 503 or status == 429:
        cls = ServerUnavailable if status == 503 else RateLimited
    elif status is not None and 500 <= status < 600:
        cls = ServerUnavailable
    else:
        cls = OrderFailed
    msg = f"{context}: " if context else ""
    msg += f"the CA said {short or 'an error'}" + (f" ({detail})" if detail else "")
    if subproblems:
        msg += "; " + "; ".join(
            f"{(sp.get('identifier') or {}).get('value', '?')}: {sp.get('detail', sp.get('type', ''))}"
            for sp in subproblems)
    return cls(msg, problem_type=problem_type, detail=detail, status=status, retry_after=retry_after,
               subproblems=subproblems, url=url)


#: Who must act on each error code (the status page's "who acts"): the CA's trouble is nobody's task at first.
WHO_ACTS = {
    "ca_unreachable": "nobody (the operator if it lasts)",
    "ca_unavailable": "nobody (the operator if it lasts)",
    "rate_limited": "nobody",
    "bad_nonce": "nobody",
    "order_timeout": "nobody",
    "order_failed": "nobody (the operator if it lasts)",
    "challenge_failed": "nobody (the operator if it lasts)",
    "caa_refused": "tenant",
    "rejected_identifier": "operator",
    "unauthorized": "operator",
    "account_problem": "operator",
    "identifier_paused": "operator",
    "profile_unknown": "operator",
    "no_issuer": "operator",
}

PLAIN_TEXT = {
    "ca_unreachable": "We cannot reach the certificate authority right now. Nothing is wrong with your domain; we "
                      "try again automatically.",
    "ca_unavailable": "The certificate authority is having problems (it answered with a server error). Nothing is "
                      "wrong with your domain; we try again automatically.",
    "ca_unavailable_wait": "The certificate authority is busy and asked us to wait. Nothing is wrong with your "
                           "domain; we try again automatically at the time shown.",
    "rate_limited": "The certificate authority asked us to wait (a rate limit). We try again automatically at the "
                    "time shown; there is nothing for you to do.",
    "bad_nonce": "The certificate authority did not issue the certificate this time; we try again automatically.",
    "order_timeout": "The certificate authority did not finish in time; we try again automatically.",
    "order_failed": "The certificate authority did not issue the certificate this time; we try again automatically.",
    "challenge_failed": "The certificate authority could not confirm that this name points at us; we try again "
                        "automatically.",
    "caa_refused": "A CAA record in your domain's DNS does not allow our certificate authority to issue for this "
                   "name. Add a CAA record that allows it (or remove the restriction) at your DNS provider.",
    "rejected_identifier": "The certificate authority refuses to issue a certificate for this name (its policy). "
                           "The service operator has to act.",
    "unauthorized": "The certificate authority refused the request. The service operator has to act.",
    "account_problem": "The service's account with the certificate authority was not accepted. The service "
                       "operator has to act: check the acme_directory setting (EDGECERT_ACME_DIRECTORY) and that "
                       "the CA accepts new accounts (acme_email, External Account Binding), then run "
                       "`edgecert domains renew <hostname>`.",
    "identifier_paused": "The certificate authority has paused new certificates for this name after repeated failed "
                         "attempts. The service operator has to act (unpause it at the CA); nothing is needed from "
                         "you.",
    "profile_unknown": "The certificate profile configured for this name is not offered by our certificate "
                       "authority. The service operator has to act.",
    "no_issuer": "No certificate authority is configured for this name. The service operator has to act.",
}

#: What follows this mark in a domain's ``last_error`` is for the operator only (a URL to act on): tenant answers
#: and the status page cut it off (:func:`tenant_text`).
OPERATOR_MARK = " Operator: "


def is_plain(text: str | None) -> bool:
    """Whether ``text`` is one of :func:`plain_reason`'s sentences (safe to show a tenant as it is): no URL, no
    operator-only part."""
    return bool(text) and "://" not in text and OPERATOR_MARK not in text \
        and any(text.startswith(t) for t in PLAIN_TEXT.values())  # type: ignore[union-attr, operator]


def tenant_text(text: str | None) -> str | None:
    """``text`` as a tenant may read it: the operator-only part (after :data:`OPERATOR_MARK`) cut off and any URL
    left replaced by ``[link for the operator]``."""
    if not text:
        return text
    text = text.split(OPERATOR_MARK, 1)[0]
    return _URL_RE.sub("[link for the operator]", text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_RE.sub("[link for the operator]", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()
                if k not in ("message", "detail", "order_url", "old_account", "new_account", "unpause_url",
                             "directory", "problem_type")}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def tenant_event(kind: str, message: str, data: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """An event as a tenant may read it (``GET /v1/domains/{h}/events`` with a tenant token): a CA failure becomes
    the plain sentence of its code; no exception text, no CA detail, no URL anywhere."""
    data = data or {}
    err = data.get("error")
    if isinstance(err, dict) and err.get("code"):
        code = str(err["code"])
        msg = PLAIN_TEXT.get(code) or ("The certificate authority did not issue the certificate this time; we try "
                                       "again automatically." if err.get("retryable", True) else
                                       "The certificate authority refused the request. The service operator has to "
                                       "act.")
        return msg, _scrub(data)
    if kind in ("account_recreated", "issuer_skipped", "order_placed", "order_resumed", "order_downloaded"):
        msg = {"account_recreated": "The service renewed its account with the certificate authority.",
               "issuer_skipped": "One certificate authority could not issue this time; the next one is tried.",
               "order_placed": "A certificate was requested from the certificate authority.",
               "order_resumed": "The certificate request in progress is being continued.",
               "order_downloaded": "The certificate was received from the certificate authority."}[kind]
        return msg, _scrub(data)
    return _URL_RE.sub("[link for the operator]", tenant_text(message) or ""), _scrub(data)


def plain_reason(e: AcmeError) -> str:
    """One plain sentence for a domain's ``last_error`` (tenants read it): what happened and what happens next.

    Never the exception text, the CA's detail or a URL (they go to the event and the log, for the operator); only
    the CA's problem type (e.g. ``rateLimited``) is named, for the operator's search."""
    code = e.code
    text = PLAIN_TEXT.get(code) or ("The certificate authority did not issue the certificate this time; we try again "
                                "automatically." if e.retryable else
                                "The certificate authority refused the request. The service operator has to act.")
    if code == "ca_unavailable" and e.retry_after is not None:
        text = PLAIN_TEXT["ca_unavailable_wait"]
    if isinstance(e, LocalLimit):
        return e.message  # our own ledger's words: the limit, the scope and the time (no CA text, no URL)
    short = (e.problem_type or "").rsplit(":", 1)[-1]
    if short and short.replace("_", "").isalnum() and len(short) <= 40:
        text += f" (CA problem: {short})"
    elif e.status:
        text += f" (HTTP {e.status})"
    if isinstance(e, (AccountProblem, ProfileUnknown, NoIssuer)) and e.message:
        # The operator reads which setting to fix (cut off for tenants by tenant_text / is_plain).
        text += OPERATOR_MARK + e.message
    elif isinstance(e, IdentifierPaused) and e.url:
        # For the operator only (cut off for tenants by tenant_text / is_plain): where to unpause, then what to run.
        text += f"{OPERATOR_MARK}unpause the name at {e.url} then run `edgecert domains renew <hostname>`."
    return text
