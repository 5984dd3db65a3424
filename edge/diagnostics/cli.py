"""The command lines: ``edgecert diagnose`` (:func:`diagnose_main`) and ``edgecert triage`` (:func:`triage_main`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .diagnose import diagnose
from .target import TargetNotAllowed
from .triage import MAX_REPORT_BYTES, triage

__all__ = ["diagnose_main", "triage_main"]


def _human_diagnosis(result: dict) -> str:
    out = []
    verdict = "OK" if result["ok"] else result["failure_mode"].upper()
    out.append(f"{result['hostname']}: {verdict}")
    out.append(f"  {result['summary']}")
    if not result["ok"]:
        out.append(f"  fix: {result['fix']}")
        out.append(f"  who acts: {result['who_acts']}")
        be = result["browser_errors"]
        out.append(f"  browsers: Chrome {be['chrome']} | Firefox {be['firefox']} | Safari {be['safari']}")
        if len(result.get("failure_modes", [])) > 1:
            out.append(f"  also found: {', '.join(m for m in result['failure_modes'][1:])}")
    out.append("")
    out.append("checks:")
    for c in result["checks"]:
        mark = "ok  " if c["ok"] else ("warn" if c.get("fatal") is False else "FAIL")
        out.append(f"  [{mark}] {c['name']}: {c['detail']}")
    cert = result.get("certificate")
    if cert:
        out.append("")
        out.append(f"certificate: {cert['subject']} issued by {cert['issuer']}")
        out.append(f"  valid {cert['not_before']} .. {cert['not_after']}; SAN {', '.join(cert['san'][:6]) or '-'}; "
                   f"{cert['key']}; {cert['signature_algorithm']}")
        out.append(f"  sha256 {cert['sha256']}")
    clients = result.get("clients") or []
    if clients:
        out.append("")
        failing = [c for c in clients if not c["ok"]]
        out.append(f"clients: {len(clients) - len(failing)} of {len(clients)} families connect")
        for c in failing:
            tag = "" if c.get("mainstream", True) else " (legacy)"
            out.append(f"  [FAIL] {c.get('label', c['client'])}{tag}: {c['error']}")
    if len(result.get("addresses") or []) > 1:
        out.append("")
        out.append("addresses:")
        for a in result["addresses"]:
            out.append(f"  [{'ok  ' if a['ok'] else 'FAIL'}] {a['address']} ({a['role']}): {a['detail']}")
    if result.get("warnings"):
        out.append("")
        out.append("warnings:")
        out += [f"  - {w}" for w in result["warnings"]]
    out.append("")
    out.append("reproduce:")
    out.append(f"  {result['openssl_command']}")
    if result.get("curl_command"):
        out.append(f"  {result['curl_command']}")
    return "\n".join(out)


#: The largest ``--timeout`` (seconds per network step).
MAX_TIMEOUT = 3600


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgecert diagnose",
        description="Probe a TLS endpoint from here and name what is wrong. Exit 0 when ok, 1 when a failure mode "
                    "was found, 2 on bad usage.")
    p.add_argument("hostname", help="the name visitors use, e.g. shop.example.com")
    p.add_argument("--connect", metavar="HOST:PORT", help="connect here instead of the resolved address")
    p.add_argument("--cafile", metavar="PEM", help="trust these roots instead of the system store")
    p.add_argument("--resolver", metavar="HOST:PORT", help="DNS server to ask (default: the system resolver)")
    p.add_argument("--port", type=int, default=443, help="TLS port when --connect is not given (default 443)")
    p.add_argument("--edge-target", action="append", metavar="NAME_OR_IP", dest="edge_targets",
                   help="the edge's name or address (repeatable): a name pointing elsewhere is wrong_endpoint")
    p.add_argument("--expected-sha256", metavar="HEX", help="SHA-256 of the leaf the edge should serve")
    p.add_argument("--deny-private", action="store_true", help="refuse private, loopback and metadata targets")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="bound of each network step (default 5)")
    p.add_argument("--json", action="store_true", help="print the diagnosis object as JSON")
    return p


def diagnose_main(argv: list[str]) -> int:
    """``edgecert diagnose HOSTNAME [--connect HOST:PORT] [--cafile PEM] [--resolver HOST:PORT] [--json]
    [--timeout S]``: 0 when ok, 1 when a failure mode was found, 2 on bad usage."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    if not 0 < args.timeout <= MAX_TIMEOUT:  # also refuses nan (which waited forever) and inf
        parser.print_usage(sys.stderr)
        print(f"edgecert diagnose: error: --timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT}",
              file=sys.stderr)
        return 2
    try:
        result = asyncio.run(diagnose(
            args.hostname, connect=args.connect, cafile=args.cafile, resolver=args.resolver,
            allow_private=not args.deny_private, expected_sha256=args.expected_sha256,
            edge_targets=args.edge_targets, timeout=args.timeout, port=args.port))
    except TargetNotAllowed as e:
        print(f"edgecert diagnose: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"edgecert diagnose: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_human_diagnosis(result))
    return 0 if result["ok"] else 1


def _human_triage(r: dict) -> str:
    lines = [f"{r['failure_mode']} (confidence {r['confidence']:.2f})", f"  {r['explanation']}"]
    if r.get("who_acts") and r["who_acts"] != "-":
        lines.append(f"  who acts: {r['who_acts']}")
    if r["candidates"]:
        lines.append(f"  other candidates: {', '.join(r['candidates'])}")
    lines.append("next steps:")
    lines += [f"  - {s}" for s in r["next_steps"]]
    if r.get("openssl_command"):
        lines += ["reproduce:", f"  {r['openssl_command']}"]
    return "\n".join(lines)


def triage_main(argv: list[str]) -> int:
    """``edgecert triage [TEXT | -] [--hostname H] [--json]``: ``-`` or no TEXT reads standard input.
    Exit 0 with a classification (``unclassified`` included), 2 on bad usage or an empty/oversized report. The
    failure mode is the same as ``POST /v1/triage`` answers for the same report and hostname (one function decides:
    ``triage.classify``); ``--edge-issuer`` and ``--served-valid`` only add evidence (candidates, context)."""
    p = argparse.ArgumentParser(prog="edgecert triage",
                                description="Classify a pasted TLS error report (browser code, curl/openssl output, "
                                            "stack trace, server log line).")
    p.add_argument("text", nargs="?", default="-", help="the report; - or nothing reads standard input")
    p.add_argument("--hostname", help="the affected name: prints the openssl command to run")
    p.add_argument("--edge-issuer", action="append", dest="edge_issuers", metavar="NAME",
                   help="issuer (CN/O) of the edge's certificates (repeatable): another issuer in the report makes "
                        "interception the first candidate")
    p.add_argument("--served-valid", action="store_true", default=None,
                   help="the served certificate is valid now (a date error then makes the client's clock the first "
                        "candidate)")
    p.add_argument("--json", action="store_true", help="print the triage object as JSON")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    text = args.text
    if text == "-":
        data = sys.stdin.buffer.read(MAX_REPORT_BYTES + 1)
        text = data.decode("utf-8", "replace")
    try:
        result = triage(text, hostname=args.hostname, edge_issuers=args.edge_issuers,
                        served_certificate_valid=args.served_valid)
    except ValueError as e:
        print(f"edgecert triage: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else _human_triage(result))
    return 0
