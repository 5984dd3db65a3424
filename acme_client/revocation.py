"""Giving things back to the CA when a domain is removed: revoking its certificate (RFC 8555 §7.6) and deactivating
the authorizations of an order that will never be finished (§7.5.2).

Synchronous, like the ``acme`` package under it: callers run these functions in a thread, one session each.
Errors are :mod:`acme_client.errors` types (a CA that cannot be reached is a ``NetworkError``, a refusal carries
its problem type).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from acme import messages
from cryptography import x509

from . import errors
from .client import AcmeSession

__all__ = ["REASONS", "CESSATION_OF_OPERATION", "Revocation", "revoke_certificate", "deactivate_authorizations"]

log = logging.getLogger(__name__)

#: RFC 5280 §5.3.1 reason codes a subscriber may give (RFC 8555 §7.6).
REASONS = {"unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3, "superseded": 4,
           "cessationOfOperation": 5}
#: The reason for a certificate whose name is no longer served.
CESSATION_OF_OPERATION = REASONS["cessationOfOperation"]


@dataclass(frozen=True)
class Revocation:
    """The CA's answer: ``already`` when it had revoked the certificate before; ``signed_with`` ``certificate``
    (the certificate's own key) or ``account``."""

    serial: str
    reason: int
    signed_with: str
    already: bool = False


class _CleanupSession(AcmeSession):
    """An :class:`AcmeSession` with the two calls a removal needs."""

    def revoke(self, cert: x509.Certificate, reason: int) -> None:
        self._call("revokeCert", lambda: self.client.revoke(cert, reason))

    def deactivate(self, order_url: str) -> tuple[list[str], list[str]]:
        order = self._call("order", lambda: messages.Order.from_json(self.client._post_as_get(order_url).json()))
        done, left = [], []
        for url in order.authorizations:
            authzr = self.get_authorization(url)
            status = authzr.body.status
            if status in (messages.STATUS_PENDING, messages.STATUS_VALID):
                self._call("authz", lambda: self.client.deactivate_authorization(authzr))
                done.append(url)
            else:
                left.append(f"{url} ({status.name if hasattr(status, 'name') else status})")
        return done, left


def revoke_certificate(*, directory_url: str, cert_pem: str, cert_key_pem: bytes | None = None,
                       account_key_pem: bytes | None = None, account_uri: str | None = None,
                       reason: int = CESSATION_OF_OPERATION, ca_bundle: str | None = None,
                       timeout: int = 30) -> Revocation:
    """Revoke ``cert_pem`` at the CA of ``directory_url``: signed with the certificate's own key first (works
    whichever account ordered it), then, if the CA refuses that, with the account key.

    Raises:
        errors.NetworkError / errors.ServerUnavailable: the CA cannot be reached or is down (nothing revoked).
        errors.AcmeError: the CA refused both ways (its problem type and detail kept).
    """
    cert = x509.load_pem_x509_certificate(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
    serial = format(cert.serial_number, "x")
    attempts: list[tuple[str, bytes, str | None]] = []
    if cert_key_pem:
        attempts.append(("certificate", cert_key_pem, None))
    if account_key_pem and account_uri:
        attempts.append(("account", account_key_pem, account_uri))
    if not attempts:
        raise ValueError("revoke_certificate needs the certificate's key or the account key")
    last: errors.AcmeError | None = None
    for signed_with, key_pem, kid in attempts:
        sess = _CleanupSession(directory_url, key_pem, ca_bundle=ca_bundle, account_uri=kid, timeout=timeout)
        try:
            sess.revoke(cert, reason)
            return Revocation(serial, reason, signed_with)
        except errors.AcmeError as e:
            if (e.problem_type or "").endswith("alreadyRevoked"):
                return Revocation(serial, reason, signed_with, already=True)
            if isinstance(e, (errors.NetworkError, errors.ServerUnavailable)):
                raise
            log.info("revocation of %s signed with the %s key refused: %s", serial, signed_with, e)
            last = e
    assert last is not None
    raise last


def deactivate_authorizations(*, directory_url: str, order_url: str, account_key_pem: bytes, account_uri: str,
                              ca_bundle: str | None = None, timeout: int = 30) -> tuple[list[str], list[str]]:
    """Deactivate every pending or valid authorization of the order at ``order_url`` (POST
    ``{"status": "deactivated"}`` to each, RFC 8555 §7.5.2): the order can then never complete and the account
    keeps no authorization for the name. Returns (deactivated URLs, others left as they were with their status).

    Raises:
        errors.AcmeError: the CA cannot be reached or refused (e.g. the order belongs to another account).
    """
    sess = _CleanupSession(directory_url, account_key_pem, ca_bundle=ca_bundle, account_uri=account_uri,
                           timeout=timeout)
    return sess.deactivate(order_url)
