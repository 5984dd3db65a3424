#!/usr/bin/env bash
# Set up everything and run the demo: a local ACME CA + DNS, a demo tenant domain served over HTTPS. Ctrl-C stops.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/edgecert demo "$@"
