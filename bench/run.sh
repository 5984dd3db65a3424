#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: install what the benchmark needs, then run it.
#
#   bash bench/run.sh --names 10000 --duration 10          # edge vs nginx
#   bash bench/run.sh --names 1000 --duration 5 --server nginx
#
# Installs (apt-get, only what is missing): gcc make libssl-dev (to build bench/loadgen against the
# system OpenSSL), nginx (the reference server), util-linux (taskset), python3-venv. If the
# project's .venv does not exist it creates it and installs the project into it (pip install -e .),
# which also provides `cryptography` (certificate generation) and the `edgecert` command.
# All other arguments go to bench/run.py (see `python bench/run.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [[ " $* " != *" --server edge "* ]] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    need+=(nginx)
fi
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
fi
if ((${#need[@]})); then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "run.sh: installing ${need[*]}" >&2
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "run.sh: creating .venv and installing the project (pip install -e .)" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q -e .
fi
PY="${PYTHON:-.venv/bin/python}"
make -s -C bench loadgen
exec "$PY" bench/run.py "$@"
