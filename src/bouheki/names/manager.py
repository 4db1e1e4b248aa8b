"""Keeps the domain names and @lan of the running policies current.

The engine asks `prepare()` for the names and sets when it compiles (a reload
resolves what it has never seen, synchronously), tells `activate()` what the
applied policies use, and gets an `on_change()` call whenever an address of
those appears or goes: it then recompiles the running policies and swaps the
kernel generation, exactly as a reload does.

Threads: prepare() runs in the engine's worker thread, everything else on
the loop; the cache is shared under one lock, held only for bookkeeping,
never across a DNS query.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Iterable
from typing import Callable, Optional

from ..common.api import NameState
from ..common.settings import DaemonSettings
from . import resolv_conf
from .cache import IPNetwork, Limits, NameCache
from .lan import AddressWatcher, connected_subnets
from .resolver import NameResolver, Resolution, ResolveError

log = logging.getLogger("bouheki.names")

# After an address event, wait this long for the rest of the burst (an
# interface coming up adds several addresses) before looking.
LAN_SETTLE = 0.05
# A failed on_change() (the apply failed) is tried again after this long.
APPLY_RETRY = 5.0
# Resolutions in flight at once.
WORKERS = 4
# How long a reload waits for names it has no address for. A policy of
# thousands of names, or a resolver that does not answer, must not hold a
# reload for minutes: the names still unanswered match no address for now,
# and the background task resolves them and applies what it finds.
PREPARE_BUDGET = 5.0
# Background resolution: at most this many names per round, rounds at least
# this many seconds apart when names are left over.
RESOLVE_BATCH = 64
RESOLVE_PACE = 1.0
# Names whose new failures are logged one by one in a round; the rest are counted.
FAILURES_LOGGED = 5

OnChange = Callable[[], Awaitable[bool]]


def limits_from(settings: DaemonSettings) -> Limits:
    return Limits(
        min_ttl=settings.dns_min_ttl,
        max_ttl=settings.dns_max_ttl,
        grace=settings.dns_grace,
        max_addresses=settings.max_addresses_per_name,
    )


class NamesManager:
    def __init__(
        self,
        limits: Optional[Limits] = None,
        resolver: Optional[NameResolver] = None,
        lan_source: Callable[[], list[IPNetwork]] = connected_subnets,
        resolvers_source: Callable[[], list[IPNetwork]] = resolv_conf.name_servers,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = NameCache(limits)
        self.prepare_budget = PREPARE_BUDGET
        self._more_due = False  # the last round left due names for the next
        self._pending_change = False  # addresses changed in a round not applied yet
        self._failures: list[tuple[str, str, int]] = []  # new failures, not logged yet
        self.resolver = resolver or NameResolver()
        self.lan_source = lan_source
        self.resolvers_source = resolvers_source
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "bouheki-dns")
        self._active_names: frozenset[str] = frozenset()
        self._active_sets: frozenset[str] = frozenset()
        # @lan as the watcher last dumped it (None: not watching, or not yet),
        # and as prepare() last read it while not watching: the first dump
        # after the watcher starts is compared with what was compiled.
        self._lan: Optional[list[IPNetwork]] = None
        self._lan_prepared: Optional[list[IPNetwork]] = None
        self._lan_dirty = False
        self._watcher: Optional[AddressWatcher] = None
        # Awaited when an address of an active name or set changed; returns
        # False when it could not apply (tried again after APPLY_RETRY).
        self.on_change: Optional[OnChange] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._wake: Optional[asyncio.Event] = None
        self._retry_apply_at: Optional[float] = None

    # -- called by the engine ---------------------------------------------------

    def set_limits(self, limits: Limits) -> None:
        with self._lock:
            self.cache.limits = limits

    def prepare(
        self, names: Iterable[str], sets: Iterable[str]
    ) -> tuple[dict[str, list[IPNetwork]], dict[str, list[IPNetwork]]]:
        """The networks of `names` and of the daemon-maintained `sets` (@lan,
        @resolvers),
        for a compile. Blocking (DNS): call it from a worker thread. Names
        without any address yet are resolved now; the others come from the
        cache, which the background task keeps current."""
        names = sorted(set(names))
        with self._lock:
            todo = [n for n in names if self.cache.needs_answer(n)]
            for n in names:
                self.cache.add(n)
        if todo:
            futures = {self._pool.submit(self._resolve_quietly, n): n for n in todo}
            done, late = concurrent.futures.wait(futures, timeout=self.prepare_budget)
            for f in late:
                f.cancel()  # those not started yet; the task resolves them later
            with self._lock:
                for f in done:
                    self._record(futures[f], f.result(), self.clock())
            self._log_failures()
            if late:
                log.warning(
                    "%d of %d names not answered within %.1f s: they match no address until "
                    "they resolve (in the background)",
                    len(late), len(todo), self.prepare_budget,
                )  # fmt: skip
                # activate() wakes the background task once the apply is done:
                # resolving them now would compete with the compile for the GIL.
        sets_out: dict[str, list[IPNetwork]] = {}
        if "lan" in set(sets):
            # Only the task writes _lan, so a value read here is never older
            # than one a refresh was asked for.
            lan = self._lan
            if lan is None:
                lan = self._lan_prepared = self.lan_source()
            sets_out["lan"] = list(lan)
        if "resolvers" in set(sets):
            sets_out["resolvers"] = self.resolvers_source()
        with self._lock:
            networks = self.cache.networks()
        return {n: networks.get(n, []) for n in names}, sets_out

    def activate(self, names: Iterable[str], sets: Iterable[str]) -> None:
        """What the policies now in force use (after a successful apply).
        Other names are forgotten; @lan is watched only while used."""
        with self._lock:
            self._active_names = frozenset(names)
            self._active_sets = frozenset(sets)
            self.cache.retain(self._active_names)
        self._retry_apply_at = None
        if self._loop is not None:
            self._sync_watcher()
            self._kick()

    def states(self, names: Iterable[str]) -> list[NameState]:
        """Each name's addresses and when their TTLs run out (realtime usec)."""
        offset = self.wall_clock() - self.clock()
        with self._lock:
            return self.cache.states(names, lambda t: int((t + offset) * 1_000_000))

    def start(self, on_change: OnChange) -> None:
        """Begin refreshing names and following @lan; on the loop thread."""
        self._loop = asyncio.get_running_loop()
        self.on_change = on_change
        self._wake = asyncio.Event()
        self._sync_watcher()
        self._task = self._loop.create_task(self._run(), name="bouheki-names")
        self._kick()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self._lan = None
        self._loop = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals ---------------------------------------------------------------

    def _resolve_quietly(self, name: str) -> Resolution | ResolveError:
        try:
            return self.resolver.resolve(name)
        except ResolveError as e:
            return e
        except Exception as e:  # a resolver bug must not stop the others
            log.exception("resolving %s", name)
            return ResolveError(f"{type(e).__name__}: {e}")

    def _record(self, name: str, result: Resolution | ResolveError, now: float) -> bool:
        """Put one resolution into the cache (lock held). True if the
        addresses changed."""
        if isinstance(result, ResolveError):
            if self.cache.failed(name, now, str(result)):
                self._failures.append((name, str(result), len(self.cache.addresses(name))))
            return False
        recovered = self.cache.failures(name) > 0
        before = set(self.cache.addresses(name))
        changed = self.cache.observe(name, result.records, now, result.negative_ttl)
        if result.errors and self.cache.failed(name, now, "; ".join(result.errors)):
            log.warning("resolving %s: %s", name, "; ".join(result.errors))
        elif recovered:
            log.info("%s resolves again", name)
        if changed:
            after = set(self.cache.addresses(name))
            added = sorted(map(str, after - before))
            if added:
                log.info("%s: %s added", name, ", ".join(added))
        return changed

    def _log_failures(self) -> None:
        """A few lines per round, whatever the number of names: a policy of
        thousands of names behind a dead resolver must not flood the journal."""
        with self._lock:
            failures, self._failures = self._failures, []
        for name, error, kept in failures[:FAILURES_LOGGED]:
            log.warning(
                "cannot resolve %s: %s; keeping its addresses (%d) until they expire",
                name, error, kept,
            )  # fmt: skip
        if len(failures) > FAILURES_LOGGED:
            log.warning(
                "and %d more names cannot be resolved (each keeps its addresses until they "
                "expire; `bouhekictl policies` shows them)",
                len(failures) - FAILURES_LOGGED,
            )

    def _sync_watcher(self) -> None:
        want = "lan" in self._active_sets
        if want and self._watcher is None and self._loop is not None:
            watcher = AddressWatcher(self._lan_event)
            try:
                watcher.start(self._loop)
            except OSError as e:
                log.error("cannot follow address changes (%s): @lan is read at reload only", e)
                return
            self._watcher = watcher
            # Subscribed first, then dumped: no change can fall in between.
            self._lan_dirty = True
        elif not want and self._watcher is not None:
            self._watcher.close()
            self._watcher = None
            self._lan = None

    def _lan_event(self) -> None:
        self._lan_dirty = True
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _deadline(self) -> Optional[float]:
        with self._lock:
            times = [t for t in (self.cache.next_deadline(), self._retry_apply_at) if t is not None]
        return min(times) if times else None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            deadline = self._deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._more_due:
                await asyncio.sleep(RESOLVE_PACE)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("updating names and address sets")
                await asyncio.sleep(1)  # no hot loop on a persistent bug

    async def tick(self) -> bool:
        """One round: re-read @lan if it moved, resolve the names that are
        due, drop expired addresses, and apply if the policies' view changed.
        True if on_change() was called."""
        loop = asyncio.get_running_loop()
        changed = False
        if self._lan_dirty and self._watcher is not None:
            await asyncio.sleep(LAN_SETTLE)
            self._lan_dirty = False
            lan = await loop.run_in_executor(self._pool, self.lan_source)
            before = self._lan if self._lan is not None else self._lan_prepared
            if lan != before:
                log.info("@lan is now: %s", ", ".join(map(str, lan)) or "empty")
                changed = True
            self._lan = lan
        with self._lock:
            due = self.cache.due(self.clock())
        # A bounded batch per round, rounds paced by _run(): thousands of names
        # due at once (a large policy, a resolver down) must neither flood the
        # DNS server nor starve the event loop (and its watchdog) of the GIL.
        self._more_due = len(due) > RESOLVE_BATCH
        due = due[:RESOLVE_BATCH]
        if due:
            futures = [loop.run_in_executor(self._pool, self._resolve_quietly, n) for n in due]
            results = await asyncio.gather(*futures)
            with self._lock:
                now = self.clock()
                for name, result in zip(due, results):
                    if name in self.cache and self._record(name, result, now):
                        changed |= name in self._active_names
            self._log_failures()
        with self._lock:
            expired = self.cache.expire(self.clock())
        changed |= bool(expired & self._active_names)
        # Apply once the batches are through, not once per batch: each apply
        # recompiles every policy.
        changed |= self._pending_change
        self._pending_change = changed and self._more_due
        if self._pending_change:
            return False
        retry = self._retry_apply_at is not None and self._retry_apply_at <= self.clock()
        if not (changed or retry) or self.on_change is None:
            return False
        self._retry_apply_at = None
        ok = await self.on_change()
        if not ok:
            self._retry_apply_at = self.clock() + APPLY_RETRY
        return True
