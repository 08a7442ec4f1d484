"""The benchmarks' child processes, one per alternative, talking JSON lines: the driver's
side (``Child``, ``Worker``) and the child's (``Protocol``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    pass


Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class Protocol:
    """The child's side. Made before anything can print: stdout then carries only the
    replies, and everything else goes to stderr."""

    def __init__(self) -> None:
        self._out = sys.stdout
        sys.stdout = sys.stderr

    def send(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj) + "\n")
        self._out.flush()

    def serve(self, handlers: Mapping[str, Handler]) -> None:
        """Answer each command with its handler's reply until "quit" (a handler that
        returns None has sent its own replies)."""
        for line in sys.stdin:
            cmd = json.loads(line)
            kind = cmd["cmd"]
            if kind == "quit":
                self.send({"bye": True})
                return
            handler = handlers.get(kind)
            reply = handler(cmd) if handler else {"error": f"unknown command {kind!r}"}
            if reply is not None:
                self.send(reply)


class Child:
    """A child process that answers one JSON line per JSON line it is sent."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1,
        )  # fmt: skip

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker {self.name} exited ({self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"worker {self.name}: {reply['error']}")
        return reply

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(cmd="quit")
            except (WorkerError, BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Worker(Child):
    """``python -m bench.worker ALTERNATIVE`` with its bench site settings."""

    def __init__(
        self, alternative: str, settings: str, workdir: Path, db: Path | None = None
    ) -> None:
        self.alternative = alternative
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": f"bench.site.settings.{settings}",
            "BENCH_DB": str(db or workdir / f"{alternative}.sqlite3"),
            "BENCH_STORE": str(workdir / f"{alternative}-store.sqlite3"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        self.db = Path(env["BENCH_DB"])
        self.store = Path(env["BENCH_STORE"])
        self._make_wal(self.db)
        super().__init__(alternative, [sys.executable, "-m", "bench.worker", alternative], env)

    @staticmethod
    def _make_wal(path: Path) -> None:
        import sqlite3

        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
