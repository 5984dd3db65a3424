"""Triage of the client families of issue 16, read the way people paste them.

The corpus (tests/data/triage_corpus.jsonl) holds texts recorded from real clients against broken loopback
endpoints (tests/triage_realclients.py) and documented texts of the families not installable here (source noted per
record). Beyond it, the tests build their inputs: every wrapper around every inner error, typos at random positions
of every code, variants of every record (tests/triage_variants.py): so the rules are checked on strings they were
not written for.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from edge.diagnostics import triage
from edge.diagnostics.triage import classify
from edge.diagnostics.triage_patterns import alerts_in
from edge.diagnostics.triage_vocab import vocabulary
from tests.triage_variants import load, variant

ROOT = Path(__file__).resolve().parents[2]
ROWS = load()


def test_the_corpus_is_sourced_and_speaks_the_vocabulary():
    assert len(ROWS) >= 300
    for r in ROWS:
        assert r["expected"] in vocabulary(), r
        assert r["source"].startswith(("real: ", "documented: ")), r
        assert r["split"] in ("real", "dev", "holdout")
    real_clients = {r["family"] for r in ROWS if r["split"] == "real"}
    assert {"openssl", "curl", "python", "node", "java", "wget", "git", "gnutls-cli", "php"} <= real_clients
    new_modes = {"client_certificate_required", "alpn_mismatch", "handshake_timeout", "unsuitable_purpose",
                 "invalid_chain", "must_staple_missing"}
    assert new_modes <= {r["expected"] for r in ROWS if r["split"] == "real"}


@pytest.mark.parametrize("split", ["real", "dev", "holdout"])
def test_corpus_accuracy(split):
    rows = [r for r in ROWS if r["split"] == split]
    clear = [r for r in rows if not r["ambiguous"]]
    right = [r for r in clear if triage(r["text"])["failure_mode"] == r["expected"]]
    assert len(right) / len(clear) >= 0.97, [(r["expected"], triage(r["text"])["failure_mode"], r["text"][:100])
                                             for r in clear if r not in right]
    # a text that cannot tell the causes apart (git's "server certificate verification failed") still names the
    # right one among its candidates
    amb = [r for r in rows if r["ambiguous"]]
    if amb:
        near = [r for r in amb if r["expected"] in [triage(r["text"])["failure_mode"], *triage(r["text"])["candidates"]]]
        assert len(near) / len(amb) >= 0.85


@pytest.mark.parametrize("seed", [101, 202])
def test_variants_of_the_corpus(seed):
    """Other hostnames, ports, dates, wrapping, casing, a typo, noise around it: the same answer."""
    rng = random.Random(seed)
    misses, n = [], 0
    for r in ROWS:
        if r["ambiguous"]:
            continue
        text, how = variant(r["text"], rng)
        n += 1
        got = triage(text)["failure_mode"]
        if got != r["expected"]:
            misses.append((how, r["expected"], got, text[:120]))
    assert len(misses) / n <= 0.03, misses


def test_never_unknown():
    for text in ["???", "\x00\x01\x02 binary", "🙂" * 50, "1234567890", "ok thanks", " \n x", "Ëŕŕőŕ",
                 "NET::ERR_" + "X" * 40, "error " * 3000]:
        r = triage(text)
        assert r["failure_mode"] in vocabulary() and r["failure_mode"] != "unknown", (text[:20], r)
        assert all(c in vocabulary() for c in r["candidates"])
        if r["failure_mode"] == "unclassified":
            assert r["candidates"] and r["confidence"] <= 0.1 and r["next_steps"]


OUTER = [
    "Unable to connect to the server: {e}",
    "Error from server (InternalError): {e}",
    "Error response from daemon: Get \"https://registry.corp.example/v2/\": {e}",
    "Error: Kubernetes cluster unreachable: Get \"https://10.1.2.3:6443/version\": {e}",
    "Error: INSTALLATION FAILED: Get \"https://charts.example.org/index.yaml\": {e}",
    "Error: Failed to install provider\n\nError while installing hashicorp/aws v5.1.0: could not connect to "
    "registry.terraform.io: Failed to request discovery document: Get "
    "\"https://registry.terraform.io/.well-known/terraform.json\": {e}",
    "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken "
    "by '{e}': /simple/flask/",
    "npm ERR! request to https://registry.npmjs.org/left-pad failed, reason: {e}",
    "fatal: unable to access 'https://git.example.org/app.git/': {e}",
    "HTTPSConnectionPool(host='management.azure.com', port=443): Max retries exceeded with url: /x (Caused by "
    "SSLError({e}))",
    "SSL validation failed for https://s3.eu-west-1.amazonaws.com/ {e}",
    "error pulling image configuration: download failed after attempts=6: {e}",
]
INNER = [
    ("x509: certificate signed by unknown authority", "untrusted_root"),
    ("x509: certificate has expired or is not yet valid: current time 2026-01-10T10:00:00Z is after "
     "2025-12-31T00:00:00Z", "expired"),
    ("tls: failed to verify certificate: x509: certificate is valid for a.example.net, not b.example.com",
     "hostname_mismatch"),
    ("net/http: TLS handshake timeout", "handshake_timeout"),
    ("remote error: tls: certificate required", "client_certificate_required"),
    ("remote error: tls: no application protocol", "alpn_mismatch"),
    ("x509: certificate specifies an incompatible key usage", "unsuitable_purpose"),
    ("dial tcp 10.1.2.3:443: connect: connection refused", "connection_refused"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
     "(_ssl.c:1006)", "incomplete_chain"),
    ("SSL certificate problem: self-signed certificate in certificate chain", "untrusted_root"),
]


@pytest.mark.parametrize("outer", OUTER)
def test_wrappers_are_read_from_the_inside_out(outer):
    for inner, mode in INNER:
        r = triage(outer.format(e=inner))
        assert r["failure_mode"] == mode, (outer[:40], inner, r["failure_mode"], r["matched"][:3])


CODES = [("NET::ERR_CERT_COMMON_NAME_INVALID", "hostname_mismatch"), ("NET::ERR_CERT_AUTHORITY_INVALID",
         "untrusted_root"), ("ERR_SSL_VERSION_OR_CIPHER_MISMATCH", "protocol_version_mismatch"),
         ("ERR_BAD_SSL_CLIENT_AUTH_CERT", "client_certificate_required"), ("SEC_ERROR_EXPIRED_CERTIFICATE",
         "expired"), ("MOZILLA_PKIX_ERROR_SELF_SIGNED_CERT", "self_signed"), ("SEC_ERROR_UNKNOWN_ISSUER",
         "incomplete_chain"), ("ERR_SSL_UNRECOGNIZED_NAME_ALERT", "sni_unrecognized"),
         ("SSL_ERROR_NO_CYPHER_OVERLAP", "cipher_mismatch"), ("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "incomplete_chain"),
         ("DEPTH_ZERO_SELF_SIGNED_CERT", "self_signed"), ("MOZILLA_PKIX_ERROR_REQUIRED_TLS_FEATURE_MISSING",
         "must_staple_missing"), ("SEC_ERROR_INADEQUATE_CERT_TYPE", "unsuitable_purpose")]


def _edit(code: str, rng: random.Random) -> str:
    i = rng.randrange(len(code) - 6, len(code) - 1) if rng.random() < 0.3 else rng.randrange(9, len(code) - 1)
    if not code[i].isalpha():
        i -= 1
    kind = rng.choice(["drop", "swap", "replace", "double"])
    if kind == "drop":
        return code[:i] + code[i + 1:]
    if kind == "swap":
        return code[:i] + code[i + 1] + code[i] + code[i + 2:]
    if kind == "replace":
        return code[:i] + rng.choice("AEIOULNRST".replace(code[i], "")) + code[i + 1:]
    return code[:i] + code[i] + code[i:]


@pytest.mark.parametrize("code,mode", CODES)
def test_codes_with_a_typo(code, mode):
    rng = random.Random(code)
    for _ in range(6):
        typo = _edit(code, rng)
        for text in (typo, typo.lower(), f"Your connection is not private\n\n{typo}\n\nAdvanced"):
            r = triage(text)
            assert r["failure_mode"] == mode, (typo, r["failure_mode"], r["corrections"])


def test_expiry_words_are_not_typos():
    # "expires" is a word of its own: a certificate that expires in 3 days is no expiry error
    r = triage("The certificate expires in 3 days, should I worry?")
    assert r["failure_mode"] != "expired"


@pytest.mark.parametrize("text,alert", [
    ("error:0A00045C:SSL routines::tlsv13 alert certificate required", 116),
    ("error:14094410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure", 40),
    ("TLS error: 268436576:SSL routines:OPENSSL_internal:TLSV1_ALERT_NO_APPLICATION_PROTOCOL", 120),
    ("*** Received alert [112]: The server name sent was not recognized", 112),
    ("The TLS protocol defined fatal alert code is 70.", 70),
    ("javax.net.ssl.SSLHandshakeException: Received fatal alert: certificate_required", 116),
    ("received fatal alert: NoApplicationProtocol", 120),
    ("remote error: tls: protocol version not supported", 70),
])
def test_alerts_are_decoded_from_every_spelling(text, alert):
    assert alert in [n for n, _ in alerts_in(text)]


@pytest.mark.parametrize("lang,text,mode", [
    ("de", "Dies ist keine sichere Verbindung\nNET::ERR_CERT_DATE_INVALID\nIhre Uhr geht nach", "client_clock_skew"),
    ("es", "La conexión no es privada. Es posible que los atacantes estén intentando robar tu información de "
           "tienda.example.es. NET::ERR_CERT_AUTHORITY_INVALID", "untrusted_root"),
    ("fr", "Votre connexion n’est pas privée\nDes individus malveillants tentent peut-être de subtiliser vos "
           "informations. NET::ERR_CERT_COMMON_NAME_INVALID", "hostname_mismatch"),
    ("pt", "Sua conexão não é particular. O certificado de segurança expirou há 2 dias.", "expired"),
    ("ja", "この接続ではプライバシーが保護されません\nセキュリティ証明書の有効期限が 5 日前に切れています。", "expired"),
    ("ja-fullwidth", "この接続ではプライバシーが保護されません ＮＥＴ：：ＥＲＲ＿ＣＥＲＴ＿ＡＵＴＨＯＲＩＴＹ＿ＩＮＶＡＬＩＤ",
     "untrusted_root"),
    ("de-typo", "Dies ist keine sichere Verbindung NET::ERR_CERT_COMON_NAME_INVALID", "hostname_mismatch"),
])
def test_browser_pages_in_other_languages(lang, text, mode):
    assert triage(text)["failure_mode"] == mode


def test_one_function_decides_and_context_only_adds_evidence():
    """The library with the service's knowledge, the library without it and the command line give the same
    failure_mode for the same report and hostname; the knowledge shows up as candidates and context."""
    reports = ["NET::ERR_CERT_DATE_INVALID", "curl: (60) SSL certificate problem: certificate has expired",
               "Certificate chain\n 0 s:CN = shop.example.com\n   i:C = US, O = Some Proxy, CN = Corp Inspection CA\n"
               "verify error:num=20:unable to get local issuer certificate\n",
               "SSL_ERROR_RX_CERTIFICATE_REQUIRED_ALERT", "my site is down"]
    for report in reports:
        plain = triage(report, hostname="shop.example.com")
        for kwargs in ({"served_certificate_valid": True}, {"served_certificate_valid": False},
                       {"edge_issuers": ["CN=R11, O=Let's Encrypt"]}):
            assert triage(report, hostname="shop.example.com", **kwargs)["failure_mode"] == plain["failure_mode"]
        assert classify(report, "shop.example.com")["failure_mode"] == plain["failure_mode"]
        cli = subprocess.run([sys.executable, "-m", "edge", "triage", "-", "--hostname", "shop.example.com",
                              "--served-valid", "--json"], input=report, capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["failure_mode"] == plain["failure_mode"], report
    r = triage("NET::ERR_CERT_DATE_INVALID", hostname="shop.example.com", served_certificate_valid=True)
    assert r["failure_mode"] == "expired" and r["candidates"][0] == "client_clock_skew"
    assert "visitor's clock" in " ".join(r["context"]) and "client_clock_skew" in r["explanation"]


@pytest.mark.parametrize("mode,flag", [("alpn_mismatch", "-alpn h2,http/1.1"), ("handshake_timeout", "timeout 10"),
                                       ("unsuitable_purpose", "-purpose sslserver"),
                                       ("client_certificate_required", "-verify_return_error")])
def test_commands_for_the_new_modes(mode, flag):
    report = {"alpn_mismatch": "tlsv1 alert no application protocol", "handshake_timeout": "net/http: TLS "
              "handshake timeout", "unsuitable_purpose": "unsuitable certificate purpose",
              "client_certificate_required": "tlsv13 alert certificate required"}[mode]
    r = triage(report, hostname="shop.example.com")
    assert r["failure_mode"] == mode and flag in r["openssl_command"]
    assert r["who_acts"] and r["fix"] and r["summary"]
