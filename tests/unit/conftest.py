"""BOUHEKI_TEST_DBUS_LIBRARY=dbus-fast runs the host tests as a machine with
only dbus-fast installed would: dbus-next cannot be imported (tests/run-all
runs the D-Bus tests a second time so, with a pinned dbus-fast from PyPI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Test support shared with the lab suite (tests/support: random policies, the
# reference semantics), not shipped in the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

if os.environ.get("BOUHEKI_TEST_DBUS_LIBRARY") == "dbus-fast":
    sys.modules["dbus_next"] = None  # type: ignore[assignment]  # import fails, as if absent
