"""The triage classifier: name the failure mode behind a pasted error report.

Reports are whatever a visitor or a tenant pastes: a browser error code or page text (Chrome/Edge, Firefox,
Safari/NSURLError, legacy Edge/IE DLG_FLAGS), a curl/wget message, an ``openssl s_client`` transcript, a Python /
Go / Java / Node / .NET stack trace, or a server log line (nginx, Apache, HAProxy, Caddy, AWS ALB, Cloudflare).

Classification is a table of evidence rules (regular expressions with a weight and the source they identify), plus
parsing of ``openssl s_client`` transcripts (``verify error:num=N``, alerts, issuer lines, ``notAfter=`` dates) and
two context rules: an issuer that is not one of ``edge_issuers`` means ``tls_interception``; a date error while the
served certificate is valid (``served_certificate_valid``), or a date error whose dates show the certificate valid
today, means ``client_clock_skew``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import sys
from dataclasses import dataclass

from .diagnose import BROWSER_CIPHERS, normalize_hostname
from .modes import FAILURE_MODES, get_mode

__all__ = ["triage", "triage_main", "MAX_REPORT_BYTES"]

MAX_REPORT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Rule:
    mode: str
    pattern: re.Pattern
    weight: float
    source: str
    candidates: tuple[str, ...] = ()


_RULES: list[Rule] = []


def _r(mode: str, pattern: str, weight: float, source: str, candidates: tuple[str, ...] = (), flags=re.I) -> None:
    _RULES.append(Rule(mode, re.compile(pattern, flags), weight, source, candidates))


_DATE = ("not_yet_valid", "client_clock_skew")
_AUTH = ("self_signed", "incomplete_chain", "tls_interception", "default_certificate")
_NAME = ("default_certificate", "wrong_endpoint")
_HS = ("plain_http_on_tls_port", "protocol_version_mismatch", "cipher_mismatch", "sni_unrecognized")

# ---- DNS
_r("dns_not_configured", r"\bERR_NAME_NOT_RESOLVED\b|DNS_PROBE_FINISHED_NXDOMAIN", 0.95, "Chrome/Edge")
_r("dns_not_configured", r"DNS_PROBE_FINISHED_(?:BAD_CONFIG|NO_INTERNET)|DNS_PROBE_POSSIBLE", 0.5, "Chrome/Edge")
_r("dns_not_configured", r"having trouble finding that site|NS_ERROR_UNKNOWN_HOST", 0.9, "Firefox")
_r("dns_not_configured", r"server (?:with the specified hostname )?(?:cannot|could not|can.t) be found"
                         r"|can.t find the server|NSURLErrorCannotFindHost|kCFURLErrorCannotFindHost"
                         r"|(?:NSURLErrorDomain|Code=|error )\s*-1003\b", 0.9, "Safari/macOS")
_r("dns_not_configured", r"curl: \(6\)|Could not resolve host|Could not resolve: ", 0.95, "curl")
_r("dns_not_configured", r"Name or service not known|nodename nor servname provided|No address associated with "
                         r"hostname|Temporary failure in name resolution|getaddrinfo (?:ENOTFOUND|EAI_AGAIN)"
                         r"|\bENOTFOUND\b|: no such host|UnknownHostException|NameResolutionError"
                         r"|Failed to resolve|getaddrinfo failed|BIO_lookup_ex|\[Errno -[235]\]"
                         r"|server IP address could not be found|DNS address could not be found"
                         r"|INET_E_RESOURCE_NOT_FOUND|NXDOMAIN|unable to resolve host", 0.9, "resolver")

# ---- TCP
_r("connection_refused", r"\bERR_CONNECTION_REFUSED\b", 0.95, "Chrome/Edge")
_r("connection_refused", r"PR_CONNECT_REFUSED_ERROR|Firefox can.t establish a connection|Unable to connect", 0.85,
   "Firefox")
_r("connection_refused", r"Connection refused|ECONNREFUSED|errno=111\b|\[Errno 111\]|connect: connection refused"
                         r"|actively refused|WSAECONNREFUSED|10061", 0.9, "socket")
_r("connection_refused", r"NSURLErrorCannotConnectToHost|(?:NSURLErrorDomain|Code=|error )\s*-1004\b"
                         r"|Could not connect to the server|can.t connect to the server|could not connect"
                         r"|Couldn.t connect to server", 0.8,
   "Safari/macOS")
_r("connection_timeout", r"\bERR_CONNECTION_TIMED_OUT\b|\bERR_TIMED_OUT\b", 0.95, "Chrome/Edge")
_r("connection_timeout", r"\bERR_ADDRESS_UNREACHABLE\b|No route to host|EHOSTUNREACH|Network is unreachable", 0.6,
   "socket")
_r("connection_timeout", r"The connection has timed out|PR_IO_TIMEOUT_ERROR|NS_ERROR_NET_TIMEOUT", 0.9, "Firefox")
_r("connection_timeout", r"curl: \(28\)|Connection timed out after|Operation timed out|Connection timeout after", 0.9,
   "curl")
_r("connection_timeout", r"\bETIMEDOUT\b|errno=110\b|\[Errno 110\]|i/o timeout|connect timed out|ConnectTimeout"
                         r"|SocketTimeoutException|Connection timed out|timed out|WSAETIMEDOUT|10060", 0.75,
   "socket")
_r("connection_timeout", r"NSURLErrorTimedOut|(?:NSURLErrorDomain|Code=|error )\s*-1001\b|The request timed out",
   0.9, "Safari/macOS")

# ---- handshake
_r("plain_http_on_tls_port", r"SSL_ERROR_RX_RECORD_TOO_LONG", 0.95, "Firefox")
_r("plain_http_on_tls_port", r"server gave HTTP response to HTTPS client", 0.95, "Go")
_r("plain_http_on_tls_port", r"wrong version number|WRONG_VERSION_NUMBER|first record does not look like a TLS "
                             r"handshake|Unsupported or unrecognized SSL message|record too long"
                             r"|packet length too long|ERR_SSL_WRONG_VERSION_NUMBER", 0.9, "TLS library")
_r("plain_http_on_tls_port", r"plain HTTP request was sent to HTTPS port|SSL routines::http request|\bhttp request\b"
                             r".*SSL|HTTP_REQUEST", 0.55, "server log")
_r("handshake_failure", r"\bERR_SSL_PROTOCOL_ERROR\b", 0.5, "Chrome/Edge",
   ("plain_http_on_tls_port", "protocol_version_mismatch"))
_r("protocol_version_mismatch", r"\bERR_SSL_VERSION_OR_CIPHER_MISMATCH\b", 0.6, "Chrome/Edge", ("cipher_mismatch",))
_r("protocol_version_mismatch", r"\bERR_SSL_OBSOLETE_VERSION(?:_OR_CIPHER)?\b", 0.9, "Chrome/Edge")
_r("protocol_version_mismatch", r"SSL_ERROR_UNSUPPORTED_VERSION|SSL_ERROR_PROTOCOL_VERSION_ALERT", 0.95, "Firefox")
_r("protocol_version_mismatch", r"alert protocol version|alert number 70\b|TLSV1_ALERT_PROTOCOL_VERSION"
                                r"|unsupported protocol|UNSUPPORTED_PROTOCOL|no protocols available"
                                r"|NO_PROTOCOLS_AVAILABLE|version too low|VERSION_TOO_LOW"
                                r"|server selected unsupported protocol version|protocol version not supported"
                                r"|client offered only unsupported versions|fatal alert: protocol_version"
                                r"|is not accepted by client preferences|No appropriate protocol"
                                r"|errSSLPeerProtocolVersion|-9836\b|unsupported SSL protocol version"
                                r"|Turn on TLS 1\.0, TLS 1\.1,? and TLS 1\.2|TLS version is not supported", 0.9,
   "TLS library")
_r("protocol_version_mismatch", r"legacy sigalg disallowed", 0.6, "openssl")
_r("protocol_version_mismatch", r"Could not create SSL/TLS secure channel|could not establish secure channel|"
                                r"SEC_E_ALGORITHM_MISMATCH|0x80090331|do not possess a common algorithm", 0.55,
   ".NET/Windows", ("cipher_mismatch",))
_r("cipher_mismatch", r"SSL_ERROR_NO_CYPHER_OVERLAP", 0.95, "Firefox")
_r("cipher_mismatch", r"no shared cipher|NO_SHARED_CIPHER|no cipher suite supported by both|no ciphers available"
                      r"|NO_CIPHERS_AVAILABLE|no cipher match|errSSLBadCipherSuite|-9818\b|cipher suites are "
                      r"inappropriate|no matching cipher", 0.9, "TLS library")
_r("cipher_mismatch", r"dh key too small|DH_KEY_TOO_SMALL|WEAK_SERVER_EPHEMERAL_DH_KEY|errSSLWeakPeerEphemeralDHKey"
                      r"|-9850\b|Could not generate DH keypair|DH ServerKeyExchange does not comply", 0.9,
   "TLS library")
_r("cipher_mismatch", r"alert handshake failure|alert number 40\b|SSLV3_ALERT_HANDSHAKE_FAILURE"
                      r"|fatal alert: handshake_failure|tls: handshake failure|SSL_ERROR_HANDSHAKE_FAILURE_ALERT"
                      r"|errSSLPeerHandshakeFail|-9824\b|insufficient security|alert number 71\b"
                      r"|no suitable signature algorithm", 0.65, "TLS library", ("handshake_failure",
                                                                                  "sni_unrecognized"))
_r("sni_unrecognized", r"UNRECOGNIZED_NAME_ALERT|unrecognized name|alert number 112\b|TLSV1_UNRECOGNIZED_NAME"
                       r"|unrecognized_name", 0.95, "TLS library")
_r("sni_unrecognized", r"no certificate available for|strict-sni|no SSL certificate for server name", 0.6,
   "server log", ("handshake_failure", "default_certificate"))
_r("handshake_failure", r"PR_CONNECT_RESET_ERROR|PR_END_OF_FILE_ERROR|NS_ERROR_NET_RESET", 0.85, "Firefox")
_r("handshake_failure", r"\bERR_CONNECTION_RESET\b|\bERR_CONNECTION_CLOSED\b|\bERR_SSL_VERSION_INTERFERENCE\b"
                        r"|ERR_SSL_HANDSHAKE_NOT_COMPLETED|ERR_EMPTY_RESPONSE", 0.75, "Chrome/Edge")
_r("handshake_failure", r"unexpected eof while reading|UNEXPECTED_EOF_WHILE_READING|EOF occurred in violation of "
                        r"protocol|Remote host terminated the handshake|Remote host closed connection during "
                        r"handshake|socket hang up|Client network socket disconnected before secure TLS connection"
                        r"|peer closed connection in SSL handshake|Connection closed during SSL handshake"
                        r"|SSL_ERROR_SYSCALL|errSSLClosedAbort|-9806\b|TLS handshake error from \S+: EOF"
                        r"|handshake: EOF|tls: .*\bEOF\b|SSL_connect: Connection reset", 0.85, "TLS library")
_r("handshake_failure", r"Connection reset by peer|ECONNRESET|errno=104\b|\[Errno 104\]|connection reset"
                        r"|WSAECONNRESET|10054|forcibly closed by the remote host|NetworkConnectionLost|-1005\b",
   0.7, "socket")
_r("handshake_failure", r"SSL handshake failure|SSL handshake failed|Timeout during SSL handshake|Error 525"
                        r"|ssl_handshake_error|ClientTLSNegotiationError|SSL_do_handshake\(\) failed"
                        r"|TLS handshake error|handshake_failure", 0.5, "server log",
   ("protocol_version_mismatch", "cipher_mismatch"))
_r("handshake_failure", r"alert internal error|alert number 80\b|TLSV1_ALERT_INTERNAL_ERROR|bad record mac"
                        r"|SSL_ERROR_BAD_MAC_ALERT|decryption failed|inappropriate fallback"
                        r"|SSL_ERROR_INAPPROPRIATE_FALLBACK_ALERT|no \"ssl_certificate\" is defined", 0.6,
   "TLS library", ("sni_unrecognized",))
_r("handshake_failure", r"NSURLErrorSecureConnectionFailed|kCFURLErrorSecureConnectionFailed"
                        r"|(?:NSURLErrorDomain|Code=|error )\s*-1200\b|An SSL error has occurred and a secure "
                        r"connection to the server cannot be made|can.t establish a secure connection"
                        r"|Secure Connection Failed|INET_E_SECURITY_PROBLEM", 0.45, "Safari/macOS", _HS)

# ---- certificate
_r("default_certificate", r"TRAEFIK DEFAULT CERT|Kubernetes Ingress Controller Fake Certificate|ssl-cert-snakeoil"
                          r"|snakeoil|default certificate|fallback certificate|edge-default|localhost\.localdomain"
                          r"|CN ?= ?(?:localhost|default|invalid)\b", 0.7, "certificate subject",
   ("hostname_mismatch",))
_r("wrong_endpoint", r"\*\.(?:herokuapp\.com|azurewebsites\.net|cloudfront\.net|github\.io|netlify\.app"
                          r"|vercel\.app|fastly\.net|onrender\.com|pages\.dev|firebaseapp\.com|appspot\.com"
                          r"|elb\.amazonaws\.com|shopify\.com|myshopify\.com|squarespace\.com|wpengine\.com"
                          r"|ghost\.io|webflow\.io)", 0.6, "certificate subject (another platform's certificate: "
                          "the name still points at an old host or CDN)", ("default_certificate",
                                                                           "hostname_mismatch"))
_r("hostname_mismatch", r"ERR_CERT_COMMON_NAME_INVALID|SSL_ERROR_BAD_CERT_DOMAIN", 0.8, "browser", _NAME)
_r("hostname_mismatch", r"hostname mismatch|certificate is not valid for|no alternative certificate subject name"
                        r"|subjectAltName does not match|does not match target host name|x509: certificate is "
                        r"valid for|x509: certificate is not valid for any names|doesn't contain any IP SANs"
                        r"|relies on legacy Common Name field|No subject alternative (?:DNS )?names? (?:matching|"
                        r"present)|No name matching \S+ found|ERR_TLS_CERT_ALTNAME_INVALID|does not match "
                        r"certificate's altnames|errSSLHostNameMismatch|-9843\b|CERT_E_CN_NO_MATCH|0x800B010F"
                        r"|SEC_E_WRONG_PRINCIPAL|0x80090322|RemoteCertificateNameMismatch"
                        r"|DLG_FLAGS_SEC_CERT_CN_INVALID|name does not match input|IP address mismatch"
                        r"|does NOT include an ID which matches the server name|verify error:num=62\b"
                        r"|Verify return code: 62\b|certificate name does not match|name on the security "
                        r"certificate is invalid|impersonating", 0.9, "TLS library", _NAME)
_r("expired", r"\bERR_CERT_DATE_INVALID\b|DLG_FLAGS_SEC_CERT_DATE_INVALID", 0.6, "browser", _DATE)
_r("expired", r"SEC_ERROR_EXPIRED_CERTIFICATE|SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE", 0.9, "Firefox",
   ("client_clock_skew",))
_r("expired", r"certificate has expired|CERT_HAS_EXPIRED|CertificateExpiredException|certificate expired"
              r"|alert number 45\b|errSSLCertExpired|-9814\b|errSSLPeerCertExpired|-9828\b|CERT_E_EXPIRED"
              r"|0x800B0101|SEC_E_CERT_EXPIRED|0x80090328|verify error:num=10\b|Verify return code: 10\b"
              r"|certificate_expired|certificate .*has expired|expired certificate", 0.9, "TLS library",
   ("client_clock_skew",))
_r("expired", r"NSURLErrorServerCertificateHasBadDate|(?:NSURLErrorDomain|Code=|error )\s*-1201\b"
              r"|certificate for this server (?:is|has) (?:expired|invalid date)", 0.75, "Safari/macOS", _DATE)
_r("expired", r"x509: certificate has expired or is not yet valid", 0.55, "Go", _DATE)
_r("not_yet_valid", r"MOZILLA_PKIX_ERROR_NOT_YET_VALID_(?:ISSUER_)?CERTIFICATE", 0.95, "Firefox",
   ("client_clock_skew",))
_r("not_yet_valid", r"certificate is not yet valid|CERT_NOT_YET_VALID|CertificateNotYetValidException"
                    r"|errSSLCertNotYetValid|-9815\b|NSURLErrorServerCertificateNotYetValid"
                    r"|(?:NSURLErrorDomain|Code=|error )\s*-1204\b|verify error:num=9\b|Verify return code: 9\b"
                    r"|not yet valid", 0.9, "TLS library", ("client_clock_skew",))
_r("client_clock_skew", r"clock is (?:ahead|behind)|computer.s (?:clock|date and time)|date and time (?:are|is) "
                        r"(?:incorrect|wrong)|clock appears to be|computer thinks it is|system clock is"
                        r"|device.s (?:date|clock)|set the correct date|ERR_CERT_DATE_INVALID.{0,200}clock"
                        r"|SEC_ERROR_EXPIRED_CERTIFICATE.{0,200}clock|clock skew|time is (?:wrong|incorrect)",
   0.9, "browser", ("expired", "not_yet_valid"))
_r("incomplete_chain", r"unable to get local issuer certificate|UNABLE_TO_GET_ISSUER_CERT_LOCALLY"
                       r"|verify error:num=20\b|Verify return code: 20\b", 0.7, "TLS library",
   ("untrusted_root", "tls_interception", "default_certificate"))
_r("incomplete_chain", r"unable to verify the first certificate|UNABLE_TO_VERIFY_LEAF_SIGNATURE"
                       r"|verify error:num=21\b|Verify return code: 21\b|possible missing intermediate"
                       r"|missing intermediate|incomplete (?:certificate )?chain|chain is incomplete"
                       r"|unable to get issuer certificate|UNABLE_TO_GET_ISSUER_CERT\b|verify error:num=2\b",
   0.85, "TLS library", ("untrusted_root", "default_certificate"))
_r("incomplete_chain", r"SEC_ERROR_UNKNOWN_ISSUER", 0.6, "Firefox", ("untrusted_root", "tls_interception"))
_r("self_signed", r"MOZILLA_PKIX_ERROR_SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT", 0.95, "Firefox/Node")
_r("self_signed", r"self[- ]signed certificate(?! in (?:the )?certificate chain)|verify error:num=18\b"
                  r"|Verify return code: 18\b", 0.9, "TLS library", ("default_certificate",))
_r("self_signed", r"NSURLErrorServerCertificateUntrusted|(?:NSURLErrorDomain|Code=|error )\s*-1202\b"
                  r"|SEC_ERROR_UNTRUSTED_CERT|certificate for this server is invalid", 0.6, "Safari/macOS",
   ("untrusted_root", "hostname_mismatch", "incomplete_chain"))
_r("untrusted_root", r"self[- ]signed certificate in (?:the )?certificate chain|SELF_SIGNED_CERT_IN_CHAIN"
                     r"|verify error:num=19\b|Verify return code: 19\b", 0.9, "TLS library", ("tls_interception",))
_r("untrusted_root", r"NSURLErrorServerCertificateHasUnknownRoot|(?:NSURLErrorDomain|Code=|error )\s*-1203\b"
                     r"|errSSLUnknownRootCert|-9812\b|errSSLNoRootCert|-9813\b|SEC_ERROR_UNTRUSTED_ISSUER"
                     r"|SEC_ERROR_CA_CERT_INVALID|invalid CA certificate|verify error:num=24\b", 0.85,
   "TLS library", ("tls_interception",))
_r("untrusted_root", r"ERR_CERT_AUTHORITY_INVALID|DLG_FLAGS_INVALID_CA|PKIX path building failed|unable to find "
                     r"valid certification path|certificate signed by unknown authority|SEC_E_UNTRUSTED_ROOT"
                     r"|0x80090325|CERT_E_UNTRUSTEDROOT|0x800B0109|Could not establish trust relationship"
                     r"|RemoteCertificateChainErrors|invalid according to the validation procedure"
                     r"|alert unknown ca|alert number 48\b|unknown certificate authority|TLSV1_ALERT_UNKNOWN_CA"
                     r"|can.t verify the identity of the website|not trusted|untrusted", 0.6, "TLS library",
   _AUTH)
_r("untrusted_root", r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSL certificate problem", 0.25,
   "TLS library")
_r("tls_interception", r"ERR_CERT_KNOWN_INTERCEPTION_BLOCKED|MOZILLA_PKIX_ERROR_MITM_DETECTED", 0.95, "browser")
_r("tls_interception", r"ERR_TLS13_DOWNGRADE_DETECTED", 0.7, "Chrome/Edge")
_INTERCEPTORS = (r"Zscaler|Forti(?:net|Gate)|Blue ?Coat|Palo Alto|Sophos|Kaspersky|Avast|\bAVG\b|\bESET\b"
                 r"|Bitdefender|Netskope|Cisco Umbrella|Forcepoint|Websense|Check ?Point|Barracuda|McAfee"
                 r"|Symantec Web|Untangle|mitmproxy|Charles Proxy|Fiddler|DO_NOT_TRUST|PortSwigger|Burp"
                 r"|Securly|Lightspeed|GoGuardian|iboss|Menlo Security|Cloudflare Gateway|WatchGuard|SonicWall"
                 r"|Smoothwall|ContentKeeper|Trend Micro|Norton|Webroot|Cisco Secure|Skyhigh|Squid")
_r("tls_interception", _INTERCEPTORS, 0.7, "issuer", ("untrusted_root",))
_r("weak_signature", r"ERR_CERT_WEAK_SIGNATURE_ALGORITHM|SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED"
                     r"|CA signature digest algorithm too weak|CA_MD_TOO_WEAK|verify error:num=68\b"
                     r"|Verify return code: 68\b|insecure algorithm SHA1|x509: cannot verify signature: insecure"
                     r"|Algorithm constraints check failed on signature algorithm|broken signature algorithm"
                     r"|DLG_FLAGS_WEAK_SIGNATURE|weak signature algorithm|SHA-?1 (?:signature|certificate)",
   0.9, "TLS library")
_r("weak_key", r"ERR_CERT_WEAK_KEY|MOZILLA_PKIX_ERROR_INADEQUATE_KEY_SIZE|(?:EE|CA) certificate key too weak"
               r"|(?:EE|CA)_KEY_TOO_SMALL|(?:ee|ca) key too small|verify error:num=6[67]\b"
               r"|Verify return code: 6[67]\b|keysize limits|key size too small|bit keys are insecure"
               r"|broken key size|weak key", 0.9, "TLS library")
_r("revoked", r"ERR_CERT_REVOKED|SEC_ERROR_REVOKED_CERTIFICATE|certificate revoked|CERT_REVOKED"
              r"|Cert Status: revoked|verify error:num=23\b|Verify return code: 23\b|certificate is revoked"
              r"|has been revoked|CRYPT_E_REVOKED|0x80092010|errSSLPeerCertRevoked|-9827\b|alert number 44\b"
              r"|certificate_revoked|revocation reason|SSL certificate revocation", 0.9, "TLS library")
_r("revoked", r"curl: \(91\)|No OCSP response received|OCSP response has error|ERR_CERT_UNABLE_TO_CHECK_REVOCATION"
              r"|SEC_ERROR_OCSP_|DLG_FLAGS_SEC_CERT_REV_FAILED|CRYPT_E_REVOCATION_OFFLINE", 0.5, "OCSP")
_r("mixed_content", r"Mixed Content:|mixed (?:active|display|passive) content|Blocked loading mixed"
                    r"|not allowed to (?:run|display) insecure content|loaded over HTTPS, but requested an insecure"
                    r"|insecure content from http://|requested an insecure (?:script|stylesheet|resource|image|frame)",
   0.9, "browser console")

_CURL_EXIT = {6: "dns_not_configured", 7: "connection_refused", 28: "connection_timeout", 35: "handshake_failure",
              51: "hostname_mismatch", 60: "untrusted_root", 91: "revoked"}


def _parse_openssl_date(text: str) -> dt.datetime | None:
    text = re.sub(r"\s+", " ", text.strip())
    for fmt in ("%b %d %H:%M:%S %Y GMT", "%b %d %H:%M:%S %Y %Z", "%a %b %d %H:%M:%S %Z %Y", "%Y-%m-%dT%H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S %Z"):
        try:
            d = dt.datetime.strptime(text, fmt)
            return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def _clock_evidence(text: str, now: dt.datetime) -> list[str]:
    """Date errors whose dates show the certificate is valid today: the client's clock is off."""
    found = []
    for m in re.finditer(r"verify error:num=10:[^\n]*\n(?:[^\n]*\n)?\s*notAfter=([^\n]+)", text):
        d = _parse_openssl_date(m.group(1))
        if d and d > now:
            found.append(f"openssl says expired, but notAfter {m.group(1).strip()} is still in the future")
    for m in re.finditer(r"verify error:num=9:[^\n]*\n(?:[^\n]*\n)?\s*notBefore=([^\n]+)", text):
        d = _parse_openssl_date(m.group(1))
        if d and d < now:
            found.append(f"openssl says not yet valid, but notBefore {m.group(1).strip()} has passed")
    m = re.search(r"current time (\S+) is (after|before) (\S+)", text)
    if m:
        client, how, bound = (_parse_openssl_date(m.group(1).rstrip(":,")), m.group(2),
                              _parse_openssl_date(m.group(3).rstrip(":,")))
        if client and bound and abs((client - now).total_seconds()) > 86400 and (
                (how == "after" and bound > now) or (how == "before" and bound < now)):
            found.append(f"the client's clock said {m.group(1)}, the certificate is valid today")
    for m in re.finditer(r"(NotAfter|NotBefore): (\w{3} \w{3} \d{1,2} [\d:]{8} \w+ \d{4})", text):
        d = _parse_openssl_date(m.group(2))
        if d and ((m.group(1) == "NotAfter" and d > now) or (m.group(1) == "NotBefore" and d < now)):
            found.append(f"the report's {m.group(1)} {m.group(2)} is fine today")
    return found


