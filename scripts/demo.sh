#!/usr/bin/env bash
# The lockwatch demo, from a fresh clone: a small shop (demo/) fails with "database is
# locked" under load while lockwatch watches; then the same load runs again with the
# doctor's advice applied, and the two are compared.
#
#   bash scripts/demo.sh [--keep] [--phase2-only] [--host ADDRESS]
#
#   --keep          after the phases, keep the dashboard up until Ctrl-C
#   --phase2-only   run only phase 2 (the doctor's advice), not phase 1 (Django's defaults)
#   --host ADDRESS  the dashboard's bind address (default 127.0.0.1; the shop itself
#                   always listens on 127.0.0.1 only)
#
# Environment: DEMO_SECONDS (15, per phase), DEMO_CLIENTS (10), DEMO_WORKERS (4),
# DEMO_PORT (8000, the dashboard), DEMO_APP_PORT (8001, the shop), LOCKWATCH_TOKEN
# (the dashboard's token; made up and printed when unset), DEMO_REINSTALL=1 (reinstall
# the venv's packages).
#
# Phase 1: Django's defaults (rollback journal, deferred transactions), the password
#   hashed inside the transaction, and the restock batch in one long atomic().
# Phase 2: WAL, "transaction_mode": "IMMEDIATE", the hashing moved out of the
#   transaction and the batch cut into short transactions (DEMO_FIXED=1).
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
PHASE1=1
HOST=127.0.0.1
while (($#)); do
    case $1 in
        --keep) KEEP=1 ;;
        --phase2-only) PHASE1=0 ;;
        --host)
            HOST=${2:?--host needs an address}
            shift
            ;;
        --host=*) HOST=${1#--host=} ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "demo.sh: unknown option $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done

SECONDS_PER_PHASE=${DEMO_SECONDS:-15}
CLIENTS=${DEMO_CLIENTS:-10}
WORKERS=${DEMO_WORKERS:-4}
PORT=${DEMO_PORT:-8000}
APP_PORT=${DEMO_APP_PORT:-8001}
for n in "$SECONDS_PER_PHASE" "$CLIENTS" "$WORKERS" "$PORT" "$APP_PORT"; do
    if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
        echo "demo: expected a whole number, got '$n'" >&2
        exit 2
    fi
done
VENV=.venv/demo
PY=$VENV/bin/python
STATE=$PWD/.demo

# -- processes: every child is tracked, and stopped on Ctrl-C, on an error and at exit --

DASH_PID="" APP_PID="" LOAD_PID="" BATCH_PID=""

# spawn VAR COMMAND...: run COMMAND in the background and keep its pid in VAR. It gets
# its own session, so a Ctrl-C reaches only this script, which then stops the children
# in order and gracefully (gunicorn on SIGINT would drop requests mid-flight).
spawn() {
    local var=$1
    shift
    if command -v setsid >/dev/null; then
        setsid "$@" &
    else
        "$@" &
    fi
    printf -v "$var" '%s' "$!"
}

now() { # seconds since the epoch; bash 5 gives microseconds
    printf '%s\n' "${EPOCHREALTIME:-$(date +%s)}"
}

stop() { # stop PID: TERM, then KILL if it is still there after 10 s
    local pid=$1 _
    [ -n "$pid" ] || return 0
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    trap - INT TERM HUP EXIT
    # The load and the batch first, then the shop (gunicorn stops its own workers,
    # which flush their last events at exit), then the dashboard.
    stop "$LOAD_PID"
    stop "$BATCH_PID"
    stop "$APP_PID"
    stop "$DASH_PID"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP # the terminal closed: the children are in their own sessions

# -- setup: a venv with lockwatch (editable), its dashboard, and gunicorn -----------

find_python311() {
    local p
    for p in python3.11 "$(command -v pyenv >/dev/null && pyenv root)/versions/3.11"*/bin/python; do
        if command -v "$p" >/dev/null 2>&1 || [ -x "$p" ]; then
            echo "$p"
            return
        fi
    done
    echo "demo: no Python 3.11 found (pyenv install 3.11, or put python3.11 on PATH)" >&2
    return 1
}

if [ ! -x "$PY" ]; then
    echo "demo: creating $VENV"
    py311=$(find_python311)
    "$py311" -m venv "$VENV"
    DEMO_REINSTALL=1
fi
# Installed once (the Dockerfile does it at build time); again only on request.
installed() { "$PY" -c "import lockwatch, gunicorn, daphne, channels, plotly" 2>/dev/null; }
if [ "${DEMO_REINSTALL:-0}" = 1 ] || ! installed; then
    echo "demo: installing lockwatch and gunicorn into $VENV"
    "$PY" -m pip install -q --disable-pip-version-check -e ".[dashboard,redis]" gunicorn 2>&1 \
        | grep -v "^WARNING: Location" || true
    installed || { echo "demo: the install failed" >&2; exit 1; }
fi

# A fresh shop and a fresh store on every run.
mkdir -p "$STATE"
export DEMO_DB=$STATE/demo.sqlite3
export LOCKWATCH_STORE=$STATE/lockwatch.sqlite3
rm -f "$DEMO_DB" "$DEMO_DB"-* "$LOCKWATCH_STORE" "$LOCKWATCH_STORE"-* "$STATE"/phase*.json
export LOCKWATCH_TOKEN=${LOCKWATCH_TOKEN:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')}

SHOWN=$HOST
case $HOST in 0.0.0.0 | "::") SHOWN=127.0.0.1 ;; esac
# The last 5 minutes, in 1 s buckets: the demo's two phases take about a minute.
URL="http://$SHOWN:$PORT/?token=$LOCKWATCH_TOKEN&window=5m"

listening() { # listening HOST PORT: does something accept connections there?
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
for p in "$PORT" "$APP_PORT"; do
    if listening 127.0.0.1 "$p"; then
        echo "demo: port $p is already in use (set DEMO_PORT or DEMO_APP_PORT)" >&2
        exit 1
    fi
done

# -- the dashboard --------------------------------------------------------------------

spawn DASH_PID "$VENV/bin/lockwatch" serve --store "$LOCKWATCH_STORE" --host "$HOST" --port "$PORT" \
    >"$STATE/dashboard.log" 2>&1
for _ in $(seq 200); do
    listening "$SHOWN" "$PORT" && break
    if ! kill -0 "$DASH_PID" 2>/dev/null; then
        cat "$STATE/dashboard.log" >&2
        echo "demo: the dashboard did not start" >&2
        exit 1
    fi
    sleep 0.1
done
echo "demo: the dashboard is at $URL (log: $STATE/dashboard.log)"

# -- one phase ----------------------------------------------------------------------

# run_phase N LABEL FIXED: the shop under gunicorn, the load, and the batch; then
# records the phase's time window in $STATE/phaseN.window.
run_phase() {
    local n=$1 label=$2 fixed=$3 t0 t1 rc=0
    export DEMO_FIXED=$fixed
    echo
    echo "== Phase $n: $label"
    # migrate also opens the database once before the load: in phase 2 that first
    # connection's init_command switches the file to WAL while nothing else runs.
    "$PY" demo/manage.py migrate -v0
    t0=$(now)
    spawn APP_PID "$PY" -m gunicorn --chdir demo demoproject.wsgi -w "$WORKERS" \
        -b "127.0.0.1:$APP_PORT" --graceful-timeout 5 --log-level warning
    spawn LOAD_PID "$PY" demo/load.py --port "$APP_PORT" --clients "$CLIENTS" \
        --seconds "$SECONDS_PER_PHASE" --json "$STATE/phase$n.json"
    # The batch starts once the load is under way, as a nightly job meets daytime traffic.
    "$PY" demo/load.py --port "$APP_PORT" --wait-only
    sleep $((SECONDS_PER_PHASE / 5 + 1))
    spawn BATCH_PID "$PY" demo/manage.py restock
    wait "$BATCH_PID" || echo "demo: the restock batch failed (phase 1 shows why)"
    BATCH_PID=""
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    stop "$APP_PID"
    APP_PID=""
    t1=$(now)
    echo "$t0 $t1" >"$STATE/phase$n.window"
    return "$rc"
}

PHASES=()
if ((PHASE1)); then
    run_phase 1 "Django's defaults" 0
    read -r t0 t1 <"$STATE/phase1.window"
    PHASES+=(--phase "phase 1: Django defaults" "$STATE/phase1.json" "$t0" "$t1")
    echo
    echo "== What the doctor says about phase 1 (lockwatch doctor)"
    "$VENV/bin/lockwatch" doctor --store "$LOCKWATCH_STORE" || true
fi
run_phase 2 "the doctor's advice" 1
read -r t0 t1 <"$STATE/phase2.window"
PHASES+=(--phase "phase 2: the doctor's advice" "$STATE/phase2.json" "$t0" "$t1")

echo
echo "== Before and after"
"$PY" demo/report.py --store "$LOCKWATCH_STORE" "${PHASES[@]}"
echo
echo "The dashboard: $URL"
echo "(busy errors by class, the write-lock timeline: who waited, and who held the lock)"
echo "The events as CSV: $VENV/bin/lockwatch export --store $LOCKWATCH_STORE"

if ((KEEP)); then
    echo "demo: the dashboard stays up; Ctrl-C to stop"
    wait "$DASH_PID" || true
    DASH_PID=""
fi
