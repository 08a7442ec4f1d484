"""`lockwatch serve` and the standalone settings, without starting a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lockwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_serve_binds_to_localhost_by_default():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.store) == ("127.0.0.1", 8000, None)
    args = build_parser().parse_args(
        ["serve", "--store", "x.db", "--host", "0.0.0.0", "--port", "9"]
    )
    assert (args.host, args.port, args.store) == ("0.0.0.0", 9, "x.db")


def settings_in_a_fresh_process(**env: str) -> dict:
    code = (
        "import json, os, lockwatch.server.settings as s;"
        "print(json.dumps({'token': s.LOCKWATCH_DASHBOARD_TOKEN, 'secret': s.SECRET_KEY,"
        " 'hosts': s.ALLOWED_HOSTS, 'store': s.LOCKWATCH['STORE'], 'apps': s.INSTALLED_APPS,"
        " 'sessions': s.SESSION_ENGINE, 'dbs': s.DATABASES,"
        " 'env_token': os.environ['LOCKWATCH_TOKEN']}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKWATCH", "DJANGO"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_settings_make_a_random_token_and_keep_it_for_child_processes():
    a, b = settings_in_a_fresh_process(), settings_in_a_fresh_process()
    assert len(a["token"]) >= 24 and a["token"] != b["token"]
    assert a["env_token"] == a["token"]  # runserver's reloaded child reads the same one


def test_settings_take_the_token_from_the_environment_and_derive_the_secret():
    a = settings_in_a_fresh_process(LOCKWATCH_TOKEN="fixed", LOCKWATCH_STORE="/tmp/s.db")
    b = settings_in_a_fresh_process(LOCKWATCH_TOKEN="fixed")
    assert a["token"] == "fixed"
    assert a["secret"] == b["secret"] != "fixed"  # logins survive a restart with the same token
    assert a["store"] == "/tmp/s.db"


def test_settings_are_local_only_without_a_database():
    s = settings_in_a_fresh_process()
    assert s["hosts"] == ["127.0.0.1", "localhost", "[::1]"]
    assert s["apps"][0] == "daphne"  # so manage.py runserver is daphne's
    assert s["sessions"] == "django.contrib.sessions.backends.signed_cookies"
    assert s["dbs"] == {}
    assert settings_in_a_fresh_process(LOCKWATCH_HOST="0.0.0.0")["hosts"] == ["*"]