def _issuers(text: str) -> list[str]:
    out = []
    for m in re.finditer(r"^\s*(?:issuer=|i:)\s*(.+)$", text, re.M):
        out.append(m.group(1).strip())
    for m in re.finditer(r"Issuer: (.+)$", text, re.M):
        out.append(m.group(1).strip())
    return out


def _issuer_matches(issuer: str, edge_issuers: list[str]) -> bool:
    norm = re.sub(r"\s+", " ", issuer.lower().replace(" = ", "=").replace(", ", ","))
    for e in edge_issuers:
        en = re.sub(r"\s+", " ", e.lower().replace(" = ", "=").replace(", ", ","))
        if en and (en in norm or norm in en):
            return True
        cn = re.search(r"cn=([^,/]+)", en)
        o = re.search(r"\bo=([^,/]+)", en)
        if (cn and cn.group(1).strip() in norm) or (o and o.group(1).strip() in norm):
            return True
    return False


def _leaf_subject_cn(text: str) -> str | None:
    m = re.search(r"^\s*0 s:.*?CN ?= ?([^,/\n]+)", text, re.M) or re.search(r"^subject=.*?CN ?= ?([^,/\n]+)", text,
                                                                            re.M)
    return m.group(1).strip() if m else None


def _name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def _extract_host(text: str) -> str | None:
    for pat in (r"https://([A-Za-z0-9.-]+\.[A-Za-z]{2,})(?::\d+)?", r"Could not resolve host: ([A-Za-z0-9.-]+)",
                r"Failed to connect to ([A-Za-z0-9.-]+\.[A-Za-z]{2,}) port", r"-servername ([A-Za-z0-9.-]+)",
                r"lookup ([A-Za-z0-9.-]+\.[A-Za-z]{2,})(?: on |: )", r"getaddrinfo ENOTFOUND ([A-Za-z0-9.-]+)"):
        m = re.search(pat, text)
        if m:
            try:
                return normalize_hostname(m.group(1))
            except ValueError:
                continue
    return None


