"""How long one ``diagnose`` takes, and what the client population adds: a healthy loopback endpoint, a stalled one
and a must-staple one, N runs each, sequential. Prints wall-clock medians (the machine's load shows in them).

    PYTHONPATH=. .venv/bin/python bench/bench_diagnose.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge.diagnostics import diagnose
from edge.diagnostics.population import simulate
from tests.diagnostics.population_corpus import PopulationCorpus


async def main(n: int) -> None:
    corpus = PopulationCorpus(Path(tempfile.mkdtemp(prefix="bench-diag-")))
    try:
        for name in ("ok", "must_staple", "stall"):
            ep = corpus.endpoints[name]
            runs = []
            for _ in range(n):
                t = time.perf_counter()
                r = await diagnose(ep.hostname, **ep.diagnose_kwargs())
                runs.append(time.perf_counter() - t)
            print(f"diagnose {name:<12} -> {r['failure_mode']:<20} median {statistics.median(runs):.2f} s "
                  f"(min {min(runs):.2f}, max {max(runs):.2f}, n={n})")
        ep = corpus.endpoints["ok"]
        host, port = ep.connect.rsplit(":", 1)
        runs = []
        for _ in range(n):
            t = time.perf_counter()
            offers = await simulate(host, int(port), ep.hostname, 5.0)
            runs.append(time.perf_counter() - t)
        print(f"simulate (client population, {len(offers)} offers) median {statistics.median(runs):.2f} s")
    finally:
        corpus.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
