#!/usr/bin/env bash
# One entry point for a fresh machine:  ./run.sh serve   or   ./run.sh test
# Creates .venv, installs the pinned requirements, then serves or tests.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

ensure_venv() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$1"
}

case "${1:-}" in
serve)
    ensure_venv requirements.txt
    exec "$VENV/bin/gunicorn" -c gunicorn.conf.py app:app
    ;;
test)
    ensure_venv requirements-dev.txt
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
*)
    echo "usage: ./run.sh serve | test [pytest args] | emulator [--port 9000]" >&2
    exit 2
    ;;
esac
