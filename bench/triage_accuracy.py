"""Triage accuracy on the corpus (tests/data/triage_corpus.jsonl) and on variants of it that no rule was written for.

    PYTHONPATH=. python bench/triage_accuracy.py [-v] [--seed N] [--variants K]

Prints, per split (``real``: texts recorded from real clients against broken loopback endpoints; ``dev``: documented
texts the rules were tuned on; ``holdout``: documented texts set aside by hash and never tuned on; ``variants``: K
mutations of every unambiguous record: other hostnames, ports and dates, re-wrapped lines, changed casing, one typo
in a word, noise lines around it) the share whose ``failure_mode`` is the expected id. Ambiguous records (the
client's text does not tell the cause apart, e.g. git's "server certificate verification failed") are scored
separately: right when the expected id is the answer or among the candidates. ``-v`` lists every miss.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.diagnostics.triage import triage  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "triage_corpus.jsonl"

HOSTS = ["portal.bigcorp.example", "www.kunde-shop.de", "api.tienda.es", "app.boutique.fr", "loja.exemplo.com.br",
         "mise.example.jp", "x1.y2.example.org"]


def load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _typo(text: str, rng: random.Random) -> str:
    """One typo in one long lower-case word (never inside a code, a number or a quoted name)."""
    words = [m for m in re.finditer(r"(?<![\w.'\"-])[a-z]{7,}(?![\w.'\"-])", text)]
    if not words:
        return text
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 2)
    kind = rng.choice(["drop", "swap", "double"])
    if kind == "drop":
        w2 = w[:i] + w[i + 1:]
    elif kind == "swap":
        w2 = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    else:
        w2 = w[:i] + w[i] + w[i:]
    return text[:m.start()] + w2 + text[m.end():]


def _wrap(text: str, rng: random.Random) -> str:
    width = rng.randrange(48, 90)
    out, line = [], ""
    for word in text.split(" "):
        if len(line) + len(word) + 1 > width and line:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


def variant(text: str, rng: random.Random) -> tuple[str, str]:
    """A mutation of ``text`` and what was done to it."""
    done = []
    host = rng.choice(HOSTS)
    t = re.sub(r"\b(?:[a-z0-9-]{1,30}\.){1,3}(?:example|test|partner|customer)\.(?:com|test|net|org|io)\b|"
               r"\b[a-z0-9-]{1,30}\.(?:test)\b", host, text)
    if t != text:
        done.append("host")
    t2 = re.sub(r"(?<=:)\d{4,5}\b", lambda m: str(rng.randrange(1025, 65000)), t)
    back = rng.randrange(1, 6)  # every date moves back by the same number of years: their order is kept
    t2 = re.sub(r"\b20(\d\d)(?=-\d\d-\d\d)", lambda m: f"20{int(m.group(1)) - back:02d}", t2)
    if t2 != t:
        done.append("ports/dates")
    t = t2
    ops = rng.sample(["wrap", "case", "typo", "noise"], k=2)
    for op in ops:
        if op == "wrap" and "\n" not in t and len(t) > 60:
            t = _wrap(t, rng)
            done.append("wrap")
        elif op == "case":
            t = t.lower() if rng.random() < 0.5 else t.upper()
            done.append("case")
        elif op == "typo":
            t2 = _typo(t, rng)
            if t2 != t:
                t = t2
                done.append("typo")
        elif op == "noise":
            t = (f"[{rng.randrange(10, 23)}:{rng.randrange(10, 59)}:{rng.randrange(10, 59)}] user@laptop ~ $ ./deploy.sh\n"
                 + t + "\n\nany idea? this started after the weekend >:(")
            done.append("noise")
    return t, "+".join(done) or "none"


def score(rows: list[dict], verbose: bool) -> dict:
    per = collections.defaultdict(lambda: [0, 0])
    misses = []
    for r in rows:
        got = triage(r["text"])
        ok = got["failure_mode"] == r["expected"]
        if r.get("ambiguous"):
            ok = ok or r["expected"] in got["candidates"]
        key = (r["split"], "ambiguous" if r.get("ambiguous") else "clear")
        per[key][0] += ok
        per[key][1] += 1
        if not ok:
            misses.append((r, got))
    if verbose:
        for r, got in misses:
            print(f"MISS [{r['split']}/{r['family']}] expected {r['expected']}, got {got['failure_mode']} "
                  f"{got['candidates'][:3]}: {r['text'][:160]!r}")
    return per


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-v", action="store_true")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--variants", type=int, default=3)
    args = p.parse_args(argv)
    rows = load()
    rng = random.Random(args.seed)
    variants = []
    for r in rows:
        if r.get("ambiguous") or r["split"] == "dev" and False:
            continue
        for _ in range(args.variants):
            text, how = variant(r["text"], rng)
            variants.append({**r, "text": text, "split": "variants", "family": f"{r['family']} ({how})"})
    t0 = time.perf_counter()
    per = score(rows + variants, args.v)
    took = time.perf_counter() - t0
    print(f"triage accuracy on {CORPUS.relative_to(ROOT)} (+{len(variants)} variants, seed {args.seed})")
    total_ok = total = 0
    for (split, kind), (ok, n) in sorted(per.items()):
        print(f"  {split:9s} {kind:9s} {ok:4d}/{n:<4d} {100 * ok / n:5.1f}%")
        if kind == "clear":
            total_ok, total = total_ok + ok, total + n
    print(f"  all clear records: {total_ok}/{total} {100 * total_ok / max(total, 1):.1f}%; "
          f"{1000 * took / (len(rows) + len(variants)):.2f} ms per report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
