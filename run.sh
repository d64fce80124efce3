#!/usr/bin/env bash
# One entry point for a fresh machine:  ./run.sh serve   or   ./run.sh test
# (and ./run.sh doctor [TOKEN]: which upstream step breaks, see the README)
# Creates .venv, installs the pinned requirements, then serves or tests.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

ensure_venv() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$1"
}

# What the tests need beyond Python, from Debian when missing (one apt-get update and one install
# for all of them; sudo only when not root). Each argument is COMMAND:PACKAGE.
#   node, npm       tests/test_node_openai.py drives the Node openai package (tests/node)
#   redis-server    the state store tests start their own on a free loopback port
#   chromium        tests/test_status_browser.py renders the status page in it (playwright
#                   never downloads a browser of its own)
ensure_apt_packages() {
    local sudo="" wanted=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || wanted+=("${pair#*:}")
    done
    [ ${#wanted[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "Installing ${wanted[*]} with apt-get..." >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
}

# The Node client's packages: npm ci only when the lock is new.
ensure_node_client() {
    local dir=tests/node
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json"; then
        (cd "$dir" && npm ci --silent --no-audit --no-fund)
        cp "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json"
    fi
}

case "${1:-}" in
serve)
    ensure_venv requirements.txt
    exec "$VENV/bin/gunicorn" -c gunicorn.conf.py app:app
    ;;
test)
    ensure_venv requirements-dev.txt
    ensure_apt_packages node:nodejs npm:npm redis-server:redis-server chromium:chromium
    ensure_node_client
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    shift
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
emulator)
    ensure_venv requirements.txt
    shift
    exec "$VENV/bin/python" -m kimi_emulator "$@"
    ;;
doctor)
    ensure_venv requirements.txt
    shift
    exec "$VENV/bin/python" -m kimi doctor "$@"
    ;;
*)
    echo "usage: ./run.sh serve | test [pytest args] | emulator [--port 9000]" \
        "| doctor [TOKEN] [--json] [--capture FILE]" >&2
    exit 2
    ;;
esac
