"""Call sites that are the user's code, user stacks, and contexts of commands (issue 12)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings

from lockwatch.capture import callsite
from lockwatch.capture.context import _program_label
from tests.conftest import ROOT, line_of
from tests.project.shop import decorated
from tests.project.shop.models import Item

DECORATED = ROOT / "tests" / "project" / "shop" / "decorated.py"
COMMANDS = ROOT / "tests" / "project" / "shop" / "management" / "commands"
REL = "tests/project/shop/decorated.py"


@pytest.fixture(scope="module")
def default_db() -> None:
    call_command("migrate", verbosity=0)


@pytest.fixture
def urls(default_db) -> Iterator[None]:
    with override_settings(ROOT_URLCONF="tests.project.decorated_urls"):
        yield


@pytest.fixture
def atomic_requests() -> Iterator[None]:
    settings = connections["default"].settings_dict
    settings["ATOMIC_REQUESTS"] = True
    try:
        yield
    finally:
        settings["ATOMIC_REQUESTS"] = False


@pytest.fixture
def restore_callsite() -> Iterator[None]:
    saved = callsite.configuration()
    yield
    callsite.configure(*saved)


def _site(marker: str, function: str) -> str:
    return f"{REL}:{line_of(DECORATED, marker)} in {function}"


def _transactions(lw, context: str) -> list[dict]:
    return [t for t in lw.events(kind="transaction") if t["context"] == context]


# -- decorated views and functions -------------------------------------------------


def test_atomic_view_transaction_is_the_view_not_contextlib(lw, urls):
    assert Client().get("/atomic/").status_code == 200
    (txn,) = _transactions(lw, "request:GET /atomic/")
    # Was ".../contextlib.py:78 in inner": the view's own definition (its first decorator).
    assert txn["call_site"] == _site("# ATOMIC-VIEW", "atomic_view")
    assert txn["lock_call_site"] == _site("ATOMIC-VIEW-WRITE", "atomic_view")


def test_csrf_exempt_view_under_atomic_requests(lw, urls, atomic_requests):
    assert Client().post("/csrf/").status_code == 200
    (txn,) = _transactions(lw, "request:POST /csrf/")
    # Was "django/views/decorators/csrf.py:64 in _view_wrapper".
    assert txn["call_site"] == _site("CSRF-VIEW", "csrf_view")


def test_login_required_view_under_atomic_requests(lw, urls, atomic_requests):
    from django.contrib.auth.models import User

    user = User.objects.filter(username="callsites").first() or User.objects.create_user(
        "callsites", password="x"
    )
    client = Client()
    client.force_login(user)
    assert client.get("/login/").status_code == 200
    (txn,) = _transactions(lw, "request:GET /login/")
    assert txn["call_site"] == _site("LOGIN-VIEW", "login_view")


def test_class_based_view_under_atomic_requests(lw, urls, atomic_requests):
    assert Client().get("/class/").status_code == 200
    (txn,) = _transactions(lw, "request:GET /class/")
    assert txn["call_site"] == _site("CLASS-VIEW", "get")


def test_atomic_function_transaction_is_the_function(lw, default_db):
    decorated.atomic_function()
    here = "tests/test_callsites.py"
    (txn,) = [t for t in lw.events(kind="transaction") if t["call_site"].startswith(REL)]
    assert txn["call_site"] == _site("# ATOMIC-FUNCTION", "atomic_function")
    assert txn["lock_call_site"] == _site("ATOMIC-FUNCTION-WRITE", "atomic_function")
    assert not [t for t in lw.events(kind="transaction") if t["call_site"].startswith(here)]


def test_of_function_unwraps_decorators_and_refuses_library_code():
    from django.contrib.auth import views as auth_views

    assert callsite.format(callsite.of_function(decorated.csrf_view)) == _site(
        "CSRF-VIEW", "csrf_view"
    )
    # Wrapped twice: login_required(csrf_exempt(...)) and an atomic() wrapper on top.
    from django.contrib.auth.decorators import login_required
    from django.db import transaction

    twice = transaction.atomic(login_required(decorated.csrf_view))
    assert callsite.format(callsite.of_function(twice)) == _site("CSRF-VIEW", "csrf_view")
    assert callsite.of_function(auth_views.LoginView.as_view()) is None  # all Django
    assert callsite.of_function(len) is None


# -- management commands and their contexts ----------------------------------------


def _child_env(store: Path) -> dict[str, str]:
    # PYTEST_CURRENT_TEST is inherited on purpose: a child of a test is not the test.
    return {**os.environ, "LOCKWATCH_STORE": str(store), "PYTHONPATH": str(ROOT)}


def _store_rows(store: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(store)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_python_m_django_atomic_command(tmp_path, default_db):
    store = tmp_path / "store.sqlite3"
    subprocess.run(
        [sys.executable, "-m", "django", "atomic_batch", "--settings=tests.project.settings"],
        cwd=ROOT, env=_child_env(store), check=True, timeout=120,
    )  # fmt: skip
    (txn,) = _store_rows(store, "SELECT * FROM events WHERE kind = 'transaction'")
    assert txn["context"] == "command:atomic_batch"  # was program:django
    rel = "tests/project/shop/management/commands/atomic_batch.py"
    batch = COMMANDS / "atomic_batch.py"
    # Was manage.py's line (or none): the decorated handle().
    assert txn["call_site"] == f"{rel}:{line_of(batch, 'ATOMIC-HANDLE')} in handle"
    assert txn["lock_call_site"] == f"{rel}:{line_of(batch, 'ATOMIC-HANDLE-WRITE')} in handle"


SCRIPT = """
import django

