"""``triage()`` on the documented browser codes and on messages of clients and servers not run here."""

from __future__ import annotations

import pytest

from edge.diagnostics import FAILURE_MODES, triage
from edge.diagnostics.modes import PRIORITY
from edge.diagnostics.triage_vocab import vocabulary

TABLE = [
    # Chrome / Edge
    ("This site can't be reached. shop.example.com's server IP address could not be found. ERR_NAME_NOT_RESOLVED",
     "dns_not_configured"),
    ("DNS_PROBE_FINISHED_NXDOMAIN", "dns_not_configured"),
    ("ERR_CONNECTION_REFUSED", "connection_refused"),
    ("ERR_CONNECTION_TIMED_OUT", "connection_timeout"),
    ("shop.example.com sent an invalid response. ERR_SSL_PROTOCOL_ERROR", "handshake_failure"),
    ("ERR_SSL_VERSION_OR_CIPHER_MISMATCH", "protocol_version_mismatch"),
    ("ERR_SSL_UNRECOGNIZED_NAME_ALERT", "sni_unrecognized"),
    ("ERR_CONNECTION_RESET", "handshake_failure"),
    ("Your connection is not private NET::ERR_CERT_COMMON_NAME_INVALID", "hostname_mismatch"),
    ("NET::ERR_CERT_DATE_INVALID", "expired"),
    ("Your clock is ahead. A private connection to shop.example.com can't be established because your computer's "
     "date and time (Sunday, 1 March 2031) are incorrect. NET::ERR_CERT_DATE_INVALID", "client_clock_skew"),
    ("NET::ERR_CERT_AUTHORITY_INVALID", "untrusted_root"),
    ("ERR_CERT_KNOWN_INTERCEPTION_BLOCKED", "tls_interception"),
    ("NET::ERR_CERT_WEAK_SIGNATURE_ALGORITHM", "weak_signature"),
    ("NET::ERR_CERT_WEAK_KEY", "weak_key"),
    ("NET::ERR_CERT_REVOKED", "revoked"),
    ("Mixed Content: The page at 'https://shop.example.com/' was loaded over HTTPS, but requested an insecure "
     "script 'http://cdn.example.com/app.js'. This request has been blocked; the content must be served over HTTPS.",
     "mixed_content"),
    # Firefox
    ("Hmm. We're having trouble finding that site.", "dns_not_configured"),
    ("Unable to connect. Firefox can't establish a connection to the server at shop.example.com.",
     "connection_refused"),
    ("The connection has timed out", "connection_timeout"),
    ("Secure Connection Failed. Error code: SSL_ERROR_RX_RECORD_TOO_LONG", "plain_http_on_tls_port"),
    ("Error code: SSL_ERROR_UNSUPPORTED_VERSION", "protocol_version_mismatch"),
    ("Error code: SSL_ERROR_NO_CYPHER_OVERLAP", "cipher_mismatch"),
    ("Error code: SSL_ERROR_UNRECOGNIZED_NAME_ALERT", "sni_unrecognized"),
    ("Error code: PR_CONNECT_RESET_ERROR", "handshake_failure"),
    ("Error code: SSL_ERROR_BAD_CERT_DOMAIN", "hostname_mismatch"),
    ("Error code: SEC_ERROR_EXPIRED_CERTIFICATE", "expired"),
    ("Error code: MOZILLA_PKIX_ERROR_NOT_YET_VALID_CERTIFICATE", "not_yet_valid"),
    ("Error code: SEC_ERROR_UNKNOWN_ISSUER", "incomplete_chain"),
    ("Error code: MOZILLA_PKIX_ERROR_SELF_SIGNED_CERT", "self_signed"),
    ("Error code: MOZILLA_PKIX_ERROR_MITM_DETECTED", "tls_interception"),
    ("Error code: SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED", "weak_signature"),
    ("Error code: MOZILLA_PKIX_ERROR_INADEQUATE_KEY_SIZE", "weak_key"),
    ("Error code: SEC_ERROR_REVOKED_CERTIFICATE", "revoked"),
    ("Blocked loading mixed active content “http://cdn.example.com/app.js”", "mixed_content"),
    # Safari / NSURLError / SecureTransport
    ("Safari can't open the page because Safari can't find the server \"shop.example.com\".", "dns_not_configured"),
    ("Error Domain=NSURLErrorDomain Code=-1200 \"An SSL error has occurred and a secure connection to the server "
     "cannot be made.\"", "handshake_failure"),
    ("Error Domain=NSURLErrorDomain Code=-1201 \"The certificate for this server has expired.\"", "expired"),
    ("Error Domain=NSURLErrorDomain Code=-1202 \"The certificate for this server is invalid.\"", "self_signed"),
    ("Error Domain=NSURLErrorDomain Code=-1203 NSURLErrorServerCertificateHasUnknownRoot", "untrusted_root"),
    ("Error Domain=NSURLErrorDomain Code=-1204 NSURLErrorServerCertificateNotYetValid", "not_yet_valid"),
    ("_kCFStreamErrorCodeKey=-9814 errSSLCertExpired", "expired"),
    ("Error Domain=kCFErrorDomainCFNetwork Code=-1200 _kCFStreamErrorCodeKey=-9836", "protocol_version_mismatch"),
    ("errSSLHostNameMismatch (-9843)", "hostname_mismatch"),
    ("“shop.example.com” certificate name does not match input", "hostname_mismatch"),
    # legacy Edge / IE / Windows
    ("DLG_FLAGS_INVALID_CA", "untrusted_root"),
    ("DLG_FLAGS_SEC_CERT_CN_INVALID", "hostname_mismatch"),
    ("DLG_FLAGS_SEC_CERT_DATE_INVALID", "expired"),
    ("DLG_FLAGS_WEAK_SIGNATURE", "weak_signature"),
    ("INET_E_RESOURCE_NOT_FOUND", "dns_not_configured"),
    ("The revocation function was unable to check revocation... CRYPT_E_REVOKED (0x80092010)", "revoked"),
    ("System.Net.WebException: The remote certificate is invalid according to the validation procedure: "
     "RemoteCertificateNameMismatch", "hostname_mismatch"),
    # curl
    ("curl: (6) Could not resolve host: shop.example.com", "dns_not_configured"),
    ("curl: (7) Failed to connect to shop.example.com port 443 after 3 ms: Connection refused",
     "connection_refused"),
    ("curl: (28) Failed to connect to shop.example.com port 443 after 10001 ms: Timeout was reached",
     "connection_timeout"),
    ("curl: (28) Connection timed out after 10001 milliseconds", "connection_timeout"),
    ("curl: (35) error:0A00010B:SSL routines::wrong version number", "plain_http_on_tls_port"),
    ("curl: (35) error:0A000410:SSL routines::sslv3 alert handshake failure", "cipher_mismatch"),
    ("curl: (60) SSL certificate problem: certificate has expired", "expired"),
    ("curl: (60) SSL certificate problem: unable to get local issuer certificate", "incomplete_chain"),
    ("curl: (91) No OCSP response received", "revoked"),
    # openssl
    ("40E7:error:0A000458:SSL routines:ssl3_read_bytes:tlsv1 unrecognized name:../ssl/record/rec_layer_s3.c:1602:"
     "SSL alert number 112", "sni_unrecognized"),
    ("error:0A00042E:SSL routines:ssl3_read_bytes:tlsv1 alert protocol version:SSL alert number 70",
     "protocol_version_mismatch"),
    ("error:0A00018A:SSL routines:tls_process_ske_dhe:dh key too small", "cipher_mismatch"),
    # Python / requests / urllib3
    ("requests.exceptions.SSLError: HTTPSConnectionPool(host='shop.example.com', port=443): Max retries exceeded "
     "with url: / (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
     "verify failed: Hostname mismatch, certificate is not valid for 'shop.example.com'. (_ssl.c:1006)')))",
     "hostname_mismatch"),
    ("urllib3.exceptions.NameResolutionError: <urllib3.connection.HTTPSConnection object at 0x7f>: Failed to "
     "resolve 'shop.example.com' ([Errno -2] Name or service not known)", "dns_not_configured"),
    ("urllib.error.URLError: <urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate in certificate chain (_ssl.c:1006)>", "untrusted_root"),
    # Go
    ("Get \"https://shop.example.com/\": tls: failed to verify certificate: x509: certificate signed by unknown "
     "authority", "untrusted_root"),
    ("x509: certificate is valid for www.other.com, other.com, not shop.example.com", "hostname_mismatch"),
    ("Get \"https://shop.example.com\": http: server gave HTTP response to HTTPS client", "plain_http_on_tls_port"),
    ("tls: first record does not look like a TLS handshake", "plain_http_on_tls_port"),
    ("remote error: tls: unrecognized name", "sni_unrecognized"),
    ("remote error: tls: protocol version not supported", "protocol_version_mismatch"),
    ("dial tcp: lookup shop.example.com on 127.0.0.53:53: no such host", "dns_not_configured"),
    ("dial tcp 203.0.113.10:443: i/o timeout", "connection_timeout"),
    ("x509: cannot verify signature: insecure algorithm SHA1-RSA (temporarily override with "
     "GODEBUG=x509sha1=1)", "weak_signature"),
    # Java
    ("javax.net.ssl.SSLHandshakeException: PKIX path building failed: sun.security.provider.certpath."
     "SunCertPathBuilderException: unable to find valid certification path to requested target", "untrusted_root"),
    ("java.security.cert.CertificateExpiredException: NotAfter: Sun Jan 01 00:00:00 UTC 2023", "expired"),
    ("javax.net.ssl.SSLHandshakeException: The server selected protocol version TLS10 is not accepted by client "
     "preferences [TLS13, TLS12]", "protocol_version_mismatch"),
    ("java.security.cert.CertPathValidatorException: Algorithm constraints check failed on keysize limits. RSA "
     "1024bit key used with certificate: CN=shop.example.com", "weak_key"),
    # Node
    ("Error: unable to verify the first certificate (code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')", "incomplete_chain"),
    ("Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: Host: "
     "shop.example.com. is not in the cert's altnames: DNS:other.com", "hostname_mismatch"),
    ("Error: write EPROTO 00C8:error:0A00010B:SSL routines:ssl3_get_record:wrong version number",
     "plain_http_on_tls_port"),
    ("Error: getaddrinfo ENOTFOUND shop.example.com", "dns_not_configured"),
    # servers
    ("2026/11/22 10:00:00 [info] 123#123: *5 SSL_do_handshake() failed (SSL: error:0A0000C1:SSL routines::no "
     "shared cipher) while SSL handshaking, client: 198.51.100.7, server: 0.0.0.0:443", "cipher_mismatch"),
    ("2026/11/22 10:00:00 [crit] 12#12: *9 SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong "
     "version number) while SSL handshaking to upstream", "plain_http_on_tls_port"),
    ("2026/11/22 10:00:00 [info] 12#12: *3 SSL_do_handshake() failed (SSL: error:0A000415:SSL routines::sslv3 "
     "alert certificate expired:SSL alert number 45) while SSL handshaking", "expired"),
    ("2026/11/22 10:00:00 [info] 12#12: *4 SSL_do_handshake() failed (SSL: error:0A000102:SSL routines::"
     "unsupported protocol) while SSL handshaking, client: 198.51.100.9", "protocol_version_mismatch"),
    ("Nov 22 10:00:00 lb haproxy[42]: 198.51.100.7:51234 [22/Nov/2026:10:00:00.123] https-in/1: SSL handshake "
     "failure", "handshake_failure"),
    ("http: TLS handshake error from 198.51.100.7:50000: tls: client offered only unsupported versions: [301]",
     "protocol_version_mismatch"),
    ("https 2026-11-22T10:00:00.000000Z app/my-alb/50dc6c495c0c9188 198.51.100.7:2817 - -1 -1 -1 000 - 0 0 "
     "\"- - - \" \"-\" - - arn:aws:elasticloadbalancing:us-east-1:123:targetgroup/tg/73e2d6bc24d8a067 \"-\" \"-\" "
     "\"-\" 0 2026-11-22T10:00:00.000000Z \"-\" \"-\" \"-\" \"-\" \"-\" \"ssl_handshake_error\"", "handshake_failure"),
    ("Error 525: SSL handshake failed", "handshake_failure"),
]


