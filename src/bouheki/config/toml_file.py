"""Reading one TOML file into (data, line map), syntax errors as Problems."""

from __future__ import annotations

import os
import re
import stat
from typing import Any, Optional

from bouheki.config.errors import Report
from bouheki.config.toml_lines import LineMap, Path, PlainArray, scan_toml, scan_toml_lines

try:  # pragma: no cover - depends on the Python version
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")
# A run of digits long enough for int() to refuse it (CPython's limit on
# converting decimal strings, 4300 digits by default).
_LONG_NUMBER = re.compile(r"[0-9][0-9_]{300,}")

# A policy nests a few levels deep ([[host.rule]] -> to -> [...]); anything
# much deeper is a mistake or an attack. The limit keeps every later walk of
# the data (and the line scanner, which recurses per level) far from
# Python's recursion limit, and makes the outcome independent of how deep in
# the stack the loader happens to run.
MAX_NESTING = 32
TOO_DEEP = f"nested more than {MAX_NESTING} levels deep"

# A dotted key ('a.b.c = 1', '[a.b.c]') with more parts than MAX_NESTING,
# where keys start: at the start of a line, after '{' or ','. It must be
# refused before tomllib sees it: tomllib (and the line scanner) take time
# quadratic in the number of parts, ~5 s for a 40 kB key.
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DEEP_KEY = re.compile(
    rf"(?:^|[{{,])[ \t]*\[{{0,2}}[ \t]*(?:{_KEY_PART}[ \t]*\.[ \t]*){{{MAX_NESTING},}}",
    re.MULTILINE,
)


def _deep_key_line(text: str) -> Optional[int]:
    """The line of a dotted key deeper than MAX_NESTING, if any. Such a key
    is on one line (no part of _DEEP_KEY matches a newline), so only lines
    with that many dots are searched: over a 100,000-address list, searching
    the whole text took a sixth of the parse."""
    if text.count(".") < MAX_NESTING:
        return None
    for number, line in enumerate(text.split("\n"), 1):
        if line.count(".") >= MAX_NESTING and _DEEP_KEY.search(line):
            return number
    return None


# An array of at least this many plain strings ("a.b.c.d/n", no escape) is
# read by the line scanner rather than by tomllib, which spends a Python
# step per character class and per string on it: a third of the parse of a
# 100,000-address list (bench/ section 2).
LONG_ARRAY = 256
# What TOML refuses in a basic string or a comment: control characters but
# tab (and newline, which separates elements). A carriage return is one of
# them: TOML allows it only before a newline, and such a list is simply left
# to tomllib.
_NOT_PLAIN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _is_dev_null(st: os.stat_result) -> bool:
    try:
        return os.path.samestat(st, os.stat(os.devnull))
    except OSError:
        return False


def read_text(path: str, report: Report) -> Optional[str]:
    try:
        # O_NONBLOCK: opening a FIFO without a writer would otherwise block
        # the (re)load forever; it is refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        report.error(path, 0, f"cannot read: {e.strerror or e}")
        return None
    try:
        st = os.fstat(fd)
        # A FIFO or socket can block or never end, a device such as
        # /dev/zero never ends: only regular files (and /dev/null, which
        # reads as empty) are configuration files.
        if not stat.S_ISREG(st.st_mode) and not _is_dev_null(st):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            report.error(path, 0, f"cannot read: {kind}")
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read()
    except OSError as e:
        report.error(path, 0, f"cannot read: {e.strerror or e}")
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        report.error(path, line, "not valid UTF-8")
        return None


def _too_deep(data: dict[str, Any]) -> Optional[Path]:
    """The path of a value nested deeper than MAX_NESTING, or None.

    Iterative, so that it cannot itself hit the recursion limit.
    """
    stack: list[tuple[Path, object]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            continue
        if children and len(path) >= MAX_NESTING:
            return path  # a value of any kind one level deeper
        # Only containers nest further: a list of 100,000 strings is not walked.
        stack += [((*path, k), v) for k, v in children if isinstance(v, (dict, list))]
    return None


def _without_long_arrays(text: str, arrays: list[PlainArray]) -> Optional[dict[str, Any]]:
    """tomllib's reading of text, with the scanner's long plain arrays put
    in by the scanner's reading of them; None if tomllib refuses the text or
    its reading and the scanner's do not fit together (then the caller hands
    tomllib the whole text, and says what tomllib says).

    tomllib reads the text with each such array emptied to '[', its
    newlines and ']' (so every other line and line number stays), and must
    find an empty array at each array's path: the scanner read the text up
    to there as tomllib did. The array's own text is checked here for what
    TOML refuses in strings and comments that the scanner does not look at."""
    pieces: list[str] = []
    at = 0
    kept: list[PlainArray] = []
    for array in arrays:
        region = text[array.start : array.end]
        if _NOT_PLAIN.search(region):
            continue
        pieces += (text[at : array.start], "[", "\n" * region.count("\n"), "]")
        at = array.end
        kept.append(array)
    if not kept:
        return None
    pieces.append(text[at:])
    try:
        data: dict[str, Any] = tomllib.loads("".join(pieces))
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):
        return None
    for array in kept:
        holder: Any = data
        try:
            for part in array.path[:-1]:
                holder = holder[part]
            key = array.path[-1]
            if type(holder[key]) is not list or holder[key]:
                return None
        except (KeyError, IndexError, TypeError):
            return None
        holder[key] = array.values
    return data


def _tomllib(path: str, text: str, report: Report) -> Optional[dict[str, Any]]:
    try:
        return tomllib.loads(text)
    except RecursionError:
        # tomllib recurses once per nested array or inline table: a few
        # hundred levels ("a = [[[[...") exhaust the stack.
        report.error(path, 0, f"the document is {TOO_DEEP}")
        return None
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
    except ValueError:
        # Not a syntax error: tomllib hands the digits to int(), which
        # refuses more than 4300 of them (int_max_str_digits).
        match = _LONG_NUMBER.search(text)
        line = text.count("\n", 0, match.start()) + 1 if match else 0
        report.error(path, line, "TOML syntax error: a number with far too many digits")
        return None


def parse_toml(path: str, text: str, report: Report) -> Optional[tuple[dict[str, Any], LineMap]]:
    deep_key = _deep_key_line(text)
    if deep_key is not None:
        report.error(path, deep_key, f"a dotted key {TOO_DEEP}")
        return None
    data: Optional[dict[str, Any]] = None
    lines: Optional[LineMap] = None
    if text.count('"') >= 2 * LONG_ARRAY:
        # Enough strings for a long array: scan first, and let tomllib skip
        # the long arrays of plain strings the scan found.
        lines, arrays = scan_toml(text, LONG_ARRAY)
        if arrays:
            data = _without_long_arrays(text, arrays)
    if data is None:
        data = _tomllib(path, text, report)
        if data is None:
            return None
    if lines is None:
        lines = scan_toml_lines(text)
    deep = _too_deep(data)
    if deep is not None:
        report.error(path, lines.line(deep), f"the document is {TOO_DEEP}")
        return None
    return data, lines


def read_toml(path: str, report: Report) -> Optional[tuple[dict[str, Any], LineMap]]:
    text = read_text(os.fspath(path), report)
    if text is None:
        return None
    return parse_toml(os.fspath(path), text, report)
