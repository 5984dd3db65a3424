"""Per-connection cost from callgrind files recorded with ``--cache-sim=yes --branch-sim=yes``.

    python bench/cg_cost.py /tmp/cg-nginx.out 2000 /tmp/cg-edge.out.1-01 2000 [--by-object]

Each pair is a callgrind output file and the number of connections its window covered. Prints instructions, L1 and
last-level (LL) cache misses and branch mispredictions per connection, and KCachegrind's cycle estimate
``CEst = Ir + 10 * (L1 misses + mispredictions) + 100 * LL misses``: a load-independent stand-in for the CPU time
that instruction counts alone miss (two servers at the same instruction count can differ in misses). The cache
model is what callgrind was given (``--I1 --D1 --LL``; the RESULTS figures use 32 KiB L1s and a 1 MiB 8-way LL
standing in for one core's L2). With ``--by-object`` the same per shared object (exclusive costs).
"""

from __future__ import annotations

import collections
import re
import sys


def read(path: str) -> tuple[list[str], dict[str, list[int]], list[int]]:
    """(event names, exclusive cost per object, totals) of one callgrind file (name compression resolved)."""
    events: list[str] = []
    objs: dict[str, str] = {}
    by_obj: dict[str, list[int]] = collections.defaultdict(list)
    totals: list[int] = []
    ob, after_call = "?", False
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:"):
                totals = [int(x) for x in line.split()[1:]]
            elif line.startswith(("ob=", "cob=")):
                m = re.match(r"c?ob=\((\d+)\)(?:\s+(.*))?", line.strip())
                if m:
                    if m.group(2):
                        objs[m.group(1)] = m.group(2)
                    name = objs.get(m.group(1), "?")
                else:
                    name = line.strip().split("=", 1)[1]
                if line.startswith("ob="):
                    ob = name.rsplit("/", 1)[-1]
            elif line.startswith("calls="):
                after_call = True
            elif events and line[:1] and (line[:1].isdigit() or line[:1] in "+-*"):
                if after_call:  # the inclusive cost of a call: not this function's own
                    after_call = False
                    continue
                cost = [int(x) for x in line.split()[1:]]
                acc = by_obj[ob]
                if len(acc) < len(events):
                    acc.extend([0] * (len(events) - len(acc)))
                for i, x in enumerate(cost):
                    acc[i] += x
    return events, by_obj, totals


def summary(events: list[str], cost: list[int], n: int) -> str:
    k = dict.fromkeys(events, 0.0)
    for e, x in zip(events, cost):
        k[e] = x / n / 1000
    l1 = k.get("I1mr", 0) + k.get("D1mr", 0) + k.get("D1mw", 0)
    ll = k.get("ILmr", 0) + k.get("DLmr", 0) + k.get("DLmw", 0)
    bm = k.get("Bcm", 0) + k.get("Bim", 0)
    return (f"Ir {k['Ir']:8.1f}k  L1 misses {l1:5.1f}k (I {k.get('I1mr', 0):.1f} D {k.get('D1mr', 0) + k.get('D1mw', 0):.1f})"
            f"  LL misses {ll:5.2f}k (I {k.get('ILmr', 0):.2f} D {k.get('DLmr', 0) + k.get('DLmw', 0):.2f})"
            f"  mispredicts {bm:5.1f}k  CEst {k['Ir'] + 10 * (l1 + bm) + 100 * ll:8.1f}k")


def main(argv: list[str]) -> int:
    by_object = "--by-object" in argv
    argv = [a for a in argv if a != "--by-object"]
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__)
        return 2
    for path, n in zip(argv[::2], argv[1::2]):
        events, by_obj, totals = read(path)
        print(f"{path}  ({n} connections)\n  {'TOTAL':34s} {summary(events, totals, int(n))}")
        if by_object:
            for ob, cost in sorted(by_obj.items(), key=lambda kv: -kv[1][0])[:8]:
                print(f"  {ob[:34]:34s} {summary(events, cost, int(n))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
