"""The evidence triage learned from more client families (issue 16): rustls, .NET / WinHTTP / schannel, GnuTLS
(wget, git, gnutls-cli), PHP streams, Node.js codes, Android and iOS/macOS, more Go and Java texts, curl/openssl
codes of the chain-validity modes, CDN error pages (Cloudflare 52x), proxy logs (nginx, HAProxy, Envoy, Caddy,
Traefik) and browser pages in other languages.

Rules here are matched against the *flattened* report (one line, accents dropped, typos put right: see
``triage_text``), so a pattern never needs ``\\s+`` for line wrapping. Every repeat is bounded.

Also here: the TLS alert table (an alert number or name, wherever it was found, points at a mode), the OpenSSL
verify-code table, and the decoders of packed OpenSSL / BoringSSL error numbers (``error:0A00045C``,
``268436572``) into alerts.
"""

from __future__ import annotations

import re

from .rules import Rule

__all__ = ["FAMILY_RULES", "CHROMIUM_NET_ERRORS", "chromium_net_errors_in", "ALERTS", "ALERT_NAMES", "VERIFY_CODES", "SERVER_SIDE", "alerts_in", "verify_codes_in"]

FAMILY_RULES: list[Rule] = []


def _r(mode: str, pattern: str, weight: float, source: str, candidates: tuple[str, ...] = ()) -> None:
    FAMILY_RULES.append(Rule(mode, re.compile(pattern, re.I), weight, source, candidates))


_CERT = ("incomplete_chain", "self_signed", "expired", "hostname_mismatch", "invalid_chain")
_HSK = ("protocol_version_mismatch", "cipher_mismatch", "sni_unrecognized", "plain_http_on_tls_port")

# ------------------------------------------------------------------ the new modes, in every family's words
_r("client_certificate_required",
   r"tlsv13 alert certificate required|alert certificate required|certificate_required|CertificateRequired"
   r"|remote error: tls: certificate required|Certificate is required|ERR_BAD_SSL_CLIENT_AUTH_CERT"
   r"|SSL_ERROR_RX_CERTIFICATE_REQUIRED_ALERT|NSURLErrorClientCertificateRequired|Code=-1206\b|error -1206\b"
   r"|requires a client certificate|client certificate (?:is )?required|ERROR_(?:WINHTTP|INTERNET)_CLIENT_AUTH_CERT_NEEDED"
   r"|client sent no required SSL certificate|No required SSL certificate was sent|peer did not return a certificate"
   r"|tls: client didn.t provide a certificate|Empty client certificate chain|null cert chain"
   r"|SSL client certificate (?:missing|not trusted|required)|SSL client CA chain cannot be verified"
   r"|didn.t accept your login certificate|login certificate|extension \(5\) should not be presented in "
   r"certificate_request|SEC_I_INCOMPLETE_CREDENTIALS|0x00090320", 0.93, "TLS library / server log")
_r("client_certificate_required", r"client SSL certificate verify error|The SSL certificate error"
   r"|NSURLErrorClientCertificateRejected|Code=-1205\b|bad_certificate|alert bad certificate"
   r"|tls: bad certificate|BadCertificate", 0.6, "TLS library", ("untrusted_root", "cipher_mismatch"))
_r("client_certificate_required", r"specified session has been invalidated", 0.45, "GnuTLS",
   ("handshake_failure",))
_r("alpn_mismatch", r"no application protocol|no_application_protocol|NoApplicationProtocol|alert number 120\b"
   r"|No supported application protocol could be negotiated|unsupported application protocols"
   r"|ALPN[^.]{0,60}(?:mismatch|fail|not negotiated|no overlap|rejected)|NO_APPLICATION_PROTOCOL", 0.93,
   "TLS library")
_r("handshake_timeout", r"SSL connection timeout|TLS handshake timeout|handshake operation timed out"
   r"|Timeout during SSL handshake|handshake timed out|SSL handshake timed out|ERR_TLS_HANDSHAKE_TIMEOUT"
   r"|timed out while SSL handshaking|timed out [^.]{0,60}while SSL handshaking|SSL: Handshake timed out"
   r"|TLS handshake (?:did not complete|never completed)", 0.93, "TLS library / server log")
_r("handshake_timeout", r"\b(?:read|write) tcp [0-9a-f.:\[\]]{3,60}->[0-9a-f.:\[\]]{3,60}: i/o timeout"
   r"|SocketTimeoutException: Read timed out|Read timed out", 0.8, "socket", ("connection_timeout",))
_r("connection_timeout", r"\bdial tcp [0-9a-f.:\[\]]{3,60}: i/o timeout|connect timed out|Connect timeout",
   0.9, "socket")
