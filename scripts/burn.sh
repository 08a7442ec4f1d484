#!/usr/bin/env bash
# The suite under a parallel CPU burner: timing checks must hold on a loaded machine.
#   bash scripts/burn.sh [RUNS] [PYTEST ARGS...]     (default: 5 runs of the whole suite)
# One busy loop per core runs for the whole time; each run is pytest on Python 3.13.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
burners=()
for _ in $(seq "$(nproc)"); do
    python3 -c "while True: pass" &
    burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null || true' EXIT
for i in $(seq "$runs"); do
    echo "== run $i of $runs, $(nproc) burners"
    .venv/py313/bin/python -m pytest -q -p no:cacheprovider "$@"
done
echo "== $runs runs passed under load"
