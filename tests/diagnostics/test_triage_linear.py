"""No pasted report makes triage worse than linear: every rule is searched over 64 KiB single-line reports built
from each of its prefixes (and the whole classifier over the prefixes its own parsing looks for), in a subprocess
whose CPU time is capped per input with ``RLIMIT_CPU``: a quadratic rule is killed by the kernel, not timed."""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.diagnostics.rules import INTERCEPTORS
from edge.diagnostics.triage import ALL_RULES as RULES
from edge.diagnostics.triage_patterns import SERVER_SIDE
from edge.diagnostics.triage_text import WRAPPERS

ROOT = Path(__file__).resolve().parents[2]
REPORT = 65_000  # under triage's 64 KiB limit
CPU_SECONDS = 2  # per input; a linear search of 64 KiB takes milliseconds, the whole classifier ~0.3 s

_parser = getattr(re, "_parser")  # the stdlib's pattern parser (sre_parse)
_constants = getattr(re, "_constants")

#: What triage's own parsing (openssl transcripts, dates, issuers, host names) looks for.
TRIAGE_PREFIXES = ["tls: ", "http request ", "certificate ", "\n", " \n", "\t", "verify error:num=10:",
                   "verify error:num=9:", "verify error:num=10:\n", "i: ", "issuer=", "Issuer: ", "0 s:", "subject=",
                   "CN=", "cn=", "valid for ", "altnames: ", "DNS:", "current time ", "current time x is after ",
                   "NotAfter: ", "curl: (", "curl: (9", "https://", "https://a.", "Could not resolve host: ",
                   "ERR_CERT_X ", "err_cert_comon_name_invalid ", "certifcate ", "alert number 1", "alert [4",
                   "error:0A00045C:", "268436572 ", "Get \"https://a\": ", "fatal: unable to access '",
                   "could not connect to a: ", "Received fatal alert: ", "remote error: tls: ", "verify error: (",
                   "TLS handshake error from ", "* Connected to ", "Request CERT (13)", "Dies ist keine ",
                   "Failed to connect to a.", "-servername ", "lookup a.", "getaddrinfo ENOTFOUND ", "CONNECTED(",
                   "Verify return code: 0 (ok)", "Cipher is ", "error ", "Code= ", "a", "9"]


def rule_prefixes() -> list[tuple[int, str]]:
    """(rule index, prefix): the literal start of every alternative of every rule, cut at 1, 5 and all its
    characters (so both the short repeated phrase and the full one are tried)."""
    out: set[tuple[int, str]] = set()
    for i, rule in enumerate(RULES):
        for alt in _alternatives(rule.pattern.pattern):
            lit = _literal_prefix(alt)
            for n in (1, 5, len(lit)):
                if lit[:n]:
                    out.add((i, lit[:n]))
    return sorted(out)


def _alternatives(pattern: str) -> list[str]:
    parts, depth, cur, esc = [], 0, "", False
    for ch in pattern:
        if esc:
            cur, esc = cur + ch, False
            continue
        if ch == "\\":
            cur, esc = cur + ch, True
            continue
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def _literal_prefix(alt: str) -> str:
    out = ""
    for op, av in _parser.parse(alt):
        if op is _constants.LITERAL:
            out += chr(av)
        elif op is _constants.AT:
            continue
        else:
            break
    return out


