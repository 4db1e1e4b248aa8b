"""Bulk building without the cyclic garbage collector.

A 100,000-prefix policy allocates a few hundred thousand objects that all
survive (the parsed items, their origins, the networks, the tables). Each
allocation burst triggers collections, and every full collection walks all
of them again, and the running policy's too: on the host that was half of
a parse and three quarters of a compile (bench/). None of these objects
form cycles that need collecting, so the collector is paused while they
are built; reference counting frees everything else as usual.

The collector's switch is process-wide and a reload and a CheckConfig may
build at the same time on two threads: the pause is counted, and the
collector comes back when the last one ends, and only if it was on before
the first.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])
_lock = threading.Lock()
_depth = 0
_was_enabled = False


def _pause() -> None:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1


def _resume() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()


def without_gc(fn: _F) -> _F:
    """Run fn with the cyclic collector paused (see the module's comment)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _pause()
        try:
            return fn(*args, **kwargs)
        finally:
            _resume()

    return wrapper  # type: ignore[return-value]
