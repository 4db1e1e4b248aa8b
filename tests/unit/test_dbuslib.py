"""The one choice of D-Bus library (bouheki.dbuslib) and its refusal of a
dbus-fast that would get the daemon dropped from the bus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bouheki import dbuslib

SRC = Path(__file__).resolve().parents[2] / "src"
ONLY_FAST = "import sys; sys.modules['dbus_next'] = None\n"


def test_the_library_asked_for_is_the_one_in_use() -> None:
    """tests/run-all's second pass really runs on dbus-fast."""
    assert os.environ.get("BOUHEKI_TEST_DBUS_LIBRARY", "dbus-next") == dbuslib.LIBRARY


def test_every_module_takes_the_library_from_dbuslib() -> None:
    """One fallback: no other module imports dbus_next or dbus_fast itself
    (units/systemd.py did, so a stop with only dbus-fast left programs attached)."""
    offenders = [
        str(p.relative_to(SRC))
        for p in (SRC / "bouheki").rglob("*.py")
        if p.name != "dbuslib.py"
        and any(
            line.lstrip().startswith((f"from {m}", f"import {m}"))
            for line in p.read_text().splitlines()
            for m in ("dbus_next", "dbus_fast")
        )
    ]
    assert offenders == []


def _system_dbus_fast() -> str | None:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", "python3-dbus-fast"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0 or not r.stdout.startswith("install ok installed"):
        return None
    return r.stdout.split()[-1]


def test_bookworms_dbus_fast_is_refused_with_the_reason() -> None:
    """python3-dbus-fast 1.84.2 (bookworm) writes a non-ASCII string's length
    in characters; the bus then drops the sender. With only it installed the
    import fails and says so (the daemon exits with status 3 on it)."""
    version = _system_dbus_fast()
    if version is None or not version.startswith("1.84."):
        pytest.skip(f"the system's python3-dbus-fast is {version}, not bookworm's 1.84")
    r = subprocess.run(
        [sys.executable, "-c", ONLY_FAST + "import bouheki.dbuslib"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: dbus-fast 1.84.")
    assert "non-ASCII" in last and "python3-dbus-next" in last


def test_a_non_ascii_string_has_its_utf8_length_on_the_wire() -> None:
    """The check itself, on the library in use (both pass it)."""
    assert dbuslib._marshals_utf8_lengths()
