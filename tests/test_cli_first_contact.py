"""First contact (issue 17, item 5): 401/403 answers that say which header or variable is missing (and never echo a
token), the demo re-run without --fresh still proving itself, full --help for every sub-command, and shell
completion for bash (sourced in a real bash) and zsh."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import contextlib

import pytest

from edge.demo.process import free_port
from tests.helpers import ADMIN_TOKEN, REPO, EdgeProcess, require_binary


def edgecert(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edge", *args], env=e, capture_output=True, text=True,
                          timeout=timeout)


# -- 401 / 403 ---------------------------------------------------------------------------------------------------
def test_401_and_403_say_what_is_missing_without_echoing_tokens(tmp_path, pebble, dns):
    edge = EdgeProcess(work_dir=tmp_path / "on", pebble=pebble, dns=dns).start()
    try:
        st, body = edge.call("GET", "/v1/domains", token=None)
        e = body["error"]
        assert st == 401 and e["code"] == "missing_token" and e["missing"] == "Authorization"
        assert "Authorization: Bearer <token>" in e["message"] and "EDGECERT_ADMIN_TOKEN" in e["message"]
        st, body = edge.call("GET", "/v1/domains", token="wrong-token-value-123")
        e = body["error"]
        assert st == 401 and e["code"] == "invalid_token" and "EDGECERT_ADMIN_TOKEN" in e["message"]
        assert "wrong-token-value-123" not in str(body) and ADMIN_TOKEN not in str(body)
        st, body = edge.call("GET", "/v1/domains", token=None, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert st == 401 and "'Basic'" in body["error"]["message"] and "dXNlcjpwYXNz" not in str(body)
        st, t = edge.call("POST", "/v1/tenants", {"name": "fc"})
        st, body = edge.call("GET", "/v1/tenants", token=t["token"])
        assert st == 403 and "operator token (EDGECERT_ADMIN_TOKEN" in body["error"]["message"]
        assert t["token"] not in str(body)
        # The CLI passes the server's words on, with the status and the code.
        env = {"EDGECERT_API_URL": edge.api}
        r = edgecert("domains", "list", env=env)
        assert r.returncode == 1 and "401 missing_token" in r.stderr and "EDGECERT_ADMIN_TOKEN" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        edge.stop()
    off = EdgeProcess(work_dir=tmp_path / "off", pebble=pebble, dns=dns, env={"EDGECERT_ADMIN_TOKEN": ""}).start()
    try:
        st, body = off.call("GET", "/v1/domains", token="anything")
        e = body["error"]
        assert st == 403 and e["code"] == "admin_token_not_configured" and e["missing"] == "EDGECERT_ADMIN_TOKEN"
        assert "EDGECERT_ADMIN_TOKEN is not set" in e["message"] and "anything" not in str(body)
    finally:
        off.stop()


# -- --help --------------------------------------------------------------------------------------------------------
def _parsers():
    from edge.cli import domains_parser, serve_parser, tenants_parser
    from edge.completion import completion_parser
    from edge.demo import demo_parser
    return {"serve": serve_parser(), "demo": demo_parser(), "domains": domains_parser(),
            "tenants": tenants_parser(), "completion": completion_parser()}


def test_every_subcommand_and_option_has_help():
    import argparse
    from edge.completion import subparsers_of
    for name, p in _parsers().items():
        subs = subparsers_of(p)
        for parser in [p, *subs.values()]:
            assert parser.description, f"{parser.prog} has no description"
            for a in parser._actions:  # noqa: SLF001
                if isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
                    assert all(ch.help for ch in a._choices_actions), f"{parser.prog}: a sub-command has no help"
                    continue
                assert a.help, f"{parser.prog} {a.option_strings or a.dest} has no help"
    for sub in ("add", "list", "import", "export", "set", "show", "remove", "renew", "events"):
        r = edgecert("domains", sub, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: edgecert domains {sub}"), r.stderr
    r = edgecert("domains", "--help")
    for sub in ("add", "list", "import", "export", "set", "show", "remove", "renew", "events"):
        assert re.search(rf"^\s+{sub}\s+\S", r.stdout, re.M), sub  # each listed with a description
    r = edgecert("--help")
    assert r.returncode == 0 and "completion bash|zsh" in r.stdout


def test_cli_status_words_match_the_store():
    from edge.cli import STATUS_WORDS
    from store.models import DomainStatus
    assert tuple(STATUS_WORDS) == DomainStatus.ALL


# -- completion -----------------------------------------------------------------------------------------------------
def _complete(script: str, *words: str) -> list[str]:
    """Source ``script`` in a real bash and complete the command line ``words`` (the last one is being typed)."""
    bash = require_binary("bash")
    line = " ".join(words)
    prog = (f'{script}\nCOMP_WORDS=({" ".join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n'
            f'COMP_LINE={line!r}\nCOMP_POINT=${{#COMP_LINE}}\n_edgecert edgecert "${{COMP_WORDS[-1]}}" '
            f'"${{COMP_WORDS[-2]}}"\nprintf "%s\\n" "${{COMPREPLY[@]}}"\ncomplete -p edgecert\n')
    r = subprocess.run([bash, "--norc", "--noprofile", "-c", prog], capture_output=True, text=True, timeout=30,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out and out[-1].startswith("complete ") and out[-1].endswith(" edgecert")  # registered
    return [w for w in out[:-1] if w]


def test_bash_completion_from_the_parsers():
    r = edgecert("completion", "bash")
    assert r.returncode == 0 and "_edgecert()" in r.stdout
    script = r.stdout
    assert set(_complete(script, "edgecert", "")) == {"serve", "demo", "diagnose", "triage", "domains", "tenants",
                                                     "completion", "version"}
    assert _complete(script, "edgecert", "dom") == ["domains"]
    assert set(_complete(script, "edgecert", "domains", "")) == {"add", "list", "import", "export", "set", "show",
                                                                "remove", "renew", "events"}
    opts = _complete(script, "edgecert", "domains", "list", "--")
    for o in ("--all", "--status", "--tenant", "--search", "--prefix", "--issuer", "--expiring-before", "--probe",
              "--metadata", "--limit", "--json", "--api", "--token", "--help"):
        assert o in opts, o
    assert _complete(script, "edgecert", "domains", "list", "--probe", "f") == ["failing"]
    assert "pending_dns" in _complete(script, "edgecert", "domains", "list", "--status", "")
    assert _complete(script, "edgecert", "domains", "export", "--format", "") == ["jsonl", "csv"]
    assert _complete(script, "edgecert", "completion", "") == ["bash", "zsh"]
    assert "--connect" in _complete(script, "edgecert", "diagnose", "--c")
    assert "--min-tls-version" in _complete(script, "edgecert", "domains", "set", "--m")
    assert _complete(script, "edgecert", "tenants", "set", "--o") == ["--origin"]
    # a file argument completes file names
    assert "pyproject.toml" in _complete(script, "edgecert", "domains", "import", "pyproj")


def test_foreign_command_options_match_their_help():
    """diagnose / triage parsers live in edge/diagnostics: the completion's copy of their options stays in step."""
    from edge.completion import FOREIGN_OPTIONS
    for cmd, opts in FOREIGN_OPTIONS.items():
        r = edgecert(cmd, "--help")
        assert r.returncode == 0
        helped = set(re.findall(r"(--[a-z0-9-]+)", r.stdout))
        assert set(opts) == helped, (cmd, set(opts) ^ helped)


