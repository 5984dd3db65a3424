#!/usr/bin/env bash
# Set up everything and run the whole test suite (what .ci/run runs). Extra arguments go to pytest (both phases).
#
# Two phases, one exit status:
#   1. every test not marked `serial`, on $EDGECERT_TEST_WORKERS pytest-xdist workers (default 3: most tests wait on
#      subprocesses -- Pebble, nginx, Chromium, PostgreSQL -- so a third worker fills the idle time of 2 cores);
#      `--dist loadgroup` keeps the tests sharing a module-scoped fixture or the diagnostics corpus on one worker;
#   2. the tests marked `serial` (timing-sensitive or CPU-hungry), alone, in one process.
# EDGECERT_TEST_WORKERS=0 runs phase 1 in one process too (no xdist).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p artifacts
workers="${EDGECERT_TEST_WORKERS:-3}"
pytest=(.venv/bin/python -m pytest -q -rfE --durations=15)

# pytest exits 5 when a phase selects no test (e.g. `scripts/test.sh tests/test_cli.py` has no serial test): that
# phase is fine; the run fails only if some phase failed, or if neither selected anything.
status=0
ran=0
phase() {
  local rc=0
  echo "== scripts/test.sh: $1 phase ==" >&2
  "${pytest[@]}" "${@:2}" || rc=$?
  case "$rc" in
    0) ran=1 ;;
    5) ;;
    *) status=$rc ;;
  esac
}
if [ "$workers" -gt 0 ]; then
  phase parallel -n "$workers" --dist loadgroup --phase parallel "$@"
else
  phase parallel --phase parallel "$@"
fi
phase serial --phase serial "$@" -n 0
if [ "$status" = 0 ] && [ "$ran" = 0 ]; then
  status=5
fi
exit "$status"
