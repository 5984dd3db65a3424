"""The client population: how each family of TLS clients would fare against the endpoint.

One row of :data:`FAMILIES` per family (browsers, old Android, Java, Python, Go, Node, curl, GnuTLS, .NET): what it
offers in the handshake (versions, cipher suites, key-exchange groups, signature algorithms, SNI, ALPN) and how it
judges a certificate (CN-only names, AIA chasing, extended key usage, must-staple, SHA-1, RSA key sizes, revocation).
``simulate`` replays each distinct offer as a real handshake (``openssl s_client`` with the family's lists: Python's
``ssl`` cannot restrict groups or signature algorithms); ``judge`` combines that with the certificate findings of
the diagnosis into ``clients: [{"client", "ok", "error"}]``, where ``error`` is the text that client shows.

Facts in the table were checked against the real clients on loopback where Debian has them (curl 7.88 / OpenSSL 3.0,
CPython 3.11, Node 20, OpenJDK 17, GnuTLS 3.7); the others follow their vendors' documentation (Chromium
net_error_list.h, Mozilla nsserrors, Apple SecureTransport, Go crypto/x509, Microsoft SChannel cipher-suite lists).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass, field

from edge.names import format_hostport

from .client_texts import client_error
from .modes import PRIORITY

__all__ = ["ClientFamily", "FAMILIES", "Offer", "Outcome", "CertIssue", "simulate", "judge", "offer_failure_mode"]

_MODERN_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
_ECDHE_AEAD = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
_ECDHE_CBC = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
_RSA_KX = "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA"
_DHE = "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-SHA:" \
       "DHE-RSA-AES256-SHA"
_CBC_SHA2 = "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:" \
            "AES128-SHA256:AES256-SHA256"
_SIG_MODERN = ("ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:rsa_pkcs1_sha256:ecdsa_secp384r1_sha384:"
               "rsa_pss_rsae_sha384:rsa_pkcs1_sha384:rsa_pss_rsae_sha512:rsa_pkcs1_sha512")
_SIG_P521 = _SIG_MODERN + ":ecdsa_secp521r1_sha512"
_SIG_SHA1 = ":ECDSA+SHA1:RSA+SHA1"
_SIG_PSS = ":rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512"
_SIG_BROAD = _SIG_P521 + ":ed25519:ed448" + _SIG_PSS + _SIG_SHA1


@dataclass(frozen=True)
class Offer:
    """What a client puts in its ClientHello (``None``: the TLS library's defaults)."""

    min_version: str = "TLSv1.2"
    max_version: str = "TLSv1.3"
    ciphers: str | None = None  # TLS 1.2 and older, OpenSSL names
    suites: str | None = _MODERN_SUITES  # TLS 1.3
    groups: str | None = None
    sigalgs: str | None = None
    seclevel: int | None = 0  # the library's own floor on keys/DH/signatures in the handshake (OpenSSL-based)
    sni: bool = True
    alpn: tuple[str, ...] = ("h2", "http/1.1")

    def s_client_args(self) -> list[str]:
        args = ["-min_protocol", self.min_version, "-max_protocol", self.max_version]
        if self.ciphers is not None or self.seclevel is not None:
            cs = self.ciphers or "DEFAULT"
            if self.seclevel is not None:
                cs += f":@SECLEVEL={self.seclevel}"
            args += ["-cipher", cs]
        if self.suites:
            args += ["-ciphersuites", self.suites]
        if self.groups:
            args += ["-groups", self.groups]
        if self.sigalgs:
            args += ["-sigalgs", self.sigalgs]
        if self.alpn:
            args += ["-alpn", ",".join(self.alpn)]
        return args


@dataclass(frozen=True)
class ClientFamily:
    """One family of clients: its ClientHello and its certificate rules."""

    id: str
    label: str
    mainstream: bool  # "ok" requires every mainstream family to succeed
    texts: str  # whose error texts it shows: chrome firefox safari edge android java python go node curl gnutls dotnet
    offer: Offer
    cn_fallback: bool  # accepts a certificate without SAN whose CN matches
    aia: bool  # downloads a missing intermediate from the AIA caIssuers URL
    preloaded_intermediates: bool = False  # ships the public CAs' intermediates (Firefox)
    must_staple: bool = False  # refuses a must-staple leaf without a stapled OCSP response
    sha1: str = "reject"  # reject | accept | reject_public (refused only under the public roots it ships)
    min_rsa: int = 2048
    revocation: bool = False  # checks revocation by default (OCSP / CRL)
    trust_store: str = "system"

    def as_dict(self) -> dict:
        o = self.offer
        return {"id": self.id, "label": self.label, "mainstream": self.mainstream,
                "versions": f"{o.min_version}-{o.max_version}", "sni": o.sni, "alpn": list(o.alpn),
                "cn_fallback": self.cn_fallback, "aia": self.aia, "must_staple": self.must_staple,
                "sha1": self.sha1, "min_rsa": self.min_rsa, "trust_store": self.trust_store}


#: Chrome / Edge: no RSA key exchange since Chrome 131 (TLS_RSA_* removed), no DHE since 53, no P-521, no Ed25519.
_BROWSER = Offer(ciphers=f"{_ECDHE_AEAD}:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA",
                 groups="X25519:P-256:P-384", sigalgs=_SIG_MODERN)

FAMILIES: tuple[ClientFamily, ...] = (
    ClientFamily("chrome", "Chrome (current)", True, "chrome", _BROWSER, cn_fallback=False, aia=True,
                 trust_store="Chrome Root Store"),
    ClientFamily("edge", "Edge (current)", True, "edge", _BROWSER, cn_fallback=False, aia=True,
                 trust_store="Chrome Root Store"),
    ClientFamily("firefox", "Firefox (current)", True, "firefox",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_ECDHE_CBC}:{_RSA_KX}",
                       groups="X25519:P-256:P-384:P-521:ffdhe2048:ffdhe3072", sigalgs=_SIG_P521 + _SIG_SHA1),
                 cn_fallback=False, aia=False, preloaded_intermediates=True, must_staple=True, revocation=True,
                 trust_store="Mozilla (NSS)"),
    ClientFamily("safari", "Safari (macOS 14 / iOS 17)", True, "safari",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_ECDHE_CBC}:{_RSA_KX}", groups="X25519:P-256:P-384:P-521",
                       sigalgs=_SIG_P521 + _SIG_SHA1),
                 cn_fallback=False, aia=True, revocation=True, trust_store="Apple"),
    ClientFamily("android7", "Android 7 (system HTTP stack)", False, "android",
                 Offer("TLSv1", "TLSv1.2", f"{_ECDHE_AEAD}:{_ECDHE_CBC}:{_RSA_KX}", None, "X25519:P-256:P-384",
                       _SIG_P521 + _SIG_SHA1),
                 cn_fallback=True, aia=False, sha1="accept", min_rsa=1024,
                 trust_store="Android 7 (no ISRG Root X1 before 7.1.1)"),
    ClientFamily("java8", "Java 8 (HttpsURLConnection)", False, "java",
                 Offer("TLSv1.2", "TLSv1.2", f"{_ECDHE_AEAD}:{_DHE}:{_CBC_SHA2}:{_ECDHE_CBC}:{_RSA_KX}", None,
                       "P-256:P-384:P-521:ffdhe2048:ffdhe3072", _SIG_P521 + _SIG_SHA1, alpn=()),
                 cn_fallback=True, aia=False, sha1="reject_public", min_rsa=1024, trust_store="JDK cacerts"),
    ClientFamily("java11", "Java 11 (HttpsURLConnection)", True, "java",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_DHE}:{_CBC_SHA2}:{_ECDHE_CBC}:{_RSA_KX}",
                       groups="X25519:P-256:P-384:P-521:X448:ffdhe2048:ffdhe3072", sigalgs=_SIG_P521 + _SIG_PSS + _SIG_SHA1, alpn=()),
                 cn_fallback=True, aia=False, sha1="reject_public", min_rsa=1024, trust_store="JDK cacerts"),
    ClientFamily("java17", "Java 17 (HttpsURLConnection)", True, "java",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_DHE}:{_CBC_SHA2}:{_ECDHE_CBC}:{_RSA_KX}",
                       groups="X25519:P-256:P-384:P-521:X448:ffdhe2048:ffdhe3072", sigalgs=_SIG_BROAD, alpn=()),
                 cn_fallback=True, aia=False, sha1="reject_public", min_rsa=1024, trust_store="JDK cacerts"),
    ClientFamily("python", "Python requests / urllib3 2 (OpenSSL 3)", True, "python",
                 Offer(ciphers="ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM",
                       seclevel=2, alpn=("http/1.1",)),
                 cn_fallback=True, aia=False, trust_store="certifi (Mozilla)"),
    ClientFamily("go", "Go net/http", True, "go",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_ECDHE_CBC}", groups="X25519:P-256:P-384:P-521",
                       sigalgs=_SIG_P521 + ":ed25519" + _SIG_SHA1),
                 cn_fallback=False, aia=False, min_rsa=1024, trust_store="system"),
    ClientFamily("node", "Node.js https", True, "node",
                 Offer(ciphers="TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:"
                               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:"
                               "ECDHE-RSA-AES128-SHA256:DHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:"
                               "DHE-RSA-AES256-SHA384:ECDHE-RSA-AES256-SHA256:DHE-RSA-AES256-SHA256:HIGH:!aNULL:"
                               "!eNULL:!EXPORT:!DES:!RC4:!MD5:!PSK:!SRP:!CAMELLIA", seclevel=1, alpn=()),
                 cn_fallback=True, aia=False, sha1="accept", min_rsa=1024, trust_store="Node's bundled Mozilla list"),
    ClientFamily("curl_openssl3", "curl on OpenSSL 3.x", True, "curl", Offer(seclevel=None),
                 cn_fallback=True, aia=False, trust_store="system"),
    ClientFamily("curl_openssl11", "curl on OpenSSL 1.1.1", False, "curl",
                 Offer("TLSv1", "TLSv1.3", "DEFAULT", seclevel=1),
                 cn_fallback=True, aia=False, sha1="accept", min_rsa=1024, trust_store="system"),
    ClientFamily("gnutls", "GnuTLS (wget, git)", True, "gnutls",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_ECDHE_CBC}:{_CBC_SHA2}:{_DHE}:{_RSA_KX}",
                       groups="X25519:P-256:P-384:P-521:X448:ffdhe2048:ffdhe3072", sigalgs=_SIG_BROAD, alpn=()),
                 cn_fallback=True, aia=False, must_staple=True, min_rsa=1024, trust_store="system"),
    ClientFamily("dotnet", ".NET HttpClient on Windows (SChannel)", True, "dotnet",
                 Offer(ciphers=f"{_ECDHE_AEAD}:{_CBC_SHA2}:{_ECDHE_CBC}:DHE-RSA-AES128-GCM-SHA256:"
                               f"DHE-RSA-AES256-GCM-SHA384:{_RSA_KX}",
                       groups="X25519:P-256:P-384", sigalgs=_SIG_P521 + _SIG_SHA1, alpn=("http/1.1",)),
                 cn_fallback=True, aia=True, sha1="reject_public", min_rsa=1024, revocation=True,
                 trust_store="Windows"),
)


