"""Another platform's certificate (the name still points at an old host or CDN) is wrong_endpoint: the tenant fixes
DNS. Our own edge's fallback certificate is default_certificate. A bare name error stays hostname_mismatch."""

import pytest

from edge.diagnostics import triage


@pytest.mark.parametrize("report,mode", [
    ("x509: certificate is valid for *.herokuapp.com, herokuapp.com, not shop.example.com", "wrong_endpoint"),
    ("Error: Hostname/IP does not match certificate's altnames: Host: shop.example.com. is not in the cert's "
     "altnames: DNS:*.netlify.app", "wrong_endpoint"),
    ("curl: (60) SSL: no alternative certificate subject name matches target host name 'shop.example.com'\n"
     "*  subject: CN=*.cloudfront.net", "wrong_endpoint"),
    ("subject=CN = TRAEFIK DEFAULT CERT\nverify error:num=62:hostname mismatch", "default_certificate"),
    ("NET::ERR_CERT_COMMON_NAME_INVALID", "hostname_mismatch"),
])
def test_name_errors_are_attributed(report, mode):
    t = triage(report, hostname="shop.example.com")
    assert t["failure_mode"] == mode, t
    assert "shop.example.com" in t["openssl_command"]
