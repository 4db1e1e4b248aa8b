"""Reading one TOML file into (data, line map), syntax errors as Problems."""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from bouheki.config.errors import Report
from bouheki.config.toml_lines import LineMap, scan_toml_lines

try:  # pragma: no cover - depends on the Python version
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def read_text(path: str, report: Report) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        report.error(path, 0, f"cannot read: {e.strerror or e}")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        report.error(path, line, "not valid UTF-8")
        return None


def parse_toml(path: str, text: str, report: Report) -> Optional[tuple[dict[str, Any], LineMap]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        line = text.count("\n") + 1
        match = _POSITION.search(message)
        if match:
            line = int(match.group(1))
            message = f"{message[: match.start()]} (column {match.group(2)})"
        else:
            message = _AT_END.sub(" (at end of file)", message)
        report.error(path, line, f"TOML syntax error: {message}")
        return None
    return data, scan_toml_lines(text)


def read_toml(path: str, report: Report) -> Optional[tuple[dict[str, Any], LineMap]]:
    text = read_text(os.fspath(path), report)
    if text is None:
        return None
    return parse_toml(os.fspath(path), text, report)