# -------------------------------------------------------------------------------------------- the handshakes


@dataclass
class Outcome:
    """What one replayed ClientHello got."""

    ok: bool
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    alert: int | None = None
    reason: str = ""  # the OpenSSL reason text of a failure
    cert_request: bool = False  # the server sent a CertificateRequest
    ocsp_stapled: bool | None = None
    leaf_pem: str | None = None
    timeout: bool = False
    text: str = ""
    temp_key: str = ""  # "X25519, 253 bits", "DH, 1024 bits"
    unusable: bool = False  # the local openssl could not replay this offer


_ALERT_RE = re.compile(r"alert number (\d+)")
_REASON_RE = re.compile(r"error:[0-9A-F]+:SSL routines:[^:]*:([^:\n]+)")


def parse_s_client(out: str, *, timed_out: bool = False) -> Outcome:
    """An ``openssl s_client`` transcript, as an :class:`Outcome`."""
    o = Outcome(ok=False, timeout=timed_out, text=out[-2000:])
    if "Call to SSL_CONF_cmd" in out or "Error with command" in out or "Error setting" in out:
        o.unusable = True  # this openssl cannot express the offer: no evidence either way
        return o
    m = re.search(r"^New, (TLSv[\d.]+|SSLv3), Cipher is (\S+)", out, re.M)
    if m and m.group(2) != "(NONE)":
        o.ok, o.version, o.cipher = True, m.group(1), m.group(2)
    m = _ALERT_RE.search(out)
    if m:
        o.alert = int(m.group(1))
    m = _REASON_RE.search(out)
    if m:
        o.reason = m.group(1).strip()
    if o.alert is not None and o.ok and o.alert not in (0,):
        o.ok = False  # TLS 1.3: the handshake completed, then the server ended it (e.g. alert 116)
    # ("No client certificate CA names sent" is printed for every server: it is no evidence)
    o.cert_request = bool(re.search(r"Acceptable client certificate CA names|Client Certificate Types:", out))
    if "OCSP response: no response sent" in out:
        o.ocsp_stapled = False
    elif "OCSP Response Data:" in out:
        o.ocsp_stapled = True
    m = re.search(r"Server Temp Key: ([^\n]+)", out)
    o.temp_key = m.group(1).strip() if m else ""
    m = re.search(r"ALPN protocol: (\S+)", out)
    o.alpn = m.group(1) if m else None
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
    o.leaf_pem = m.group(0) if m else None
    if not o.ok and not o.reason and not o.alert:
        if timed_out:
            o.reason = "no answer (timed out)"
        elif "unexpected eof" in out.lower() or "errno=104" in out or "Connection reset" in out:
            o.reason = "unexpected eof / reset"
    return o


