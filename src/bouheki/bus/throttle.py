"""Rate limits for what the adapter broadcasts on the bus.

Every bus client that listens pays for every signal, so an event storm (a
misbehaving service reconnecting in a loop) must not become a bus storm.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from typing import Callable, Optional


class SlidingWindowLimiter:
    """At most `limit` events in any `window` seconds.

    A sliding log rather than a token bucket: a bucket lets up to twice its
    size through across a refill boundary, and "at most N per second" is the
    documented promise.
    """

    def __init__(
        self, limit: int, window: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("the limit must be at least 1 per window")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._stamps: collections.deque[float] = collections.deque()

    def allow(self) -> bool:
        now = self._clock()
        while self._stamps and now - self._stamps[0] >= self._window:
            self._stamps.popleft()
        if len(self._stamps) >= self._limit:
            return False
        self._stamps.append(now)
        return True


class Coalescer:
    """Collects names and flushes them at most once per `interval` seconds.

    The first change after a quiet period is flushed on the next loop
    iteration (so a reload's PropertiesChanged follows its reply promptly);
    later changes within the interval are merged into one trailing flush, so
    counters bumped by every blocked connect cost at most one signal per
    interval.
    """

    def __init__(
        self,
        flush: Callable[[set[str]], None],
        interval: float,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        self._flush = flush
        self._interval = interval
        self._loop = loop or asyncio.get_running_loop()
        self._pending: set[str] = set()
        self._handle: Optional[asyncio.Handle] = None
        self._last = float("-inf")

    def add(self, names: Iterable[str]) -> None:
        self._pending.update(names)
        if self._handle is not None or not self._pending:
            return
        delay = max(0.0, self._last + self._interval - self._loop.time())
        if delay == 0.0:
            self._handle = self._loop.call_soon(self._run)
        else:
            self._handle = self._loop.call_later(delay, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending.clear()

    def _run(self) -> None:
        self._handle = None
        self._last = self._loop.time()
        names, self._pending = self._pending, set()
        if names:
            self._flush(names)
