"""The event pipeline: kernel events, read on the ring buffer's thread, become
counts, journal entries and (for the engine's listeners) Blocked events.

Only what the journal's rate limit admits goes further than a count, so a
process flooding blocked connects costs a bounded amount of work; what the
reader cannot keep up with, the kernel counts as lost. An event names its
policy by id within its generation: the pipeline keeps the configurations
of the last generations the daemon applied, and the ids of a predecessor's
generation (service/policy_ids.py), so that no event is pinned on the wrong
policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..common import api
from ..common.units import UNIT_SUFFIXES
from ..kernel.events import KernelEvent
from ..policy.assemble import ScopeEntry
from ..policy.tables import DEFAULT_RULE, REASON_WORDS, Origin, Reason, Verdict
from ..units import cgroupfs
from .environment import usec_now
from .exe_paths import ExePaths
from .explain import VERDICT_WORDS
from .journal import Journal
from .running import Running


@dataclass(frozen=True)
class EventNames:
    """A policy as its events name it: its name and its rules' origins."""

    name: str
    rule_count: int
    origins: tuple[Origin, ...]  # index i: rule i; index rule_count: the default


@dataclass(frozen=True)
class Attribution:
    """What the events of one generation are named by: its policies by id,
    and its scopes. Not the generation's whole Running record: a
    configuration of 100,000 prefixes takes ~100 MB in Python, and
    KEPT_GENERATIONS of them would stay for events that need a few names."""

    policies: dict[int, EventNames]
    scopes: tuple[ScopeEntry, ...]

    @classmethod
    def of(cls, running: Running) -> Attribution:
        named = {
            t.policy_id: EventNames(t.name, t.rule_count, tuple(t.origins))
            for t in running.compiled.tables
        }
        return cls(named, tuple(running.compiled.scopes))


# Generations whose policies events can still be attributed to (a reload
# writes one; events are read within seconds).
KEPT_GENERATIONS = 8
# Units whose blocks are counted one by one (statistics, metrics); past it,
# under "": a process cannot grow the daemon by spawning units.
MAX_UNIT_COUNTERS = 4096


def _foreign(ev: KernelEvent) -> str:
    """What an event of a generation this daemon did not apply can say of its policy."""
    return f"policy {ev.policy_id} of generation {ev.gen} (applied by an earlier daemon)"


def origin_str(o: Origin | None) -> str:
    return f"{o.file}:{o.line}" if o is not None and o.file else ""


