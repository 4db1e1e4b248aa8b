"""The D-Bus management API adapter (thin: no policy logic; see doc/org.bouheki.Bouheki1.5.md).

The daemon calls `await bouheki.bus.serve(engine, bus)`; every D-Bus name lives
in bouheki.bus.names. The exports below are loaded lazily so that importing
bouheki.bus.names (bouhekictl check-config, tests) does not need the D-Bus library.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BusNameUnavailable": "server",
    "BusService": "server",
    "serve": "server",
    "BusTarget": "connection",
    "connect": "connection",
    "resolve_bus": "connection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