def _command(mode: str, host: str) -> str:
    base = ["openssl", "s_client", "-connect", f"{host}:443", "-servername", host, "-verify_hostname", host]
    tail = ["-showcerts", "-status"]
    if mode in ("tls_interception", "client_clock_skew"):
        line = shlex.join(base + tail) + " </dev/null 2>&1 | " + shlex.join(
            ["openssl", "x509", "-noout", "-subject", "-issuer", "-dates"])
        return ("date -u; " + line) if mode == "client_clock_skew" else line
    if mode == "mixed_content":
        req = f"GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"
        pattern = "<[a-z]+[^>]*(src|href|action|data|srcset)=[\"']?http://[^\"' >]*"
        return (f"printf {shlex.quote(req)} | "
                + shlex.join(["openssl", "s_client", "-connect", f"{host}:443", "-servername", host, "-quiet"])
                + f" 2>/dev/null | grep -Eio {shlex.quote(pattern)}")
    extra: list[str] = []
    if mode == "revoked":
        extra = ["-crl_check", "-crl_download"]
    elif mode in ("weak_key", "weak_signature"):
        extra = ["-auth_level", "2"]
    elif mode == "protocol_version_mismatch":
        extra = ["-no_tls1", "-no_tls1_1"]
    elif mode == "cipher_mismatch":
        extra = ["-cipher", BROWSER_CIPHERS]
    return_error = [] if mode in ("default_certificate", "wrong_endpoint") else ["-verify_return_error"]
    line = shlex.join(base + return_error + tail + extra) + " </dev/null"
    if mode in ("connection_timeout",):
        line = f"timeout 10 {line}; [ $? -ne 124 ] || echo 'timed out: no answer within 10 s'"
    return line


