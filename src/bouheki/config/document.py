"""A parsed configuration document: its file name, the line of every key
path, and the report its problems go to."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bouheki.config.errors import Report
from bouheki.config.toml_lines import LineMap, Path, PathPart
from bouheki.policy.tables import Origin


def format_path(path: Sequence[PathPart]) -> str:
    """('network', 'deny', 1) -> 'network.deny[1]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass
class Doc:
    file: str
    lines: LineMap
    report: Report

    def line(self, path: Sequence[PathPart]) -> int:
        return self.lines.line(path)

    def origin(self, path: Sequence[PathPart], text: str | None = None) -> Origin:
        return Origin(self.file, self.line(path), format_path(path) if text is None else text)

    def error(self, path: Path, message: str) -> None:
        where = format_path(path)
        self.report.error(self.file, self.line(path), f"{where}: {message}" if where else message)

    def warn(self, path: Path, message: str) -> None:
        where = format_path(path)
        self.report.warn(self.file, self.line(path), f"{where}: {message}" if where else message)

    def unknown_key(self, path: Path, known: Collection[str]) -> None:
        key = str(path[-1])
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        allowed = ", ".join(sorted(known))
        self.error(path, f"unknown key{hint}; allowed here: {allowed}")
