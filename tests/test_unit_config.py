import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from lockwatch import conf
from tests.conftest import ROOT
from tests.project.shop.models import Item


def test_defaults_build(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCKWATCH_STORE", raising=False)
    cfg = conf.build({}, tmp_path)
    assert cfg.store == tmp_path / "lockwatch.sqlite3"
    assert cfg.capture_params is False


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"BUFFER_SIZE": 0}, "BUFFER_SIZE"),
        ({"BUFFER_SIZE": "big"}, "BUFFER_SIZE"),
        ({"CAPTURE_PARAMS": "yes"}, "CAPTURE_PARAMS"),
        ({"CALL_SITE_INCLUDE": "src"}, "CALL_SITE_INCLUDE"),
        ({"FLUSH_INTERVAL": -1}, "FLUSH_INTERVAL"),
    ],
)
def test_bad_values_are_named(user, message):
    with pytest.raises(conf.ConfigError, match=message):
        conf.build(user)


def test_misspelled_key_is_a_check_error_naming_it():
    with override_settings(LOCKWATCH={"STORE": "/tmp/x.sqlite3", "BUFER_SIZE": 10}):
        errors = [m for m in checks.run_checks(tags=["lockwatch"]) if m.id == "lockwatch.E002"]
    assert len(errors) == 1
    assert "'BUFER_SIZE'" in errors[0].msg
    assert "BUFFER_SIZE" in errors[0].hint


def test_store_on_the_watched_database_is_refused(tmp_path):
    from django.conf import settings

    name = settings.DATABASES["default"]["NAME"]
    with override_settings(LOCKWATCH={"STORE": name}):
        ids = [m.id for m in checks.run_checks(tags=["lockwatch"])]
    assert "lockwatch.E004" in ids


# -- Every bad value is a named check error, and capture turns itself off -----------------

NAN, INF = float("nan"), float("inf")

# (LOCKWATCH, the check id, the text that names the bad value)
BAD_SETTINGS = [
    pytest.param("x", "lockwatch.E001", "must be a dict", id="a-string"),
    pytest.param(["STORE"], "lockwatch.E001", "must be a dict", id="a-list"),
    pytest.param({"STORE": 123}, "lockwatch.E003", "'STORE'", id="store-int"),
    pytest.param({"STORE": "a\0b"}, "lockwatch.E003", "'STORE'", id="store-nul"),
    pytest.param({"PROJECT_ROOT": 5}, "lockwatch.E003", "'PROJECT_ROOT'", id="root-int"),
    pytest.param(
        {"CALL_SITE_INCLUDE": None}, "lockwatch.E003", "'CALL_SITE_INCLUDE'", id="incl-none"
    ),  # fmt: skip
    pytest.param(
        {"CALL_SITE_EXCLUDE": [1]}, "lockwatch.E003", "'CALL_SITE_EXCLUDE'", id="excl-int"
    ),  # fmt: skip
    pytest.param({"BUFFER_SIZE": NAN}, "lockwatch.E003", "'BUFFER_SIZE'", id="buffer-nan"),
    pytest.param({"SQL_MAX_LENGTH": INF}, "lockwatch.E003", "'SQL_MAX_LENGTH'", id="sql-inf"),
    pytest.param({"FLUSH_INTERVAL": INF}, "lockwatch.E003", "'FLUSH_INTERVAL'", id="flush-inf"),
    pytest.param({"FLUSH_INTERVAL": NAN}, "lockwatch.E003", "'FLUSH_INTERVAL'", id="flush-nan"),
    pytest.param({"FLUSH_INTERVAL": 1e300}, "lockwatch.E003", "'FLUSH_INTERVAL'", id="flush-huge"),
    pytest.param({"SLOW_QUERY_MS": NAN}, "lockwatch.E003", "'SLOW_QUERY_MS'", id="slow-nan"),
    pytest.param(
        {"ATTRIBUTION_GRACE": NAN}, "lockwatch.E003", "'ATTRIBUTION_GRACE'", id="grace-nan"
    ),  # fmt: skip
    pytest.param(
        {"RETENTION_MAX_ROWS": 10**30}, "lockwatch.E003", "'RETENTION_MAX_ROWS'", id="rows-huge"
    ),  # fmt: skip
    pytest.param(
        {"RETENTION_MAX_AGE": NAN}, "lockwatch.E003", "'RETENTION_MAX_AGE'", id="age-nan"
    ),  # fmt: skip
    pytest.param(
        {"CAPTURE_QUERIES": []}, "lockwatch.E003", "'CAPTURE_QUERIES'", id="queries-list"
    ),  # fmt: skip
    pytest.param({"CHANNEL_LAYER": 5}, "lockwatch.E003", "'CHANNEL_LAYER'", id="layer-int"),
    pytest.param({"ACCESS_CHECK": print}, "lockwatch.E003", "'ACCESS_CHECK'", id="access-func"),
]