_NEXT_STEPS = {
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
    "unknown": ["Paste the complete error (browser error code, the full curl -v output, or the whole "
                "`openssl s_client` transcript).", "Run `edgecert diagnose {h}` from the edge's side."],
}


def triage(
    report: str,
    *,
    hostname: str | None = None,
    edge_issuers: list[str] | None = None,
    served_certificate_valid: bool | None = None,
) -> dict:
    """Classify a pasted error report.

    Args:
        report: the pasted text (browser error, curl/openssl output, stack trace, server log line).
        hostname: the affected name: used for the reproducing ``openssl_command`` and name checks.
        edge_issuers: issuer names (CN/O or full DN) of the certificates the edge serves; an issuer outside them
            in the report means ``tls_interception``.
        served_certificate_valid: whether the certificate the edge serves is valid now; a date error while it is
            means ``client_clock_skew``.

    Returns:
        The triage object: ``failure_mode, confidence (0..1), candidates, explanation, next_steps,
        openssl_command`` plus ``who_acts``, ``summary``, ``fix``, ``matched`` (the evidence) and ``hostname``.

    Raises:
        ValueError: empty report, report over 64 KiB, or a malformed hostname.
    """
    if not isinstance(report, str):
        raise ValueError("report must be text")
    if len(report.encode("utf-8", "surrogatepass")) > MAX_REPORT_BYTES:
        raise ValueError(f"report is too large ({len(report.encode('utf-8', 'surrogatepass'))} bytes; the limit is "
                         f"{MAX_REPORT_BYTES} bytes): paste only the error and the openssl/curl output")
    if not report.strip():
        raise ValueError("report is empty: paste the error message, browser error code or openssl output")
    host = normalize_hostname(hostname) if hostname else None
    text = report.replace("\r\n", "\n")
    now = dt.datetime.now(dt.timezone.utc)

    scores: dict[str, float] = {}
    cands: dict[str, float] = {}
    matched: list[dict] = []

    def add(mode: str, weight: float, source: str, evidence: str, candidates: tuple[str, ...] = ()) -> None:
        prev = scores.get(mode, 0.0)
        scores[mode] = max(prev, weight) + (0.03 if prev else 0.0)
        for c in candidates:
            cands[c] = max(cands.get(c, 0.0), weight * 0.6)
        matched.append({"mode": mode, "source": source, "evidence": evidence[:160], "weight": round(weight, 2)})

    for rule in _RULES:
        m = rule.pattern.search(text)
        if m:
            add(rule.mode, rule.weight, rule.source, m.group(0), rule.candidates)

    # curl exit codes back up messages too generic to place
    if max(scores.values(), default=0.0) < 0.5:
        for m in re.finditer(r"curl: \((\d+)\)", text):
            mode = _CURL_EXIT.get(int(m.group(1)))
            if mode:
                add(mode, 0.45, "curl exit code", m.group(0), ())
    if max(scores.values(), default=0.0) >= 0.5:  # generic evidence only counts alone
        for k in [k for k, v in scores.items() if v < 0.3]:
            del scores[k]

    # Go's combined date message: "current time X is after/before Y"
    gm = re.search(r"current time \S+ is (after|before) \S+", text)
    if gm:
        add("expired" if gm.group(1) == "after" else "not_yet_valid", 0.92, "Go", gm.group(0))

    # openssl s_client transcript
    is_transcript = bool(re.search(r"CONNECTED\(|verify error:num=|Verify return code:|SSL handshake has read|"
                                   r"no peer certificate available|s_client", text))
    codes = [int(c) for c in re.findall(r"verify error:num=(\d+)", text)]
    if is_transcript and codes:
        codeset = set(codes)
        if 62 in codeset and codeset & {18, 20, 21}:
            add("default_certificate", 0.8, "openssl",
                "verify errors " + ",".join(map(str, codes)) + ": an unchained certificate for another name",
                ("hostname_mismatch", "self_signed" if 18 in codeset else "incomplete_chain"))
        cn = _leaf_subject_cn(text)
        if host and cn and not _name_matches(cn, host) and 62 not in codeset and codeset & {18, 20, 21}:
            add("default_certificate", 0.75, "openssl", f"leaf CN {cn} is not {host} (verify error hides it)",
                ("hostname_mismatch",))
    if is_transcript and re.search(r"no peer certificate available", text) and not codes:
        for mode in ("expired", "not_yet_valid", "incomplete_chain", "untrusted_root", "self_signed"):
            scores.pop(mode, None)

    # interception: an issuer that is not the edge's
    issuers = _issuers(text)
    if edge_issuers and issuers:
        # the leaf's issuer (the first one printed) decides
        if not _issuer_matches(issuers[0], edge_issuers):
            add("tls_interception", 0.9, "issuer", f"issuer {issuers[0]} is not the edge's", ("untrusted_root",))
        else:
            scores.pop("tls_interception", None)
    elif issuers and re.search(_INTERCEPTORS, " ".join(issuers), re.I):
        add("tls_interception", 0.85, "issuer", f"issuer {issuers[0]} is a known TLS-inspection product")

    # clock skew
    date_modes = {"expired", "not_yet_valid"}
    if served_certificate_valid is True and (date_modes & set(scores) or "expired" in cands):
        add("client_clock_skew", 0.93, "context", "a date error while the served certificate is valid",
            ("expired", "not_yet_valid"))
    for ev in _clock_evidence(text, now):
        add("client_clock_skew", 0.9, "dates", ev, ("expired",))
    if served_certificate_valid is False:
        scores.pop("client_clock_skew", None)

    # hostname given: is the name in the report the same?
    if host and "hostname_mismatch" in scores:
        m = re.search(r"(?:valid for|altnames:?)\s*(?:DNS:)?([A-Za-z0-9*.,: -]+?)(?:, not|\.|$)", text)
        if m:
            names = [n.strip().removeprefix("DNS:") for n in re.split(r"[, ]+", m.group(1)) if n.strip()]
            if names and any(_name_matches(n, host) for n in names):
                scores["hostname_mismatch"] *= 0.8

    # a clean openssl transcript: the handshake and verification succeeded
    if is_transcript and not codes and not scores and re.search(r"Verify return code: 0 \(ok\)", text) and \
            re.search(r"Cipher is (?!\(NONE\))|SSL handshake has read [1-9]", text):
        add("ok", 0.7, "openssl", "Verify return code: 0 (ok) after a completed handshake")

    # a default / platform certificate named in the report explains the name or trust error next to it
    if "default_certificate" in scores and scores.keys() & {"hostname_mismatch", "self_signed", "untrusted_root",
                                                             "incomplete_chain"}:
        scores["default_certificate"] = max(scores["default_certificate"], 0.85)
    # another platform's certificate (Heroku, Netlify, CloudFront...) explains a name error: DNS points there
    if "wrong_endpoint" in scores and "hostname_mismatch" in scores:
        scores["wrong_endpoint"] = max(scores["wrong_endpoint"], 0.85)

    if not scores:
        mode_id, confidence = "unknown", 0.05
        candidates: list[str] = []
    else:
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _PRIO.get(kv[0], 99)))
        mode_id, best = ranked[0]
        # context evidence (dates, issuers, the certificate's own name) explains the codes that came with it
        overridden = mode_id in ("client_clock_skew", "tls_interception", "default_certificate",
                                 "wrong_endpoint") and best >= 0.75
        # Context rules outrank the codes they explain.
        for override in ("client_clock_skew", "tls_interception", "default_certificate", "wrong_endpoint"):
            if override in scores and scores[override] >= 0.75 and mode_id != override:
                if override in ("default_certificate", "wrong_endpoint") and scores[mode_id] > 0.9 and mode_id not in (
                        "hostname_mismatch", "self_signed", "incomplete_chain", "untrusted_root"):
                    continue
                mode_id, best = override, scores[override]
                overridden = True
                break
        others = {k: v for k, v in scores.items() if k != mode_id}
        for k, v in cands.items():
            if k != mode_id:
                others[k] = max(others.get(k, 0.0), v)
        candidates = [k for k, _ in sorted(others.items(), key=lambda kv: (-kv[1], _PRIO.get(kv[0], 99)))]
        runner_up = max(others.values(), default=0.0)
        confidence = min(0.97, best)
        if runner_up >= best - 0.1 and not overridden:
            confidence = max(0.3, confidence - 0.15)
        confidence = round(confidence, 2)

    mode = get_mode(mode_id)
    evidence = [m for m in matched if m["mode"] == mode_id]
    if mode_id == "unknown":
        explanation = ("No known TLS error code or message was found in the report. " + mode.summary)
    else:
        ev = "; ".join(f"{e['source']}: \"{e['evidence']}\"" for e in evidence[:3])
        explanation = f"{mode.summary} Evidence: {ev}."
        if candidates:
            explanation += " Also possible: " + ", ".join(candidates[:4]) + "."
    h = host or _extract_host(text) or "HOSTNAME"
    steps = [mode.fix] if mode_id != "unknown" else []
    steps += [s.format(h=h) for s in _NEXT_STEPS.get(mode_id, [])]
    if mode_id != "unknown":
        steps.append(f"Reproduce from the affected network: {_command(mode_id, h)}")
    else:
        steps.append(f"Run from the affected network and paste the output: {_command('ok', h)}")
    return {
        "failure_mode": mode_id,
        "confidence": confidence,
        "candidates": candidates[:6],
        "explanation": explanation,
        "next_steps": steps,
        "openssl_command": _command(mode_id if mode_id != "unknown" else "ok", host) if host else None,
        "who_acts": mode.who_acts,
        "summary": mode.summary,
        "fix": mode.fix,
        "matched": matched[:20],
        "hostname": host,
    }


