"""Two OS processes contend on one file; both report into one store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, line_of
from tests.support.servers import project_env

COMMANDS = ROOT / "tests" / "project" / "shop" / "management" / "commands"
MANAGE = ROOT / "tests" / "project" / "manage.py"


def manage(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(MANAGE), *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_blocker_in_another_process(lw, tmp_path: Path):
    db = tmp_path / "shared.sqlite3"
    env = project_env(db, lw.store)

    ready = tmp_path / "ready"
    holder = manage("hold_lock", "--seconds", "1.5", "--ready-file", str(ready), env=env)
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert holder.poll() is None, holder.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiter = manage("write_one", env={**env, "LOCKWATCH_TEST_TIMEOUT": "0.4"})
    out, err = waiter.communicate(timeout=30)
    assert out.strip() == "failed: database is locked", err
    holder.communicate(timeout=30)
    assert holder.returncode == 0

    lw.settle()
    (busy,) = lw.events(kind="busy")
    assert busy["pid"] == waiter.pid
    assert busy["context"] == "command:write_one"
    assert busy["classification"] == "timeout"
    assert 400 <= busy["wait_ms"] <= busy["duration_ms"]  # late, never early
    write_line = line_of(COMMANDS / "write_one.py", "WRITE-LINE")
    assert (
        busy["call_site"]
        == f"tests/project/shop/management/commands/write_one.py:{write_line} in handle"
    )
    hold_line = line_of(COMMANDS / "hold_lock.py", "HOLD-LINE")
    assert busy["blocker_pid"] == holder.pid
    assert busy["blocker_context"] == "command:hold_lock"
    assert busy["blocker_call_site"] == (
        f"tests/project/shop/management/commands/hold_lock.py:{hold_line} in handle"
    )
    assert 0 < busy["blocker_held_ms"] < 1500

    # The long atomic() batch of a management command carries its name.
    (batch,) = lw.events(kind="transaction", pid=holder.pid)
    assert batch["context"] == "command:hold_lock"
    assert batch["end"] == "commit"
    assert 1500 <= batch["hold_ms"] <= batch["duration_ms"]
    assert {r["pid"] for r in lw.rows("SELECT pid FROM processes")} >= {holder.pid, waiter.pid}