django.setup()

from django.core.management import call_command

from tests.project.shop.models import Item

Item.objects.create(name="script-before")  # SCRIPT-BEFORE
call_command("nested_write")
Item.objects.create(name="script-after")  # SCRIPT-AFTER
"""


def test_call_command_from_a_script_nests_and_restores(tmp_path, default_db):
    store = tmp_path / "store.sqlite3"
    script = tmp_path / "nightly.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**_child_env(store), "DJANGO_SETTINGS_MODULE": "tests.project.settings"}
    subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, check=True, timeout=120)
    rows = _store_rows(
        store, "SELECT call_site, context FROM events WHERE kind = 'query' ORDER BY id"
    )
    got = [(r["call_site"].rsplit("/", 1)[-1], r["context"]) for r in rows]
    nested = COMMANDS / "nested_write.py"
    write_one = COMMANDS / "write_one.py"
    assert got == [
        (f"nightly.py:{line_of(script, 'SCRIPT-BEFORE')} in <module>", "program:nightly.py"),
        (f"nested_write.py:{line_of(nested, 'NESTED-BEFORE')} in handle", "command:nested_write"),
        (f"write_one.py:{line_of(write_one, 'WRITE-LINE')} in handle", "command:write_one"),
        (f"nested_write.py:{line_of(nested, 'NESTED-AFTER')} in handle", "command:nested_write"),
        (f"nightly.py:{line_of(script, 'SCRIPT-AFTER')} in <module>", "program:nightly.py"),
    ]


def test_call_command_in_a_test_keeps_the_test_label(lw, default_db):
    call_command("write_one")
    (query,) = [q for q in lw.events(kind="query") if q["stmt_class"] == "write"]
    assert query["context"] == (
        "test:tests/test_callsites.py::test_call_command_in_a_test_keeps_the_test_label"
    )


def test_call_command_under_a_tag_keeps_the_tag_and_commands_nest(lw, default_db):
    import lockwatch
    from lockwatch.capture.context import CURRENT, Context, bind, command_started, restore

    with lockwatch.tag("job:nightly") as tag:
        call_command("write_one")
        assert CURRENT.get() is tag
    (query,) = [q for q in lw.events(kind="query") if q["stmt_class"] == "write"]
    assert query["context"] == "job:nightly"

    class Command:  # as a command module NAME defines it
        __module__ = "app.management.commands.outer"

    with bind(Context(label="command:outer")) as outer:
        token = command_started(Command())
        assert CURRENT.get() is not outer and CURRENT.get().label == "command:outer"
        restore(token)
        assert CURRENT.get() is outer


def test_program_labels():
    assert _program_label(["/srv/venv/lib/python3.11/site-packages/django/__main__.py",
                           "migrate", "--noinput"]) == "command:migrate"  # fmt: skip
    assert _program_label(["/x/django/__main__.py"]) == "program:django-admin"
    assert _program_label(["/srv/venv/bin/django-admin", "shell"]) == "command:shell"
    assert _program_label(["/x/mypkg/__main__.py", "run"]) == "program:mypkg"
    assert _program_label(["-c"]) == "program:-c"


# -- what is library code ----------------------------------------------------------

SHIM = """\
#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from gunicorn.app.wsgiapp import run
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(run())
"""

USER_SCRIPT = """\
import sys

