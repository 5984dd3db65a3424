#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for edgecert: system packages (only the missing ones) and ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have pebble || need+=(pebble)
have openssl || need+=(openssl)
have curl || need+=(curl)
have nginx || need+=(nginx)
have caddy || need+=(caddy)     # bench/bench_proxy.py, bench/bench_pageview.py: the edge next to Caddy
have haproxy || need+=(haproxy)
have docker-compose || need+=(docker-compose)
have systemd-analyze || need+=(systemd)
have gcc || need+=(gcc)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -f /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)   # HTTP/2 on the edge (edge/tls_edge/_edgeh2.c)
have chromium || need+=(chromium)
have wget || need+=(wget)
have git || need+=(git)
have gnutls-cli || need+=(gnutls-bin)
have node || need+=(nodejs)
have javac || need+=(default-jdk-headless)
have php || need+=(php-cli)
have h2load || need+=(nghttp2-client)
have go || need+=(golang-go)
have taskset || need+=(util-linux)
have knotd || need+=(knot)        # DNS-01 tests: the challenge zone's authoritative server (RFC 2136 + TSIG)
have unbound || need+=(unbound)   # DNS-01 tests: the resolver that follows the tenant's CNAME, as a CA's does
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || need+=(postgresql)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "edgecert needs Python >= 3.11" >&2; exit 1; }

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -E "^WARNING: Location|is ignored" || true
.venv/bin/python -c "import edge, acme_client, store" >/dev/null
if ! command -v edgecert >/dev/null 2>&1 || [ "$(command -v edgecert)" != "$PWD/.venv/bin/edgecert" ]; then
  echo "setup: done. To run 'edgecert' by name in this shell:  export PATH=\"$PWD/.venv/bin:\$PATH\"" >&2
fi