@pytest.mark.parametrize("text,mode", TABLE, ids=[f"{i}-{m}" for i, (_t, m) in enumerate(TABLE)])
def test_table(text, mode):
    r = triage(text)
    assert r["failure_mode"] == mode, r
    assert 0 <= r["confidence"] <= 1
    assert r["failure_mode"] in vocabulary()
    assert all(c in vocabulary() for c in r["candidates"]) and mode not in r["candidates"]
    assert r["openssl_command"] is None  # no hostname given
    if mode != "unclassified":
        assert r["confidence"] >= 0.45 and r["matched"]


def test_every_browser_code_of_the_vocabulary_is_recognised():
    """Each code in the vocabulary's browser columns classifies to its own mode or lists it as a candidate."""
    import re

    for mode_id in PRIORITY:
        mode = FAILURE_MODES[mode_id]
        for browser, text in mode.browser_errors.items():
            for code in re.findall(r"\b(?:NET::)?(?:ERR|SEC_ERROR|SSL_ERROR|MOZILLA_PKIX_ERROR|PR)_[A-Z_]+", text):
                r = triage(code)
                assert r["failure_mode"] == mode_id or mode_id in r["candidates"], (mode_id, browser, code, r)


def test_with_hostname_gives_a_command_per_mode():
    r = triage("SSL_ERROR_NO_CYPHER_OVERLAP", hostname="Shop.Example.com")
    assert r["hostname"] == "shop.example.com"
    assert r["openssl_command"].startswith("openssl s_client -connect shop.example.com:443 -servername "
                                           "shop.example.com -verify_hostname shop.example.com")
    assert "-cipher" in r["openssl_command"]
    assert "-crl_check" in triage("ERR_CERT_REVOKED", hostname="a.example")["openssl_command"]
    assert triage("Your clock is behind", hostname="a.example")["openssl_command"].startswith("date -u;")


