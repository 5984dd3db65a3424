#!/bin/bash
# callgrind (with cache and branch simulation) of the edge's bench server over N full-handshake connections.
#   bench/cg_run.sh OUT PORT [CONNS]        e.g. bench/cg_run.sh /tmp/cg-edge.out 9880 2000
# Needs: make -C bench; bench/gencerts.py --count 10000 --out bench/out/n10000; bench_serve.py --import-only.
# Every name is handshaken once before the window (instrumentation off), then CONNS connections at c=16 are
# recorded; OUT.1-01 is the event loop's thread. Then: python bench/cg_cost.py OUT.1-01 CONNS [--by-object].
set -euo pipefail
OUT=$1; PORT=$2; CONNS=${3:-2000}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CERTS=$HERE/bench/out/n10000
CS="--cache-sim=yes --branch-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,8,64"
PYTHONPATH=$HERE valgrind --tool=callgrind --instr-atstart=no $CS --separate-threads=yes \
    --callgrind-out-file="$OUT" "$HERE/.venv/bin/python" "$HERE/bench/bench_serve.py" --certs-dir "$CERTS" \
    --listen "127.0.0.1:$PORT" > "$OUT.log" 2>&1 &
VP=$!
for _ in $(seq 1 600); do grep -q "prewarm complete" "$OUT.log" && break; sleep 1; done
"$HERE/bench/loadgen" --host 127.0.0.1 --port "$PORT" --names "$CERTS/names.txt" --duration 300 --concurrency 8 \
    --unique-names --json > "$OUT.warm.json"
callgrind_control -z $VP >/dev/null; callgrind_control -i on $VP >/dev/null
"$HERE/bench/loadgen" --host 127.0.0.1 --port "$PORT" --names "$CERTS/names.txt" --duration 200 --warmup 0 \
    --concurrency 16 --max-conns "$CONNS" --json > "$OUT.run.json"
callgrind_control -d $VP >/dev/null; callgrind_control -i off $VP >/dev/null
kill $VP; wait $VP || true
cat "$OUT.run.json"
