"""The ids triage may answer, with the words it says about each (summary, fix, who acts, next steps).

The vocabulary is ``modes.FAILURE_MODES`` (shared/docs/failure-modes.md) plus the ids added for issue 16
(``client_certificate_required``, ``alpn_mismatch``, ``handshake_timeout``, ``unsuitable_purpose``,
``invalid_chain``, ``must_staple_missing``) and ``unclassified``. Where ``modes`` does not (yet) describe an id,
the description below is used; ``unknown`` is never answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from .modes import FAILURE_MODES

__all__ = ["ModeWords", "words", "vocabulary", "NEXT_STEPS"]


@dataclass(frozen=True)
class ModeWords:
    id: str
    summary: str
    fix: str
    who_acts: str


_NEW = {
    "client_certificate_required": ModeWords(
        "client_certificate_required",
        "The server demands a client certificate (mutual TLS) and the client has none it accepts: TLS 1.3 servers "
        "send alert 116 (certificate required) right after the handshake, TLS 1.2 servers alert 40/42 after a "
        "CertificateRequest.",
        "If the site is public, stop requesting client certificates on this listener (nginx: `ssl_verify_client "
        "off` or `optional`); if it is meant for mTLS, give the client a certificate from the CA the server trusts.",
        "operator"),
    "alpn_mismatch": ModeWords(
        "alpn_mismatch",
        "The server accepts none of the application protocols the client offers (ALPN, alert 120 \"no application "
        "protocol\"): e.g. the port is held by an `acme-tls/1`-only responder or an h2-only server.",
        "Make the listener accept `h2` and `http/1.1` (and `acme-tls/1` only for ACME validation connections).",
        "operator"),
    "handshake_timeout": ModeWords(
        "handshake_timeout",
        "TCP connects and the ClientHello is sent, but the server never completes the TLS handshake (a stalled "
        "process, an overloaded TLS terminator, or a middlebox eating TLS).",
        "Check that the TLS process answers on the port (its load, worker limits, logs) and what sits in front of it "
        "(firewalls or IPS that pass TCP but drop TLS).",
        "operator / network"),
    "unsuitable_purpose": ModeWords(
        "unsuitable_purpose",
        "The certificate's extended key usage does not allow TLS server authentication (for example a "
        "clientAuth-only or code-signing certificate), or its key usage forbids the handshake's signature.",
        "Issue a certificate with extendedKeyUsage serverAuth (ACME CAs do) and install it.",
        "operator"),
    "invalid_chain": ModeWords(
        "invalid_chain",
        "The chain is complete but not valid: an issuer that is not a CA (basicConstraints / keyCertSign), a path "
        "length or name constraint violated.",
        "Serve the chain the CA issued (leaf, then its real intermediate); do not sign server certificates with a "
        "certificate that is not a CA or whose constraints exclude the name.",
        "operator"),
    "must_staple_missing": ModeWords(
        "must_staple_missing",
        "The certificate carries the TLS feature \"status_request\" (OCSP must-staple) but the server sends no OCSP "
        "staple: Firefox refuses the connection, Chrome ignores it.",
        "Enable OCSP stapling on the server (nginx: `ssl_stapling on; ssl_stapling_verify on;`) or reissue without "
        "must-staple.",
        "operator"),
    "unclassified": ModeWords(
        "unclassified",
        "The report names no failure this vocabulary knows: no single cause could be identified; the candidates are "
        "the best guesses.",
        "Run the openssl command from the affected network and paste its whole output, or run "
        "`edgecert diagnose HOSTNAME`.",
        "-"),
}

NEXT_STEPS = {
    "client_certificate_required": [
        "Look for \"Acceptable client certificate CA names\" in the transcript: the server asks for a client "
        "certificate."],
    "alpn_mismatch": ["Compare `-alpn h2,http/1.1` with `-alpn http/1.1` and with no `-alpn`: only the offered "
                      "protocols change."],
    "handshake_timeout": ["`CONNECTED(...)` followed by nothing confirms it: TCP works, TLS does not answer."],
    "unsuitable_purpose": ["Read the key usages: `... | openssl x509 -noout -ext extendedKeyUsage,keyUsage`."],
    "invalid_chain": ["Read each certificate's constraints: `... -showcerts` then `openssl x509 -noout -ext "
                      "basicConstraints,keyUsage,nameConstraints` on every one."],
    "must_staple_missing": ["`... -status` prints \"OCSP response: no response sent\" on a must-staple leaf."],
    "unclassified": ["Paste the complete error (browser error code, the full curl -v output, or the whole "
                     "`openssl s_client` transcript).", "Run `edgecert diagnose {h}` from the edge's side."],
}


def words(mode_id: str) -> ModeWords:
    """What to say about ``mode_id``: the shared vocabulary's words when it has them, else the ones above."""
    m = FAILURE_MODES.get(mode_id)
    if m is not None and mode_id != "unknown":
        return ModeWords(m.id, m.summary, m.fix, m.who_acts)
    return _NEW.get(mode_id, _NEW["unclassified"])


def vocabulary() -> frozenset[str]:
    """Every id triage may answer (never ``unknown``)."""
    return frozenset((set(FAILURE_MODES) | set(_NEW)) - {"unknown"})
