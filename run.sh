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

# tests/test_node_openai.py drives the Node openai package (tests/node): Node and npm from
# Debian when missing (sudo only when not root), then npm ci only when the lock is new.
ensure_node_client() {
    local sudo="" dir=tests/node
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "Installing Node.js and npm with apt-get..." >&2
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json"; then
        (cd "$dir" && npm ci --silent --no-audit --no-fund)
        cp "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json"
    fi
}

# The state store tests start their own redis-server on a free loopback port (never the
# machine's Redis): the Debian package when missing, sudo only when not root.
ensure_redis_server() {
    local sudo=""
    command -v redis-server >/dev/null && return
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "Installing redis-server with apt-get..." >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

# tests/test_status_browser.py renders the status page in Debian's chromium (driven by
# playwright, which never downloads a browser of its own): the package when missing.
ensure_chromium() {
    local sudo=""
    command -v chromium >/dev/null && return
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "Installing chromium with apt-get..." >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

case "${1:-}" in
serve)
    ensure_venv requirements.txt
    exec "$VENV/bin/gunicorn" -c gunicorn.conf.py app:app
    ;;
test)
    ensure_venv requirements-dev.txt
    ensure_node_client
    ensure_redis_server
    ensure_chromium
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
