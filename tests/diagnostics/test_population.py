"""``diagnose`` against endpoints that OpenSSL alone calls fine but real clients refuse (or the reverse): the client
population, chain validity, every address, the phases, warnings, and the reproducing commands (run under sh).

The predictions are checked against the real clients Debian has: curl (OpenSSL 3), CPython ``ssl``, Node, Java
(OpenJDK), Go (``net/http``) and GnuTLS (``gnutls-cli``), each making a real request over a real connection.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from edge.diagnostics import FAILURE_MODES, diagnose
from edge.diagnostics.population import FAMILIES

from .conftest import need, run_sh
from .population_corpus import PopulationCorpus

NEW_MODES = {"client_certificate_required", "alpn_mismatch", "handshake_timeout", "unsuitable_purpose",
             "invalid_chain", "must_staple_missing"}


@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    need("openssl")
    c = PopulationCorpus(tmp_path_factory.mktemp("population"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def verdicts():
    return {}


async def _diagnosed(pop, verdicts, name):
    if name not in verdicts:
        ep = pop.endpoints[name]
        verdicts[name] = await diagnose(ep.hostname, **ep.diagnose_kwargs())
    return verdicts[name]


NAMES = ["ok", "extra_out_of_order", "client_cert_tls13", "client_cert_tls12", "alpn_only_acme", "stall",
         "stall_mid_handshake",
         "ca_false_intermediate", "pathlen_exceeded", "name_constraints", "eku_client_only", "must_staple",
         "expired_intermediate", "cn_only", "rsa1024", "rsa_ku_no_signature", "no_eku_leaf", "ed25519_leaf", "dhe_only", "p521_only", "tls13_only",
         "tls10_still_enabled", "expiring_soon", "ipv6_other_site", "edge_ready_dns_elsewhere"]


def test_every_new_mode_has_an_endpoint(pop):
    assert set(pop.endpoints) == set(NAMES)
    assert NEW_MODES <= {e.expected for e in pop.endpoints.values()}
    assert NEW_MODES <= set(FAILURE_MODES)


@pytest.mark.real
@pytest.mark.parametrize("name", NAMES)
async def test_diagnose_names_the_mode_and_the_clients(pop, verdicts, name):
    ep = pop.endpoints[name]
    r = await _diagnosed(pop, verdicts, name)
    assert r["failure_mode"] == ep.expected, (r["checks"], r["clients"])
    assert r["ok"] is (ep.expected == "ok")
    clients = {c["client"]: c for c in r["clients"]}
    assert set(clients) == {f.id for f in FAMILIES}
    assert all(set(c) >= {"client", "ok", "error"} for c in r["clients"])
    mainstream_fail = [c for c in r["clients"] if c["mainstream"] and not c["ok"]]
    if r["ok"]:
        assert not mainstream_fail, mainstream_fail  # "ok" only when every current family succeeds
    else:
        assert mainstream_fail and all(c["error"] for c in mainstream_fail)
    assert isinstance(r["warnings"], list) and isinstance(r["addresses"], list) and r["addresses"]
    assert r["phases"]["phases"]["connect"] is not None


@pytest.mark.real
async def test_client_verdicts_name_who_fails(pop, verdicts):
    """OpenSSL (and so curl, Python, the old corpus) says these work; the families that refuse are named."""
    def failing(name):
        return {c["client"] for c in verdicts_[name]["clients"] if not c["ok"]}

    verdicts_ = {n: await _diagnosed(pop, verdicts, n) for n in
                 ("must_staple", "cn_only", "ed25519_leaf", "p521_only", "tls13_only", "rsa1024", "dhe_only")}
    assert failing("must_staple") == {"firefox", "gnutls"}
    firefox = next(c for c in verdicts_["must_staple"]["clients"] if c["client"] == "firefox")
    assert firefox["error"] == "MOZILLA_PKIX_ERROR_REQUIRED_TLS_FEATURE_MISSING"
    assert {"chrome", "firefox", "safari", "go"} <= failing("cn_only")
    assert not {"curl_openssl3", "python", "java17", "node"} & failing("cn_only")
    go = next(c for c in verdicts_["cn_only"]["clients"] if c["client"] == "go")
    assert "legacy Common Name" in go["error"]
    assert {"chrome", "edge", "safari", "dotnet"} <= failing("ed25519_leaf")
    assert not {"python", "curl_openssl3", "node", "go", "java17"} & failing("ed25519_leaf")
    assert {"chrome", "edge"} <= failing("p521_only") and "firefox" not in failing("p521_only")
    assert failing("tls13_only") == {"android7", "java8"}
    assert any("Java 8" in w for w in verdicts_["tls13_only"]["warnings"])
    assert {"python", "curl_openssl3", "chrome"} <= failing("rsa1024")
    assert not {"java17", "node", "gnutls"} & failing("rsa1024")
    assert {"chrome", "firefox", "safari", "go"} <= failing("dhe_only")
    assert not {"java17", "python", "curl_openssl3"} & failing("dhe_only")


@pytest.mark.real
async def test_warnings_never_turn_ok_into_a_failure(pop, verdicts):
    soon = await _diagnosed(pop, verdicts, "expiring_soon")
    assert soon["ok"]
    text = " | ".join(soon["warnings"])
    assert "expires in 4 day" in text or "expires in 5 day" in text
    assert "OCSP responder (http://ocsp.population.test/)" in text
    assert "no HSTS" in text
    messy = await _diagnosed(pop, verdicts, "extra_out_of_order")
    assert messy["ok"] and any("Stray CA" in w for w in messy["warnings"])
    assert any("not sent in issuing order" in w for w in messy["warnings"])
    noeku = await _diagnosed(pop, verdicts, "no_eku_leaf")
    assert noeku["ok"] and any("no extended key usage" in w for w in noeku["warnings"])
    legacy = await _diagnosed(pop, verdicts, "tls10_still_enabled")
    assert legacy["ok"] and any("TLSv1.0 and TLSv1.1 still enabled" in w for w in legacy["warnings"])
    assert legacy["tls"]["versions"]["TLSv1.0"] is True


@pytest.mark.real
async def test_phases_and_addresses(pop, verdicts):
    stall = await _diagnosed(pop, verdicts, "stall")
    assert stall["phases"]["stopped_at"] == "first_server_byte"
    assert stall["phases"]["phases"]["client_hello_sent"] is not None
    phase_check = next(c for c in stall["checks"] if c["name"] == "phases")
    assert "stopped at: first server byte" in phase_check["detail"]
    mid = await _diagnosed(pop, verdicts, "stall_mid_handshake")
    assert mid["failure_mode"] == "handshake_timeout" and mid["phases"]["stopped_at"] == "handshake_complete"
    assert mid["phases"]["phases"]["first_server_byte"] is not None
    ok = await _diagnosed(pop, verdicts, "ok")
    assert all(ok["phases"]["phases"][p] is not None for p in ok["phases"]["phases"]), ok["phases"]
    dual = await _diagnosed(pop, verdicts, "ipv6_other_site")
    by_addr = {a["address"]: a for a in dual["addresses"]}
    assert by_addr["127.0.0.1"]["ok"] and not by_addr["::1"]["ok"]
    assert by_addr["::1"]["failure_mode"] == "wrong_endpoint" and "old-host.test" in by_addr["::1"]["detail"]
    assert "::1" in dual["summary"]
    moved = await _diagnosed(pop, verdicts, "edge_ready_dns_elsewhere")
    edge = [a for a in moved["addresses"] if a["role"] == "edge"]
    assert edge and edge[0]["address"] == "127.0.0.1" and edge[0]["ok"], moved["addresses"]
    assert any(c["name"] == "edge_address" and "the edge is ready" in c["detail"] for c in moved["checks"])


# What the reproducing commands must print, per endpoint: (openssl patterns, curl patterns); any one of each.
SHOWS = {
    "client_cert_tls13": ([r"Acceptable client certificate CA names[\s\S]*alert certificate required.*116"],
                          [r"curl: \(56\).*alert certificate required"]),
    "client_cert_tls12": ([r"Acceptable client certificate CA names|alert handshake failure.*alert number 40"],
                          [r"curl: \(35\).*alert handshake failure"]),
    "alpn_only_acme": ([r"alert no application protocol.*alert number 120"], [r"curl: \(35\).*no application protocol"]),
    "stall": ([r"timed out: .* accepted the connection but the TLS handshake did not complete"],
              [r"curl: \(28\)"]),
    "stall_mid_handshake": ([r"timed out: .* accepted the connection but the TLS handshake did not complete"],
                            [r"curl: \(28\)"]),
    "ca_false_intermediate": ([r"verify error:num=(24|79):invalid CA certificate"],
                              [r"curl: \(60\).*invalid CA certificate"]),
    "pathlen_exceeded": ([r"verify error:num=25:path length constraint exceeded"],
                         [r"curl: \(60\).*path length constraint exceeded"]),
    "name_constraints": ([r"verify error:num=47:permitted subtree violation"],
                         [r"curl: \(60\).*permitted subtree violation"]),
    "eku_client_only": ([r"verify error:num=26:unsuitable certificate purpose"],
                        [r"curl: \(60\).*unsuitable certificate purpose"]),
    "rsa_ku_no_signature": ([r"X509v3 Key Usage: critical\s*\n\s*Key Encipherment\s*$"], None),
    "must_staple": ([r"TLS Feature:\s*\n\s*status_request[\s\S]*OCSP response: no response sent"],
                    [r"curl: \(91\)"]),
    "ed25519_leaf": ([r"alert handshake failure.*alert number 40"], None),
    "dhe_only": ([r"alert handshake failure.*alert number 40"], [r"curl: \(35\).*handshake failure"]),
    "p521_only": ([r"alert handshake failure.*alert number 40"], [r"curl: \(35\).*handshake failure"]),
    "ipv6_other_site": ([r"verify error:num=62:hostname mismatch"], [r"curl: \(60\).*no alternative certificate"]),
    "ok": ([r"Verify return code: 0 \(ok\)"], [r"^HTTP 200"]),
}


@pytest.mark.real
@pytest.mark.parametrize("name", list(SHOWS))
async def test_commands_reproduce(pop, verdicts, name):
    need("curl")
    r = await _diagnosed(pop, verdicts, name)
    ossl, curl = SHOWS[name]
    for cmd, patterns in ((r["openssl_command"], ossl), (r["curl_command"], curl)):
        if patterns is None:
            continue
        assert "\n" not in cmd
        out = run_sh(cmd, timeout=30)
        text = out.stdout + out.stderr
        assert any(re.search(p, text, re.M) for p in patterns), f"{cmd}\n---\n{text[-3000:]}"


# ------------------------------------------------------------------------------------ real clients, real requests

JAVA = r"""
import java.io.*; import java.net.*; import java.security.KeyStore; import java.security.cert.*; import java.util.*;
import javax.net.ssl.*;
public class Fetch {
  public static void main(String[] a) throws Exception {
    CertificateFactory cf = CertificateFactory.getInstance("X.509");
    KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType()); ks.load(null, null);
    try (InputStream in = new FileInputStream(a[0])) { ks.setCertificateEntry("ca", cf.generateCertificate(in)); }
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm()); tmf.init(ks);
    SSLContext ctx = SSLContext.getInstance("TLS"); ctx.init(null, tmf.getTrustManagers(), null);
    for (int i = 1; i + 2 < a.length + 1; i += 3) {
      String name = a[i], hp = a[i + 1], sni = a[i + 2]; String r;
      int c = hp.lastIndexOf(':');
      try (Socket raw = new Socket()) {
        raw.connect(new InetSocketAddress(hp.substring(0, c), Integer.parseInt(hp.substring(c + 1))), 3000);
        raw.setSoTimeout(3000);
        SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(raw, sni, raw.getPort(), true);
        SSLParameters p = s.getSSLParameters(); p.setEndpointIdentificationAlgorithm("HTTPS");
        p.setServerNames(Collections.singletonList(new SNIHostName(sni))); s.setSSLParameters(p);
        s.startHandshake();
        s.getOutputStream().write(("GET / HTTP/1.0\r\nHost: " + sni + "\r\n\r\n").getBytes()); s.getOutputStream().flush();
        int b = s.getInputStream().read();
        r = b < 0 ? "FAIL no answer" : "OK";
      } catch (Exception e) { r = "FAIL " + e; }
      System.out.println("@@" + name + " " + r.replace('\n', ' '));
    }
  }
}
"""

NODE = r"""
const https = require('https'); const fs = require('fs');
const [ca, ...rest] = process.argv.slice(2);
(async () => {
  for (let i = 0; i + 2 < rest.length + 1; i += 3) {
    const [name, hp, sni] = rest.slice(i, i + 3); const c = hp.lastIndexOf(':');
    const r = await new Promise((resolve) => {
      const req = https.get({host: hp.slice(0, c), port: +hp.slice(c + 1), servername: sni, path: '/',
                             headers: {Host: sni}, ca: fs.readFileSync(ca), timeout: 3000, agent: false},
                            (res) => { res.resume(); resolve('OK'); });
      req.on('error', (e) => resolve(`FAIL ${e.message} (${e.code})`));
      req.on('timeout', () => { req.destroy(); resolve('FAIL timeout'); });
    });
    console.log('@@' + name + ' ' + r);
  }
})();
"""

GO = r"""
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	pem, _ := os.ReadFile(os.Args[1])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	rest := os.Args[2:]
	for i := 0; i+2 < len(rest)+1; i += 3 {
		name, hp, sni := rest[i], rest[i+1], rest[i+2]
		port := hp[strings.LastIndex(hp, ":")+1:]
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
			TLSHandshakeTimeout: 3 * time.Second,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, hp)
			}}
		c := &http.Client{Transport: tr, Timeout: 4 * time.Second}
		r := "OK"
		resp, err := c.Get("https://" + sni + ":" + port + "/")
		if err != nil {
			r = "FAIL " + strings.ReplaceAll(err.Error(), "\n", " ")
		} else {
			resp.Body.Close()
		}
		fmt.Println("@@" + name + " " + r)
	}
}
"""


def _lines(out: str) -> dict[str, str]:
    res = {}
    for line in out.splitlines():
        if line.startswith("@@"):
            name, _, rest = line[2:].partition(" ")
            res[name] = rest
    return res


def _python_fetch(ep) -> str:
    host, port = ep.connect.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ep.cafile)
    ctx.set_alpn_protocols(["http/1.1"])  # what requests / urllib3 2 offer
    try:
        with socket.create_connection((host, int(port)), timeout=3) as s:
            with ctx.wrap_socket(s, server_hostname=ep.hostname) as t:
                t.sendall(f"GET / HTTP/1.0\r\nHost: {ep.hostname}\r\n\r\n".encode())
                return "OK" if t.recv(1) else "FAIL no answer"
    except Exception as e:  # noqa: BLE001 - the outcome is the point
        return f"FAIL {type(e).__name__}: {e}"


def _curl_fetch(ep) -> str:
    host, port = ep.connect.rsplit(":", 1)
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "4", "--cacert", ep.cafile,
                          "--connect-to", f"{ep.hostname}:{port}:{host}:{port}", f"https://{ep.hostname}:{port}/"],
                         capture_output=True, text=True, timeout=30)
    return "OK" if out.returncode == 0 else f"FAIL {out.stderr.strip()}"


def _gnutls_fetch(ep) -> str:
    host, port = ep.connect.rsplit(":", 1)
    out = subprocess.run(["gnutls-cli", "--x509cafile", ep.cafile, "-p", port, host, "--sni-hostname", ep.hostname,
                          "--verify-hostname", ep.hostname], input=f"GET / HTTP/1.0\r\nHost: {ep.hostname}\r\n\r\n",
                         capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    # (a server that closes without close_notify makes gnutls-cli exit 1 after a good exchange: not a TLS failure)
    good = "Handshake was completed" in text and "NOT trusted" not in text and "alert" not in text.lower()
    return "OK" if good else "FAIL " + " ".join(
        ln for ln in text.splitlines() if "NOT trusted" in ln or "Fatal" in ln or "alert" in ln)


COMPARED = [n for n in NAMES if n not in ("stall", "stall_mid_handshake", "ipv6_other_site", "edge_ready_dns_elsewhere")]


@pytest.mark.real
@pytest.mark.slow
async def test_predictions_match_the_real_clients(pop, verdicts, tmp_path):
    """For each family Debian has, the predicted ok / not ok equals what the real client does on every endpoint."""
    for tool in ("curl", "node", "java", "gnutls-cli"):
        need(tool)
    eps = [pop.endpoints[n] for n in COMPARED]
    args = [pop.cafile]
    for ep in eps:
        args += [ep.name, ep.connect, ep.hostname]
    (tmp_path / "Fetch.java").write_text(JAVA)
    (tmp_path / "fetch.js").write_text(NODE)
    java = _lines(subprocess.run(["java", str(tmp_path / "Fetch.java"), *args], capture_output=True, text=True,
                                 timeout=180).stdout)
    node = _lines(subprocess.run(["node", str(tmp_path / "fetch.js"), *args], capture_output=True, text=True,
                                 timeout=120).stdout)
    go = {}
    if shutil.which("go") or os.environ.get("CI") == "true":
        need("go")
        (tmp_path / "fetch.go").write_text(GO)
        env = dict(os.environ, GOCACHE=str(tmp_path / "gocache"), GOPATH=str(tmp_path / "gopath"), GO111MODULE="off",
                   GOFLAGS="", GOTOOLCHAIN="local")
        go = _lines(subprocess.run(["go", "run", str(tmp_path / "fetch.go"), *args], capture_output=True, text=True,
                                   timeout=300, env=env).stdout)
    real = {"java17": java, "node": node,
            "python": {ep.name: _python_fetch(ep) for ep in eps},
            "curl_openssl3": {ep.name: _curl_fetch(ep) for ep in eps},
            "gnutls": {ep.name: _gnutls_fetch(ep) for ep in eps}}
    if go:
        real["go"] = go
    mismatches = []
    for ep in eps:
        r = await _diagnosed(pop, verdicts, ep.name)
        predicted = {c["client"]: c for c in r["clients"]}
        for family, outcomes in real.items():
            got = outcomes.get(ep.name, "FAIL (no output)")
            if predicted[family]["ok"] != got.startswith("OK"):
                mismatches.append(f"{ep.name} {family}: predicted {'ok' if predicted[family]['ok'] else 'fail'} "
                                  f"({predicted[family]['error']}), real: {got[:300]}")
    assert not mismatches, "\n".join(mismatches)
    # one family per test, by its own words: the texts we predict are the ones the real clients print
    r = await _diagnosed(pop, verdicts, "eku_client_only")
    pred = {c["client"]: c["error"] for c in r["clients"]}
    assert "unsuitable certificate purpose" in real["python"]["eku_client_only"] and \
        "unsuitable certificate purpose" in pred["python"]
    assert "unsuitable certificate purpose" in _curl_fetch(pop.endpoints["eku_client_only"]) and \
        "unsuitable certificate purpose" in pred["curl_openssl3"]
    assert "Extended key usage does not permit use for TLS server authentication" in java["eku_client_only"] and \
        "Extended key usage does not permit use for TLS server authentication" in pred["java17"]
    assert "INVALID_PURPOSE" in node["eku_client_only"] and "INVALID_PURPOSE" in pred["node"]
    assert "does not match the intended purpose" in real["gnutls"]["eku_client_only"] and \
        "does not match the intended purpose" in pred["gnutls"]
    if go:
        assert "incompatible key usage" in go["eku_client_only"] and "incompatible key usage" in pred["go"]
        assert "legacy Common Name field" in go["cn_only"]


@pytest.mark.real
async def test_diagnose_bounded_by_the_phase_timeouts(pop):
    """A stalled server costs one phase timeout (per concurrent probe), not one per client family."""
    for name in ("stall", "stall_mid_handshake"):
        ep = pop.endpoints[name]
        t0 = time.monotonic()
        r = await diagnose(ep.hostname, connect=ep.connect, cafile=ep.cafile, timeout=1.0)
        assert r["failure_mode"] == "handshake_timeout"
        assert time.monotonic() - t0 < 12


@pytest.mark.real
@pytest.mark.slow
async def test_chrome_handshake_predictions_match_chromium(pop, verdicts):
    """Chromium (headless, certificate errors ignored: only the handshake is compared) connects exactly where the
    'chrome' family's replayed ClientHello says it does: no Ed25519, no P-521, no DHE, ALPN h2/http1.1 only."""
    exe = need("chromium")
    names = ["ok", "ed25519_leaf", "p521_only", "dhe_only", "alpn_only_acme", "client_cert_tls12", "tls13_only"]
    mismatches = []
    for name in names:
        ep = pop.endpoints[name]
        r = await _diagnosed(pop, verdicts, name)
        chrome = next(c for c in r["clients"] if c["client"] == "chrome")
        assert chrome["ok"] or FAILURE_MODES[chrome["failure_mode"]].phase == "handshake"
        host, port = ep.connect.rsplit(":", 1)
        out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
                              f"--host-resolver-rules=MAP {ep.hostname} {host}", "--dump-dom",
                              f"https://{ep.hostname}:{port}/"], capture_output=True, text=True, timeout=120)
        loaded = "hello" in out.stdout or "s_server" in out.stdout or "<pre>" in out.stdout
        if loaded != chrome["ok"]:
            mismatches.append(f"{name}: predicted {chrome['ok']} ({chrome['error']}), chromium loaded={loaded}: "
                              f"{out.stdout[:200]!r}")
    assert not mismatches, "\n".join(mismatches)
