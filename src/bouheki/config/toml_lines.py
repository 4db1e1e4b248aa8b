"""Line numbers for the keys and values of a TOML document.

tomllib returns plain dicts without positions, but a policy error must point
at its line. This scanner walks the text (already known to be valid TOML,
since tomllib parsed it first) and records the line where each path starts:
('network', 'deny') for a key, ('network', 'deny', 1) for an array element,
('rule', 2) for the third [[rule]] header. It is deliberately lenient: if it
gets lost, the paths seen so far keep their lines and the rest fall back to
their closest recorded parent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import NamedTuple, Union

try:  # pragma: no cover - depends on the Python version
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

PathPart = Union[str, int]
Path = tuple[PathPart, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# One regex step instead of a Python loop per character: a policy of 100,000
# addresses is mostly these (bench/: the scan was a third of a reload's parse).
_BLANKS = r"(?:[ \t\r\n]+|#[^\n]*)*"  # whitespace, newlines and comments
_BLANK = re.compile(_BLANKS)
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")
_SCALAR = re.compile(r"[^,\]}\n#]+")
# An array element that is a plain one-line string, then its comma if any
# and the blanks after it, in one match: long address lists are runs of
# these, and a Python step per token made the scan a fifth of their parse.
_PLAIN_ELEMENT = re.compile(rf'(?!""")"([^"\\\n]*)"{_BLANKS}(,?){_BLANKS}')


class LineMap:
    """Path -> line, with lookups falling back to the nearest parent path.
    An array's elements are kept apart, as one list of lines per array:
    a list of 100,000 addresses then costs no path tuple and no dict entry
    per element (bench/ section 2)."""

    def __init__(self, lines: dict[Path, int] | None = None, default: int = 1) -> None:
        self._lines: dict[Path, int] = dict(lines or {})
        self._elements: dict[Path, list[int]] = {}
        self.default = default

    def record(self, path: Path, line: int) -> None:
        self._lines.setdefault(path, line)

    def elements(self, path: Path) -> list[int]:
        """The lines of the array at path's elements, by index: the caller
        appends them in order."""
        return self._elements.setdefault(path, [])

    def element_lines(self, path: Sequence[PathPart]) -> Sequence[int]:
        """What elements(path) recorded (the scanner may have got lost
        part way: then fewer than the array holds)."""
        return self._elements.get(tuple(path), ())

    def _get(self, p: Path) -> int | None:
        found = self._lines.get(p)
        if found is None and p and type(p[-1]) is int:
            lines = self._elements.get(p[:-1], ())
            index = p[-1]
            if 0 <= index < len(lines):  # type: ignore[operator]
                return lines[index]  # type: ignore[index]
        return found

    def line(self, path: Sequence[PathPart]) -> int:
        p = tuple(path)
        while p:
            found = self._get(p)
            if found is not None:
                return found
            p = p[:-1]
        return self.default

    def exact(self, path: Sequence[PathPart]) -> int | None:
        return self._get(tuple(path))


class PlainArray(NamedTuple):
    """An array whose elements are all one-line basic strings without
    escapes, as the scanner found it: where it is (text[start:end], from
    '[' to ']'), its path and its strings, whose values are their text
    between the quotes (no escape to decode). toml_file hands tomllib the
    document without the long ones (section 2 of bench/)."""

    path: Path
    start: int
    end: int
    values: list[str]


class _Lost(Exception):
    pass


