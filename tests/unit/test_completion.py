"""bash completion for bouhekictl: what it offers, and that it offers what
the parser accepts (the parser is the one source of commands and options)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from bouheki.ctl.parser import build_parser

SCRIPT = Path(__file__).resolve().parents[2] / "completion" / "bouhekictl.bash"


def complete(line: str, env_path: str | None = None) -> list[str]:
    """COMPREPLY for `line` (completing its last word), as bash would ask."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    words = line.split(" ")
    program = (
        f"source {SCRIPT}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_bouhekictl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {"PATH": env_path or "/usr/bin:/bin"}
    r = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


def parser_options() -> dict[str, set[str]]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    out = {"": {o for a in parser._actions for o in a.option_strings if o.startswith("--")}}
    for name, p in sub.choices.items():
        out[name] = {o for a in p._actions for o in a.option_strings if o.startswith("--")}
    return out


def test_commands_and_options_are_the_parsers() -> None:
    want = parser_options()
    assert set(complete("bouhekictl ")) == set(want) - {""} | want[""]
    for command, options in want.items():
        if command:
            assert set(complete(f"bouhekictl {command} --")) == options, command


def test_values_are_completed() -> None:
    assert complete("bouhekictl stats --format o") == ["openmetrics"]
    assert complete("bouhekictl --bus s") == ["system", "session"]
    assert complete("bouhekictl explain --proto u") == ["udp"]
    assert complete("bouhekictl --timeout 5 ch") == ["check-config"]


def test_units_come_from_systemd(tmp_path: Path) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in list-units) echo "nginx.service loaded active running nginx";;\n'
        '  list-unit-files) echo "nginx.service enabled enabled"; '
        'echo "ntpsec.service disabled enabled";; esac\n'
    )
    fake.chmod(0o755)
    got = complete("bouhekictl explain --unit n", env_path=f"{tmp_path}:/usr/bin:/bin")
    assert sorted(set(got)) == ["nginx.service", "ntpsec.service"]
    # A learning command's argument is a unit.
    got = complete("bouhekictl suggest ng", env_path=f"{tmp_path}:/usr/bin:/bin")
    assert sorted(set(got)) == ["nginx.service"]
