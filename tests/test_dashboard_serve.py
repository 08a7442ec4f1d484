"""`lockwatch serve` and the standalone settings, without starting a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
        " 'sessions': s.SESSION_ENGINE, 'session_path': s.SESSION_FILE_PATH,"
        " 'dbs': s.DATABASES, 'env_token': os.environ['LOCKWATCH_TOKEN'],"
        " 'trusted': s.CSRF_TRUSTED_ORIGINS, 'proxy': s.SECURE_PROXY_SSL_HEADER}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKWATCH", "DJANGO"))}
    # Never the user's own state directory.
    env.setdefault("LOCKWATCH_STATE_DIR", tempfile.mkdtemp(prefix="lockwatch-state-"))
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_settings_make_a_random_token_and_keep_it_for_child_processes():
    a, b = settings_in_a_fresh_process(), settings_in_a_fresh_process()
    assert len(a["token"]) >= 24 and a["token"] != b["token"]
    assert a["env_token"] == a["token"]  # runserver's reloaded child reads the same one


def test_settings_take_the_token_and_the_store_from_the_environment():
    a = settings_in_a_fresh_process(LOCKWATCH_TOKEN="fixed", LOCKWATCH_STORE="/tmp/s.db")
    assert a["token"] == "fixed"
    assert a["store"] == "/tmp/s.db"


def test_the_secret_key_is_kept_by_the_server_not_derived_from_the_token(tmp_path):
    state = tmp_path / "state"
    a = settings_in_a_fresh_process(LOCKWATCH_TOKEN="fixed", LOCKWATCH_STATE_DIR=str(state))
    b = settings_in_a_fresh_process(LOCKWATCH_TOKEN="other", LOCKWATCH_STATE_DIR=str(state))
    c = settings_in_a_fresh_process(
        LOCKWATCH_TOKEN="fixed", LOCKWATCH_STATE_DIR=str(tmp_path / "elsewhere")
    )
    assert a["secret"] == b["secret"]  # kept across restarts (logins survive them)
    assert a["secret"] != c["secret"]  # not computable from the token
    assert "fixed" not in a["secret"] and len(a["secret"]) >= 50
    # Only the user who runs the dashboard can read the secret and the sessions.
    assert a["sessions"] == "django.contrib.sessions.backends.file"
    assert Path(a["session_path"]).parent == state
    for path in state.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path
    assert state.stat().st_mode & 0o077 == 0


def test_settings_are_local_only_without_a_database():
    s = settings_in_a_fresh_process()
    assert s["hosts"] == ["127.0.0.1", "localhost", "[::1]"]
    assert s["apps"][0] == "daphne"  # so manage.py runserver is daphne's
    assert s["dbs"] == {}
    assert s["proxy"] is None and s["trusted"] == []
    assert settings_in_a_fresh_process(LOCKWATCH_HOST="0.0.0.0")["hosts"] == ["*"]


def test_settings_behind_a_proxy():
    s = settings_in_a_fresh_process(
        LOCKWATCH_PROXY_HEADERS="1", LOCKWATCH_PUBLIC_URL="https://lockwatch.example.com"
    )
    assert s["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert s["trusted"] == ["https://lockwatch.example.com"]
    assert "lockwatch.example.com" in s["hosts"]


def test_serve_takes_the_proxy_options():
    args = build_parser().parse_args(
        ["serve", "--proxy-headers", "--public-url", "https://lockwatch.example.com"]
    )
    assert args.proxy_headers is True and args.public_url == "https://lockwatch.example.com"
    assert build_parser().parse_args(["serve"]).proxy_headers is False