_r("unsuitable_purpose", r"unsuitable certificate purpose|INVALID_PURPOSE|incompatible key usage"
   r"|Extended key usage does not permit|KeyUsage does not allow|key usage does not permit|InvalidPurpose"
   r"|RequiredEkuNotFound|NotValidForUsage|CERT_E_WRONG_USAGE|0x800B0110|not valid for the requested usage"
   r"|SECURE_CERT_WRONG_USAGE|SEC_ERROR_INADEQUATE_CERT_TYPE|SEC_ERROR_INADEQUATE_KEY_USAGE"
   r"|does not match the intended purpose|not valid for this purpose|errSecInvalidExtendedKeyUsage"
   r"|-67609\b|verify error:num=26\b|Verify return code: 26\b|purpose does not match", 0.93, "TLS library")
_r("unsuitable_purpose", r"\bNET::ERR_CERT_INVALID\b|\bERR_CERT_INVALID\b", 0.5, "Chrome/Edge", ("invalid_chain",))
_r("invalid_chain", r"invalid CA certificate|\bINVALID_CA\b|path length constraint exceeded|PATH_LENGTH_EXCEEDED"
   r"|PathLenConstraintViolated|pathLenConstraint|path length constraint|permitted subtree violation"
   r"|excluded subtree violation|SUBTREE_VIOLATION|name constraints? (?:check failed|violat)"
   r"|NameConstraintViolation|CaUsedAsEndEntity|EndEntityUsedAsCa|basic constraints check failed"
   r"|not a CA certificate|keyCertSign bit is not set|CA key usage check failed"
   r"|key usage does not include certificate signing|KEYUSAGE_NO_CERTSIGN|signer (?:of [^.]{1,200} )?was not a CA"
   r"|issuer is not a CA|violates the signer.s constraints|not authorized to sign other certificates"
   r"|too many intermediates for path length|not authorized to sign for this name|is not permitted by "
   r"(?:the )?name constraints|parent certificate cannot sign|SEC_ERROR_CA_CERT_INVALID"
   r"|SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID|SEC_ERROR_CERT_NOT_IN_NAME_SPACE|MOZILLA_PKIX_ERROR_CA_CERT_USED_AS"
   r"|InvalidBasicConstraints|InvalidNameConstraints|HasNotPermittedNameConstraint|HasExcludedNameConstraint"
   r"|CERT_E_PATHLENCONST|0x800B0104|CERT_E_ROLE|0x800B0103|verify error:num=(?:24|25|32|47|48|79)\b"
   r"|Verify return code: (?:24|25|32|47|48|79)\b", 0.93, "TLS library")
_r("must_staple_missing", r"REQUIRED_TLS_FEATURE_MISSING|required TLS feature (?:is )?missing|must-?staple"
   r"|requires the server to include an OCSP status|OCSP status [^.]{0,40}missing|MISSING_OCSP_STATUS", 0.9,
   "Firefox / GnuTLS", ("revoked",))

# ------------------------------------------------------------------ more browser codes (net_error_list.h, NSS / pkix)
_r("unsuitable_purpose", r"ERR_SSL_KEY_USAGE_INCOMPATIBLE|SEC_ERROR_INADEQUATE_KEY_USAGE", 0.85, "Chrome/Firefox")
_r("invalid_chain", r"ERR_CERT_NAME_CONSTRAINT_VIOLATION|MOZILLA_PKIX_ERROR_V1_CERT_USED_AS_CA"
   r"|SEC_ERROR_UNKNOWN_CRITICAL_EXTENSION|SEC_ERROR_BAD_SIGNATURE|ERR_SSL_SERVER_CERT_BAD_FORMAT"
   r"|ERR_CERT_CONTAINS_ERRORS|SEC_ERROR_EXTENSION_VALUE_INVALID|MOZILLA_PKIX_ERROR_INVALID_INTEGER_ENCODING", 0.75,
   "Chrome/Firefox", ("untrusted_root",))
_r("untrusted_root", r"ERR_CERT_SYMANTEC_LEGACY|ERR_CERTIFICATE_TRANSPARENCY_REQUIRED", 0.6, "Chrome/Edge",
   ("tls_interception",))
_r("tls_interception", r"ERR_SSL_PINNED_KEY_NOT_IN_CERT_CHAIN|MOZILLA_PKIX_ERROR_KEY_PINNING_FAILURE", 0.6,
   "Chrome/Firefox", ("untrusted_root",))
_r("client_certificate_required", r"ERR_SSL_CLIENT_AUTH_CERT_NEEDED|ERR_SSL_CLIENT_AUTH_SIGNATURE_FAILED"
   r"|SSL_ERROR_BAD_CERT_ALERT|SSL_ERROR_NO_CERTIFICATE|SSL_ERROR_CERTIFICATE_REQUIRED_ALERT", 0.85, "Chrome/Firefox")
