"""Real TLS clients run against the corpus, to capture the error texts people paste into triage."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import traceback
from pathlib import Path

from .corpus import Endpoint

JAVA_SOURCE = r"""
import java.io.*;
import java.net.*;
import java.security.KeyStore;
import java.security.cert.*;
import java.util.*;
import javax.net.ssl.*;

public class Probe {
    public static void main(String[] args) throws Exception {
        // args: cafile, then triples name host:port servername
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        int i = 0;
        try (InputStream in = new FileInputStream(args[0])) {
            for (Certificate c : cf.generateCertificates(in)) ks.setCertificateEntry("ca" + (i++), c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        for (int a = 1; a + 2 < args.length + 1; a += 3) {
            String name = args[a], hp = args[a + 1], sni = args[a + 2];
            String host = hp.substring(0, hp.lastIndexOf(':'));
            int port = Integer.parseInt(hp.substring(hp.lastIndexOf(':') + 1));
            String result;
            try (Socket raw = new Socket()) {
                raw.connect(new InetSocketAddress(host, port), 3000);
                raw.setSoTimeout(3000);
                SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(raw, sni, port, true);
                SSLParameters p = s.getSSLParameters();
                p.setEndpointIdentificationAlgorithm("HTTPS");
                p.setServerNames(Collections.singletonList(new SNIHostName(sni)));
                s.setSSLParameters(p);
                s.startHandshake();
                result = "OK " + s.getSession().getProtocol();
            } catch (Exception e) {
                StringBuilder sb = new StringBuilder(e.toString());
                for (Throwable c = e.getCause(); c != null; c = c.getCause()) sb.append("\nCaused by: ").append(c);
                result = sb.toString();
            }
            System.out.println("@@" + name + "\n" + result);
        }
    }
}
"""

NODE_SOURCE = r"""
const tls = require('tls'); const fs = require('fs');
const [ca, ...rest] = process.argv.slice(2);
const jobs = [];
for (let i = 0; i + 2 < rest.length + 1; i += 3) jobs.push(rest.slice(i, i + 3));
(async () => {
  for (const [name, hp, sni] of jobs) {
    const i = hp.lastIndexOf(':');
    const msg = await new Promise((resolve) => {
      const s = tls.connect({host: hp.slice(0, i), port: +hp.slice(i + 1), servername: sni,
                             ca: fs.readFileSync(ca), timeout: 3000}, () => { s.end(); resolve('OK'); });
      s.on('error', (e) => resolve(`Error: ${e.message} (code: '${e.code}')`));
      s.on('timeout', () => { s.destroy(); resolve('Error: timeout'); });
    });
    console.log('@@' + name + '\n' + msg);
  }
})();
"""


def _split(out: str) -> dict[str, str]:
    res: dict[str, str] = {}
    for block in out.split("@@")[1:]:
        name, _, body = block.partition("\n")
        res[name.strip()] = body.strip()
    return res


def java_errors(endpoints: list[Endpoint], workdir: Path) -> dict[str, str]:
    src = workdir / "Probe.java"
    src.write_text(JAVA_SOURCE)
    args = [endpoints[0].cafile]
    for ep in endpoints:
        args += [ep.name, ep.connect, ep.hostname]
    out = subprocess.run(["java", str(src), *args], capture_output=True, text=True, timeout=120)
    return _split(out.stdout)


def node_errors(endpoints: list[Endpoint], workdir: Path) -> dict[str, str]:
    src = workdir / "probe.js"
    src.write_text(NODE_SOURCE)
    args = [endpoints[0].cafile]
    for ep in endpoints:
        args += [ep.name, ep.connect, ep.hostname]
    out = subprocess.run(["node", str(src), *args], capture_output=True, text=True, timeout=60)
    return _split(out.stdout)


def curl_error(ep: Endpoint, *extra: str) -> str:
    host, port = ep.connect.rsplit(":", 1)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--cacert", ep.cafile, "--resolve", f"{ep.hostname}:{port}:{host}",
         *extra, f"https://{ep.hostname}:{port}/"], capture_output=True, text=True, timeout=30)
    return out.stderr


def openssl_transcript(ep: Endpoint, *extra: str) -> str:
    out = subprocess.run(
        ["openssl", "s_client", "-connect", ep.connect, "-servername", ep.hostname, "-verify_hostname",
         ep.hostname, "-CAfile", ep.cafile, "-showcerts", "-status", *extra],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return out.stdout + out.stderr


def python_error(ep: Endpoint) -> str:
    host, port = ep.connect.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ep.cafile)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=ep.hostname):
                return "OK"
    except Exception:
        return traceback.format_exc()


def json_dump(d: dict) -> str:
    return json.dumps(d, indent=1)