class EventPipeline:
    """notify_counters and notify_blocked are called on the reader's thread
    and must hand over to the loop (the engine's _to_loop does)."""

    def __init__(
        self,
        journal: Journal,
        exe_paths: ExePaths,
        notify_counters: Callable[[], None],
        notify_blocked: Callable[[api.ConnectionEvent], None],
    ) -> None:
        self.journal = journal
        self.exe_paths = exe_paths
        self._notify_counters = notify_counters
        self._notify_blocked = notify_blocked
        self.cgroup_root: Path | None = None
        self.events_read = 0
        self.blocked = 0
        self.would_block = 0
        self._unit_counts: dict[str, list[int]] = {}  # unit -> [blocked, would_block]
        self._cgroup_paths: dict[int, str] = {}
        self._counters_pending = False
        self._generations: dict[int, Attribution] = {}
        self._inherited: dict[int, dict[int, str]] = {}

    # -- what the engine tells it ---------------------------------------------

    def applied(self, generation: int, running: Running, covered: dict[int, str]) -> None:
        """A generation now in force, and the cgroup paths of its scopes."""
        self._generations[generation] = Attribution.of(running)
        while len(self._generations) > KEPT_GENERATIONS:
            del self._generations[next(iter(self._generations))]
        self._cgroup_paths = dict(covered)

    def inherit(self, generation: int, names: dict[int, str]) -> None:
        """A predecessor's generation in force, with its policies' names by id."""
        self._inherited[generation] = names

    def counters_reported(self) -> None:
        """The loop has told the listeners the counters changed."""
        self._counters_pending = False

    def unit_counts(self) -> list[api.UnitCounters]:
        # A copy first: the reader's thread may add a unit meanwhile.
        counts = dict(self._unit_counts)
        return [api.UnitCounters(u, b, w) for u, (b, w) in sorted(counts.items())]

    # -- on the reader's thread -------------------------------------------------

    def on_event(self, ev: KernelEvent) -> None:
        """On the ring buffer's thread: count, rate-limit, log. Only admitted
        events reach the loop, so a process flooding blocked connects costs
        the loop a bounded amount of work (what the reader cannot keep up
        with, the kernel counts as lost)."""
        self.events_read += 1
        unit = self.unit_of(ev.cgroup_id) or self._unit_of_policy(ev)
        if ev.verdict in (Verdict.BLOCKED, Verdict.WOULD_BLOCK):
            key = (
                unit
                if unit in self._unit_counts or len(self._unit_counts) < MAX_UNIT_COUNTERS
                else ""
            )
            counts = self._unit_counts.setdefault(key, [0, 0])
            if ev.verdict == Verdict.BLOCKED:
                self.blocked += 1
                counts[0] += 1
            else:
                self.would_block += 1
                counts[1] += 1
        if not self.journal.admit(unit):
            if not self._counters_pending:
                self._counters_pending = True
                self._notify_counters()
            return
        event = self._log_event(ev, unit)
        if event is not None:
            self._notify_blocked(event)

    def unit_of(self, cgroup_id: int) -> str:
        """The unit whose cgroup (or an ancestor's) this is, '' for none."""
        path = self._cgroup_paths.get(cgroup_id)
        if path is None and len(self._cgroup_paths) > 65536:
            self._cgroup_paths.clear()  # bounded: cgroups come and go
        root = self.cgroup_root
        if path is None and root is not None:
            # One walk caches every cgroup, found or not: a flood from one
            # cgroup costs one walk.
            for p, cid in cgroupfs.walk(root):
                self._cgroup_paths.setdefault(cid, "/" + str(p.relative_to(root)))
            path = self._cgroup_paths.setdefault(cgroup_id, "")
        if not path:
            return ""
        for part in reversed(path.strip("/").split("/")):
            if part.endswith(UNIT_SUFFIXES):
                return part
        return ""

    def _unit_of_policy(self, ev: KernelEvent) -> str:
        """A process whose cgroup was gone before its event was read (a
        short-lived transient unit): its unit is known still when the event's
        policy is that of one unit by name (not a slice's or a pattern's)."""
        run = self._generations.get(ev.gen)
        if run is None:
            return ""
        # The compiler's scopes say it: a glob for a pattern or a template.
        scopes = [s for s in run.scopes if s.policy_id == ev.policy_id]
        if len(scopes) != 1 or scopes[0].glob is not None or scopes[0].unit.endswith(".slice"):
            return ""
        return scopes[0].unit

    def _log_event(self, ev: KernelEvent, unit: str) -> api.ConnectionEvent | None:
        run = self._generations.get(ev.gen)
        t = run.policies.get(ev.policy_id) if run else None
        inherited = self._inherited.get(ev.gen, {}).get(ev.policy_id)
        policy = t.name if t else inherited or _foreign(ev)
        rule = ev.rule if ev.rule != DEFAULT_RULE else (t.rule_count if t else ev.rule)
        # A refusal (ev.reason) was decided by no rule.
        judged = ev.reason == Reason.POLICY
        origin = t.origins[rule] if t and judged and rule < len(t.origins) else None
        exe = self.exe_paths.of_process(ev.pid, ev.exe_dev, ev.exe_ino) or ""
        event = api.ConnectionEvent(
            unit=unit, policy=policy, verdict=VERDICT_WORDS[ev.verdict], daddr=ev.daddr,
            dport=ev.dport, protocol=ev.protocol_name, comm=ev.comm, exe=exe, pid=ev.pid,
            uid=ev.uid, gid=ev.gid, rule=ev.rule if ev.rule != DEFAULT_RULE else api.NO_RULE,
            origin=origin_str(origin), timestamp_usec=usec_now(), exe_dev=ev.exe_dev,
            exe_ino=ev.exe_ino, cgroup_id=ev.cgroup_id, hook=ev.hook.name.lower(),
            reason=REASON_WORDS[ev.reason],
        )  # fmt: skip
        self.journal.connection(event, check_rate=False)
        return None if ev.verdict == Verdict.ALLOWED else event