_r("alpn_mismatch", r"ERR_ALPN_NEGOTIATION_FAILED|ALPN_NEGOTIATION_FAILED", 0.95, "Chrome/Edge")
_r("cipher_mismatch", r"ERR_HTTP2_INADEQUATE_TRANSPORT_SECURITY", 0.75, "Chrome/Edge", ("protocol_version_mismatch",))
_r("weak_key", r"SSL_ERROR_WEAK_SERVER_CERT_KEY", 0.9, "Firefox")

# codes shared by several modes in failure-modes.md: the newer modes among their candidates
_r("handshake_failure", r"\bERR_SSL_PROTOCOL_ERROR\b", 0.5, "Chrome/Edge", ("alpn_mismatch",) + _HSK)
_r("connection_timeout", r"\bERR_TIMED_OUT\b|The connection has timed out", 0.9, "browser", ("handshake_timeout",))
_r("cipher_mismatch", r"SSL_ERROR_HANDSHAKE_FAILURE_ALERT", 0.65, "Firefox",
   ("client_certificate_required", "handshake_failure"))
_r("untrusted_root", r"ERR_CERT_AUTHORITY_INVALID", 0.6, "Chrome/Edge",
   ("self_signed", "incomplete_chain", "tls_interception", "invalid_chain"))

# ------------------------------------------------------------------ GnuTLS clients (wget, git, gnutls-cli)
_r("untrusted_root", r"The certificate is NOT trusted|certificate of '[^']{1,300}' is not trusted"
   r"|server certificate verification failed|PKI verification of server certificate failed", 0.55, "GnuTLS",
   ("incomplete_chain", "self_signed", "expired", "hostname_mismatch", "invalid_chain", "not_yet_valid"))
_r("untrusted_root", r"certificate issuer is unknown|doesn.t have a known issuer|hasn.t got a known issuer"
   r"|signer not found|issuer is not known", 0.75, "GnuTLS", ("incomplete_chain", "self_signed"))
_r("expired", r"chain uses expired certificate|The certificate of '[^']{1,300}' has expired|certificate has "
   r"expired(?! or is not yet valid)|Issued certificate has expired", 0.9, "GnuTLS / wget", ("client_clock_skew",))
_r("incomplete_chain", r"Unable to locally verify the issuer.s authority", 0.8, "wget (OpenSSL)",
   ("untrusted_root", "tls_interception"))
_r("self_signed", r"Self-signed certificate encountered", 0.9, "wget (OpenSSL)")
_r("not_yet_valid", r"not yet activated|chain uses not yet valid certificate|has not yet been activated", 0.9,
   "GnuTLS", ("client_clock_skew",))
_r("hostname_mismatch", r"name in the certificate does not match|certificate.s owner does not match hostname"
   r"|no certificate subject alternative name matches|certificate subject name \([^)]{1,300}\) does not match"
   r"|does not match target host name|Peer certificate CN=[^\n]{1,300} did not match expected CN"
   r"|Peer certificate subjectAltName did not match expected name"
   r"|Hostname [^ ]{1,253} not verified|certificate not valid for name|NotValidForName|CertNotValidForName"
   r"|upstream SSL certificate does not match|doesn.t match any of the subject alternative names"
   r"|doesn.t match common name of the certificate|is not in the cert.s altnames", 0.93, "GnuTLS / PHP / OkHttp / rustls / nginx / Apache HttpClient")
_r("weak_signature", r"uses insecure algorithm|signed using an insecure algorithm|insecure signature algorithm"
   r"|signature algorithm is not supported|UnsupportedSignatureAlgorithm", 0.8, "GnuTLS / rustls")
_r("handshake_failure", r"Error in the pull function|Error in the push function|non-properly terminated"
   r"|GnuTLS recv error \(-(?:54|110)\)|Server has terminated the connection abnormally"
   r"|peer closed connection without sending TLS close_notify|tls handshake eof|unexpected end of file"
   r"|Connection closed by peer|transport stream|remote party has closed", 0.75, "GnuTLS / rustls / .NET",
   _HSK)
_r("handshake_failure", r"Failure when receiving data from the peer|SSLZeroReturnError|connection has been closed \(EOF\)"
   r"|Connection was reset|connection was closed unexpectedly|unexpected EOF or 0 bytes", 0.6, "curl / Python / .NET",
   ("client_certificate_required",) + _HSK)
_r("invalid_chain", r"certificate signature failure|CERT_SIGNATURE_FAILURE|verify error:num=7\b", 0.8, "OpenSSL",
   ("untrusted_root", "tls_interception"))
_r("plain_http_on_tls_port", r"unexpected TLS packet was received|TLS packet with unexpected length"
   r"|corrupt message of type InvalidContentType|InvalidContentType|received corrupt message", 0.85,
   "GnuTLS / rustls")
