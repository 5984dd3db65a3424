"""The TLS failure-mode vocabulary (shared/docs/failure-modes.md) as data.

Every id is a stable public identifier: it appears in JSON answers, metrics labels and docs. Ids may be added,
never renamed. ``unknown`` is added here for the triage classifier (text it cannot place).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["FailureMode", "FAILURE_MODES", "PHASES", "PRIORITY", "get_mode"]

PHASES = ("-", "dns", "tcp", "handshake", "certificate", "client", "network", "page")


@dataclass(frozen=True)
class FailureMode:
    """One failure mode: what is wrong, who fixes it, and how each tool shows it."""

    id: str
    phase: str
    summary: str
    fix: str
    who_acts: str
    browser_errors: Mapping[str, str]
    openssl: str
    curl: str
    #: OpenSSL ``verify error:num=N`` codes that point at this mode (certificate modes only).
    verify_codes: tuple[int, ...] = field(default=())

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "phase": self.phase,
            "summary": self.summary,
            "fix": self.fix,
            "who_acts": self.who_acts,
            "browser_errors": dict(self.browser_errors),
            "openssl": self.openssl,
            "curl": self.curl,
            "verify_codes": list(self.verify_codes),
        }


def _b(chrome: str, firefox: str, safari: str, edge: str | None = None) -> Mapping[str, str]:
    return MappingProxyType({"chrome": chrome, "firefox": firefox, "safari": safari, "edge": edge or chrome})


_MODES = [
    FailureMode(
        "ok", "-",
        "Nothing is wrong: the TLS handshake and certificate verification succeed for this name.",
        "Nothing to fix.",
        "-",
        _b("-", "-", "-"),
        "Verify return code: 0 (ok)", "exit 0",
    ),
    FailureMode(
        "dns_not_configured", "dns",
        "The name does not resolve: DNS answers NXDOMAIN or has no A/AAAA record for it.",
        "Create the DNS record at the domain's DNS provider: a CNAME to the edge target (or A/AAAA records with the "
        "edge's addresses), then wait for the TTL to pass.",
        "tenant",
        _b("ERR_NAME_NOT_RESOLVED (DNS_PROBE_FINISHED_NXDOMAIN)", "Hmm. We're having trouble finding that site.",
           "Safari can't find the server (NSURLErrorCannotFindHost -1003)"),
        "connect fails: BIO_lookup_ex ... Name or service not known", "6 Could not resolve host",
    ),
    FailureMode(
        "wrong_endpoint", "dns",
        "The name resolves, but somewhere other than the edge (a stale CDN, the old host, a proxy in front): "
        "what answers there is not this service.",
        "Point the name at the edge: replace the old A/AAAA/CNAME records with a CNAME to the edge target, and remove "
        "any stale records.",
        "tenant",
        _b("NET::ERR_CERT_COMMON_NAME_INVALID", "SSL_ERROR_BAD_CERT_DOMAIN", "certificate name does not match input"),
        "verify error:num=62 (hostname mismatch) with -verify_hostname",
        "60 no alternative certificate subject name matches target host name",
        (62,),
    ),
    FailureMode(
        "connection_refused", "tcp",
        "Nothing listens on the port: the TCP connection is refused.",
        "Start the TLS listener on port 443 (or open it in the firewall so it does not answer with a reset).",
        "operator",
        _b("ERR_CONNECTION_REFUSED", "Unable to connect", "Safari can't connect to the server (-1004)"),
        "connect:errno=111 Connection refused", "7 Failed to connect ... Connection refused",
    ),
    FailureMode(
        "connection_timeout", "tcp",
        "Packets are dropped on the way: the TCP connection never completes (a firewall or security group blocks "
        "port 443).",
        "Open port 443 in the firewall / security group / network ACL in front of the edge.",
        "operator / network",
        _b("ERR_CONNECTION_TIMED_OUT", "The connection has timed out", "The request timed out (-1001)"),
        "hangs, then connect:errno=110", "28 Connection timed out",
    ),
    FailureMode(
        "plain_http_on_tls_port", "handshake",
        "The port speaks plain HTTP, not TLS.",
        "Enable TLS on the listener for port 443 (nginx: `listen 443 ssl;`), or send HTTPS to the TLS port.",
        "operator",
        _b("ERR_SSL_PROTOCOL_ERROR", "SSL_ERROR_RX_RECORD_TOO_LONG", "NSURLErrorSecureConnectionFailed -1200"),
        "wrong version number", "35 wrong version number",
    ),
    FailureMode(
        "protocol_version_mismatch", "handshake",
        "No TLS version in common: the server only speaks TLS 1.0/1.1 (or only TLS 1.3 against an old client).",
        "Enable TLS 1.2 and TLS 1.3 on the server (nginx: `ssl_protocols TLSv1.2 TLSv1.3;`).",
        "operator",
        _b("ERR_SSL_VERSION_OR_CIPHER_MISMATCH (ERR_SSL_OBSOLETE_VERSION)", "SSL_ERROR_UNSUPPORTED_VERSION",
           "NSURLErrorSecureConnectionFailed -1200 / errSSLPeerProtocolVersion -9836"),
        "alert number 70 (protocol version)", "35 tlsv1 alert protocol version / unsupported protocol",
    ),
    FailureMode(
        "cipher_mismatch", "handshake",
        "No cipher suite in common with browsers (or a weak Diffie-Hellman group).",
        "Offer modern cipher suites (ECDHE with AES-GCM or ChaCha20; nginx: drop the custom `ssl_ciphers` or use "
        "Mozilla's intermediate list) and at least a 2048-bit DH group.",
        "operator",
        _b("ERR_SSL_VERSION_OR_CIPHER_MISMATCH", "SSL_ERROR_NO_CYPHER_OVERLAP", "NSURLErrorSecureConnectionFailed -1200"),
        "alert number 40 (handshake failure) / dh key too small", "35 sslv3 alert handshake failure",
    ),
    FailureMode(
        "sni_unrecognized", "handshake",
        "The server rejected the requested name (SNI) with an unrecognized_name alert: it has no site for it.",
        "Configure the server for this name (a server block / certificate for it), or route the name to the edge "
        "that serves it.",
        "operator",
        _b("ERR_SSL_UNRECOGNIZED_NAME_ALERT", "SSL_ERROR_UNRECOGNIZED_NAME_ALERT",
           "NSURLErrorSecureConnectionFailed -1200"),
        "alert number 112 (unrecognized name)", "35 tlsv1 unrecognized name",
    ),
    FailureMode(
        "handshake_failure", "handshake",
        "The TLS handshake was cut (reset or closed mid-handshake, often by a middlebox); the cause is not visible "
        "from here.",
        "Check what sits in front of the server (load balancer, firewall, IPS) and the server's TLS error log for "
        "the moment of the attempt.",
        "network",
        _b("ERR_CONNECTION_RESET / ERR_SSL_PROTOCOL_ERROR", "PR_CONNECT_RESET_ERROR",
           "NSURLErrorSecureConnectionFailed -1200"),
        "unexpected eof while reading / errno=104", "35 Connection reset by peer / unexpected eof",
    ),
    FailureMode(
        "default_certificate", "certificate",
        "The server sent its default / fallback certificate, not one for this name: the name is unknown to it (or "
        "the client sent no SNI).",
        "Provision a certificate for this name on the edge (check the domain is registered and its certificate "
        "issued), or make sure the client sends SNI.",
        "operator",
        _b("NET::ERR_CERT_COMMON_NAME_INVALID", "SSL_ERROR_BAD_CERT_DOMAIN", "certificate name does not match input"),
        "verify error:num=62 (or 20/18 when the default certificate is not publicly chained)",
        "60 no alternative certificate subject name matches target host name",
        (62, 18, 20),
    ),
    FailureMode(
        "hostname_mismatch", "certificate",
        "The certificate's subject alternative names do not cover this name.",
        "Issue a certificate whose SANs include this exact name (a wildcard covers one label only).",
        "operator",
        _b("NET::ERR_CERT_COMMON_NAME_INVALID", "SSL_ERROR_BAD_CERT_DOMAIN", "errSSLHostNameMismatch -9843"),
        "verify error:num=62 (hostname mismatch) with -verify_hostname",
        "60 no alternative certificate subject name matches target host name",
        (62,),
    ),
    FailureMode(
        "expired", "certificate",
        "A certificate in the chain (the leaf or an intermediate) has expired: its notAfter is in the past.",
        "Renew the certificate and install the new one with its current intermediate chain, then reload the server.",
        "operator",
        _b("NET::ERR_CERT_DATE_INVALID", "SEC_ERROR_EXPIRED_CERTIFICATE",
           "NSURLErrorServerCertificateHasBadDate -1201 / errSSLCertExpired -9814"),
        "verify error:num=10 (certificate has expired)", "60 certificate has expired",
        (10,),
    ),
    FailureMode(
        "not_yet_valid", "certificate",
        "A certificate in the chain is not valid yet: its notBefore is in the future.",
        "Check the clock of the machine that issued or installed it; reissue with a correct validity window.",
        "operator",
        _b("NET::ERR_CERT_DATE_INVALID", "MOZILLA_PKIX_ERROR_NOT_YET_VALID_CERTIFICATE",
           "NSURLErrorServerCertificateNotYetValid -1204"),
        "verify error:num=9 (certificate is not yet valid)", "60 certificate is not yet valid",
        (9,),
    ),
    FailureMode(
        "client_clock_skew", "client",
        "The certificate is valid now, but the visitor's clock is outside its validity window.",
        "Set the visitor's device clock (enable automatic date and time).",
        "visitor",
        _b("NET::ERR_CERT_DATE_INVALID (\"Your clock is ahead/behind\")",
           "SEC_ERROR_EXPIRED_CERTIFICATE / MOZILLA_PKIX_ERROR_NOT_YET_VALID_CERTIFICATE (clock warning)",
           "NSURLErrorServerCertificateHasBadDate -1201 / -1204"),
        "verify error:num=10 / 9 with -attime", "60 certificate has expired / is not yet valid",
        (10, 9),
    ),
    FailureMode(
        "incomplete_chain", "certificate",
        "The server does not send the intermediate certificate(s): clients that do not fetch it themselves cannot "
        "build a chain to a trusted root.",
        "Serve the full chain: leaf first, then the intermediate(s) (nginx: `ssl_certificate fullchain.pem`).",
        "operator",
        _b("NET::ERR_CERT_AUTHORITY_INVALID (often rescued by AIA fetching)", "SEC_ERROR_UNKNOWN_ISSUER",
           "possible missing intermediate"),
        "verify error:num=20 (unable to get local issuer certificate) / 21", "60 unable to get local issuer certificate",
        (20, 21, 2),
    ),
    FailureMode(
        "self_signed", "certificate",
        "The certificate is self-signed: no certificate authority vouches for it.",
        "Replace it with a certificate from a public CA (the edge issues one through ACME).",
        "operator",
        _b("NET::ERR_CERT_AUTHORITY_INVALID", "MOZILLA_PKIX_ERROR_SELF_SIGNED_CERT",
           "NSURLErrorServerCertificateUntrusted -1202"),
        "verify error:num=18 (self-signed certificate)", "60 self-signed certificate",
        (18,),
    ),
    FailureMode(
        "untrusted_root", "certificate",
        "The chain ends at a root certificate that clients do not trust (a private or unknown CA).",
        "Use a certificate chained to a publicly trusted root (or distribute the private root to every client).",
        "operator",
        _b("NET::ERR_CERT_AUTHORITY_INVALID", "SEC_ERROR_UNKNOWN_ISSUER",
           "NSURLErrorServerCertificateHasUnknownRoot -1203"),
        "verify error:num=19 (self-signed certificate in certificate chain)",
        "60 self-signed certificate in certificate chain",
        (19, 24),
    ),
    FailureMode(
        "tls_interception", "network",
        "A middlebox (corporate proxy, antivirus, captive portal) re-signed the connection: the issuer the client "
        "saw is not the edge's.",
        "Trust the proxy's CA on the visitor's device, exempt the domain from TLS inspection, or use another network.",
        "visitor's network",
        _b("NET::ERR_CERT_AUTHORITY_INVALID / ERR_CERT_KNOWN_INTERCEPTION_BLOCKED",
           "MOZILLA_PKIX_ERROR_MITM_DETECTED / SEC_ERROR_UNKNOWN_ISSUER", "certificate is not trusted"),
        "verify error:num=19 / 20, issuer DN not the edge's", "60",
        (19, 20),
    ),
    FailureMode(
        "weak_signature", "certificate",
        "A certificate in the chain is signed with SHA-1 or MD5, which clients reject.",
        "Reissue the certificate (and use an intermediate) signed with SHA-256 or better.",
        "operator",
        _b("NET::ERR_CERT_WEAK_SIGNATURE_ALGORITHM", "SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED",
           "broken signature algorithm"),
        "verify error:num=68 (CA signature digest algorithm too weak)", "60 CA signature digest algorithm too weak",
        (68,),
    ),
    FailureMode(
        "weak_key", "certificate",
        "A certificate's key is too small (RSA under 2048 bits).",
        "Generate a new key (RSA 2048+ or ECDSA P-256) and reissue the certificate.",
        "operator",
        _b("NET::ERR_CERT_WEAK_KEY", "MOZILLA_PKIX_ERROR_INADEQUATE_KEY_SIZE", "broken key size"),
        "verify error:num=66 (EE certificate key too weak) / 67", "60 EE certificate key too weak",
        (66, 67),
    ),
    FailureMode(
        "revoked", "certificate",
        "The certificate authority revoked the certificate (listed in its CRL or OCSP says revoked).",
        "Issue a new certificate (and a new key if the old one was compromised) and install it.",
        "operator",
        _b("NET::ERR_CERT_REVOKED", "SEC_ERROR_REVOKED_CERTIFICATE", "certificate is revoked"),
        "verify error:num=23 with -crl_check; \"Cert Status: revoked\" with -status",
        "60 with --crlfile, 91 with --cert-status",
        (23,),
    ),
    FailureMode(
        "mixed_content", "page",
        "The HTTPS page loads http:// subresources (scripts, styles, frames, images): browsers block or flag them.",
        "Load every subresource over https:// (or use protocol-relative / relative URLs; "
        "`Content-Security-Policy: upgrade-insecure-requests` as a stopgap).",
        "tenant",
        _b("Mixed Content: ... requested an insecure resource (blocked)", "Blocked loading mixed active content",
           "[blocked] The page ... was not allowed to run insecure content"),
        "-", "-",
    ),
    FailureMode(
        "client_certificate_required", "handshake",
        "The server demands a client certificate (mutual TLS) that visitors do not have: it ends the handshake "
        "(TLS 1.2: alert 40/42 after a CertificateRequest) or the connection (TLS 1.3: alert 116) without one.",
        "Make client certificates optional on this listener (nginx: `ssl_verify_client optional` or off; "
        "HAProxy: `verify optional`), or require them only on the paths or names that need them.",
        "operator",
        _b("ERR_BAD_SSL_CLIENT_AUTH_CERT", "SSL_ERROR_RX_CERTIFICATE_REQUIRED_ALERT / SSL_ERROR_HANDSHAKE_FAILURE_ALERT",
           "requires a client certificate (NSURLErrorClientCertificateRequired -1206)"),
        "alert number 116 (certificate required) / 40; \"Acceptable client certificate CA names\" in the transcript",
        "56 tlsv13 alert certificate required / 35 sslv3 alert handshake failure",
    ),
    FailureMode(
        "alpn_mismatch", "handshake",
        "The server accepts none of the application protocols clients offer (h2, http/1.1): it answers the "
        "ClientHello with a no_application_protocol alert (120), e.g. a port held by an acme-tls/1-only responder.",
        "Serve http/1.1 (and h2) on this port: remove the ALPN restriction, or move the acme-tls/1 responder off the "
        "public listener once validation is done.",
        "operator",
        _b("ERR_SSL_PROTOCOL_ERROR", "SSL_ERROR_NO_APPLICATION_PROTOCOL (a generic handshake failure)",
           "NSURLErrorSecureConnectionFailed -1200"),
        "alert number 120 (no application protocol) with -alpn h2,http/1.1", "35 tlsv1 alert no application protocol",
    ),
    FailureMode(
        "handshake_timeout", "handshake",
        "The TCP connection opens and the ClientHello is sent, but the server never answers it (a stalled "
        "process, or a middlebox that swallows TLS).",
        "Check the process behind the port (stuck worker, full accept queue, a proxy waiting for its backend) and "
        "any firewall or IPS that inspects TLS on the way.",
        "operator / network",
        _b("ERR_TIMED_OUT", "The connection has timed out", "The request timed out (NSURLErrorTimedOut -1001)"),
        "CONNECTED(...) then nothing until timeout", "28 SSL connection timeout",
    ),
    FailureMode(
        "unsuitable_purpose", "certificate",
        "The certificate is not valid for TLS server authentication: its extended key usage does not include "
        "serverAuth (e.g. a clientAuth-only or code-signing certificate).",
        "Issue a certificate with extended key usage serverAuth (every public CA's TLS certificate has it) and "
        "install it.",
        "operator",
        _b("NET::ERR_CERT_INVALID", "SEC_ERROR_INADEQUATE_CERT_TYPE", "certificate is not valid for this purpose"),
        "verify error:num=26 (unsuitable certificate purpose) with -purpose sslserver",
        "60 unsuitable certificate purpose",
        (26,),
    ),
    FailureMode(
        "invalid_chain", "certificate",
        "The chain is complete but not valid: an issuer that is not a CA (basicConstraints CA:FALSE or no "
        "keyCertSign), a path length or name constraint violated.",
        "Serve a chain of real CA certificates: the intermediate your CA publishes for this certificate (not a leaf "
        "or a constrained sub-CA that may not issue for this name).",
        "operator",
        _b("NET::ERR_CERT_INVALID / NET::ERR_CERT_AUTHORITY_INVALID",
           "SEC_ERROR_CA_CERT_INVALID / SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID / SEC_ERROR_CERT_NOT_IN_NAME_SPACE",
           "certificate is not trusted"),
        "verify error:num=79 / 24 (invalid CA certificate), 25 (path length constraint exceeded), 47 (permitted "
        "subtree violation) / 48",
        "60 invalid CA certificate / path length constraint exceeded / permitted subtree violation",
        (79, 24, 25, 47, 48),
    ),
    FailureMode(
        "must_staple_missing", "certificate",
        "The certificate demands OCSP stapling (TLS feature must-staple) but the server sends no OCSP response: "
        "Firefox and GnuTLS clients refuse it (Chrome ignores it).",
        "Enable OCSP stapling on the server (nginx: `ssl_stapling on; ssl_stapling_verify on;` with a resolver), "
        "or reissue the certificate without the must-staple extension.",
        "operator",
        _b("(works: Chrome ignores must-staple)", "MOZILLA_PKIX_ERROR_REQUIRED_TLS_FEATURE_MISSING",
           "(works)"),
        "no \"OCSP response\" with -status on a must-staple leaf", "0 (91 with --cert-status)",
    ),
    FailureMode(
        "unclassified", "-",
        "The report names no failure that this vocabulary knows; the candidates are the best guesses.",
        "Run the openssl command from the affected network and paste its whole output, or run "
        "`edgecert diagnose HOSTNAME`.",
        "-",
        _b("-", "-", "-"),
        "-", "-",
    ),
    FailureMode(
        "unknown", "-",
        "The report does not match a known failure: no single cause could be identified.",
        "Run the openssl command from the affected network and paste its whole output, or run "
        "`edgecert diagnose HOSTNAME`.",
        "-",
        _b("-", "-", "-"),
        "-", "-",
    ),
]

FAILURE_MODES: Mapping[str, FailureMode] = MappingProxyType({m.id: m for m in _MODES})

#: When several modes apply, the lowest index is reported (the most fundamental cause first).
PRIORITY: tuple[str, ...] = (
    "dns_not_configured",
    "wrong_endpoint",
    "connection_refused",
    "connection_timeout",
    "plain_http_on_tls_port",
    "handshake_timeout",
    "sni_unrecognized",
    "protocol_version_mismatch",
    "cipher_mismatch",
    "alpn_mismatch",
    "client_certificate_required",
    "handshake_failure",
    "default_certificate",
    "expired",
    "not_yet_valid",
    "revoked",
    "self_signed",
    "untrusted_root",
    "incomplete_chain",
    "invalid_chain",
    "unsuitable_purpose",
    "weak_signature",
    "weak_key",
    "hostname_mismatch",
    "must_staple_missing",
    "mixed_content",
)


def get_mode(mode_id: str) -> FailureMode:
    """The mode for ``mode_id`` (``unknown`` for anything not in the vocabulary)."""
    return FAILURE_MODES.get(mode_id, FAILURE_MODES["unknown"])
