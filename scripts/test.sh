#!/usr/bin/env bash
# Set up everything and run the whole test suite (what .ci/run runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p artifacts
exec .venv/bin/python -m pytest -q -rfE --durations=15 "$@"