_r("cipher_mismatch", r"Could not negotiate a supported cipher suite|NoCipherSuitesInCommon|no cipher suites in "
   r"common|HandshakeFailure|alert \[40\]: Handshake failed|gnutls_handshake\(\) failed: Handshake failed", 0.6,
   "GnuTLS / rustls",
   ("client_certificate_required", "protocol_version_mismatch"))
_r("sni_unrecognized", r"server name sent was not recognized|UnrecognisedName|UnrecognizedName", 0.93,
   "GnuTLS / rustls")
_r("protocol_version_mismatch", r"ServerDoesNotSupportTls12Or13|Tls12NotOffered|SupportedVersionsExtensionRequired"
   r"|no supported versions satisfy MinVersion|illegal version was received|TLSV1_ALERT_PROTOCOL_VERSION"
   r"|ProtocolVersion\b|The underlying connection was closed: An unexpected error occurred on a send", 0.8,
   "TLS library", ("cipher_mismatch",))

# ------------------------------------------------------------------ rustls / webpki
_r("untrusted_root", r"invalid peer certificate[^.]{0,40}UnknownIssuer|\bUnknownIssuer\b|Trust anchor for "
   r"certification path not found|Path does not chain with any of the trust anchors|certificate is not trusted"
   r"|Chain validation failed", 0.75, "rustls / Android / Java", ("incomplete_chain", "self_signed"))
_r("expired", r"invalid peer certificate[^.]{0,40}(?:Expired|CertExpired)|\bCertExpired\b|certificate expired: "
   r"verification time|validity check failed|timestamp check failed", 0.8, "rustls / Java",
   ("not_yet_valid", "client_clock_skew"))
_r("not_yet_valid", r"\bNotValidYet\b|\bCertNotValidYet\b|certificate not valid yet", 0.9, "rustls",
   ("client_clock_skew",))
_r("revoked", r"invalid peer certificate[^.]{0,40}Revoked|\bCertRevoked\b", 0.9, "rustls")

# ------------------------------------------------------------------ .NET / schannel / WinHTTP
_r("untrusted_root", r"errors in the certificate chain: UntrustedRoot|X509ChainStatusFlags\.UntrustedRoot"
   r"|\bUntrustedRoot\b|ERROR_(?:WINHTTP_SECURE|INTERNET)_INVALID_CA|CERT_E_UNTRUSTEDROOT", 0.8, ".NET/Windows",
   ("tls_interception", "self_signed", "incomplete_chain"))
_r("incomplete_chain", r"\bPartialChain\b|CERT_E_CHAINING|0x800B010A|certificate chain could not be built", 0.85,
   ".NET/Windows", ("untrusted_root",))
_r("expired", r"\bNotTimeValid\b|ERROR_(?:WINHTTP_SECURE|INTERNET_SEC)_CERT_DATE_INVALID", 0.75, ".NET/Windows",
   ("not_yet_valid", "client_clock_skew"))
_r("hostname_mismatch", r"ERROR_(?:WINHTTP_SECURE|INTERNET_SEC)_CERT_CN_INVALID", 0.9, ".NET/Windows")
_r("revoked", r"ERROR_(?:WINHTTP_SECURE|INTERNET_SEC)_CERT_REVOKED|\bRevoked\b[^.]{0,40}X509Chain", 0.9,
   ".NET/Windows")
_r("revoked", r"RevocationStatusUnknown|OfflineRevocation|CRYPT_E_NO_REVOCATION_CHECK|unable to check revocation"
   r"|ERROR_(?:WINHTTP_SECURE|INTERNET_SEC)_CERT_REV_FAILED", 0.5, ".NET/Windows", ("tls_interception",))
_r("unsuitable_purpose", r"ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE", 0.9, ".NET/Windows")
_r("handshake_failure", r"SEC_E_ILLEGAL_MESSAGE|0x80090326|message received was unexpected or badly formatted"
   r"|SEC_E_INVALID_TOKEN|0x80090308|token supplied to the function is invalid", 0.6, ".NET/Windows",
   ("protocol_version_mismatch", "cipher_mismatch", "plain_http_on_tls_port"))
_r("untrusted_root", r"rejected by the provided RemoteCertificateValidationCallback|SEC_E_CERT_UNKNOWN|0x80090327",
   0.6, ".NET/Windows", ("self_signed", "incomplete_chain", "hostname_mismatch", "expired"))
_r("protocol_version_mismatch", r"bad protocol version", 0.85, "macOS / .NET", ("cipher_mismatch",))
_r("connection_refused", r"refused to connect", 0.9, "Chrome/Edge")
_r("connection_timeout", r"Client\.Timeout exceeded|request canceled while waiting for connection", 0.6, "Go",
   ("handshake_timeout",))
