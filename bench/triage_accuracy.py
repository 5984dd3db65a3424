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
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.diagnostics.triage import triage  # noqa: E402
from tests.triage_variants import load, variant  # noqa: E402

from tests.triage_variants import CORPUS  # noqa: E402

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
