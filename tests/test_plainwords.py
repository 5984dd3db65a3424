"""The public diagnosis answer in words (edge/api/plainwords.py): no exception class names, errno numbers, C source
lines or internal addresses a fetch was refused for; everything else -- and the openssl command -- as it was."""

from __future__ import annotations

import re

from edge.api.plainwords import public_json, public_text

RAW = {
    "hostname": "shop.example.com",
    "openssl_command": "openssl s_client -connect 203.0.113.5:443 -servername shop.example.com 2>&1 | head",
    "checks": [
        {"name": "connect", "ok": False,
         "detail": "203.0.113.5:443: ConnectionRefusedError: [Errno 111] Connection refused"},
        {"name": "dns", "ok": False, "detail": "getaddrinfo: gaierror [Errno -2] Name or service not known"},
        {"name": "tls", "ok": False,
         "detail": "ssl.SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"},
        {"name": "aia", "ok": True, "detail": "AIA fetch of http://ca.example/ca.crt failed: TargetNotAllowed: "
                                              "refusing to probe 10.0.0.7: private address"},
        {"name": "expiry", "ok": True, "detail": "the certificate expires in 80 days"},
    ],
    "warnings": ["CRL http://crl.example/x.crl not fetched: TimeoutError: timed out"],
}


def test_exception_names_errnos_and_refused_internal_addresses_become_words():
    out = public_json(RAW)
    text = repr(out["checks"]) + repr(out["warnings"])
    assert not re.search(r"[A-Z]\w*Error|gaierror|TargetNotAllowed|\[Errno|_ssl\.c|10\.0\.0\.7", text), text
    details = [c["detail"] for c in out["checks"]]
    assert details[0] == "203.0.113.5:443: connection refused"
    assert "does not resolve" in details[1] and "WRONG_VERSION_NUMBER" in details[2]
    assert details[3].endswith("not fetched (it resolves to an internal address)")
    assert details[4] == RAW["checks"][4]["detail"]  # plain text stays as it is
    assert out["warnings"] == ["CRL http://crl.example/x.crl not fetched: timed out"]
    assert out["openssl_command"] == RAW["openssl_command"] and out["hostname"] == RAW["hostname"]
    assert public_text("") == "" and public_json(5) == 5 and public_json(None) is None
