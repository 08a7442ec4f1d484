"""README stays true: settings, CSV columns and the two commands."""

from __future__ import annotations

import re

from lockwatch import conf, events
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _table(heading: str) -> list[list[str]]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_csv_columns_are_documented_in_order():
    documented = [row[0].strip("`") for row in _table("CSV columns")]
    assert documented == list(events.CSV_HEADER)


def test_every_setting_is_documented_with_its_default():
    rows = {row[0].strip("`"): row[1].strip("`") for row in _table("Settings reference")}
    assert set(rows) == set(conf.DEFAULTS)
    for key, default in conf.DEFAULTS.items():
        shown = f'"{default}"' if isinstance(default, str) else repr(default)
        assert rows[key] == shown, key


def test_the_two_commands_are_what_ci_runs():
    quick = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh$", ci, re.M)
    for command in commands:
        assert (ROOT / command.split()[1]).exists()


def test_screenshot_is_in_the_repository():
    (image,) = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert (ROOT / image).stat().st_size > 10_000


def test_gitignore_advice_covers_every_file_of_the_store(tmp_path):
    import fnmatch

    from lockwatch import store

    block = README.split("```gitignore\n", 1)[1].split("```", 1)[0]
    patterns = [line.strip() for line in block.splitlines() if line.strip()]
    assert ".demo/" in patterns
    conn = store.connect(tmp_path / "lockwatch.sqlite3")  # the default name, in WAL mode
    try:
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        made = sorted(p.name for p in tmp_path.iterdir())
    finally:
        conn.close()
    assert made == ["lockwatch.sqlite3", "lockwatch.sqlite3-shm", "lockwatch.sqlite3-wal"]
    for name in made:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
