"""deploy/: each file checked by the real tool where this machine has it.

* systemd units: ``systemd-analyze verify`` (no warnings) and ``systemd-analyze security --offline`` (exposure);
* compose file: ``docker-compose config`` (Compose v1 validates without a Docker engine) plus structural checks;
* Dockerfile: linted structurally (there is no engine to build it), and its settings run for real: ``edgecert
  serve`` with the image's environment under a read-only root filesystem (a private mount namespace), issuing a
  certificate from Pebble, writes only under the volume;
* nginx and HAProxy examples: edgecert's real file layout and exports (edge.files, edge.exports) plus the reload
  hook, then ``nginx -t`` / ``haproxy -c``, then each proxy really serves each tenant certificate by SNI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.demo.process import free_port
from edge.lifecycle.files import LiveFiles
from edge.tls_edge.certificates import generate_default_certificate, load_default_certificate
from tests.helpers import REPO, EdgeProcess, require_binary, served_leaf

DEPLOY = REPO / "deploy"
HOSTS = ("shop.alpha.example", "www.beta.example")


# -- systemd ------------------------------------------------------------------------------------------------------
def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    cur = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        assert cur is not None, line
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def test_systemd_units_verify_and_are_hardened(tmp_path):
    exe = require_binary("systemd-analyze")
    units = sorted((DEPLOY / "systemd").glob("edgecert*"))
    assert {u.name for u in units} == {"edgecert.service", "edgecert.socket", "edgecert-proxy-reload.path",
                                       "edgecert-proxy-reload.service"}
    real_edgecert = shutil.which("edgecert") or str(Path(sys.executable).parent / "edgecert")
    for u in units:
        # ExecStart must exist for verify: point it at this checkout's console script.
        (tmp_path / u.name).write_text(u.read_text().replace("/opt/edgecert/.venv/bin/edgecert", real_edgecert))
    r = subprocess.run([exe, "verify", *[str(tmp_path / u.name) for u in units]], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stdout + r.stderr
    # The exposure score stays low ("OK", at most 2.5 on systemd's 0-10 scale).
    r = subprocess.run([exe, "security", "--offline=yes", "--threshold=25", str(tmp_path / "edgecert.service")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr

    svc = parse_unit(DEPLOY / "systemd" / "edgecert.service")["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["User"] == "edgecert" and one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes"
    assert one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE" == one["AmbientCapabilities"]
    assert one["ReadWritePaths"] == "/var/lib/edgecert" and one["PrivateTmp"] == "yes"
    assert one["ProtectHome"] == "yes" and one["ExecStart"].endswith("edgecert serve")
    env = dict(e.split("=", 1) for e in svc["Environment"])
    assert env["EDGECERT_DATABASE_URL"].startswith("sqlite:////var/lib/edgecert/")
    assert env["EDGECERT_STATE_DIR"].startswith("/var/lib/edgecert/")
    # Socket activation (edge/listenfds.py): the socket unit listens where serve listens by default, and feeds it.
    from edge.config import Settings
    sockets = parse_unit(DEPLOY / "systemd" / "edgecert.socket")["Socket"]
    d = Settings()
    assert sockets["ListenStream"] == [d.http_listen, d.https_listen, d.api_listen]
    assert sockets["Service"] == ["edgecert.service"]
    path = parse_unit(DEPLOY / "systemd" / "edgecert-proxy-reload.path")["Path"]
    assert path["PathChanged"] == ["/var/lib/edgecert/state/proxy/reload.stamp"]  # what the hooks touch


# -- Dockerfile ---------------------------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    final = [i for i, (w, _) in enumerate(dockerfile()) if w == "FROM"][-1]
    for word, rest in dockerfile()[final:]:
        if word == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def test_dockerfile_is_non_root_pinned_secret_free_and_state_under_the_volume():
    ins = dockerfile()
    words = [w for w, _ in ins]
    froms = [r for w, r in ins if w == "FROM"]
    assert froms and all(re.match(r"[\w./-]+:[\w.-]+", f) and ":latest" not in f for f in froms)
    final = len(ins) - 1 - words[::-1].index("FROM")
    stage = ins[final:]
    users = [r for w, r in stage if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root") and users[-1].split(":")[0].isdigit()
    last_user = max(i for i, (w, _) in enumerate(stage) if w == "USER")
    assert all(w != "RUN" for w, _ in stage[last_user:])  # nothing runs as root after USER
    volume = json.loads([r for w, r in stage if w == "VOLUME"][-1])
    assert volume == ["/var/lib/edgecert"]
    env = image_env()
    assert env["EDGECERT_DATABASE_URL"] == "sqlite:////var/lib/edgecert/edgecert.db"
    assert env["EDGECERT_STATE_DIR"].startswith("/var/lib/edgecert/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    exposed = {int(p) for w, r in stage if w == "EXPOSE" for p in r.split()}
    listens = {int(env[k].rsplit(":", 1)[1]) for k in ("EDGECERT_API_LISTEN", "EDGECERT_HTTP_LISTEN",
                                                        "EDGECERT_HTTPS_LISTEN")}
    assert listens == exposed and all(p >= 1024 for p in exposed)  # binds without privileges
    assert json.loads([r for w, r in stage if w == "ENTRYPOINT"][-1]) == ["edgecert"]
    # No secrets baked in, nothing fetched from the network at build time by ADD.
    for w, r in ins:
        assert w != "ADD", r
        if w in ("ENV", "ARG"):
            assert not re.search(r"(TOKEN|SECRET|PASSWORD|PRIVATE)", r, re.I), r
    text = (DEPLOY / "Dockerfile").read_text()
    assert "BEGIN" not in text and "PRIVATE KEY" not in text
    # Every COPY source of the build context exists in the repository.
    for w, r in ins:
        if w == "COPY" and not r.startswith("--from"):
            for src in r.split()[:-1]:
                assert (REPO / src).exists(), src


class ReadOnlyRootEdge(EdgeProcess):
    """``edgecert serve`` in a private mount namespace where / is read-only and only the volume is writable."""

    def __init__(self, *, volume: Path, **kw) -> None:
        super().__init__(**kw)
        self.volume = volume

    def start(self, timeout: float = 30) -> "ReadOnlyRootEdge":
        import urllib.request
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
        env.update(self.env)
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro / && cd "$1" && exec "$2" -m edge serve'
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                                          "sh", str(self.volume), sys.executable], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=self.volume)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"edgecert exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.api + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"not healthy:\n{self.log_tail()}")


@pytest.mark.real
def test_image_settings_run_on_a_read_only_root_writing_only_the_volume(tmp_path, pebble, dns):
    require_binary("unshare")
    volume = tmp_path / "volume"
    volume.mkdir()
    env = {k: v.replace("/var/lib/edgecert", str(volume)) for k, v in image_env().items()
           if k.startswith("EDGECERT_") and not k.endswith("_LISTEN")}
    env["HOME"] = str(volume)
    edge = ReadOnlyRootEdge(volume=volume, work_dir=tmp_path / "logs", pebble=pebble, dns=dns, env=env)
    edge.env.update({k: v for k, v in env.items()})  # the image's DB and state paths, not the helper's
    try:
        edge.start()
        edge.add_domain("ro.deploy.test", tenant="deploy")
        d = edge.wait_status("ro.deploy.test", "active")
        # The root really is read-only for it, and everything it wrote is under the volume.
        live = volume / "state" / "live" / "ro.deploy.test"
        assert (live / "fullchain.pem").exists() and (live / "privkey.pem").stat().st_mode & 0o777 == 0o600
        assert (volume / "edgecert.db").exists()
        assert served_leaf(edge.https_port, "ro.deploy.test").serial_number == int(d["certificate"]["serial"], 16)
        assert "Read-only file system" not in edge.log_text()
    finally:
        edge.stop()
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f'mount -o remount,bind,ro / && touch {shlex.quote(str(tmp_path))}/probe'],
                           capture_output=True, text=True, timeout=20)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr  # the namespace trick is real


# -- compose ------------------------------------------------------------------------------------------------------
def test_compose_file_validates_and_wires_postgres_pebble_and_edgecert():
    compose = require_binary("docker-compose")
    env = {**os.environ, "EDGECERT_ADMIN_TOKEN": "compose-test-token"}
    r = subprocess.run([compose, "-f", str(DEPLOY / "docker-compose.yml"), "config"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    # The normalized file, read as data (Compose v1 is Python with PyYAML; its interpreter reads it here).
    py = Path(shutil.which(compose)).read_text().splitlines()[0].removeprefix("#!").strip().split()[0]
    parsed = subprocess.run([py, "-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                            input=r.stdout, capture_output=True, text=True, timeout=30)
    assert parsed.returncode == 0, parsed.stderr
    cfg = json.loads(parsed.stdout)
    s = cfg["services"]
    assert set(s) == {"postgres", "pebble", "challtestsrv", "edgecert"}
    e = s["edgecert"]
    assert e["build"]["dockerfile"] == "deploy/Dockerfile" and Path(e["build"]["context"]) == REPO
    assert e["read_only"] is True and e["cap_drop"] == ["ALL"] and "no-new-privileges:true" in e["security_opt"]
    env_ = e["environment"]
    assert env_["EDGECERT_DATABASE_URL"].startswith("postgresql+psycopg://edgecert:")
    assert "@postgres:5432/edgecert" in env_["EDGECERT_DATABASE_URL"]
    assert env_["EDGECERT_ACME_DIRECTORY"] == "https://pebble:14000/dir"
    assert e["depends_on"]["postgres"]["condition"] == "service_healthy"
    mounts = [v.get("target") if isinstance(v, dict) else str(v).split(":")[1] for v in e["volumes"]]
    assert "/var/lib/edgecert" in mounts and e["tmpfs"] == ["/tmp"]
    # The lab is consistent: DNS answers with edgecert's address, Pebble validates on edgecert's HTTP port,
    # edgecert trusts the CA file that signs Pebble's TLS certificate, the ports map to the image's listeners.
    edge_ip = e["networks"]["edgenet"]["ipv4_address"]
    assert f"-defaultIPv4 {edge_ip}" in s["challtestsrv"]["command"]
    assert env_["EDGECERT_EDGE_TARGET"] == edge_ip
    assert env_["EDGECERT_DNS_RESOLVER"] == s["challtestsrv"]["networks"]["edgenet"]["ipv4_address"] + ":8053"
    pebble_cfg = json.loads((DEPLOY / "pebble" / "pebble-config.json").read_text())["pebble"]
    image = image_env()
    http_port = int(image["EDGECERT_HTTP_LISTEN"].rsplit(":", 1)[1])
    assert pebble_cfg["httpPort"] == http_port
    published = {(p["published"] if isinstance(p, dict) else None, p["target"] if isinstance(p, dict) else None)
                 for p in e["ports"]}
    assert (80, http_port) in published or ("80", http_port) in published
    assert (DEPLOY / "pebble" / "pebble.minica.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")


# -- nginx and HAProxy --------------------------------------------------------------------------------------------
def make_state(tmp_path: Path, *, listen: str, site_include: str | None) -> Path:
    """edgecert's real file layout: LiveFiles for two tenant domains, the default certificate, the exports."""
    from edge.lifecycle.exports import write_exports
    st = tmp_path / "state"
    files = LiveFiles(st)
    for h in HOSTS:
        cert, key = generate_default_certificate(common_name=h)
        files.install(h, cert_pem=cert, chain_pem=b"", key_pem=key, serial=h.split(".")[0])
    load_default_certificate(None, None, st)
    write_exports(st, list(HOSTS), listen=listen, site_include=site_include)
    return st