_r("handshake_failure", r"AuthenticationException|The SSL connection could not be established"
   r"|ERROR_WINHTTP_SECURE_FAILURE|\b12175\b", 0.3, ".NET/Windows", ("untrusted_root",) + _HSK)
_r("connection_timeout", r"ERROR_(?:WINHTTP|INTERNET)_TIMEOUT|\b12002\b", 0.7, "WinHTTP")
_r("connection_refused", r"ERROR_(?:WINHTTP|INTERNET)_CANNOT_CONNECT|\b12029\b", 0.7, "WinHTTP")
_r("dns_not_configured", r"ERROR_(?:WINHTTP|INTERNET)_NAME_NOT_RESOLVED|\b12007\b|No such host is known", 0.9,
   "WinHTTP")

# ------------------------------------------------------------------ Node.js / PHP / Apple / Android
_r("incomplete_chain", r"UNABLE_TO_GET_ISSUER_CERT_LOCALLY|unable to get local issuer certificate", 0.8, "Node",
   ("untrusted_root", "tls_interception"))
_r("handshake_failure", r"SSL operation failed with code|Failed to enable crypto", 0.2, "PHP",
   ("untrusted_root",) + _HSK)
_r("handshake_failure", r"errSSLFatalAlert|-9802\b|errSSLClosedNoNotify|-9816\b", 0.5, "Safari/macOS",
   ("protocol_version_mismatch", "cipher_mismatch"))
_r("cipher_mismatch", r"errSSLNegotiation|-9801\b|errSSLPeerInsufficientSecurity|-9838\b", 0.7, "Safari/macOS",
   ("protocol_version_mismatch",))
_r("untrusted_root", r"errSSLXCertChainInvalid|-9807\b|errSSLBadCert\b|-9808\b|errSSLPeerUnknownCA|-9830\b", 0.65,
   "Safari/macOS", ("incomplete_chain", "self_signed", "hostname_mismatch"))
_r("self_signed", r"SslError[^.]{0,40}primary error: ?3\b", 0.5, "Android WebView", ("untrusted_root",))
_r("expired", r"SslError[^.]{0,40}primary error: ?[14]\b", 0.8, "Android WebView", ("client_clock_skew",))
_r("hostname_mismatch", r"SslError[^.]{0,40}primary error: ?2\b", 0.85, "Android WebView")
_r("not_yet_valid", r"SslError[^.]{0,40}primary error: ?0\b", 0.8, "Android WebView")

# ------------------------------------------------------------------ CDN error pages
_r("handshake_failure", r"Error (?:code )?525\b|525: SSL handshake failed|\b525 SSL handshake failed", 0.85,
   "Cloudflare (the TLS handshake between the CDN and the origin failed)", _HSK)
_r("untrusted_root", r"Error (?:code )?526\b|526: Invalid SSL certificate|\b526 Invalid SSL certificate"
   r"|Invalid SSL certificate", 0.8, "Cloudflare (the origin's certificate is not valid for the CDN)",
   ("self_signed", "expired", "hostname_mismatch", "incomplete_chain"))
_r("connection_refused", r"Error (?:code )?521\b|Web server is down", 0.85, "Cloudflare")
_r("connection_timeout", r"Error (?:code )?522\b|Connection timed out \(522\)", 0.85, "Cloudflare")
_r("dns_not_configured", r"Error (?:code )?(?:523|530|1001|1016)\b|Origin DNS error|DNS resolution error"
   r"|Origin is unreachable", 0.75, "Cloudflare", ("connection_refused",))
_r("wrong_endpoint", r"Error (?:code )?1014\b|CNAME Cross-User Banned", 0.7, "Cloudflare")
_r("connection_refused", r"CloudFront wasn.t able to connect to the origin|delayed connect error: 111", 0.7,
   "CloudFront / Envoy", ("handshake_failure",))

# ------------------------------------------------------------------ proxy logs
_r("untrusted_root", r"certificate verify failed", 0.25, "TLS library (the reason is not given)",
   _CERT + ("not_yet_valid", "unsuitable_purpose"))
_r("untrusted_root", r"CERTIFICATE_VERIFY_FAILED|upstream SSL certificate verify error", 0.4,
   "Envoy / nginx (the origin's certificate was refused)", _CERT)
_r("handshake_failure", r"SSL handshake failure|SSL handshake failed|Connection closed during SSL handshake", 0.55,
   "HAProxy / server log", _HSK)
_r("handshake_failure", r"upstream connect error or disconnect/reset|TLS_error|TLS error: ", 0.35, "Envoy", _HSK)
_r("handshake_failure", r"A TLS fatal alert has been received", 0.45, "GnuTLS",
   ("client_certificate_required", "cipher_mismatch"))
