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

_OLD_STEPS = {
    "dns_not_configured": ["Check the record from outside: `dig +short {h} A` and `dig +short {h} CNAME`.",
                           "If the record was just created, wait for the negative-cache TTL (SOA minimum)."],
    "wrong_endpoint": ["Compare `dig +short {h}` with the edge target; remove stale A/AAAA records."],
    "connection_refused": ["Check that the server listens on 443 (`ss -ltnp 'sport = :443'`) and the load balancer "
                           "forwards it."],
    "connection_timeout": ["Check firewalls / security groups for port 443 from the visitor's network; "
                           "`curl -v --connect-timeout 10 https://{h}/`."],
    "plain_http_on_tls_port": ["`curl -v http://{h}:443/` answering HTTP confirms it; enable TLS on the listener."],
    "protocol_version_mismatch": ["List what the server accepts: `openssl s_client -connect {h}:443 -tls1_2` and "
                                  "`-tls1_3` (and `-tls1 -cipher DEFAULT:@SECLEVEL=0`)."],
    "cipher_mismatch": ["List the server's suites with `nmap --script ssl-enum-ciphers -p 443 {h}` or "
                        "`openssl s_client -cipher ALL:@SECLEVEL=0`."],
    "sni_unrecognized": ["Check the server has a site/certificate for {h}; compare with `-noservername`."],
    "handshake_failure": ["Run the command from inside and outside the network: a middlebox cuts the handshake if "
                          "only one side fails.", "Read the server's TLS error log at the time of the attempt."],
    "default_certificate": ["Compare the served certificate's subject with the name: "
                            "`... | openssl x509 -noout -subject -ext subjectAltName`.",
                            "Check the domain is registered on the edge and its certificate issued."],
    "hostname_mismatch": ["Read the SANs: `... | openssl x509 -noout -ext subjectAltName`."],
    "expired": ["Read the dates: `... | openssl x509 -noout -dates`; renew and reload."],
    "not_yet_valid": ["Read the dates: `... | openssl x509 -noout -dates`; check the issuing machine's clock."],
    "client_clock_skew": ["Compare the visitor's device date with the real date; enable automatic time."],
    "incomplete_chain": ["Count the certificates the server sends (`-showcerts`); serve fullchain.pem."],
    "self_signed": ["Replace the certificate with one from a public CA."],
    "untrusted_root": ["Read the chain's top issuer (`-showcerts`); check it is publicly trusted."],
    "tls_interception": ["Compare the issuer seen on the affected network with the one seen elsewhere; if it "
                         "differs, a proxy or antivirus re-signs the traffic."],
    "weak_signature": ["Read the signature algorithm: `... | openssl x509 -noout -text | grep 'Signature Alg'`."],
    "weak_key": ["Read the key size: `... | openssl x509 -noout -text | grep 'Public-Key'`."],
    "revoked": ["Check the CRL / OCSP status with the CA; issue a new certificate."],
    "mixed_content": ["Open the browser console on the page and fix every http:// URL it lists."],
}


NEXT_STEPS = {**_OLD_STEPS, 
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