def run_hook(state: Path) -> None:
    env = {**os.environ, "EDGECERT_STATE_DIR": str(state), "EDGECERT_LIVE_DIR": str(state / "live"),
           "EDGECERT_HOSTNAMES": " ".join(HOSTS)}
    r = subprocess.run(["/bin/sh", str(DEPLOY / "edgecert-proxy-hook.sh")], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    stamp = state / "proxy" / "reload.stamp"
    assert stamp.exists() and stamp.read_text().strip().isdigit()  # what edgecert-proxy-reload.path watches
    pem = state / "proxy" / "haproxy-default.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert pem.read_bytes() == (state / "default" / "cert.pem").read_bytes() + (state / "default" / "key.pem").read_bytes()


def serve(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    import socket
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise AssertionError(log.read_text())


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_serves_tenants(port: int, state: Path) -> None:
    from cryptography import x509
    for h in HOSTS:
        want = x509.load_pem_x509_certificate((state / "live" / h / "cert.pem").read_bytes())
        assert served_leaf(port, h) == want, h
    default = served_leaf(port, None)
    assert "CN=edgecert default certificate" in default.subject.rfc4514_string()


@pytest.mark.real
def test_nginx_example_with_edgecert_exports_passes_nginx_t_and_serves_by_sni(tmp_path):
    nginx = require_binary("nginx")
    https, http = free_port(), free_port()
    snippet = tmp_path / "edgecert-site.conf"
    shutil.copy(DEPLOY / "nginx" / "edgecert-site.conf", snippet)
    state = make_state(tmp_path, listen=f"{https} ssl", site_include=str(snippet))
    run_hook(state)
    servers = (state / "exports" / "nginx-servers.conf").read_text()
    assert all(f"server_name {h};" in servers for h in HOSTS)
    site = (DEPLOY / "nginx" / "edgecert.conf").read_text().replace("/var/lib/edgecert/state", str(state))
    site = site.replace("listen 443 ", f"listen {https} ").replace("listen [::]:443 ", f"listen [::]:{https} ")
    site = site.replace("listen 80 ", f"listen {http} ").replace("listen [::]:80 ", f"listen [::]:{http} ")
    (tmp_path / "edgecert.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
                    f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/edgecert.conf;\n}}\n")
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "test is successful" in r.stderr, r.stderr
    proc = serve([nginx, "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"], https, tmp_path / "nginx.out")
    try:
        assert_serves_tenants(https, state)
    finally:
        stop(proc)


@pytest.mark.real
def test_haproxy_example_with_edgecert_exports_passes_haproxy_c_and_serves_by_sni(tmp_path):
    haproxy = require_binary("haproxy")
    https, http = free_port(), free_port()
    state = make_state(tmp_path, listen="443 ssl", site_include=None)
    run_hook(state)
    crtlist = (state / "exports" / "haproxy.crt-list").read_text()
    assert all(f"{state}/live/{h}/haproxy.pem" in crtlist for h in HOSTS)
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text().replace("/var/lib/edgecert/state", str(state))
    cfg = cfg.replace("bind :443 ", f"bind 127.0.0.1:{https} ").replace("bind :80\n", f"bind 127.0.0.1:{http}\n")
    cfg = cfg.replace("log /dev/log local0", "log stderr format raw local0")
    (tmp_path / "haproxy.cfg").write_text(cfg)
    r = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "valid" in (r.stdout + r.stderr), r.stdout + r.stderr
    proc = serve([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], https, tmp_path / "haproxy.out")
    try:
        assert_serves_tenants(https, state)
    finally:
        stop(proc)
