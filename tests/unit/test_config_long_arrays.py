"""Long arrays of plain strings: read by the line scanner, not by tomllib
(config/toml_file.py LONG_ARRAY). Whatever the text, the outcome must be
tomllib's own: the same data, the same lines, the same error."""

from __future__ import annotations

import random
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bouheki.config import toml_file
from bouheki.config.errors import Report
from bouheki.config.toml_lines import PlainArray, scan_toml_lines

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]


def _parse(text: str, long_array: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(data or None, the report's problems) with the threshold at long_array."""
    with monkeypatch.context() as m:
        m.setattr(toml_file, "LONG_ARRAY", long_array)
        report = Report()
        parsed = toml_file.parse_toml("f.toml", text, report)
    problems = [(p.line, p.message) for p in report.errors]
    if parsed is None:
        return None, problems
    data, lines = parsed
    return (data, lines), problems


def _same_as_tomllib(text: str, monkeypatch: pytest.MonkeyPatch) -> Optional[dict[str, Any]]:
    """Asserts the fast path (threshold 2) and the plain one (threshold out of
    reach) agree on text: data, element lines, problems."""
    fast, fast_problems = _parse(text, 2, monkeypatch)
    slow, slow_problems = _parse(text, 10**9, monkeypatch)
    assert fast_problems == slow_problems
    if slow is None:
        assert fast is None
        with pytest.raises((tomllib.TOMLDecodeError, RecursionError, ValueError)):
            tomllib.loads(text)
        return None
    assert fast is not None
    assert fast[0] == slow[0] == tomllib.loads(text)
    reference = scan_toml_lines(text)
    for path in _array_paths(slow[0]):
        assert fast[1].element_lines(path) == reference.element_lines(path)
    return fast[0]


def _array_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _array_paths(v, (*path, k))
    elif isinstance(value, list):
        out.append(path)
        for i, v in enumerate(value):
            out += _array_paths(v, (*path, i))
    return out


def test_a_long_list_is_read_without_tomllib_and_keeps_its_lines(monkeypatch):
    addresses = [f"10.{i // 256}.{i % 256}.1" for i in range(600)]
    body = "".join(f'  "{a}",  # n{i}\n' for i, a in enumerate(addresses))
    text = f'mode = "block"\n[network]\ndeny = [\n{body}]\nallow = ["10.9.9.9"]\n'
    seen: list[str] = []
    real = tomllib.loads

    def spy(s: str) -> dict[str, Any]:
        seen.append(s)
        return real(s)

    monkeypatch.setattr(toml_file.tomllib, "loads", spy)
    parsed = toml_file.parse_toml("f.toml", text, Report())
    assert parsed is not None
    data, lines = parsed
    assert data["network"]["deny"] == addresses
    assert data["network"]["allow"] == ["10.9.9.9"]
    # tomllib was handed the document without the long list, once.
    assert len(seen) == 1 and "10.0.1.1" not in seen[0] and "10.9.9.9" in seen[0]
    assert list(lines.element_lines(("network", "deny"))) == list(range(4, 604))
    assert lines.line(("network", "allow")) == 605


@pytest.mark.parametrize(
    "text",
    [
        # Text that looks like a long list, inside a multi-line string.
        'note = """\ndeny = ["a", "b", "c"]\n"""\ndeny = ["x", "y"]\n',
        "note = '''\ndeny = [\"a\", \"b\", \"c\"]\n'''\n",
        # Inside a comment.
        '# deny = ["a", "b", "c"]\ndeny = ["a", "b"]\n',
        # In an inline table, over lines, and nested in an array.
        'network = { deny = [\n"a",\n"b", "c"] }\n',
        'x = [["a", "b", "c"], ["d", "e"], 1]\n',
        # In [[rule]] tables.
        '[[rule]]\nto = ["a", "b"]\n[[rule]]\nto = ["c", "d", "e"]\n',
        # Escapes and other strings: left to tomllib.
        'deny = ["a\\u0041", "b", "c"]\n',
        "deny = ['a', 'b', 'c']\n",
        'deny = ["""a""", "b", "c"]\n',
        # What TOML refuses inside the list: the same error either way.
        'deny = [\n"a",\n"b\x01",\n"c"]\n',
        'deny = [\n"a", # bad \x7f comment\n"b"]\n',
        'deny = [\r\n"a",\r\n"b"\r\n]\r\n',
        'deny = [\n"a",\r"b"]\n',
        'deny = ["a", "b", , "c"]\n',
        'deny = ["a" "b"]\n',
        'deny = ["a", "b"\n',
        # After the list: errors at the same line and column.
        'deny = ["a", "b", "c"] junk\n',
        'deny = ["a", "b", "c"]\ndeny = ["d", "e"]\n',
        'deny = ["a", "b"]\n[x]\ny = ["c", "d"] = 1\n',
        '[t]\ndeny = ["a", "b"]\n[t]\n',
        'deny = ["a", "b"]\nx = 1_\n',
    ],
)
def test_the_fast_path_agrees_with_tomllib(text, monkeypatch):
    _same_as_tomllib(text, monkeypatch)


_PIECES = [
    '"10.0.0.1"',
    '"10.0.0.0/8"',
    '"é.example"',
    '"a\\"b"',
    "'lit'",
    '"""ml"""',
    "1",
    '"\t"',
    '"\x01"',
    '["n", "m"]',
    "{ a = 1 }",
    "",
]
_SEPARATORS = [", ", ",\n", " ,", ",  # c\n", "\n,", ", # \x02\n", "\r\n,", ",\r\n", " "]


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=6))
def test_random_documents_agree_with_tomllib(seed, arrays):
    rng = random.Random(seed)
    lines = []
    for k in range(arrays):
        # Mostly what a long address list is made of, sometimes anything.
        pieces = _PIECES[:3] if rng.random() < 0.8 else _PIECES
        separators = _SEPARATORS[:2] if rng.random() < 0.8 else _SEPARATORS
        elements = [rng.choice(pieces) for _ in range(rng.randint(0, 6))]
        body = "".join(e + rng.choice(separators) for e in elements)
        if rng.random() < 0.5 and body.endswith((", ", ",\n")):
            body = body[:-2]
        header = rng.choice(["", f"[t{k}]\n", "[[rule]]\n", f'note{k} = """\n'])
        tail = '\n"""\n' if header.startswith("note") else "\n"
        lines.append(f"{header}k{k} = [{body}]{rng.choice(['', ' # c', ' x', ''])}{tail}")
    mp = pytest.MonkeyPatch()
    try:
        _same_as_tomllib("".join(lines), mp)
    finally:
        mp.undo()


