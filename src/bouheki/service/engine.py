"""The daemon's engine: loads and applies the configuration, answers the
management API, and owns the event pipeline (service/pipeline.py) that turns
kernel events into journal entries and bus signals. The D-Bus adapter
(bouheki.bus) and bouhekictl only talk to this through common/api.py.

It is longer than the other modules (some 450 lines) because it is the one
object that holds the running configuration under the reload lock: every
API call reads it there. What does not need that state lives beside it:
the events (pipeline.py), explain (explain.py), the learned map
(learning.py), the policy ids a successor keeps (policy_ids.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..common import api, memory
from ..common.units import check_unit_name, is_unit_pattern
from ..config import loader
from ..config.errors import ConfigError
from ..kernel.enforcer import Applied, Enforcer
from ..kernel.events import EventReader
from ..kernel.generation import ApplyError
from ..names.manager import NamesManager, limits_from
from ..policy.assemble import CompiledPolicySet, compile_policy_set, policy_set_requirements
from ..policy.policyset import PolicySet
from ..policy.tables import (
    MAX_RULES,
    PolicyTables,
)
from ..units import cgroupfs
from . import environment, learning, policy_ids
from . import explain as explain_mod
from .exe_paths import ExePaths
from .journal import Journal
from .pipeline import EventPipeline, origin_str
from .running import Running

# Warnings of one reload written to the journal; the rest are counted.
WARNINGS_LOGGED = 20
log = logging.getLogger("bouheki")


class Engine:
    def __init__(
        self,
        config: str | None = None,
        search_dirs: Sequence[str] = loader.DEFAULT_SEARCH_DIRS,
        journal: Journal | None = None,
        enforcer_factory: Any = None,
        runtime_dir: Path | None = None,
    ) -> None:
        """runtime_dir: where the policy ids of the running generation are
        kept for a successor (service/policy_ids.py); None keeps nothing."""
        self.config = config
        self.runtime_dir = runtime_dir
        self.search_dirs = list(search_dirs)
        self.journal = journal or Journal()
        self._enforcer_factory = enforcer_factory
        self.enforcer: Enforcer | None = None
        self.running: Running | None = None
        # The ids of a predecessor's generation in force (policy_ids.py): our
        # first apply keeps each policy's id (and so its counters).
        self._inherited_ids: dict[str, int] | None = None
        self._listeners: list[api.EngineListener] = []
        self._lock = asyncio.Lock()
        self._check_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: EventReader | None = None
        self.exe_paths = ExePaths()
        # Kernel events -> counts, journal, Blocked (on the reader's thread).
        self.events = EventPipeline(
            self.journal,
            self.exe_paths,
            notify_counters=lambda: self._to_loop(self._counters_changed),
            notify_blocked=lambda event: self._to_loop(self._notify_blocked, event),
        )
        self.reloads = 0
        self.reloads_failed = 0
        self.last_reload_usec = 0
        self.last_reload_ok = True
        # Domain names and @lan, kept current between reloads (issue 8).
        self.names = NamesManager()

    # -- life cycle -------------------------------------------------------

    async def start(self) -> api.ReloadResult:
        """Load the programs and apply the configuration. Raises ConfigInvalid
        (nothing attached stays behind) or KernelUnsupported."""
        self._loop = asyncio.get_running_loop()
        # Parse first: a broken configuration must not cost a compile.
        ps = await self._in_thread(self._load)
        factory = self._enforcer_factory or _default_enforcer
        self.enforcer = await self._in_thread(factory)
        programs = self.enforcer.programs
        replacing = getattr(programs, "pending_release", lambda: [])()
        self._inherit_ids()
        try:
            result = await self._apply(ps, time.monotonic())
        except BaseException:
            self.enforcer.close()
            self.enforcer = None
            raise
        if replacing:
            log.info(
                "replaced the pinned programs of %s: ours enforced the policy before "
                "theirs were released, enforcement never lapsed",
                ", ".join(replacing),
            )
        self._events = EventReader(self.enforcer.programs, self.events.on_event)
        self._events.start()
        self.names.start(self.refresh)
        del ps
        memory.give_back()  # the parse's and a compile's pages (common/memory.py)
        return result

    def _inherit_ids(self) -> None:
        """The predecessor's ids, if its generation is the one in force."""
        if self.runtime_dir is None or self.enforcer is None:
            return
        saved = policy_ids.load(self.runtime_dir)
        if saved is None:
            return
        # Fresh maps (an upgrade's) hold no generation: 0 matches nothing.
        active = self.enforcer.swap.active_gen
        if active != saved.generation:
            log.info("the adopted generation %d is not the one whose policy ids were kept "
                     "(%d): counting by fresh ids", active, saved.generation)  # fmt: skip
            return
        self.events.inherit(active, saved.names())
        self._inherited_ids = saved.ids

    def stop(self, keep_pinned: bool = False) -> None:
        """Detach: what `systemctl stop` asks for. keep_pinned (a restart):
        leave the pinned programs enforcing the running policy for the next
        instance to adopt."""
        self.names.stop()
        self._loop = None  # events still read hand nothing to a loop about to close
        if self._events is not None:
            self._events.stop()
        if self.enforcer is not None:
            if not keep_pinned:
                self.enforcer.clear()
            self.enforcer.close(keep_pinned=keep_pinned)
            self.enforcer = None

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, fn, *args)

    # -- reload -------------------------------------------------------------

    def _load(self) -> PolicySet:
        try:
            return loader.load(self.config, self.search_dirs)
        except ConfigError as e:
            problems = list(e.problems)
            self.journal.reload_failed([str(p) for p in problems])
            raise api.ConfigInvalid(problems) from e

    async def reload(self) -> api.ReloadResult:
        async with self._lock:
            t0 = time.monotonic()
            self.last_reload_usec, self.last_reload_ok = environment.usec_now(), False
            ps: PolicySet | None = None
            try:
                ps = await self._in_thread(self._load)
                result = await self._apply(ps, t0)
            except BaseException:
                self.reloads_failed += 1
                raise
            finally:
                # The parse is freed (unless a refresh needs it: Running);
                # give its pages back (common/memory.py).
                ps = None
                memory.give_back()
            self.last_reload_ok = True
            return result

    async def _apply(self, ps: PolicySet, t0: float) -> api.ReloadResult:
        assert self.enforcer is not None
        enforcer = self.enforcer
        previous = self.running.compiled.ids if self.running else self._inherited_ids

        req = policy_set_requirements(ps)

        def work() -> tuple[CompiledPolicySet, Applied]:
            self.names.set_limits(limits_from(ps.settings))
            env = environment.build(req, self.names)
            compiled = compile_policy_set(ps, env, previous)
            # The executables the policies name: their events get a path
            # even when the process is gone before the event is read.
            for path, ident in env.exes.items():
                if ident is not None:
                    self.exe_paths.learn(ident[0], ident[1], path)
            return compiled, enforcer.apply(compiled)

        try:
            compiled, applied = await self._in_thread(work)
        except ApplyError as e:
            self.journal.reload_failed([str(e)])
            raise api.EngineError(f"{e}; the running policy stays in force") from e
        # An id whose owner changed: a new policy's, or one that moved (the
        # host's takes HOST_POLICY from a unit an older daemon gave it to).
        before = previous or {}
        moved = {pid for name, pid in compiled.ids.items() if before.get(name) != pid}
        if self.runtime_dir is not None:
            policy_ids.save(self.runtime_dir, applied.generation, compiled.ids)
        self.running = Running.of(ps, compiled, applied, environment.usec_now())
        self.reloads += 1
        covered = {cid: path for cid, (path, _) in applied.covered.items()}
        self.events.applied(applied.generation, self.running, covered)
        self.names.activate(req.names, req.sets)
        self.journal.rate.burst = ps.settings.event_rate_limit
        self.journal.rate.interval = ps.settings.event_rate_interval
        # A policy id whose policy changed starts its rule counters afresh;
        # at start, every id but those of the adopted generation's policies
        # (their ids were kept: policy_ids.py).
        for pid in moved:
            enforcer.counters.reset_policy(pid)
        warnings = [str(w) for w in [*ps.warnings, *compiled.warnings]]
        # The caller gets them all; the journal a bounded number, written
        # from the loop that also feeds the watchdog.
        for w in warnings[:WARNINGS_LOGGED]:
            log.warning("%s", w)
        if len(warnings) > WARNINGS_LOGGED:
            log.warning(
                "and %d more warnings (`bouhekictl check-config` lists them all)",
                len(warnings) - WARNINGS_LOGGED,
            )
        self.journal.reloaded(applied.generation, self.mode_summary())
        for listener in list(self._listeners):
            listener.on_reloaded(applied.generation)
            listener.on_properties_changed(["generation", "loaded_at_usec", "mode_summary"])
        return api.ReloadResult(
            generation=applied.generation,
            policies=len(compiled.tables),
            warnings=warnings,
            duration_ms=int((time.monotonic() - t0) * 1000),
        )

    async def refresh(self) -> bool:
        """A domain name's or @lan's addresses changed: recompile the running
        policies (no file is re-read) and swap the kernel generation, as a
        reload does. False when that failed (the running policy stays)."""
        async with self._lock:
            if self.running is None or self.enforcer is None:
                return True
            if self.running.policy_set is None:
                return True  # no name or address set: nothing to change
            try:
                await self._apply(self.running.policy_set, time.monotonic())
            except Exception as e:
                log.error("cannot apply the changed addresses: %s", e)
                return False
            return True

    # -- events ---------------------------------------------------------------

    def _to_loop(self, fn: Any, *args: Any) -> None:
        """Run fn on the loop, from the reader's thread. A stop may close the
        loop while the reader still delivers an event: that event is logged,
        and its signal dropped, without a traceback."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # "Event loop is closed"
            loop.call_soon_threadsafe(fn, *args)

    def _counters_changed(self) -> None:
        self.events.counters_reported()
        for listener in list(self._listeners):
            listener.on_properties_changed(["blocked", "would_block"])

    def _notify_blocked(self, event: api.ConnectionEvent) -> None:
        for listener in list(self._listeners):
            listener.on_blocked(event)
        self._counters_changed()

    # -- the management API -----------------------------------------------------

    def subscribe(self, listener: api.EngineListener) -> api.Unsubscribe:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def mode_summary(self) -> str:
        if self.running is None:
            return "no policy"
        tables = self.running.compiled.tables
        monitor = sum(1 for t in tables if t.monitor)
        noun = "policy" if len(tables) == 1 else "policies"
        return f"{len(tables)} {noun}: {len(tables) - monitor} block, {monitor} monitor"

    def status(self) -> api.Status:
        run = self.running
        return api.Status(
            version=__version__,
            generation=run.applied.generation if run else 0,
            loaded_at_usec=run.loaded_at_usec if run else 0,
            mode_summary=self.mode_summary(),
            blocked=self.events.blocked,
            would_block=self.events.would_block,
        )

    def status_line(self) -> str:
        run = self.running
        if run is None:
            return "starting"
        units = len(run.applied.covered)
        return (
            f"{self.mode_summary()}; {units} cgroups covered; generation "
            f"{run.applied.generation}; {self.events.blocked} blocked"
        )

    def list_policies(self) -> list[api.PolicySummary]:
        run = self.running
        if run is None:
            return []
        per_policy: dict[int, int] = {}
        for _, pid in run.applied.covered.values():
            per_policy[pid] = per_policy.get(pid, 0) + 1
        out = []
        for p in run.facts:
            pid = run.compiled.ids[p.name]
            t = run.tables(pid)
            out.append(
                api.PolicySummary(
                    name=p.name,
                    units=list(p.units),
                    mode="monitor" if t and t.monitor else "block",
                    rule_count=t.rule_count if t else 0,
                    files=list(p.files),
                    cgroups=per_policy.get(pid, 0),
                    names=self.names.states(p.needs.names),
                )
            )
        return out

    def statistics(self) -> api.Statistics:
        run, enf = self.running, self.enforcer
        if run is None or enf is None:
            return api.Statistics(0, 0, 0, 0, 0, 0, 0)
        g = enf.counters.global_counts()
        names = self.names.states(run.needs.names)
        policies = []
        blocked = would = hits = 0
        for t in run.compiled.tables:
            every = enf.counters.policy(t.policy_id, MAX_RULES)
            # Current rules, then the default; totals count every slot, so
            # hits of rules an edit removed still count for the policy.
            counts = [*every[: t.rule_count], every[-1]]
            rules = [
                api.RuleCounters(
                    index=i if i < t.rule_count else api.NO_RULE,
                    origin=origin_str(t.origins[i]),
                    hits=c.hits,
                    blocked=c.blocked,
                    would_block=c.would_block,
                )
                for i, c in enumerate(counts)
            ]
            pb = sum(c.blocked for c in every)
            pw = sum(c.would_block for c in every)
            ph = sum(c.hits for c in every)
            blocked, would, hits = blocked + pb, would + pw, hits + ph
            policies.append(api.PolicyCounters(t.name, ph, pb, pw, rules))
        return api.Statistics(
            # Every judged call is a rule's hit or a refusal (the programs
            # keep no separate count: a cold per-CPU slot on every call).
            checks=hits + g.refused,
            allowed=hits - blocked - would,
            blocked=blocked,
            would_block=would,
            events=self.events.events_read,
            events_lost=g.events_lost,
            events_suppressed=self.journal.suppressed_total,
            policies=policies,
            units=self.events.unit_counts(),
            generation=run.applied.generation,
            reloads=self.reloads,
            reloads_failed=self.reloads_failed,
            last_reload_usec=self.last_reload_usec or run.loaded_at_usec,
            last_reload_ok=self.last_reload_ok,
            names_resolved=sum(1 for n in names if n.addresses),
            names_unresolved=sum(1 for n in names if not n.addresses),
        )

    def _policy_for_unit(self, unit: str | None) -> int | None:
        run = self.running
        if run is None:
            return None
        # Where the unit runs (Slice= may put it anywhere), else where
        # systemd would put it.
        cgroup = self._unit_cgroup(unit) if unit else None
        return explain_mod.policy_for_unit(run.compiled, unit, cgroup)

    def _unit_cgroup(self, unit: str) -> list[str] | None:
        """The path below the cgroup root of the running unit's cgroup: a
        directory of that name directly below slices only."""
        root = getattr(self.enforcer, "cgroup_root", None)
        if root is None:
            return None
        for path, _ in cgroupfs.walk(root):
            parts = path.relative_to(root).parts
            if parts and parts[-1] == unit and all(p.endswith(".slice") for p in parts[:-1]):
                return list(parts)
        return None

    # -- learning ---------------------------------------------------------------

    def _learning_policy(self, unit: str) -> tuple[Running, PolicyTables] | None:
        if problem := check_unit_name(unit):
            raise api.BadRequest(problem)
        if is_unit_pattern(unit):
            raise api.BadRequest(f"'{unit}' is a pattern: name one unit")
        run, pid = self.running, self._policy_for_unit(unit)
        t = run.tables(pid) if run is not None and pid is not None else None
        return (run, t) if run is not None and t is not None else None

    # Both read (and forget) up to MAX_LEARN map entries: seconds under
    # emulation, so in the worker thread and not on the loop, whose stalls
    # the watchdog kills (a Learned of a full map once outlasted its 30 s).
    # Under the reload lock: the answer is the generation in force's.
    async def learned(self, unit: str) -> api.Learned:
        async with self._lock:
            found, enf = self._learning_policy(unit), self.enforcer
            if found is None or enf is None:
                return api.Learned(unit=unit, policy="", learning=False)
            run, t = found
            names = learning.name_addresses(run.facts, t.name, self.names)
            return await self._in_thread(learning.learned, unit, t, enf, names, self.exe_paths)

    async def forget_learned(self, unit: str) -> int:
        async with self._lock:
            found, enf = self._learning_policy(unit), self.enforcer
            if found is None or enf is None:
                return 0
            return await self._in_thread(enf.maps.forget_learned, found[1].policy_id)

    def explain(self, query: api.ExplainQuery) -> api.Explanation:
        run = self.running
        pid = self._policy_for_unit(query.unit)
        return explain_mod.explain(run.compiled if run else None, pid, query)

    async def check_config(self, path: str | None) -> api.CheckResult:
        # Parsing a large configuration takes seconds (bench/): in a worker
        # thread, like a reload's, so the loop keeps answering. Not under the
        # reload lock (it reads files, not the engine): one check at a time,
        # so that any caller's stream of checks queues instead of piling up
        # parses, and never delays a reload.
        async with self._check_lock:
            try:
                return await self._in_thread(
                    loader.check_config, path or self.config, self.search_dirs
                )
            finally:
                memory.give_back()  # a large check's parse (common/memory.py)


def _default_enforcer() -> Enforcer:
    from ..kernel import loader as kloader
    from ..kernel.pinning import Pins

    # BOUHEKI_REPLACE_PROGRAMS=1: compile even when identical programs are
    # pinned (they are then replaced with no window, as after an upgrade).
    adopt = os.environ.get("BOUHEKI_REPLACE_PROGRAMS", "") not in ("1", "yes", "true")
    programs = kloader.load(pins=Pins(), adopt=adopt)
    if not programs.compiled:
        log.info("adopted the pinned programs of %s as they are: nothing recompiled, "
                 "enforcement never lapsed", ", ".join(programs.adopted))  # fmt: skip
    elif before := programs.pending_release():
        log.info("compiled new programs; the pinned ones of %s keep enforcing until "
                 "the first policy is applied to ours", ", ".join(before))  # fmt: skip
    return Enforcer(programs)