def main():
    return 0

sys.exit(main())
"""


def _code(path: Path) -> object:
    return compile(path.read_text(), str(path), "exec")


# restore_callsite before monkeypatch: sys.prefix is put back before the configuration.
def test_console_scripts_under_a_prefix_outside_the_project_are_library(
    tmp_path, restore_callsite, monkeypatch
):
    project = tmp_path / "project"
    (project / "bin").mkdir(parents=True)
    venv_bin = tmp_path / "venv" / "bin"  # ../venv, beside the project
    venv_bin.mkdir(parents=True)
    (venv_bin / "gunicorn").write_text(SHIM.format(python=venv_bin / "python"))
    (venv_bin / "myjob").write_text(USER_SCRIPT)  # not a shim, but under the prefix
    (project / "bin" / "myjob").write_text(USER_SCRIPT)  # the user's own script
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    callsite.configure(str(project))

    assert callsite._classify(_code(venv_bin / "gunicorn")) is True
    assert callsite._classify(_code(venv_bin / "myjob")) is True
    assert callsite._classify(_code(project / "bin" / "myjob")) is False

    # A shim outside every prefix (pip install --user, pipx) is found by its shape.
    elsewhere = tmp_path / "home" / ".local-bin"
    elsewhere.mkdir(parents=True)
    (elsewhere / "gunicorn").write_text(SHIM.format(python="/usr/bin/python3"))
    assert callsite._classify(_code(elsewhere / "gunicorn")) is True


def test_a_frame_in_a_shim_is_never_the_call_site(tmp_path, restore_callsite, monkeypatch):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    shim = venv_bin / "gunicorn"
    shim.write_text("found = find(1)\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    callsite.configure(str(tmp_path / "project"))
    namespace = {"find": callsite.find, "__name__": "__main__"}
    exec(_code(shim), namespace)
    # The shim is library; above it is this test, the first user frame.
    assert namespace["found"][0] == __file__
    assert namespace["found"][2] == "test_a_frame_in_a_shim_is_never_the_call_site"


def test_paths_under_the_project_root_are_relative_through_symlinks(tmp_path, restore_callsite):
    real = tmp_path / "real"
    (real / "shop").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    callsite.configure(str(real))
    assert callsite.format((str(link / "shop" / "views.py"), 3, "f")) == "shop/views.py:3 in f"
    callsite.configure(str(link))
    assert callsite.format((str(real / "shop" / "views.py"), 3, "f")) == "shop/views.py:3 in f"
    outside = tmp_path / "elsewhere.py"
    assert callsite.format((str(outside), 1, "g")) == f"{outside}:1 in g"
    # A prefix of the root's name is not under it.
    sibling = tmp_path / "real2" / "x.py"
    assert callsite.format((str(sibling), 1, "h")) == f"{sibling}:1 in h"


# -- user stacks -------------------------------------------------------------------


def test_user_stack_names_the_view_that_called_a_shared_helper(lw, urls):
    from django.db import connection

    stacks: list[tuple[str | None, str | None, str | None]] = []

    def record(execute, sql, params, many, context):
        # Runs inside Django's execute path, as capture does: depth 2 skips this frame.
        if sql.startswith("INSERT"):
            stacks.append(
                (
                    callsite.format(callsite.find(2)),
                    callsite.format_stack(callsite.user_stack(2)),
                    callsite.format_stack(callsite.user_stack(2, stop=frozenset())),
                )
            )
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert Client().get("/checkout/").status_code == 200
        assert Client().get("/refund/").status_code == 200
    (found, checkout, checkout_all), (_, refund, _) = stacks
    charge = _site("CHARGE-WRITE", "charge")
    assert found == charge  # what find() gives: the helper only
    assert checkout == f"{charge} < {_site('CHECKOUT-CALL', 'checkout')}"
    assert refund == f"{charge} < {_site('REFUND-CALL', 'refund')}"
    # The stack ends at the view: below Django's handler are middleware and the server
    # (here the test client, called from this test, which a walk to the bottom finds).
    here = line_of(Path(__file__), 'get("/checkout/").status_' + "code")
    test = "test_user_stack_names_the_view_that_called_a_shared_helper"
    assert checkout_all == f"{checkout} < tests/test_callsites.py:{here} in {test}"


def _nest(n: int, fn):
    return fn() if n == 0 else _nest(n - 1, fn)


def test_user_stack_shape_limit_and_agreement_with_find():
    stack = _nest(8, lambda: callsite.user_stack(1))
    assert len(stack) == callsite.STACK_LIMIT == 5
    assert stack[0][2] == "<lambda>"
    assert [s[2] for s in stack[1:]] == ["_nest"] * 4
    # Called from one line of one frame, find() and user_stack()[0] are the same site.
    found, short = _nest(3, lambda: (callsite.find(1), callsite.user_stack(1, limit=2)))
    assert short[0] == found and len(short) == 2
    (only,) = callsite.user_stack(1, limit=1)
    assert only[2] == "test_user_stack_shape_limit_and_agreement_with_find"
    assert callsite.format_stack(()) is None
    assert callsite.user_stack(10_000) == ()
    text = callsite.format_stack(stack[:2])
    assert text == " < ".join(callsite.format(s) for s in stack[:2])


def test_user_stack_at_the_begin_of_a_decorated_function(lw, default_db):
    from django.db import connection

    seen: list[tuple] = []

    def record(execute, sql, params, many, context):
        if sql.startswith(("BEGIN", "INSERT")):
            seen.append((sql.split()[0], callsite.user_stack(2)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        decorated.atomic_function()  # BEGIN-STACK-CALL
    caller = f"tests/test_callsites.py:{line_of(Path(__file__), '# BEGIN-' + 'STACK-CALL')} in "
    test = "test_user_stack_at_the_begin_of_a_decorated_function"
    begin = _site("# ATOMIC-FUNCTION", "atomic_function")
    write = _site("ATOMIC-FUNCTION-WRITE", "atomic_function")
    stacks = {verb: callsite.format_stack(stack) for verb, stack in seen}
    # At BEGIN the function has not run: its definition stands for it, once, above its caller.
    assert stacks["BEGIN"] == f"{begin} < {caller}{test}"
    assert stacks["INSERT"] == f"{write} < {caller}{test}"
    assert Item.objects.filter(name="atomic-function").exists()


def test_unwrapping_is_cached_without_keeping_functions_alive():
    import gc
    import weakref

    from django.db import transaction

    def make():
        payload = bytearray(1_000)

        @transaction.atomic
        def job():
            return payload

        return job

    job = make()
    site = callsite.of_function(job)
    assert site is not None and site[2] == "job"
    assert callsite.of_function(job) == site  # the cached answer
    ref = weakref.ref(job)
    del job
    gc.collect()
    assert ref() is None
