"""The evidence table of triage: which text in a pasted report points at which failure mode, how strongly, and
what produced it (a browser, curl, OpenSSL, a TLS library, a server log). ``triage`` weighs the matches."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .modes import FAILURE_MODES

__all__ = ["Rule", "RULES", "INTERCEPTORS", "CURL_EXIT"]


@dataclass(frozen=True)
class Rule:
    mode: str
    pattern: re.Pattern
    weight: float
    source: str
    candidates: tuple[str, ...] = ()


RULES: list[Rule] = []


def _r(mode: str, pattern: str, weight: float, source: str, candidates: tuple[str, ...] = (), flags=re.I) -> None:
    RULES.append(Rule(mode, re.compile(pattern, flags), weight, source, candidates))


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
                         r"|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1003\b", 0.9, "Safari/macOS")
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
_r("connection_refused", r"NSURLErrorCannotConnectToHost|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1004\b"
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
_r("connection_timeout", r"NSURLErrorTimedOut|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1001\b|The request timed out",
   0.9, "Safari/macOS")

# ---- handshake
_r("plain_http_on_tls_port", r"SSL_ERROR_RX_RECORD_TOO_LONG", 0.95, "Firefox")
_r("plain_http_on_tls_port", r"server gave HTTP response to HTTPS client", 0.95, "Go")
_r("plain_http_on_tls_port", r"wrong version number|WRONG_VERSION_NUMBER|first record does not look like a TLS "
                             r"handshake|Unsupported or unrecognized SSL message|record too long"
                             r"|packet length too long|ERR_SSL_WRONG_VERSION_NUMBER", 0.9, "TLS library")
_r("plain_http_on_tls_port", r"plain HTTP request was sent to HTTPS port|SSL routines::http request|\bhttp request\b"
                             r"[^\n]{0,200}SSL|HTTP_REQUEST", 0.55, "server log")
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
                        r"|SSL_ERROR_SYSCALL|errSSLClosedAbort|-9806\b|TLS handshake error from \S{1,256}: EOF"
                        r"|handshake: EOF|tls: [^\n]{0,200}\bEOF\b|SSL_connect: Connection reset", 0.85, "TLS library")
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
                        r"|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1200\b|An SSL error has occurred and a secure "
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
                        r"present)|No name matching \S{1,256} found|ERR_TLS_CERT_ALTNAME_INVALID|does not match "
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
              r"|certificate_expired|certificate [^\n]{0,200}has expired|expired certificate", 0.9, "TLS library",
   ("client_clock_skew",))
_r("expired", r"NSURLErrorServerCertificateHasBadDate|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1201\b"
              r"|certificate for this server (?:is|has) (?:expired|invalid date)", 0.75, "Safari/macOS", _DATE)
_r("expired", r"x509: certificate has expired or is not yet valid", 0.55, "Go", _DATE)
_r("not_yet_valid", r"MOZILLA_PKIX_ERROR_NOT_YET_VALID_(?:ISSUER_)?CERTIFICATE", 0.95, "Firefox",
   ("client_clock_skew",))
_r("not_yet_valid", r"certificate is not yet valid|CERT_NOT_YET_VALID|CertificateNotYetValidException"
                    r"|errSSLCertNotYetValid|-9815\b|NSURLErrorServerCertificateNotYetValid"
                    r"|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1204\b|verify error:num=9\b|Verify return code: 9\b"
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
_r("self_signed", r"NSURLErrorServerCertificateUntrusted|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1202\b"
                  r"|SEC_ERROR_UNTRUSTED_CERT|certificate for this server is invalid", 0.6, "Safari/macOS",
   ("untrusted_root", "hostname_mismatch", "incomplete_chain"))
_r("untrusted_root", r"self[- ]signed certificate in (?:the )?certificate chain|SELF_SIGNED_CERT_IN_CHAIN"
                     r"|verify error:num=19\b|Verify return code: 19\b", 0.9, "TLS library", ("tls_interception",))
_r("untrusted_root", r"NSURLErrorServerCertificateHasUnknownRoot|(?:NSURLErrorDomain|Code=|error )\s{0,16}-1203\b"
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
INTERCEPTORS = (r"Zscaler|Forti(?:net|Gate)|Blue ?Coat|Palo Alto|Sophos|Kaspersky|Avast|\bAVG\b|\bESET\b"
                 r"|Bitdefender|Netskope|Cisco Umbrella|Forcepoint|Websense|Check ?Point|Barracuda|McAfee"
                 r"|Symantec Web|Untangle|mitmproxy|Charles Proxy|Fiddler|DO_NOT_TRUST|PortSwigger|Burp"
                 r"|Securly|Lightspeed|GoGuardian|iboss|Menlo Security|Cloudflare Gateway|WatchGuard|SonicWall"
                 r"|Smoothwall|ContentKeeper|Trend Micro|Norton|Webroot|Cisco Secure|Skyhigh|Squid")
_r("tls_interception", INTERCEPTORS, 0.7, "issuer", ("untrusted_root",))
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

CURL_EXIT = {6: "dns_not_configured", 7: "connection_refused", 28: "connection_timeout", 35: "handshake_failure",
              51: "hostname_mismatch", 60: "untrusted_root", 91: "revoked"}

# ---- the modes of issue 16 (diagnose side; the triage helper extends these)
_r("client_certificate_required", r"ERR_BAD_SSL_CLIENT_AUTH_CERT|SSL_ERROR_RX_CERTIFICATE_REQUIRED_ALERT"
                                  r"|alert certificate required|alert number 116\b|CERTIFICATE_REQUIRED"
                                  r"|requires a client certificate|NSURLErrorClientCertificateRequired|-1206\b",
   0.9, "TLS library")
_r("client_certificate_required", r"SSL_ERROR_HANDSHAKE_FAILURE_ALERT|Acceptable client certificate CA names", 0.5,
   "TLS library", ("cipher_mismatch", "handshake_failure"))
_r("alpn_mismatch", r"SSL_ERROR_NO_APPLICATION_PROTOCOL|no application protocol|alert number 120\b"
                    r"|NO_APPLICATION_PROTOCOL", 0.9, "TLS library")
_r("handshake_failure", r"\bERR_SSL_PROTOCOL_ERROR\b", 0.3, "Chrome/Edge", ("alpn_mismatch",))
_r("handshake_timeout", r"SSL connection timeout|handshake operation timed out|TLS handshake timeout"
                        r"|handshake timed out", 0.9, "TLS library")
_r("connection_timeout", r"\bERR_TIMED_OUT\b", 0.3, "Chrome/Edge", ("handshake_timeout",))
_r("unsuitable_purpose", r"SEC_ERROR_INADEQUATE_CERT_TYPE|SEC_ERROR_INADEQUATE_KEY_USAGE|unsuitable certificate "
                         r"purpose|INVALID_PURPOSE|verify error:num=26\b|not valid for this purpose"
                         r"|Extended key usage does not permit|incompatible key usage", 0.9, "TLS library")
_r("unsuitable_purpose", r"NET::ERR_CERT_INVALID|\bERR_CERT_INVALID\b", 0.4, "Chrome/Edge", ("invalid_chain",))
_r("invalid_chain", r"SEC_ERROR_CA_CERT_INVALID|SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID|SEC_ERROR_CERT_NOT_IN_NAME_SPACE"
                    r"|path length constraint exceeded|PATH_LENGTH_EXCEEDED|permitted subtree violation"
                    r"|excluded subtree violation|name constraints check failed|pathLenConstraint violated"
                    r"|keyCertSign bit is not set|key usage does not include certificate signing", 0.9,
   "TLS library")
_r("invalid_chain", r"ERR_CERT_AUTHORITY_INVALID|invalid CA certificate", 0.3, "TLS library", ("untrusted_root",))
_r("must_staple_missing", r"MOZILLA_PKIX_ERROR_REQUIRED_TLS_FEATURE_MISSING|requires the server to include an OCSP "
                          r"status", 0.95, "Firefox/GnuTLS")


assert all(r.mode in FAILURE_MODES for r in RULES)