_PRIO = {m: i for i, m in enumerate((
    "client_clock_skew", "tls_interception", "revoked", "weak_signature", "weak_key", "expired", "not_yet_valid",
    "self_signed", "untrusted_root", "incomplete_chain", "default_certificate", "hostname_mismatch",
    "sni_unrecognized", "plain_http_on_tls_port", "protocol_version_mismatch", "cipher_mismatch",
    "dns_not_configured", "connection_refused", "connection_timeout", "handshake_failure", "mixed_content",
    "wrong_endpoint"))}


def _human(r: dict) -> str:
    lines = [f"{r['failure_mode']} (confidence {r['confidence']:.2f})", f"  {r['explanation']}"]
    if r.get("who_acts") and r["who_acts"] != "-":
        lines.append(f"  who acts: {r['who_acts']}")
    if r["candidates"]:
        lines.append(f"  other candidates: {', '.join(r['candidates'])}")
    lines.append("next steps:")
    lines += [f"  - {s}" for s in r["next_steps"]]
    if r.get("openssl_command"):
        lines += ["reproduce:", f"  {r['openssl_command']}"]
    return "\n".join(lines)


def triage_main(argv: list[str]) -> int:
    """``edgecert triage [TEXT | -] [--hostname H] [--json]``: ``-`` or no TEXT reads standard input.
    Exit 0 with a classification (``unknown`` included), 2 on bad usage or an empty/oversized report."""
    p = argparse.ArgumentParser(prog="edgecert triage",
                                description="Classify a pasted TLS error report (browser code, curl/openssl output, "
                                            "stack trace, server log line).")
    p.add_argument("text", nargs="?", default="-", help="the report; - or nothing reads standard input")
    p.add_argument("--hostname", help="the affected name: prints the openssl command to run")
    p.add_argument("--edge-issuer", action="append", dest="edge_issuers", metavar="NAME",
                   help="issuer (CN/O) of the edge's certificates (repeatable): others mean interception")
    p.add_argument("--served-valid", action="store_true", default=None,
                   help="the served certificate is valid now (date errors then mean the client's clock)")
    p.add_argument("--json", action="store_true", help="print the triage object as JSON")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    text = args.text
    if text == "-":
        data = sys.stdin.buffer.read(MAX_REPORT_BYTES + 1)
        text = data.decode("utf-8", "replace")
    try:
        result = triage(text, hostname=args.hostname, edge_issuers=args.edge_issuers,
                        served_certificate_valid=args.served_valid)
    except ValueError as e:
        print(f"edgecert triage: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else _human(result))
    return 0


assert all(r.mode in FAILURE_MODES for r in _RULES)