@pytest.mark.parametrize(("user", "check_id", "named"), BAD_SETTINGS)
def test_a_bad_value_is_a_named_check_error_and_turns_capture_off(
    user, check_id, named, tmp_path, watched
):
    from django.apps import apps

    from lockwatch import pipeline

    pipeline.shutdown()
    pipeline.reset()
    try:
        with override_settings(LOCKWATCH=user):  # runs lockwatch's setting_changed handler
            conf.reset()
            apps.get_app_config("lockwatch").ready()  # what django.setup() runs: no raise
            found = [m for m in checks.run_checks(tags=["lockwatch"]) if m.id == check_id]
            assert found and named in found[0].msg
            assert found[0].level == checks.ERROR
            cfg = conf.get_config()
            assert cfg.enabled is False
            db = watched()  # a connection opened now, and written through
            Item.objects.using(db).create(name="x")
            assert Item.objects.using(db).count() == 1
            assert pipeline.current_flusher() is None  # nothing was captured, so no flusher runs
            assert pipeline.counters.capture_errors == 0  # off, not failing per connection
    finally:
        pipeline.shutdown()
        pipeline.reset()
        conf.reset()


def test_every_bad_value_is_named_not_only_the_first():
    with override_settings(LOCKWATCH={"BUFFER_SIZE": NAN, "FLUSH_INTERVAL": INF, "STORE": 1}):
        found = [m.msg for m in checks.run_checks(tags=["lockwatch"]) if m.id == "lockwatch.E003"]
    conf.reset()
    assert len(found) == 3
    for key in ("BUFFER_SIZE", "FLUSH_INTERVAL", "STORE"):
        assert sum(f"'{key}'" in msg for msg in found) == 1


def test_good_values_still_build(tmp_path):
    cfg = conf.build(
        {
            "STORE": tmp_path / "s.sqlite3",  # a Path, as BASE_DIR / "..." gives
            "BUFFER_SIZE": 10.0,
            "SQL_MAX_LENGTH": 100,
            "RETENTION_MAX_AGE": None,
            "RETENTION_MAX_ROWS": None,
            "CAPTURE_QUERIES": True,
            "CALL_SITE_INCLUDE": (tmp_path / "src", "lib"),
            "SLOW_QUERY_MS": 0,
        }
    )
    assert cfg.store == tmp_path / "s.sqlite3"
    assert (cfg.buffer_size, type(cfg.buffer_size)) == (10, int)
    assert cfg.capture_queries == "all"
    assert cfg.call_site_include[0] == str(tmp_path / "src")
    assert cfg.retention_max_rows is None


def test_unknown_keys_of_any_type_are_named():
    with override_settings(LOCKWATCH={1: 2, "BUFER_SIZE": 3}):
        found = [m.msg for m in checks.run_checks(tags=["lockwatch"]) if m.id == "lockwatch.E002"]
    conf.reset()
    assert found == [
        "LOCKWATCH has an unknown key 'BUFER_SIZE'.",
        "LOCKWATCH has an unknown key 1.",
    ]


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=5),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(conf.DEFAULTS)), value=_values)
def test_any_value_builds_or_is_a_config_error(key, value):
    try:
        conf.build({key: value})
    except conf.ConfigError as exc:
        assert all(key in problem for problem in exc.problems), exc.problems


SETUP_AND_CHECK = """
import django, json, sys
django.setup()  # must not raise, whatever LOCKWATCH holds
from django.core import checks
from lockwatch import conf
found = [m for m in checks.run_checks() if m.id.startswith("lockwatch.E")]
print(json.dumps({"enabled": conf.get_config().enabled, "found": [[m.id, m.msg] for m in found]}))
"""


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('"x"', "must be a dict"),
        ('{"STORE": 123}', "'STORE'"),
        ('{"FLUSH_INTERVAL": float("nan")}', "'FLUSH_INTERVAL'"),
    ],  # fmt: skip
)
def test_django_setup_survives_a_bad_value_in_a_fresh_process(tmp_path, value, named):
    (tmp_path / "badsettings.py").write_text(
        'SECRET_KEY = "x"\nINSTALLED_APPS = ["lockwatch"]\nDATABASES = {"default": '
        '{"ENGINE": "lockwatch.db.backends.sqlite3", "NAME": "db.sqlite3"}}\n'
        f"LOCKWATCH = {value}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKWATCH", "DJANGO"))}
    # ROOT too, so the child imports the lockwatch under test, not another install.
    env.update(DJANGO_SETTINGS_MODULE="badsettings", PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    done = subprocess.run(
        [sys.executable, "-c", SETUP_AND_CHECK], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["enabled"] is False
    assert len(out["found"]) == 1 and named in out["found"][0][1]
    assert "capture is off" in done.stderr  # logged once, for processes that run no checks


def test_a_logged_failure_names_the_file(caplog):
    from lockwatch.pipeline import Counters

    try:
        Path("/proc/x/store").mkdir(parents=True)
    except OSError as exc:
        error = exc
    with caplog.at_level("WARNING", logger="lockwatch"):
        Counters().log_once("store write", error)
    (record,) = caplog.records
    assert "store write failed: FileNotFoundError: " in record.getMessage()
    assert "'/proc/x'" in record.getMessage()