_r("handshake_failure", r"Unable to establish SSL connection", 0.2, "wget", ("handshake_timeout", "untrusted_root"))
_r("client_certificate_required", r"recv error \(-12\)|SSL_read: [^\n]{0,100}alert", 0.5,
   "GnuTLS / curl (a fatal alert after the handshake: what TLS 1.3 servers send for a missing client certificate)",
   ("handshake_failure",))
_r("cipher_mismatch", r"alert handshake failure|SSLV3_ALERT_HANDSHAKE_FAILURE|fatal alert: handshake_failure"
   r"|tls: handshake failure", 0.62, "TLS library", ("client_certificate_required", "protocol_version_mismatch"))
_r("connection_timeout", r"Connection timed out after \d{1,9} milli", 0.9, "curl", ("handshake_timeout",))

# ------------------------------------------------------------------ browser pages in other languages
# Chrome, Firefox and Safari interstitials in German, Spanish, French, Portuguese (pt-BR and pt-PT), Japanese,
# Italian, Dutch. Matched without accents (the report is flattened first).
_CONN_NOT_PRIVATE = (r"Dies ist keine sichere Verbindung|Ihre Verbindung ist nicht privat|La conexion no es privada"
                     r"|Tu conexion no es privada|Votre connexion n.est pas privee|Sua conexao nao e particular"
                     r"|A sua ligacao nao e privada|La connessione non e privata|Je verbinding is niet prive"
                     r"|この接続ではプライバシーが保護されません|接続はプライバシーが保護されていません"
                     r"|Mogliches Sicherheitsrisiko erkannt|riesgo potencial de seguridad|risque probable de securite"
                     r"|Potencial risco de seguranca|潜在的なセキュリティリスク|您的连接不是私密连接|你的連線不是私人連線"
                     r"|연결이 비공개로 설정되어 있지 않습니다|Подключение не защищено|Ваше подключение не является закрытым"
                     r"|Po.aczenie nie jest prywatne|Baglantiniz gizli degil|Pripojeni neni soukrome")
_r("untrusted_root", _CONN_NOT_PRIVATE, 0.3, "browser (localized)",
   ("hostname_mismatch", "expired", "self_signed", "incomplete_chain", "client_clock_skew"))
_r("expired", r"Zertifikat ist (?:vor [^.]{1,40} )?abgelaufen|Sicherheitszertifikat ist abgelaufen"
   r"|certificado de seguridad (?:caduco|ha caducado|expiro)|certificat de securite a expire|certificat a expire"
   r"|certificado de seguranca expirou|certificado de seguranca (?:ja )?caducou|certificato di sicurezza e scaduto"
   r"|beveiligingscertificaat is verlopen|セキュリティ証明書の有効期限が|証明書の有効期限が切れ", 0.85,
   "browser (localized)", ("client_clock_skew",))
_r("not_yet_valid", r"Zertifikat ist erst ab|certificado de seguridad (?:aun no es valido|no es valido hasta)"
   r"|certificat de securite n.est pas encore valide|certificado de seguranca (?:ainda nao e valido|nao sera valido)"
   r"|セキュリティ証明書はまだ有効になっていません|証明書はまだ有効", 0.85, "browser (localized)",
   ("client_clock_skew",))
_r("hostname_mismatch", r"Sicherheitszertifikat stammt von|certificado de seguridad (?:procede|es) de"
   r"|certificat de securite provient|certificado de seguranca (?:e|vem) de|certificato di sicurezza proviene"
   r"|beveiligingscertificaat is afkomstig van|セキュリティ証明書は[^。]{1,80}のものです"
   r"|nicht fur diesen Namen|no es valido para este nombre", 0.8, "browser (localized)",
   ("default_certificate", "wrong_endpoint"))
_r("untrusted_root", r"nicht als vertrauenswurdig eingestuft|no confia en (?:su|el) certificado"
   r"|n.est pas considere comme (?:fiable|digne de confiance)|nao e confiavel|non e considerato attendibile"
   r"|wordt niet vertrouwd|信頼されているものではありません|信頼されていません", 0.7, "browser (localized)",
   ("self_signed", "incomplete_chain", "tls_interception"))
_r("client_clock_skew", r"Ihre Uhr geht (?:vor|nach)|El reloj (?:esta|va) (?:adelantado|atrasado)"
   r"|Tu reloj (?:esta|va) (?:adelantado|atrasado)|Votre horloge (?:est|a) (?:en avance|en retard)"
   r"|(?:Seu|O seu) relogio esta (?:adiantado|atrasado)|Il tuo orologio e (?:avanti|indietro)"
   r"|Je klok loopt (?:voor|achter)|時計が(?:進んで|遅れて)います|Datum und Uhrzeit|fecha y la hora"
   r"|date et l.heure|data e hora", 0.85, "browser (localized)", ("expired", "not_yet_valid"))
