#!/usr/bin/env bash
# README's screenshot of the dashboard mid-incident: runs the demo's phase 1 and takes the
# picture (Debian's Chromium, through Playwright) while the restock batch holds the lock.
#
#   bash scripts/screenshot.sh [OUTPUT.png]     (default: docs/dashboard.png)
#
# Needs what scripts/test.sh installs (.venv/py311 with playwright, /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/dashboard.png}
export LOCKWATCH_TOKEN=${LOCKWATCH_TOKEN:-screenshot-$RANDOM$RANDOM}
export DEMO_SECONDS=${DEMO_SECONDS:-20}
PORT=${DEMO_PORT:-8000}
LOG=$(mktemp)
bash scripts/demo.sh --keep >"$LOG" 2>&1 &
DEMO=$!
trap 'kill -INT $DEMO 2>/dev/null; wait $DEMO 2>/dev/null; rm -f "$LOG"' EXIT
.venv/py311/bin/python scripts/screenshot.py \
    "http://127.0.0.1:$PORT/?token=$LOCKWATCH_TOKEN&window=5m" "$OUT" || {
    echo "screenshot: failed; the demo said:" >&2
    tail -20 "$LOG" >&2
    exit 1
}
