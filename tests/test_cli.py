"""The operator CLI (``edgecert domains|tenants ...``) as subprocesses against a real ``edgecert serve`` + Pebble."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edge.demo.process import free_port
from tests.helpers import ADMIN_TOKEN, REPO

pytestmark = pytest.mark.real


def cli(edge, *args: str, token: str | None = ADMIN_TOKEN, api: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    cmd = [sys.executable, "-m", "edge", *args, "--api", api or edge.api]
    if token:
        cmd += ["--token", token]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_domains_add_wait_reaches_active_with_live_progress(edge, pebble):
    host = "shop.cli.test"
    r = cli(edge, "domains", "add", host, "--tenant", "cli-co", "--wait", "--timeout", "90")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # progress lines as it goes: events and status changes, then the summary
    for kind in ("domain_added", "order_placed", "certificate_obtained", "swapped"):
        assert kind in out, out
    assert "status: active" in out
    assert out.startswith("status: ") and out.index("order_placed") < out.index("certificate_obtained")
    assert out.index("status: active") < out.index(f"{host}  [active]  tenant=cli-co")
    assert out.index("swapped") < out.index(f"{host}  [active]")  # every event is shown before the summary
    d = edge.domain(host)
    assert f"certificate: serial {d['certificate']['serial']}" in out

    r = cli(edge, "domains", "list")
    assert r.returncode == 0
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["HOSTNAME", "TENANT", "STATUS", "EXPIRES", "PROBLEM"]
    assert row.split()[:3] == [host, "cli-co", "active"]
    r = cli(edge, "domains", "list", "--status", "pending_dns", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"domains": [], "count": 0, "total": 0, "next": None}

    r = cli(edge, "domains", "show", host, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["certificate"]["serial"] == d["certificate"]["serial"]
    r = cli(edge, "domains", "show", host)
    assert r.stdout.startswith(f"{host}  [active]  tenant=cli-co") and "issuer: CN=Pebble" in r.stdout

    r = cli(edge, "domains", "events", host, "--json")
    kinds = [e["kind"] for e in json.loads(r.stdout)["events"]]
    assert kinds[0] == "domain_added" and "swapped" in kinds
    r = cli(edge, "domains", "events", host)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(kinds)

    r = cli(edge, "domains", "renew", host)
    assert r.returncode == 0 and r.stdout.strip() == f"renewal of {host} queued"
    r = cli(edge, "domains", "remove", host)
    assert r.returncode == 0 and r.stdout.strip() == f"removed {host}"
    assert edge.call("GET", f"/v1/domains/{host}")[0] == 404


def test_failures_exit_non_zero_with_a_reason(edge, dns):
    pending = "pending.cli.test"
    dns.add_a(pending, ["192.0.2.30"])
    # --wait that does not reach active in time: exit 1, the reason on stderr (the record to create)
    r = cli(edge, "domains", "add", pending, "--tenant", "cli-co", "--wait", "--timeout", "3")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "status: pending_dns" in r.stdout
    assert "still pending_dns" in r.stderr and f"{pending}. CNAME edge.test." in r.stderr
    # the same name again: 409
    r = cli(edge, "domains", "add", pending, "--tenant", "cli-co")
    assert r.returncode == 1 and "409 already_exists" in r.stderr
    # an invalid name: 422 with the API's explanation
    r = cli(edge, "domains", "add", "192.0.2.1", "--tenant", "cli-co")
    assert r.returncode == 1 and "422" in r.stderr
    # a missing domain, a wrong token, an unreachable API
    r = cli(edge, "domains", "show", "missing.cli.test")
    assert r.returncode == 1 and "404 not_found" in r.stderr
    r = cli(edge, "domains", "list", token="wrong-token")
    assert r.returncode == 1 and "401 invalid_token" in r.stderr
    r = cli(edge, "domains", "list", api=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1 and "cannot reach the API" in r.stderr
    # bad usage: exit 2
    r = cli(edge, "domains", "frobnicate")
    assert r.returncode == 2


def test_tenants_commands_and_a_tenant_token_on_the_cli(edge, dns):
    dns.add_a("www.t1.cli.test", ["192.0.2.31"])
    r = cli(edge, "tenants", "add", "t1", "--json")
    assert r.returncode == 0, r.stderr
    t1 = json.loads(r.stdout)
    assert t1["name"] == "t1" and t1["token"].startswith("ect_")
    r = cli(edge, "tenants", "add", "t2")
    assert r.returncode == 0 and "store the token now" in r.stdout
    r = cli(edge, "tenants", "list")
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["t1", "t2"]

    # the tenant uses its own token: adds and lists only its own domains
    r = cli(edge, "domains", "add", "www.t1.cli.test", token=t1["token"])
    assert r.returncode == 0, r.stderr
    assert "DNS record to create: www.t1.cli.test. CNAME edge.test." in r.stdout or "pending_dns" in r.stdout \
        or "[issuing]" in r.stdout
    r = cli(edge, "domains", "list", "--json", token=t1["token"])
    assert [d["hostname"] for d in json.loads(r.stdout)["domains"]] == ["www.t1.cli.test"]
    r = cli(edge, "tenants", "list", token=t1["token"])
    assert r.returncode == 1 and "403 forbidden" in r.stderr

    # rotation: the old token stops working
    r = cli(edge, "tenants", "token", "t1")
    assert r.returncode == 0 and "1 old token(s) revoked" in r.stdout
    new = r.stdout.split()[2]
    assert cli(edge, "domains", "list", token=t1["token"]).returncode == 1
    assert cli(edge, "domains", "list", token=new).returncode == 0
    r = cli(edge, "tenants", "token", "t1", "--revoke")
    assert r.returncode == 0 and r.stdout.strip() == "revoked 1 token(s)"
    assert cli(edge, "domains", "list", token=new).returncode == 1


def test_output_into_a_closed_pipe_ends_quietly():
    """``edgecert triage ... | head``: the reader went away before the output was written; no BrokenPipeError
    traceback or "Exception ignored" on stderr."""
    import subprocess
    import sys
    report = "curl: (60) SSL certificate problem: certificate has expired"
    p = subprocess.run(f"{sys.executable} -m edge triage - | true", shell=True, input=report, capture_output=True,
                       text=True, timeout=60)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
