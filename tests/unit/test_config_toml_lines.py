"""The TOML line scanner: the line of every key, element and table."""

from __future__ import annotations

from bouheki.config.toml_lines import scan_toml_lines

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

TEXT = '''# a comment with [brackets] and "quotes"
mode = "block"   # trailing comment

[network]
allow = [
  "10.0.1.0/24",  # first
  # a comment line inside the array
  "example.com", "@lan"
]
"deny" = ['10.0.1.71']

[[rule]]
action = "allow"
note.inner = """
a multi-line string with ] and [[rule]] and \\""" inside
"""
ports = [443, "8000-8100"]

[[rule]]
action = 'block'
to = [ { a = "x" }, { b = [1,
  2] } ]
[rule.sub]
k = 1
literal = \'\'\'
[[rule]]
\'\'\'
"quoted.key" = 2

[[rule]]
action = "allow"
'''


def test_lines() -> None:
    assert tomllib.loads(TEXT)["rule"][1]["sub"]["quoted.key"] == 2  # the text is valid
    m = scan_toml_lines(TEXT)
    expected = {
        ("mode",): 2,
        ("network",): 4,
        ("network", "allow"): 5,
        ("network", "allow", 0): 6,
        ("network", "allow", 1): 8,
        ("network", "allow", 2): 8,
        ("network", "deny"): 10,
        ("network", "deny", 0): 10,
        ("rule", 0): 12,
        ("rule", 0, "action"): 13,
        ("rule", 0, "note", "inner"): 14,
        ("rule", 0, "ports", 1): 17,
        ("rule", 1): 19,
        ("rule", 1, "to", 1, "b", 1): 22,
        ("rule", 1, "sub"): 23,
        ("rule", 1, "sub", "k"): 24,
        ("rule", 1, "sub", "quoted.key"): 28,
        ("rule", 2): 30,
        ("rule", 2, "action"): 31,
    }
    assert {path: m.line(path) for path in expected} == expected


def test_fallback_to_parent_and_default() -> None:
    m = scan_toml_lines(TEXT)
    assert m.line(("network", "allow", 7)) == 5
    assert m.line(("nothing",)) == 1
    assert m.exact(("nothing",)) is None


def test_dotted_keys_and_inline_tables_at_top_level() -> None:
    m = scan_toml_lines('\nnetwork.deny = ["a"]\ncommand = { allow = ["x",\n "y"] }\n')
    assert m.line(("network",)) == 2
    assert m.line(("network", "deny", 0)) == 2
    assert m.line(("command", "allow", 1)) == 4


def test_nested_array_of_tables() -> None:
    text = "[[a]]\n[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n[[a]]\n[[a.b]]\nx = 3\n"
    m = scan_toml_lines(text)
    assert m.line(("a", 0, "b", 1, "x")) == 5
    assert m.line(("a", 1, "b", 0, "x")) == 8


def test_invalid_text_keeps_what_was_found() -> None:
    m = scan_toml_lines('mode = "block"\n[network\nallow = [')
    assert m.line(("mode",)) == 1


def test_arrays_of_strings_in_any_layout() -> None:
    """Each element's line, for arrays mixing plain strings (scanned a run at
    a time), other values, comments and blank lines between any tokens."""
    import random

    rng = random.Random(13)
    blanks = [" ", "\n", "  # note, with a comma\n", "\t", "\n\n  ", ""]
    values = ['"10.0.1.1"', '""', '"a\\"b"', "'lit'", '"""multi\nline"""', "7", '["x", "y"]']
    for case in range(300):
        text, want, line = "k = [", {}, 1
        for index in range(rng.randrange(0, 8)):
            pad = rng.choice(blanks)
            text, line = text + pad, line + pad.count("\n")
            value = rng.choice(values)
            want[("k", index)] = line
            text, line = text + value, line + value.count("\n")
            pad = rng.choice(blanks)
            text, line = text + pad + ",", line + pad.count("\n")
        text += rng.choice(blanks) + "]\nafter = 1\n"
        assert tomllib.loads(text)["after"] == 1, text
        m = scan_toml_lines(text)
        got = {path: m.exact(path) for path in want}
        assert got == want, (case, text)
        assert m.exact(("after",)) == text.count("\n") - 0, (case, text)
