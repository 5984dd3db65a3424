"""Challenge selection and the seam through which answers are published (HTTP-01 tokens in the store)."""

from __future__ import annotations

from typing import Protocol

from acme import challenges, messages

__all__ = ["ChallengePublisher", "pick_challenge", "answer_value", "SUPPORTED", "TLSALPN01"]

SUPPORTED = ("http-01",)


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer to a tls-alpn-01 challenge (RFC 8737): ``{}`` on the wire, like http-01's."""
    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """tls-alpn-01 (RFC 8737), which acme 5.x no longer knows (it would arrive as ``UnrecognizedChallenge``, without
    a token): the publisher gets the key authorization; the edge serves the acmeIdentifier certificate made from it
    (``edge/tls_edge/certificates.py``) to ALPN ``acme-tls/1``."""
    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key, **unused_kwargs) -> str:
        return self.key_authorization(account_key)


class ChallengePublisher(Protocol):
    """Makes a challenge answer visible to the CA's validator (e.g. the plain-HTTP listener reads the store).

    ``key_authorization`` is the value :func:`answer_value` gives for ``kind``: the key authorization for
    ``http-01`` and ``tls-alpn-01`` (the edge builds the acmeIdentifier certificate from it), the TXT record value
    for ``dns-01``. ``hostname`` is the identifier without any ``*.`` (a wildcard's authorization is for its base
    name)."""

    async def publish(self, *, hostname: str, kind: str, token: str, key_authorization: str) -> None: ...
    async def withdraw(self, *, hostname: str, kind: str, token: str) -> None: ...


def pick_challenge(authzr: messages.AuthorizationResource, preferred: tuple[str, ...] = SUPPORTED
                   ) -> messages.ChallengeBody:
    """The first challenge of the authorization whose type we can answer, in ``preferred`` order.

    Raises:
        LookupError: the CA offers none of them (e.g. only dns-01 for a wildcard).
    """
    offered = {}
    for challb in authzr.body.challenges:
        typ = challb.chall.typ if not isinstance(challb.chall, challenges.UnrecognizedChallenge) \
            else challb.chall.jobj.get("type")
        offered[typ] = challb
    for typ in preferred:
        if typ in offered:
            return offered[typ]
    raise LookupError(f"the CA offers {sorted(offered)} for {authzr.body.identifier.value}; "
                      f"edgecert can answer {list(preferred)}")


def answer_value(challb: messages.ChallengeBody, account_key) -> str:
    """What a publisher must make visible for ``challb``: the key authorization (``http-01``, ``tls-alpn-01``)
    or the TXT record value, base64url(SHA-256(key authorization)) (``dns-01``)."""
    chall = challb.chall
    if isinstance(chall, challenges.DNS01):
        return chall.validation(account_key)
    return chall.key_authorization(account_key)
