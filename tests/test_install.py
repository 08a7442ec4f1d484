"""Installing lockwatch as README says, into fresh virtualenvs, with pip resolving the
dependencies for real: the plain install serves the dashboard.

Each test copies the source tree to a temporary folder first (pip builds in the tree it is
given), so nothing in the repository is written.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from lockwatch.cli import build_parser
from tests.conftest import ROOT
from tests.support.net import free_port

README = (ROOT / "README.md").read_text()
PLACEHOLDER = "/path/to/lockwatch"


def _source_copy(dest: Path) -> Path:
    """The files a fresh clone would have (plus uncommitted ones), without build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True,
    )  # fmt: skip
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            src = ROOT / name
            if src.is_file():  # deleted but not yet committed: skip
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:  # no git (an unpacked archive): copy all but what .gitignore names
        shutil.copytree(
            ROOT, dest, dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info",
                                          "__pycache__", "*.sqlite3*", ".demo", ".*_cache"),
        )  # fmt: skip
    return dest


def _venv(where: Path) -> dict[str, str]:
    """A fresh virtualenv (no site-packages of ours); the environment that runs in it."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOCKWATCH", "DJANGO", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{where / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(where)
    return env


def _sh(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _serves_the_login_page(lockwatch: Path, env: dict[str, str], store: Path) -> None:
    port = free_port()
    token = "install-test-token-0123456789"
    server = subprocess.Popen(
        [str(lockwatch), "serve", "--port", str(port), "--store", str(store)],
        env={**env, "LOCKWATCH_TOKEN": token}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=store.parent,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    try:
        page = None
        deadline = time.monotonic() + 60
        while page is None and server.poll() is None and time.monotonic() < deadline:
            try:
                opener.open(f"{base}/", timeout=5).close()
                raise AssertionError("the dashboard let in a request without the token")
            except urllib.error.HTTPError as refused:  # 403, with the login form
                page = (refused.code, refused.read().decode())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)  # not listening yet
        assert page is not None, f"lockwatch serve did not answer (exit {server.poll()})"
        assert page[0] == 403 and "Log in to lockwatch" in page[1]
        # The token logs in; the page and its vendored scripts come from the installed package.
        with opener.open(f"{base}/?token={token}", timeout=10) as response:
            index = response.read().decode()
        scripts = re.findall(r'<script[^>]* src="([^"]+)"', index)
        assert any("plotly.min.js" in s for s in scripts), scripts
        for src in scripts:
            with opener.open(f"{base}{src}", timeout=10) as response:
                assert response.status == 200 and len(response.read()) > 1000, src
    finally:
        server.terminate()
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def _install_commands() -> list[str]:
    section = README.split("## Install into your project\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = _source_copy(root / "lockwatch")
        self.venv = root / "venv"
        self.env = _venv(self.venv)
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        done = _sh(command.replace(PLACEHOLDER, str(self.source)), self.env, self.root)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh virtualenv after README's first install command: the plain install."""
    inst = Installed(tmp_path_factory.mktemp("install"))
    first = _install_commands()[0]
    assert first == f"pip install {PLACEHOLDER}"
    started = time.monotonic()
    inst.run(first)
    print(f"\n{first} into a fresh venv: {time.monotonic() - started:.1f} s")
    return inst


def test_pip_install_then_lockwatch_serve_answers_with_the_login_page(installed):
    store = installed.root / "s.sqlite3"
    _serves_the_login_page(installed.venv / "bin" / "lockwatch", installed.env, store)


def test_readme_install_commands_run_as_written(installed):
    commands = _install_commands()
    assert len(commands) >= 4 and all(PLACEHOLDER in c for c in commands), commands
    for command in commands[1:]:  # the first made the fixture
        installed.run(command)
    # The last command installed the wheel: lockwatch now lives in the venv, with the
    # dashboard's dependencies and the Redis extra's.
    where = installed.run(
        "python -c 'import lockwatch, daphne, channels, plotly, channels_redis;"
        " print(lockwatch.__file__)'"
    )
    assert where.stdout.strip().startswith(str(installed.venv)), where.stdout
    wheel = installed.source / "dist" / "lockwatch-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as built:  # lockwatch run's bootstrap ships in the wheel
        assert "lockwatch/_bootstrap/sitecustomize.py" in built.namelist()


def test_lockwatch_run_finds_its_bootstrap_in_the_plain_install(installed):
    done = installed.run(
        "lockwatch run -- python -c 'import sitecustomize, django.conf;"
        " print(sitecustomize.__file__, django.conf.LazySettings._lockwatch_autorun)'"
    )
    path, hooked = done.stdout.split()
    assert path.startswith(str(installed.venv)) and path.endswith("sitecustomize.py")
    assert hooked == "True", done.stderr


def test_the_command_says_what_it_does(capsys):
    text = build_parser().format_help()
    assert "as they land" not in text and "``" not in text
    for command in ("export", "doctor", "serve"):
        assert command in text.split("positional arguments", 1)[0]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["doctor", "--help"])
    doctor = " ".join(capsys.readouterr().out.split())
    assert "default $LOCKWATCH_STORE or ./lockwatch.sqlite3" in doctor