def test_zsh_completion_script():
    r = edgecert("completion", "zsh")
    assert r.returncode == 0 and r.stdout.startswith("#compdef edgecert") and "bashcompinit" in r.stdout
    assert "_edgecert()" in r.stdout
    zsh = None
    with contextlib.suppress(Exception):
        import shutil
        zsh = shutil.which("zsh")
    if zsh:  # where zsh is installed, the script loads and registers the completion
        p = subprocess.run([zsh, "-f", "-c", r.stdout + "\nprint -r -- ${_comps[edgecert]}"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and p.stdout.strip(), p.stderr
    bash = require_binary("bash")  # the function itself is the bash one: it must parse
    p = subprocess.run([bash, "-n"], input=r.stdout.split("bashcompinit\n", 1)[1], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# -- the demo, run twice ---------------------------------------------------------------------------------------
def _run_demo(work, ports: dict) -> tuple[subprocess.Popen, list[str], str]:
    """Start ``edgecert demo`` on ``work`` and read its output up to "Serving until Ctrl-C."; returns the process,
    the output lines and the printed "prove it" command."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("EDGECERT_")}
    p = subprocess.Popen([sys.executable, "-m", "edge", "demo", "--dir", str(work), "--api-port",
                          str(ports["api"]), "--http-port", str(ports["http"]), "--https-port", str(ports["https"])],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    prove = None
    assert p.stdout is not None
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip().startswith("openssl s_client"):
            prove = line.strip()
        if "Serving until Ctrl-C." in line or "did not become active" in line:
            break
    assert prove is not None, "\n".join(lines)
    return p, lines, prove


@pytest.mark.slow
@pytest.mark.real
def test_demo_rerun_without_fresh_still_proves_itself(tmp_path):
    require_binary("pebble")
    require_binary("openssl")
    work = tmp_path / "demo"
    ports = {"api": free_port(), "http": free_port(), "https": free_port()}
    serials = []
    for run in (1, 2):
        p, lines, prove = _run_demo(work, ports)
        try:
            out = "\n".join(lines)
            assert "is served over HTTPS" in out, out
            if run == 2:
                assert "re-issuing it from this one" in out, out
            serials.append(re.search(r"certificate ([0-9a-f]+) from", out).group(1))
            proof = subprocess.run(["sh", "-c", prove], capture_output=True, text=True, timeout=60)
            assert "Verify return code: 0 (ok)" in proof.stdout, (run, proof.stdout, out)
        finally:
            os.killpg(p.pid, signal.SIGINT)
            p.wait(30)
    assert serials[0] != serials[1]  # a new certificate from the new Pebble
