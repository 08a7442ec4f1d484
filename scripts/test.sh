#!/usr/bin/env bash
# The whole test suite, as README gives it and as CI runs it.
#   Python 3.11 + Django 5.2, and Python 3.13 + the newest Django: everything
#   (capture, dashboard, browser, Redis, gunicorn); ruff once.
#   Then, on Python 3.11 + Django 5.2 only, Django's own test suite (33 labels)
#   under Django's sqlite3 backend and under lockwatch's, compared test by test,
#   with a check that lockwatch's store lost nothing (scripts/django_suite.py;
#   about 2 minutes here; it fetches Django's source distribution once, into
#   .venv/django-src/). Skipped when arguments are given for pytest.
# Installs what it needs: Debian's chromium, redis-server and prometheus (as root, with
# apt-get), and two virtualenvs under .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)  # brings promtool (tests/test_metrics.py)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "missing: ${need_apt[*]}; run: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
fi

find_python() {  # find_python 3.13 -> a python3.13 executable
    local v=$1 p
    for p in "python$v" "$(command -v pyenv >/dev/null && pyenv root)/versions/$v"*/bin/python; do
        # pyenv's shims exist on PATH even for versions that are not selected.
        if "$p" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" \
            >/dev/null 2>&1; then
            echo "$p"
            return
        fi
    done
    echo "no Python $v found (pyenv install $v, or put python$v on PATH)" >&2
    return 1
}

venv() {  # venv DIR PYTHON PACKAGES...
    local dir=$1 py=$2
    shift 2
    if [ ! -x "$dir/bin/python" ]; then
        "$py" -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -e ".[dashboard,redis,test]" "$@" 2>&1 \
        | grep -v "^WARNING: Location" || true
    "$dir/bin/python" -c "import lockwatch" # fail here, not in the tests, if the install broke
}

py311=$(find_python 3.11)
py313=$(find_python 3.13)
# tblib: Django's parallel runner needs it to report a failure (scripts/django_suite.py).
venv .venv/py311 "$py311" "django>=5.2,<5.3" tblib
venv .venv/py313 "$py313" "django>=6"

.venv/py311/bin/ruff check lockwatch tests bench demo scripts
.venv/py311/bin/ruff format --check lockwatch tests bench demo scripts
# The stages' import contracts (pyproject's [tool.importlinter]) and the package's types.
.venv/py311/bin/lint-imports
.venv/py311/bin/mypy lockwatch --ignore-missing-imports

echo "== Python 3.13, $(.venv/py313/bin/python -c 'import django; print("Django", django.get_version())'): the whole suite"
.venv/py313/bin/python -m pytest tests -q "$@"
echo "== Python 3.11, $(.venv/py311/bin/python -c 'import django; print("Django", django.get_version())'): the whole suite"
.venv/py311/bin/python -m pytest tests -q "$@"
if (($#)); then
    echo "== Django's own tests under lockwatch: skipped (pytest arguments given);" \
        "run: .venv/py311/bin/python scripts/django_suite.py"
else
    echo "== Python 3.11, Django 5.2: Django's own tests, plain and under lockwatch's backend"
    .venv/py311/bin/python scripts/django_suite.py
fi
