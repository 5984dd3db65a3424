"""The error text each family of clients shows for a failure mode (what its users paste into a ticket).

Browsers' texts come from the vocabulary (``modes.FAILURE_MODES[...].browser_errors``); the others are written the
way the client prints them: Python ``ssl`` exceptions, ``curl: (N) ...``, Node's ``Error: ... (code: '...')``,
Java's ``javax.net.ssl`` exceptions, Go's ``x509:`` / ``remote error: tls:`` texts, GnuTLS's verification status,
.NET's ``AuthenticationException``, Android's ``SSLHandshakeException``. The OpenSSL-based texts (Python, curl,
Node) were captured from the real clients on loopback; triage recognises the same texts (``rules.py``).
"""

from __future__ import annotations

from typing import Any

from .modes import get_mode

__all__ = ["client_error", "VERIFY_TEXT"]

#: OpenSSL's verify text and Node's error code per certificate mode (the default when the finding names none).
VERIFY_TEXT: dict[str, tuple[str, str]] = {
    "expired": ("certificate has expired", "CERT_HAS_EXPIRED"),
    "not_yet_valid": ("certificate is not yet valid", "CERT_NOT_YET_VALID"),
    "self_signed": ("self-signed certificate", "DEPTH_ZERO_SELF_SIGNED_CERT"),
    "untrusted_root": ("self-signed certificate in certificate chain", "SELF_SIGNED_CERT_IN_CHAIN"),
    "incomplete_chain": ("unable to get local issuer certificate", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
    "weak_signature": ("CA signature digest algorithm too weak", "CA_MD_TOO_WEAK"),
    "weak_key": ("EE certificate key too weak", "EE_KEY_TOO_SMALL"),
    "revoked": ("certificate revoked", "CERT_REVOKED"),
    "unsuitable_purpose": ("unsuitable certificate purpose", "INVALID_PURPOSE"),
    "invalid_chain": ("invalid CA certificate", "INVALID_CA"),
    "tls_interception": ("self-signed certificate in certificate chain", "SELF_SIGNED_CERT_IN_CHAIN"),
}
_NAME_MODES = ("hostname_mismatch", "default_certificate", "wrong_endpoint")

#: The OpenSSL reason of a handshake failure per mode (when the replayed handshake gave none).
_HS_REASON = {
    "protocol_version_mismatch": "tlsv1 alert protocol version",
    "cipher_mismatch": "sslv3 alert handshake failure",
    "alpn_mismatch": "tlsv1 alert no application protocol",
    "client_certificate_required": "tlsv13 alert certificate required",
    "sni_unrecognized": "tlsv1 unrecognized name",
    "plain_http_on_tls_port": "wrong version number",
    "handshake_failure": "unexpected eof while reading",
}
_JAVA_ALERT = {"protocol_version_mismatch": "protocol_version", "cipher_mismatch": "handshake_failure",
               "alpn_mismatch": "no_application_protocol", "client_certificate_required": "certificate_required",
               "sni_unrecognized": "unrecognized_name"}
_GO_ALERT = {"protocol_version_mismatch": "protocol version not supported", "cipher_mismatch": "handshake failure",
             "alpn_mismatch": "no application protocol", "client_certificate_required": "certificate required",
             "sni_unrecognized": "unrecognized name"}
_DOTNET_ALERT = {"protocol_version_mismatch": "ProtocolVersion", "cipher_mismatch": "HandshakeFailure",
                 "alpn_mismatch": "NoApplicationProtocol", "client_certificate_required": "CertificateRequired",
                 "sni_unrecognized": "UnrecognizedName"}
_GNUTLS_ALERT = {"protocol_version_mismatch": "Received alert [70]: Error in protocol version",
                 "cipher_mismatch": "Received alert [40]: Handshake failed",
                 "alpn_mismatch": "Received alert [120]: No supported application protocol could be negotiated",
                 "client_certificate_required": "Received alert [116]: Certificate is required",
                 "sni_unrecognized": "Received alert [112]: The server name sent was not recognized"}
_CHAIN_STATUS = {"expired": "NotTimeValid", "not_yet_valid": "NotTimeValid", "self_signed": "UntrustedRoot",
                 "untrusted_root": "UntrustedRoot", "incomplete_chain": "PartialChain", "revoked": "Revoked",
                 "unsuitable_purpose": "NotValidForUsage", "invalid_chain": "InvalidBasicConstraints",
                 "weak_signature": "NotSignatureValid", "weak_key": "NotSignatureValid",
                 "tls_interception": "UntrustedRoot"}
_GNUTLS_STATUS = {"expired": "The certificate chain uses expired certificate.",
                  "not_yet_valid": "The certificate chain uses not yet valid certificate.",
                  "self_signed": "The certificate issuer is unknown.",
                  "untrusted_root": "The certificate issuer is unknown.",
                  "incomplete_chain": "The certificate issuer is unknown.",
                  "tls_interception": "The certificate issuer is unknown.",
                  "weak_signature": "The certificate chain uses insecure algorithm.",
                  "weak_key": "The certificate chain uses insecure algorithm.",
                  "revoked": "The certificate chain is revoked.",
                  "unsuitable_purpose": "The certificate chain does not match the intended purpose.",
                  "invalid_chain": "The certificate chain violates the signer's constraints.",
                  "must_staple_missing": "The certificate requires the server to include an OCSP status in its "
                                         "response, but the OCSP status is missing."}
_JAVA_CERT = {
    "expired": "PKIX path validation failed: java.security.cert.CertPathValidatorException: validity check failed",
    "not_yet_valid": "PKIX path validation failed: java.security.cert.CertPathValidatorException: validity check "
                     "failed",
    "self_signed": "PKIX path building failed: sun.security.provider.certpath.SunCertPathBuilderException: unable "
                   "to find valid certification path to requested target",
    "weak_signature": "PKIX path validation failed: java.security.cert.CertPathValidatorException: Algorithm "
                      "constraints check failed on signature algorithm: SHA1withRSA",
    "weak_key": "PKIX path validation failed: java.security.cert.CertPathValidatorException: Algorithm constraints "
                "check failed on keysize limits",
    "revoked": "PKIX path validation failed: java.security.cert.CertPathValidatorException: Certificate has been "
               "revoked",
    "unsuitable_purpose": "Extended key usage does not permit use for TLS server authentication",
    "invalid_chain": "PKIX path validation failed: java.security.cert.CertPathValidatorException: basic "
                     "constraints check failed: this is not a CA certificate",
}
_GO_CERT = {
    "expired": "x509: certificate has expired or is not yet valid: current time is after the certificate's "
               "NotAfter",
    "not_yet_valid": "x509: certificate has expired or is not yet valid: current time is before the certificate's "
                     "NotBefore",
    "weak_signature": "x509: cannot verify signature: insecure algorithm SHA1-RSA (temporarily override with "
                      "GODEBUG=x509sha1=1)",
    "weak_key": "tls: failed to verify certificate: x509: RSA key size too small",
    "unsuitable_purpose": "x509: certificate specifies an incompatible key usage",
    "invalid_chain": "x509: certificate signed by unknown authority (possibly because of \"x509: invalid "
                     "signature: parent certificate cannot sign this kind of certificate\")",
}


def _browser(group: str, mode: str) -> str:
    return get_mode(mode).browser_errors.get(group, "-")


def client_error(group: str, mode: str, *, host: str, detail: str | None = None, issue: Any = None) -> str:
    """The text a client of ``group`` shows for ``mode`` at ``host`` (``detail``: the OpenSSL reason of a failed
    handshake; ``issue``: the certificate finding, whose ``texts`` / ``verify_text`` / ``node_code`` refine it)."""
    if issue is not None and getattr(issue, "texts", None) and group in issue.texts:
        return issue.texts[group]
    if group in ("chrome", "edge", "firefox", "safari"):
        return _browser(group, mode)
    fn = _TEXTS.get(group)
    if fn is None:
        return get_mode(mode).summary
    if mode == "client_certificate_required" and "handshake failure" in (detail or "") and \
            group in ("java", "go", "dotnet", "gnutls"):
        return fn("cipher_mismatch", host, detail, issue)  # TLS 1.2: the same alert 40 as a cipher mismatch
    return fn(mode, host, detail, issue)


def _vt(mode: str, issue: Any) -> tuple[str, str]:
    base = VERIFY_TEXT.get(mode, ("certificate verify failed", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"))
    if issue is not None and getattr(issue, "verify_text", ""):
        return issue.verify_text, issue.node_code or base[1]
    return base


def _common(mode: str, host: str, group: str) -> str | None:
    """Texts of the phases before TLS, per group."""
    t = {
        "dns_not_configured": {"python": "socket.gaierror: [Errno -2] Name or service not known",
                               "curl": f"curl: (6) Could not resolve host: {host}",
                               "node": f"Error: getaddrinfo ENOTFOUND {host} (code: 'ENOTFOUND')",
                               "java": f"java.net.UnknownHostException: {host}",
                               "android": f"java.net.UnknownHostException: Unable to resolve host \"{host}\"",
                               "go": f"dial tcp: lookup {host}: no such host",
                               "gnutls": f"Cannot resolve {host}:443: Name or service not known",
                               "dotnet": f"System.Net.Http.HttpRequestException: No such host is known. ({host}:443)"},
        "connection_refused": {"python": "ConnectionRefusedError: [Errno 111] Connection refused",
                               "curl": f"curl: (7) Failed to connect to {host} port 443: Connection refused",
                               "node": "Error: connect ECONNREFUSED (code: 'ECONNREFUSED')",
                               "java": "java.net.ConnectException: Connection refused",
                               "android": f"java.net.ConnectException: Failed to connect to {host}",
                               "go": "dial tcp: connect: connection refused",
                               "gnutls": f"Cannot connect to {host}:443: Connection refused",
                               "dotnet": "System.Net.Http.HttpRequestException: No connection could be made because "
                                         "the target machine actively refused it."},
        "connection_timeout": {"python": "TimeoutError: [Errno 110] Connection timed out",
                               "curl": f"curl: (28) Failed to connect to {host} port 443: Connection timed out",
                               "node": "Error: connect ETIMEDOUT (code: 'ETIMEDOUT')",
                               "java": "java.net.SocketTimeoutException: connect timed out",
                               "android": "java.net.SocketTimeoutException: failed to connect",
                               "go": "dial tcp: i/o timeout",
                               "gnutls": f"Cannot connect to {host}:443: Connection timed out",
                               "dotnet": "System.Net.Sockets.SocketException: A connection attempt failed because "
                                         "the connected party did not properly respond after a period of time"},
        "handshake_timeout": {"python": "TimeoutError: _ssl.c:990: The handshake operation timed out",
                              "curl": "curl: (28) SSL connection timeout",
                              "node": "Error: Client network socket disconnected before secure TLS connection was "
                                      "established (code: 'ECONNRESET')",
                              "java": "java.net.SocketTimeoutException: Read timed out",
                              "android": "java.net.SocketTimeoutException: SSL handshake timed out",
                              "go": "net/http: TLS handshake timeout",
                              "gnutls": "Unable to establish SSL connection. (handshake timed out)",
                              "dotnet": "System.Threading.Tasks.TaskCanceledException: The request was canceled due "
                                        "to the configured HttpClient.Timeout"},
        "mixed_content": {},
    }.get(mode)
    if t is None:
        return None
    return t.get(group, get_mode(mode).summary)


def _reason(mode: str, detail: str | None) -> str:
    return (detail or "").strip() or _HS_REASON.get(mode, "handshake failure")


def _python(mode: str, host: str, detail: str | None, issue: Any) -> str:
    c = _common(mode, host, "python")
    if c is not None:
        return c
    if mode in _NAME_MODES or (issue is not None and issue.kind == "cn_only"):
        return ("ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                f"Hostname mismatch, certificate is not valid for '{host}'. (_ssl.c:1006)")
    if get_mode(mode).phase == "certificate":
        return ("ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                f"{_vt(mode, issue)[0]} (_ssl.c:1006)")
    r = _reason(mode, detail)
    return f"ssl.SSLError: [SSL: {r.upper().replace(' ', '_')}] {r} (_ssl.c:1006)"


def _curl(mode: str, host: str, detail: str | None, issue: Any) -> str:
    c = _common(mode, host, "curl")
    if c is not None:
        return c
    if mode in _NAME_MODES:
        return f"curl: (60) SSL: no alternative certificate subject name matches target host name '{host}'"
    if mode == "must_staple_missing":
        return "curl: (91) No OCSP response received (with --cert-status)"
    if get_mode(mode).phase == "certificate":
        return f"curl: (60) SSL certificate problem: {_vt(mode, issue)[0]}"
    r = _reason(mode, detail)
    code = 56 if "certificate required" in r else 35
    return f"curl: ({code}) OpenSSL/3.0: error:0A000000:SSL routines::{r}"


def _node(mode: str, host: str, detail: str | None, issue: Any) -> str:
    c = _common(mode, host, "node")
    if c is not None:
        return c
    if mode in _NAME_MODES:
        return (f"Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: "
                f"Host: {host}. is not in the cert's altnames")
    if mode == "incomplete_chain":
        return "Error: unable to verify the first certificate (code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')"
    if get_mode(mode).phase == "certificate":
        text, code = _vt(mode, issue)
        return f"Error: {text} (code: '{code}')"
    r = _reason(mode, detail)
    return f"Error: SSL routines::{r} (code: 'ERR_SSL_{r.upper().replace(' ', '_')}')"


def _java(mode: str, host: str, detail: str | None, issue: Any, android: bool = False) -> str:
    c = _common(mode, host, "android" if android else "java")
    if c is not None:
        return c
    if android:
        if mode in _NAME_MODES:
            return f"javax.net.ssl.SSLPeerUnverifiedException: Hostname {host} not verified"
        if get_mode(mode).phase == "certificate":
            return ("javax.net.ssl.SSLHandshakeException: java.security.cert.CertPathValidatorException: Trust "
                    "anchor for certification path not found.")
        return f"javax.net.ssl.SSLHandshakeException: Handshake failed ({_reason(mode, detail)})"
    if mode in _NAME_MODES:
        return f"javax.net.ssl.SSLHandshakeException: No subject alternative DNS name matching {host} found."
    if get_mode(mode).phase == "certificate":
        text = _JAVA_CERT.get(mode, "PKIX path building failed: sun.security.provider.certpath."
                                    "SunCertPathBuilderException: unable to find valid certification path to "
                                    "requested target")
        return f"javax.net.ssl.SSLHandshakeException: {text}"
    if mode == "plain_http_on_tls_port":
        return "javax.net.ssl.SSLException: Unsupported or unrecognized SSL message"
    if mode == "handshake_failure":
        return "javax.net.ssl.SSLHandshakeException: Remote host terminated the handshake"
    if mode == "protocol_version_mismatch" and "alert" not in _reason(mode, detail):
        return ("javax.net.ssl.SSLHandshakeException: No appropriate protocol (protocol is disabled or cipher "
                "suites are inappropriate)")
    return f"javax.net.ssl.SSLHandshakeException: Received fatal alert: {_JAVA_ALERT.get(mode, 'handshake_failure')}"


def _go(mode: str, host: str, detail: str | None, issue: Any) -> str:
    c = _common(mode, host, "go")
    if c is not None:
        return c
    if issue is not None and issue.kind == "cn_only":
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    if mode in _NAME_MODES:
        return f"tls: failed to verify certificate: x509: certificate is not valid for {host}"
    if get_mode(mode).phase == "certificate":
        return "tls: failed to verify certificate: " + _GO_CERT.get(mode, "x509: certificate signed by unknown "
                                                                          "authority")
    if mode == "plain_http_on_tls_port":
        return "http: server gave HTTP response to HTTPS client"
    if mode == "handshake_failure":
        return "EOF"
    return f"remote error: tls: {_GO_ALERT.get(mode, 'handshake failure')}"


def _gnutls(mode: str, host: str, detail: str | None, issue: Any) -> str:
    c = _common(mode, host, "gnutls")
    if c is not None:
        return c
    if mode in _NAME_MODES or (issue is not None and issue.kind == "cn_only"):
        return f"The certificate is NOT trusted. The name in the certificate does not match the expected ({host})."
    if get_mode(mode).phase == "certificate":
        return "The certificate is NOT trusted. " + _GNUTLS_STATUS.get(mode, "The certificate issuer is unknown.")
    if mode in _GNUTLS_ALERT:
        return f"*** Fatal error: A TLS fatal alert has been received. *** {_GNUTLS_ALERT[mode]}"
    if mode == "plain_http_on_tls_port":
        return "*** Fatal error: An unexpected TLS packet was received."
    return "*** Fatal error: The TLS connection was non-properly terminated."


def _dotnet(mode: str, host: str, detail: str | None, issue: Any) -> str:
    c = _common(mode, host, "dotnet")
    if c is not None:
        return c
    if mode in _NAME_MODES:
        return ("System.Security.Authentication.AuthenticationException: The remote certificate is invalid according "
                "to the validation procedure: RemoteCertificateNameMismatch")
    if get_mode(mode).phase == "certificate":
        status = _CHAIN_STATUS.get(mode, "UntrustedRoot")
        return ("System.Security.Authentication.AuthenticationException: The remote certificate is invalid because "
                f"of errors in the certificate chain: {status}")
    if mode in _DOTNET_ALERT:
        return ("System.Security.Authentication.AuthenticationException: Authentication failed because the remote "
                f"party sent a TLS alert: '{_DOTNET_ALERT[mode]}'")
    return ("System.Security.Authentication.AuthenticationException: Authentication failed because the remote party "
            "has closed the transport stream.")


_TEXTS = {
    "python": _python,
    "curl": _curl,
    "node": _node,
    "java": _java,
    "android": lambda m, h, d, i: _java(m, h, d, i, android=True),
    "go": _go,
    "gnutls": _gnutls,
    "dotnet": _dotnet,
}