_r("protocol_version_mismatch", r"nicht unterstutztes Protokoll|protocolo no (?:compatible|admitido)"
   r"|protocole non (?:compatible|pris en charge)|protocolo nao (?:compativel|suportado)"
   r"|protocollo non supportato|サポートされていないプロトコル", 0.8, "browser (localized)",
   ("cipher_mismatch",))
_r("handshake_failure", r"keine sichere Verbindung (?:bereitstellen|herstellen)|no puede proporcionar una conexion "
   r"segura|ne peut pas fournir de connexion securisee|nao pode fornecer uma conexao segura"
   r"|nao consegue fornecer uma ligacao segura|このサイトは安全に接続できません"
   r"|Gesicherte Verbindung fehlgeschlagen|Conexion segura fallida|Echec de la connexion securisee"
   r"|Falha (?:na|de) conexao segura|安全な接続ができませんでした", 0.45, "browser (localized)", _HSK)
_r("dns_not_configured", r"IP-Adresse des Servers [^.]{0,120}nicht gefunden|No se ha podido encontrar la direccion IP"
   r"|Impossible de trouver l.adresse IP|Nao foi possivel encontrar o endereco IP|サーバーの IP アドレスが見つかりませんでした"
   r"|サーバーの IP アドレスが見つかりません", 0.9, "browser (localized)")
_r("connection_refused", r"hat die Verbindung abgelehnt|ha rechazado la conexion|n.autorise pas la connexion"
   r"|recusou a conexao|recusou estabelecer ligacao|接続が拒否されました|接続を拒否しました", 0.9, "browser (localized)")
_r("connection_timeout", r"zu lange gebraucht|ha tardado demasiado en responder|a mis trop de temps a repondre"
   r"|demorou muito para responder|demorou demasiado tempo a responder|応答時間が長すぎます", 0.85,
   "browser (localized)")

# ------------------------------------------------------------------ alerts, wherever they were found

#: TLS alert number -> (mode, weight on the client side, candidates). The server side (a log line where the
#: *visitor* sent the alert) is handled separately: there 42/46/48 mean the visitor refused the served certificate.
ALERTS: dict[int, tuple[str, float, tuple[str, ...]]] = {
    10: ("handshake_failure", 0.6, _HSK),
    20: ("handshake_failure", 0.6, ()),
    40: ("cipher_mismatch", 0.62, ("client_certificate_required", "protocol_version_mismatch", "handshake_failure")),
    42: ("client_certificate_required", 0.6, ("untrusted_root",)),
    43: ("untrusted_root", 0.5, _CERT),
    44: ("revoked", 0.85, ()),
    45: ("expired", 0.85, ("client_clock_skew",)),
    46: ("untrusted_root", 0.55, _CERT),
    47: ("handshake_failure", 0.55, _HSK),
    48: ("untrusted_root", 0.6, ("client_certificate_required", "incomplete_chain", "self_signed")),
    49: ("client_certificate_required", 0.5, ("handshake_failure",)),
    70: ("protocol_version_mismatch", 0.9, ()),
    71: ("cipher_mismatch", 0.8, ("protocol_version_mismatch",)),
    80: ("handshake_failure", 0.6, ("sni_unrecognized",)),
    86: ("handshake_failure", 0.7, ("protocol_version_mismatch",)),
    109: ("handshake_failure", 0.55, _HSK),
    112: ("sni_unrecognized", 0.93, ()),
    116: ("client_certificate_required", 0.95, ()),
    120: ("alpn_mismatch", 0.95, ()),
}

ALERT_NAMES = {
    "unexpected_message": 10, "bad_record_mac": 20, "handshake_failure": 40, "bad_certificate": 42,
    "unsupported_certificate": 43, "certificate_revoked": 44, "certificate_expired": 45, "certificate_unknown": 46,
    "illegal_parameter": 47, "unknown_ca": 48, "access_denied": 49, "protocol_version": 70,
    "insufficient_security": 71, "internal_error": 80, "inappropriate_fallback": 86, "missing_extension": 109,
    "unrecognized_name": 112, "certificate_required": 116, "no_application_protocol": 120,
}

#: OpenSSL verify code -> mode (``verify error:num=N``, ``Verify return code: N``, nginx ``(N:text)``).
VERIFY_CODES = {2: "incomplete_chain", 7: "invalid_chain", 9: "not_yet_valid", 10: "expired", 12: "expired", 18: "self_signed",
                19: "untrusted_root", 20: "incomplete_chain", 21: "incomplete_chain", 23: "revoked",
                24: "invalid_chain", 25: "invalid_chain", 26: "unsuitable_purpose", 32: "invalid_chain",
                47: "invalid_chain", 48: "invalid_chain", 62: "hostname_mismatch", 64: "hostname_mismatch",
                66: "weak_key", 67: "weak_key", 68: "weak_signature", 79: "invalid_chain"}

