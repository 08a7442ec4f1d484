"""``lockwatch run -- COMMAND``: run an unmodified Django project with capture on.

Like ``opentelemetry-instrument``: it puts lockwatch's bootstrap (a sitecustomize) first
on PYTHONPATH, sets a few environment variables and replaces itself with COMMAND. Every
Python process that COMMAND starts or forks (gunicorn's workers, runserver's reloader)
then instruments Django's settings in memory (``lockwatch.autorun``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parent / "_bootstrap"
_SQLITE_HEADER = b"SQLite format 3\x00"

USAGE = "lockwatch run [--store FILE] -- COMMAND [ARGS...]"


class RunError(ValueError):
    """A bad argument: the message says which and why."""


def store_path(value: str) -> Path:
    """The store lockwatch run was given, checked: its folder exists and is writable, and
    a file already there is a SQLite database."""
    try:
        path = Path(value).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise RunError(f"--store {value!r} is not a usable path ({exc})") from None
    if path.is_dir():
        raise RunError(f"--store {path} is a folder; give a file name inside it")
    folder = path.parent
    if not folder.is_dir():
        raise RunError(f"--store {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunError(f"--store {path}: the folder {folder} is not writable")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise RunError(f"--store {path} cannot be read ({exc.strerror})") from None
        if head and head != _SQLITE_HEADER:
            raise RunError(f"--store {path} is not a SQLite file; give a new or existing store")
        if not os.access(path, os.W_OK):
            raise RunError(f"--store {path} is not writable")
    return path


def environment(env: dict[str, str], store: Path | None) -> dict[str, str]:
    """COMMAND's environment: the bootstrap first on PYTHONPATH, and what it reads."""
    env = dict(env)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(BOOTSTRAP)]
    env["PYTHONPATH"] = os.pathsep.join([str(BOOTSTRAP), *rest])
    env["LOCKWATCH_RUN"] = "1"
    # Names this run, so that a warning is given once for all of its processes.
    env["LOCKWATCH_RUN_ID"] = f"{os.getpid()}-{time.time_ns()}"
    if store is not None:
        env["LOCKWATCH_RUN_STORE"] = str(store)  # wins over the project's LOCKWATCH["STORE"]
        env["LOCKWATCH_STORE"] = str(store)  # and for processes that set up no settings
    return env


def command_of(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise RunError(f"no command to run; usage: {USAGE}")
    return command


def main(args: argparse.Namespace) -> int:
    try:
        command = command_of(args)
        store = store_path(args.store) if args.store is not None else None
    except RunError as exc:
        print(f"lockwatch run: error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if (BOOTSTRAP / "sitecustomize.py").is_file():
        env = environment(env, store)
    else:  # a broken install: the command runs all the same
        print(
            f"lockwatch run: warning: {BOOTSTRAP / 'sitecustomize.py'} is missing (a broken"
            " install?); the command runs without lockwatch",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"lockwatch run: error: command not found: {command[0]}", file=sys.stderr)
        return 127
    except OSError as exc:
        print(f"lockwatch run: error: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 126
    return 0  # not reached: exec replaced this process


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a Django command with capture on, settings unchanged",
        usage=USAGE,
        description="Run COMMAND (gunicorn, python manage.py ..., pytest) with lockwatch's"
        " backend, app and middleware added to its Django settings in memory; its files are"
        " not changed. Every Python process it starts is instrumented.",
    )
    run.add_argument(
        "--store",
        metavar="FILE",
        help="write events to this store (default: the project's LOCKWATCH['STORE'],"
        " $LOCKWATCH_STORE, or lockwatch.sqlite3 in its BASE_DIR)",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    run.set_defaults(func=main)