def offer_failure_mode(o: Outcome) -> str:
    """The failure mode of a replayed ClientHello that failed."""
    r = o.reason.lower()
    if o.timeout:
        return "handshake_timeout"
    if o.alert == 116 or (o.cert_request and o.alert in (40, 42, 116)):
        return "client_certificate_required"
    if o.alert == 120 or "no application protocol" in r:
        return "alpn_mismatch"
    if o.alert == 112 or "unrecognized name" in r:
        return "sni_unrecognized"
    if "wrong version number" in r or "http request" in r or "packet length too long" in r:
        return "plain_http_on_tls_port"
    if o.alert == 70 or any(k in r for k in ("protocol version", "unsupported protocol", "no protocols available",
                                             "version too low", "legacy sigalg")):
        return "protocol_version_mismatch"
    if o.alert in (40, 71) or any(k in r for k in ("handshake failure", "no shared cipher", "no ciphers available",
                                                   "dh key too small", "no suitable signature", "wrong curve",
                                                   "no shared group", "insufficient security")):
        return "cipher_mismatch"
    return "handshake_failure"


async def _s_client(exe: str, address: str, port: int, sni: str | None, offer: Offer, timeout: float,
                    request: str | None) -> Outcome:
    args = [exe, "s_client", "-connect", format_hostport(address, port), "-status", *offer.s_client_args()]
    args += ["-servername", sni] if (sni and offer.sni) else ["-noservername"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        return Outcome(ok=False, reason=f"openssl not runnable: {e}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate((request or "").encode()), timeout)
        return parse_s_client(out.decode("utf-8", "replace"))
    except asyncio.TimeoutError:
        proc.kill()
        out = b""
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 1)
        except Exception:
            pass
        return parse_s_client(out.decode("utf-8", "replace") if out else "", timed_out=True)


async def simulate(address: str, port: int, sni: str | None, timeout: float, *,
                   families: tuple[ClientFamily, ...] = FAMILIES, parallel: int = 4) -> dict[Offer, Outcome]:
    """Replay each distinct ClientHello of ``families`` against ``address:port`` (at most ``parallel`` at once,
    each bounded by ``timeout``). Empty when ``openssl`` is not installed."""
    exe = shutil.which("openssl")
    if not exe:
        return {}
    offers = list(dict.fromkeys(f.offer for f in families))
    sem = asyncio.Semaphore(parallel)
    host = sni or address
    request = f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"

    async def one(o: Offer) -> Outcome:
        async with sem:
            return await _s_client(exe, address, port, sni, o, timeout, request)

    results = await asyncio.gather(*(one(o) for o in offers))
    return {o: r for o, r in zip(offers, results) if not r.unusable}


# -------------------------------------------------------------------------------------------- the verdicts


@dataclass
class CertIssue:
    """A certificate finding and which families refuse because of it."""

    mode: str
    detail: str
    #: openssl's verify text for this issue (what OpenSSL-based clients print), e.g. "invalid CA certificate"
    verify_text: str = ""
    node_code: str = ""
    #: texts that replace the mode's usual text for one family of texts (``{"java": ..., "firefox": ...}``)
    texts: dict[str, str] = field(default_factory=dict)
    kind: str = ""  # cn_only | sha1 | rsa:<bits> | incomplete | incomplete_fetchable | revoked | must_staple | ""
    refused_by: frozenset[str] | None = None  # only these family ids refuse (None: as ``kind`` says)
    applies: set[str] = field(default_factory=set)  # filled by judge


def _refuses(f: ClientFamily, issue: CertIssue, private_trust: bool) -> bool:
    if issue.refused_by is not None:
        return f.id in issue.refused_by
    k = issue.kind
    if k == "cn_only":
        return not f.cn_fallback
    if k == "sha1":
        return f.sha1 == "reject" or (f.sha1 == "reject_public" and not private_trust)
    if k.startswith("rsa:"):
        return int(k[4:]) < f.min_rsa
    if k == "incomplete_fetchable":
        return not (f.aia or (f.preloaded_intermediates and not private_trust))
    if k == "must_staple":
        return f.must_staple
    if k == "revoked":
        return f.revocation
    return True


def judge(families: tuple[ClientFamily, ...], offers: dict[Offer, Outcome], issues: list[CertIssue], *,
          host: str, private_trust: bool, post_handshake: str | None = None) -> list[dict]:
    """``[{"client", "label", "ok", "mainstream", "mode", "error"}]``: per family, the handshake its ClientHello got
    (``offers``), then the certificate ``issues`` its rules refuse, then ``post_handshake`` (a failure mode every
    client meets after the handshake, e.g. a TLS 1.3 client-certificate demand)."""
    rank = {m: i for i, m in enumerate(PRIORITY)}
    issues = sorted(issues, key=lambda i: rank.get(i.mode, len(rank)))  # each family names its most basic refusal
    out = []
    for f in families:
        o = offers.get(f.offer)
        mode, err = None, None
        if o is not None and not o.ok:
            mode = offer_failure_mode(o)
            err = client_error(f.texts, mode, host=host, detail=o.reason)
        if mode is None:
            for issue in issues:
                if _refuses(f, issue, private_trust):
                    issue.applies.add(f.id)
                    if mode is None:
                        mode = issue.mode
                        err = client_error(f.texts, issue.mode, host=host, issue=issue)
        if mode is None and post_handshake:
            mode = post_handshake
            err = client_error(f.texts, mode, host=host)
        out.append({"client": f.id, "label": f.label, "ok": mode is None, "mainstream": f.mainstream,
                    "mode": mode, "error": err,
                    "negotiated": f"{o.version} {o.cipher}" if o is not None and o.ok else None})
    return out