#: The report is a server's log line: alerts in it were sent by the visitor's client.
SERVER_SIDE = re.compile(r"TLS handshake error from|while SSL handshaking(?! to upstream)|haproxy\[|\bhttps?-in\b"
                         r"|SSL_do_handshake\(\) failed[^\n]{0,300}client: |\bfrontend\b|ssl_handshake_error"
                         r"|level=(?:debug|error|info)[^\n]{0,200}handshake error", re.I)

_ALERT_NUMBER = re.compile(r"alert number (\d{1,3})\b|alert \[(\d{1,3})\]|fatal alert code is (\d{1,3})\b"
                           r"|\balert (?:code )?\(?(\d{1,3})\)?: ", re.I)
_ALERT_NAME = re.compile(r"(?:received fatal alert|remote error): (?:tls: )?([A-Za-z_ ]{3,40})", re.I)
_OPENSSL_HEX = re.compile(r"error:([0-9A-Fa-f]{8}):")
_BORINGSSL_DEC = re.compile(r"\b(2684\d{5})\b")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def alerts_in(flat: str) -> list[tuple[int, str]]:
    """Every TLS alert the report names: by number, by name (Java ``handshake_failure``, rustls
    ``HandshakeFailure``, Go ``tls: handshake failure``), or packed in an OpenSSL (``error:0A00045C``) or
    BoringSSL (``268436572``) error code. Returns ``(alert, evidence)`` pairs, at most 20."""
    out: list[tuple[int, str]] = []
    for m in _ALERT_NUMBER.finditer(flat):
        n = int(next(g for g in m.groups() if g))
        out.append((n, m.group(0)))
        if len(out) >= 20:
            return out
    for m in _ALERT_NAME.finditer(flat):
        name = m.group(1).strip()
        key = _CAMEL.sub("_", name).lower() if "_" not in name and " " not in name and not name.isupper() \
            else name.lower()
        key = key.replace(" ", "_").replace("unrecognised", "unrecognized")
        for k, n in ALERT_NAMES.items():
            if key.startswith(k) or key.startswith(k.replace("certificate", "cert")):
                out.append((n, m.group(0)))
                break
        if len(out) >= 20:
            return out
    for m in _OPENSSL_HEX.finditer(flat):
        reason = int(m.group(1), 16) & 0xFFF
        if 1000 <= reason <= 1255:
            out.append((reason - 1000, m.group(0)))
        if len(out) >= 20:
            return out
    for m in _BORINGSSL_DEC.finditer(flat):
        reason = int(m.group(1)) - 268435456
        if 1000 <= reason <= 1255:
            out.append((reason - 1000, m.group(0)))
        if len(out) >= 20:
            return out
    return out


_VERIFY = re.compile(r"verify error:num=(\d{1,3})\b|Verify return code: (\d{1,3})\b|verify error: ?\((\d{1,3}):"
                     r"|X509_V_ERR[A-Z_]{0,60} ?\((\d{1,3})\)|verify_result[=:] ?(\d{1,3})\b", re.I)


def verify_codes_in(flat: str) -> list[tuple[int, str]]:
    out = []
    for m in _VERIFY.finditer(flat):
        n = int(next(g for g in m.groups() if g))
        if n:
            out.append((n, m.group(0)))
        if len(out) >= 20:
            break
    return out


#: Chromium's numeric net errors (net_error_list.h), as Android WebView and chrome://net-export print them
CHROMIUM_NET_ERRORS: dict[int, tuple[str, float]] = {
    -100: ("handshake_failure", 0.6), -101: ("handshake_failure", 0.7), -102: ("connection_refused", 0.9),
    -105: ("dns_not_configured", 0.9), -107: ("handshake_failure", 0.5), -110: ("client_certificate_required", 0.9),
    -113: ("protocol_version_mismatch", 0.8), -117: ("client_certificate_required", 0.9),
    -118: ("connection_timeout", 0.9), -200: ("hostname_mismatch", 0.8), -201: ("expired", 0.6),
    -202: ("untrusted_root", 0.6), -206: ("revoked", 0.9), -207: ("unsuitable_purpose", 0.5),
    -208: ("weak_signature", 0.9), -211: ("weak_key", 0.9), -212: ("invalid_chain", 0.9),
}
_NET_ERROR = re.compile(r"net_error[ =:]{0,3}(-\d{1,3})\b|net::ERR (-\d{1,3})\b", re.I)


def chromium_net_errors_in(flat: str) -> list[tuple[int, str]]:
    out = []
    for m in _NET_ERROR.finditer(flat):
        out.append((int(m.group(1) or m.group(2)), m.group(0)))
        if len(out) >= 10:
            break
    return out