def _unbounded(parsed) -> list[str]:
    found = []
    for op, av in parsed:
        if op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, getattr(_constants, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            if hi == _constants.MAXREPEAT:
                found.append(f"{op} {{{lo},}}")
            found += _unbounded(sub)
        elif op is _constants.SUBPATTERN:
            found += _unbounded(av[-1])
        elif op is _constants.BRANCH:
            for b in av[1]:
                found += _unbounded(b)
        elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
            found += _unbounded(av[1])
    return found


@pytest.mark.parametrize("i", range(len(RULES)))
def test_every_rule_has_only_bounded_repeats(i):
    """Bounded repeats make each start position cost at most a constant: a search is linear in the report."""
    rule = RULES[i]
    assert not _unbounded(_parser.parse(rule.pattern.pattern, rule.pattern.flags)), (rule.mode, rule.pattern.pattern)


def test_interceptor_names_have_only_bounded_repeats():
    assert not _unbounded(_parser.parse(INTERCEPTORS))


def test_wrapper_and_context_patterns_have_only_bounded_repeats():
    import importlib

    t = importlib.import_module("edge.diagnostics.triage")
    tp = importlib.import_module("edge.diagnostics.triage_patterns")

    patterns = [WRAPPERS, SERVER_SIDE, t._CONNECTED, t._TIMED_OUT, t._CERT_REQUEST, tp._ALERT_NUMBER, tp._ALERT_NAME,
                tp._OPENSSL_HEX, tp._BORINGSSL_DEC, tp._VERIFY]
    for p in patterns:
        assert not _unbounded(_parser.parse(p.pattern, p.flags)), p.pattern[:80]


_CHILD = r"""
import json, resource, sys
from edge.diagnostics.triage import ALL_RULES as RULES
from edge.diagnostics.triage import triage
budget, size = int(sys.argv[1]), int(sys.argv[2])
for kind, index, prefix in json.load(sys.stdin):
    text = (prefix * (size // len(prefix) + 1))[:size]
    if not text.strip():
        text = "x" + text[1:]
    u = resource.getrusage(resource.RUSAGE_SELF)
    resource.setrlimit(resource.RLIMIT_CPU, (int(u.ru_utime + u.ru_stime) + 1 + budget,
                                             resource.getrlimit(resource.RLIMIT_CPU)[1]))
    print(json.dumps([kind, index, prefix[:40]]), flush=True)  # the last line names the input that was killed
    if kind == "rule":
        RULES[index].pattern.search(text)
    else:
        triage(text, hostname="shop.example.com", edge_issuers=["CN=Edge CA"], served_certificate_valid=True)
print("done", flush=True)
"""


def run_capped(cases: list[tuple[str, int, str]]) -> None:
    p = subprocess.run([sys.executable, "-c", _CHILD, str(CPU_SECONDS), str(REPORT)], input=json.dumps(cases),
                       capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    lines = p.stdout.strip().splitlines()
    if p.returncode == -signal.SIGXCPU:
        pytest.fail(f"over {CPU_SECONDS} CPU seconds on a {REPORT}-byte report: {lines[-1] if lines else '?'}")
    assert p.returncode == 0 and lines and lines[-1] == "done", (p.returncode, p.stderr[-2000:])


@pytest.mark.slow
def test_every_rule_is_linear_on_its_own_prefixes():
    run_capped([("rule", i, prefix) for i, prefix in rule_prefixes()])


@pytest.mark.slow
def test_triage_is_linear_on_the_prefixes_of_its_parsing():
    run_capped([("triage", 0, prefix) for prefix in TRIAGE_PREFIXES])


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["tls: ", "\n", "http request ", "verify error:num=10:", "valid for "])
def test_cli_triage_is_linear(prefix):
    """``edgecert triage -`` with the report on standard input, its whole run (startup included, about 1 s) capped
    at 4 CPU seconds."""
    report = (prefix * (REPORT // len(prefix) + 1))[:REPORT]
    if not report.strip():
        report = "x" + report[1:]

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (4, resource.getrlimit(resource.RLIMIT_CPU)[1]))

    p = subprocess.run([sys.executable, "-m", "edge", "triage", "-", "--hostname", "valid.example.com", "--json"],
                       input=report, capture_output=True, text=True, cwd=ROOT, preexec_fn=cap,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode != -signal.SIGXCPU, f"killed after 4 CPU seconds on {prefix!r} x {REPORT // len(prefix)}"
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["failure_mode"]


_TYPO_CHILD = r"""
import random, resource, string, sys
from edge.diagnostics.triage import triage
rng = random.Random(int(sys.argv[1]))
def tok(n, abc=string.ascii_uppercase):
    return "".join(rng.choice(abc) for _ in range(n))
inputs = {
    "distinct codes": " ".join("_".join(tok(5) for _ in range(8)) for _ in range(1400)),
    "short-part codes": " ".join("_".join(tok(3) for _ in range(11)) for _ in range(1600)),
    "distinct long words": " ".join(tok(rng.randrange(9, 40), string.ascii_lowercase) for _ in range(3000)),
    "near-miss codes": " ".join("ERR_CERT_" + tok(12) + "_INVALID" for _ in range(2500)),
}
for name, text in inputs.items():
    u = resource.getrusage(resource.RUSAGE_SELF)
    resource.setrlimit(resource.RLIMIT_CPU, (int(u.ru_utime + u.ru_stime) + 1 + int(sys.argv[2]),
                                             resource.getrlimit(resource.RLIMIT_CPU)[1]))
    print(name, flush=True)
    triage(text[:65000])
print("done", flush=True)
"""


@pytest.mark.slow
def test_typo_correction_is_bounded_on_hostile_reports():
    """64 KiB of distinct code-like tokens or long unknown words: the typo lookups are capped per report, so the
    classifier stays within its CPU budget (the API gives a call 5 s)."""
    p = subprocess.run([sys.executable, "-c", _TYPO_CHILD, "7", "3"], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    lines = p.stdout.strip().splitlines()
    assert p.returncode != -signal.SIGXCPU, f"over 3 CPU seconds on: {lines[-1] if lines else '?'}"
    assert p.returncode == 0 and lines[-1] == "done", p.stderr[-2000:]