class _Scanner:
    def __init__(self, text: str, min_plain: int | None = None) -> None:
        self.s = text
        self.i = 0
        self.lineno = 1
        self.map = LineMap()
        # Plain arrays of at least min_plain elements (None: not collected).
        self.min_plain = min_plain
        self.plain: list[PlainArray] = []
        # resolved array-of-tables path -> index of its current element
        self.aot_current: dict[Path, int] = {}

    # -- low level ---------------------------------------------------------
    def eof(self) -> bool:
        return self.i >= len(self.s)

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def startswith(self, token: str) -> bool:
        return self.s.startswith(token, self.i)

    def advance_to(self, j: int) -> None:
        self.lineno += self.s.count("\n", self.i, j)
        self.i = j

    def expect(self, token: str) -> None:
        if not self.startswith(token):
            raise _Lost
        self.advance_to(self.i + len(token))

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments."""
        m = _BLANK.match(self.s, self.i)
        if m is not None and m.end() > self.i:
            self.advance_to(m.end())

    def record(self, path: Path) -> None:
        for k in range(1, len(path)):
            self.map.record(path[:k], self.lineno)
        self.map.record(path, self.lineno)

    # -- keys --------------------------------------------------------------
    def simple_key(self) -> str:
        c = self.peek()
        if c in ('"', "'"):
            start = self.i
            self.string()
            raw = self.s[start : self.i]
            return str(tomllib.loads("k = " + raw)["k"])
        j = self.i
        while j < len(self.s) and self.s[j] in _BARE_KEY_CHARS:
            j += 1
        if j == self.i:
            raise _Lost
        key = self.s[self.i : j]
        self.i = j
        return key

    def dotted_key(self) -> list[str]:
        parts = [self.simple_key()]
        while True:
            self.skip_ws()
            if self.peek() != ".":
                return parts
            self.i += 1
            self.skip_ws()
            parts.append(self.simple_key())

    def resolve(self, raw: Sequence[str]) -> Path:
        out: Path = ()
        for part in raw:
            out = (*out, part)
            if out in self.aot_current:
                out = (*out, self.aot_current[out])
        return out

    # -- values ------------------------------------------------------------
    def string(self) -> None:
        for quote in ('"""', "'''"):
            if self.startswith(quote):
                j = self.i + 3
                while True:
                    if quote == '"""' and self.s[j] == "\\":
                        j += 2
                        continue
                    if self.s.startswith(quote, j):
                        # Up to two more quotes still belong to the content.
                        k = 3
                        while k < 5 and self.s.startswith(quote[0], j + k):
                            k += 1
                        j += k
                        break
                    j += 1
                self.advance_to(j)
                return
        m = (_BASIC_STRING if self.peek() == '"' else _LITERAL_STRING).match(self.s, self.i)
        if m is None:
            raise _Lost  # a newline in a one-line string: not valid TOML
        self.i = m.end()

    def value(self, path: Path) -> None:
        c = self.peek()
        if c in ('"', "'"):
            self.string()
        elif c == "[":
            self.array(path)
        elif c == "{":
            self.inline_table(path)
        else:
            m = _SCALAR.match(self.s, self.i)
            if m is None:
                raise _Lost
            self.i = m.end()

    def array(self, path: Path) -> None:
        start = self.i
        self.expect("[")
        index = 0
        lines = self.map.elements(path)  # its parents are recorded already
        values: list[str] | None = [] if self.min_plain is not None else None
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.i += 1
                if values is not None and len(values) >= self.min_plain:  # type: ignore[operator]
                    self.plain.append(PlainArray(path, start, self.i, values))
                return
            m = _PLAIN_ELEMENT.match(self.s, self.i)
            if m is not None:
                index = self._plain_run(m, index, lines, values)
                continue
            if len(lines) == index:
                lines.append(self.lineno)
            values = None
            self.value((*path, index))
            self.skip_blank()
            if self.peek() == ",":
                self.i += 1
                index += 1
            elif self.peek() != "]":
                raise _Lost

    def _plain_run(
        self, m: re.Match[str], index: int, lines: list[int], values: list[str] | None
    ) -> int:
        """A run of plain elements from m on, each with its comma and the
        blanks after it: one regex match and a few list appends per element,
        in locals (long address lists are one such run). Returns the index
        of the element after the run."""
        s, i, lineno = self.s, self.i, self.lineno
        match = _PLAIN_ELEMENT.match
        while True:
            lines.append(lineno)
            if values is not None:
                values.append(m.group(1))
            end = m.end()
            lineno += s.count("\n", i, end)
            i = end
            if not m.group(2):
                break  # no comma: the array must end here
            index += 1
            found = match(s, i)
            if found is None:
                break
            m = found
        self.i, self.lineno = i, lineno
        if not m.group(2) and self.peek() != "]":
            raise _Lost
        return index

    def inline_table(self, path: Path) -> None:
        self.expect("{")
        while True:
            self.skip_blank()
            if self.peek() == "}":
                self.i += 1
                return
            self.key_value(path)
            self.skip_blank()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "}":
                raise _Lost

    def key_value(self, table: Path) -> None:
        line = self.lineno
        key = self.dotted_key()
        self.skip_ws()
        self.expect("=")
        self.skip_ws()
        path = (*table, *key)
        for k in range(len(table) + 1, len(path) + 1):
            self.map.record(path[:k], line)
        self.value(path)

    # -- document ----------------------------------------------------------
    def document(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank()
            if self.eof():
                return
            if self.startswith("[["):
                self.i += 2
                self.skip_ws()
                raw = self.dotted_key()
                self.expect("]]")
                parent = self.resolve(raw[:-1])
                array = (*parent, raw[-1])
                index = self.aot_current.get(array, -1) + 1
                self.aot_current[array] = index
                table = (*array, index)
                self.record(table)
            elif self.startswith("["):
                self.i += 1
                self.skip_ws()
                raw = self.dotted_key()
                self.expect("]")
                table = self.resolve(raw)
                self.record(table)
            else:
                self.key_value(table)


def scan_toml(text: str, min_plain: int | None = None) -> tuple[LineMap, list[PlainArray]]:
    """The lines of text's paths and, if min_plain is given, its plain
    arrays of at least that many elements, in the order of the text."""
    scanner = _Scanner(text, min_plain)
    # If lost, keep what was found: lookups fall back to parent paths.
    # RecursionError: the scanner recurses per nested array or inline table,
    # a few frames more than tomllib did, so a document tomllib just managed
    # to parse can still be too deep for it (the caller rejects such depths;
    # the lines found so far are enough to say where).
    with contextlib.suppress(_Lost, IndexError, RecursionError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.map, scanner.plain


def scan_toml_lines(text: str) -> LineMap:
    return scan_toml(text)[0]
