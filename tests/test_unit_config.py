import pytest
from django.core import checks
from django.test import override_settings

from lockwatch import conf


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