def test_a_scan_that_does_not_fit_tomllib_is_not_used():
    """Were the scanner to misread a document, tomllib's reading of the
    emptied text would not have an empty array at the scanner's path, and
    the whole text goes to tomllib instead."""
    text = 'a = ["x", "y"]\nnote = """\nb = ["p", "q"]\n"""\n'
    start = text.index("[")
    end = text.index("]") + 1
    right = PlainArray(("a",), start, end, ["x", "y"])
    assert toml_file._without_long_arrays(text, [right]) == {
        "a": ["x", "y"],
        "note": 'b = ["p", "q"]\n',
    }
    # The wrong path; an array inside a string; the same array twice.
    assert toml_file._without_long_arrays(text, [right._replace(path=("c",))]) is None
    assert toml_file._without_long_arrays(text, [right._replace(path=("note", 0))]) is None
    inner = text.index("[", end)
    in_string = PlainArray(("b",), inner, text.index("]", inner) + 1, ["p", "q"])
    assert toml_file._without_long_arrays(text, [in_string]) is None
    assert toml_file._without_long_arrays(text, [right, right]) is None
    two = 'a = ["x", "y"]\nb = ["p", "q"]\n'
    b = two.index("[", two.index("b"))
    b_as_a = PlainArray(("a",), b, two.index("]", b) + 1, ["p", "q"])
    assert toml_file._without_long_arrays(two, [b_as_a]) is None
