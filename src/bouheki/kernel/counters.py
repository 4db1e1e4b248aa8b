"""Sum the per-CPU counters the hooks keep."""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass
from typing import Any

from ..policy.tables import MAX_RULES
from . import layout
from .percpu import PerCpuArray


@dataclass
class RuleCount:
    hits: int = 0
    blocked: int = 0
    would_block: int = 0

    def __iadd__(self, other: RuleCount) -> RuleCount:
        self.hits += other.hits
        self.blocked += other.blocked
        self.would_block += other.would_block
        return self


@dataclass
class GlobalCounts:
    events: int = 0
    events_lost: int = 0
    no_state: int = 0
    refused: int = 0  # calls refused whatever the rules said (an event's reason)
    scope_named: int = 0  # unit cgroups given their policy by name at creation
    scope_full: int = 0  # unit cgroups or slices the full maps could not record
    learn_full: int = 0  # connections of learning policies the full learned map missed


class CounterReader:
    def __init__(self, programs: Any) -> None:
        self._rules = PerCpuArray(programs.map_fd("counters"), layout.Counter)
        self._global = PerCpuArray(programs.map_fd("gcounters"), ct.c_uint64)

    def global_counts(self) -> GlobalCounts:
        def total(slot: int) -> int:
            return sum(self._global.get(slot))

        return GlobalCounts(
            events=total(layout.G_EVENTS),
            events_lost=total(layout.G_EVENTS_LOST),
            no_state=total(layout.G_NO_STATE),
            refused=total(layout.G_REFUSED),
            scope_named=total(layout.G_SCOPE_NAMED),
            scope_full=total(layout.G_SCOPE_FULL),
            learn_full=total(layout.G_LEARN_FULL),
        )

    def rule(self, policy_id: int, rule: int) -> RuleCount:
        """rule == MAX_RULES is the policy's default."""
        out = RuleCount()
        for v in self._rules.get(policy_id * (MAX_RULES + 1) + rule):
            out += RuleCount(int(v.hits), int(v.blocked), int(v.would_block))
        return out

    def policy(self, policy_id: int, rule_count: int) -> list[RuleCount]:
        """Counters of rules 0..rule_count-1, then the default."""
        rules = [self.rule(policy_id, r) for r in range(rule_count)]
        return [*rules, self.rule(policy_id, MAX_RULES)]

    def reset_policy(self, policy_id: int) -> None:
        """A policy whose rules changed starts counting afresh."""
        for r in range(MAX_RULES + 1):
            self._rules.zero(policy_id * (MAX_RULES + 1) + r)