def test_unknown_text_is_unclassified_with_candidates_and_next_steps():
    r = triage("my website is broken, please help")
    assert r["failure_mode"] == "unclassified" and r["confidence"] <= 0.1
    assert r["candidates"] and all(c in vocabulary() for c in r["candidates"])
    assert len(r["next_steps"]) >= 2 and r["explanation"]


@pytest.mark.parametrize("bad", ["", "   \n\t", "x" * (64 * 1024 + 1)])
def test_empty_or_oversized_report_is_refused(bad):
    with pytest.raises(ValueError, match="empty|too large"):
        triage(bad)


def test_report_at_the_limit_is_accepted():
    r = triage("curl: (60) SSL certificate problem: certificate has expired\n".ljust(64 * 1024, " "))
    assert r["failure_mode"] == "expired"


def test_bad_hostname_is_refused():
    with pytest.raises(ValueError):
        triage("ERR_CONNECTION_REFUSED", hostname="https://bad host/")


def test_go_dates_show_a_skewed_client_clock():
    r = triage("x509: certificate has expired or is not yet valid: current time 2040-01-01T00:00:00Z is after "
               "2030-01-01T00:00:00Z")
    assert r["failure_mode"] == "client_clock_skew"
    r = triage("x509: certificate has expired or is not yet valid: current time 2024-05-01T00:00:00Z is after "
               "2024-04-01T00:00:00Z")
    assert r["failure_mode"] == "expired"


def test_known_interception_products_in_issuer():
    text = ("Certificate chain\n 0 s:CN = shop.example.com\n   i:C = US, O = Zscaler Inc., CN = Zscaler Intermediate "
            "Root CA\nverify error:num=20:unable to get local issuer certificate\n")
    assert triage(text)["failure_mode"] == "tls_interception"
    # with the edge's own issuers given, the same issuer is foreign: said as context, the answer stays
    r = triage(text, edge_issuers=["R11", "E5"])
    assert r["failure_mode"] == "tls_interception" and r["confidence"] >= 0.8
    assert any("not one of the edge's issuers" in c for c in r["context"])
