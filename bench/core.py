"""What a benchmark returns, and the options it is run with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Options:
    quick: bool
    workdir: Path  # a fresh temp dir for this benchmark's files
    profile: bool = True  # profile where a target is missed


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str = ""


@dataclass
class Target:
    text: str  # e.g. "lockwatch ≤ 1.02× plain (select)"
    value: str  # what was measured
    met: bool | None  # None: not measurable in this run


@dataclass
class Result:
    status: str = "ok"  # ok, not yet implemented, failed
    summary: str = ""
    method: list[str] = field(default_factory=list)  # how it was measured
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # findings, profiles (markdown)
    data: dict[str, Any] = field(default_factory=dict)  # raw figures for the JSON
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Benchmark:
    number: int
    name: str
    title: str
    run: Callable[[Options], Result] | None
    waits_for: str = ""  # why it is a stub


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}×"
