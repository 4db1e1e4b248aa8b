"""Puts a compiled policy set into the kernel: the one place that joins the
compiler's output, the cgroup scope plan and the generation swap."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..policy.assemble import CompiledPolicySet
from ..units import cgroupfs
from ..units.scope import ScopePlan, bindings, simple_pattern
from .counters import CounterReader
from .generation import GenerationSwap, ScopeSink, UnitName, UnitPattern
from .maps import Maps


@dataclass
class Applied:
    generation: int
    covered: dict[int, tuple[str, int]]  # cgroup id -> (cgroup path, policy id)


class Enforcer:
    def __init__(self, programs: Any, cgroup_root: Path | None = None) -> None:
        self.programs = programs
        self.maps = Maps(programs)
        sizes = getattr(programs, "sizes", None)
        self.swap = GenerationSwap(self.maps, capacities=sizes.capacities() if sizes else None)
        self.counters = CounterReader(programs)
        self.cgroup_root = cgroup_root or cgroupfs.cgroup2_root()

    def apply(self, compiled: CompiledPolicySet) -> Applied:
        """Make compiled the running policy, atomically."""
        plan = ScopePlan(bindings(compiled))
        patterns: list[UnitPattern] = []
        names = [UnitName(0, b.unit, b.policy) for b in plan.exact.values()]
        for b in plan.patterns:
            # The loader refuses every other shape (config/values.py).
            shape = simple_pattern(b.unit)
            assert shape is not None, b.unit
            patterns.append(UnitPattern(0, shape[0], shape[1], b.policy))
        covered: dict[int, tuple[str, int]] = {}

        def fill(sink: ScopeSink) -> None:
            covered.update(plan.fill(self.cgroup_root, sink))

        gen = self.swap.apply(
            compiled.tables,
            fill,
            host_mntns=host_mount_ns(),
            unit_names=names,
            patterns=patterns,
        )
        # Ours enforce this policy now: programs they replace may go.
        release = getattr(self.programs, "release_predecessors", None)
        if release is not None:
            release()
        return Applied(gen, covered)

    def clear(self) -> None:
        self.swap.clear()

    def close(self, keep_pinned: bool = False) -> None:
        self.programs.close(keep_pinned=keep_pinned)


def host_mount_ns() -> int:
    """PID 1's mount namespace is the host's, whatever namespace the daemon
    itself runs in (ProtectSystem= gives it one of its own)."""
    try:
        return cgroupfs.mount_ns_inode(1)
    except OSError:
        return os.stat("/proc/self/ns/mnt").st_ino
