"""Which cgroups a unit policy covers.

A cgroup's directory name is its unit's name, but only directly below a
slice that lies outside every delegated subtree: below a service, a scope or
a user manager, whoever holds the delegation picks the names. So a name
counts only where its parent is such a slice; everything else inherits its
parent's policy, and the deepest unit with a policy wins. The kernel's
cgroup_mkdir program applies the same rule to cgroups created later
(bpf/bouheki.bpf.c, bh_assign), from the tables this module plans.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..policy.assemble import CompiledPolicySet
from . import cgroupfs

# The kernel checks patterns of this shape; anything else is matched here
# only, when the daemon walks the tree (a unit it matches is covered from the
# daemon's next look, not from its first instruction).
_GLOB_CHARS = set("*?[]")


@dataclass(frozen=True)
class Binding:
    unit: str  # a unit name or a shell pattern
    policy: int

    @property
    def is_pattern(self) -> bool:
        return any(c in _GLOB_CHARS for c in self.unit)


def bindings(compiled: CompiledPolicySet) -> list[Binding]:
    """Which unit (name or pattern) each compiled policy is for."""
    return [Binding(s.glob or s.unit, s.policy_id) for s in compiled.scopes]


def simple_pattern(pattern: str) -> tuple[str, str] | None:
    """PREFIX*SUFFIX -> (PREFIX, SUFFIX); None for other shapes."""
    if pattern.count("*") != 1 or any(c in pattern for c in "?[]"):
        return None
    prefix, suffix = pattern.split("*")
    return prefix, suffix


def slice_path(slice_name: str) -> str:
    """systemd's cgroup path of a slice: 'a-b.slice' -> '/a.slice/a-b.slice'."""
    stem = slice_name.removesuffix(".slice")
    if stem in ("", "-"):
        return "/"
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def default_parent(unit: str) -> str:
    """Where systemd puts a unit's cgroup unless its Slice= says otherwise."""
    if unit.endswith(".slice"):
        # The parent slice's own path, not the unit's path cut short: that
        # path grows with the square of the name's dashes.
        stem = unit.removesuffix(".slice")
        return slice_path(stem.rsplit("-", 1)[0] + ".slice") if "-" in stem else "/"
    return "/system.slice"


class Sink(Protocol):
    def add(self, cgroup_id: int, policy_id: int) -> None: ...
    def add_slice(self, cgroup_id: int) -> None: ...


class ScopePlan:
    def __init__(self, bindings: list[Binding]) -> None:
        self.exact = {b.unit: b for b in bindings if not b.is_pattern}
        self.patterns = [b for b in bindings if b.is_pattern]

    def parent_of(self, unit: str) -> str:
        """Where systemd puts the unit by default (for explaining slices)."""
        return default_parent(unit)

    def match(self, name: str) -> int | None:
        """The policy a cgroup called name, directly below an undelegated
        slice, gets by its own name: unit names are unique, so the slice
        that holds it does not matter."""
        b = self.exact.get(name)
        if b is not None:
            return b.policy
        for p in self.patterns:
            if fnmatch.fnmatchcase(name, p.unit):
                return p.policy
        return None

    def policy_at(self, parts: Sequence[str]) -> int | None:
        """The policy of the cgroup at root/parts[0]/parts[1]/...: the rule of
        fill() and of the programs' walk (bh_scope): the deepest name with a
        policy, counted only directly below an undelegated slice."""
        policy, ctx = None, True
        for name in parts:
            own = self.match(name) if ctx else None
            if own is not None:
                policy = own
            ctx = ctx and name.endswith(".slice")
        return policy

    def fill(self, root: Path, sink: Sink) -> dict[int, tuple[str, int]]:
        """Walk the cgroup tree, writing the policy of each cgroup that has
        one of its own (a unit's, by name) and each undelegated slice; the
        programs find the cgroups below by walking up (bh_scope), so the map
        holds one entry per unit, never one per cgroup a process makes.
        Returns cgroup id -> (path, policy) for every cgroup with a policy."""
        assigned: dict[Path, int | None] = {}
        is_ctx: dict[Path, bool] = {}
        covered: dict[int, tuple[str, int]] = {}
        for path, cid in cgroupfs.walk(root):
            own: int | None = None
            if path == root:
                policy, ctx = None, True
            else:
                parent = path.parent
                ctx_parent = is_ctx.get(parent, False)
                own = self.match(path.name) if ctx_parent else None
                policy = own if own is not None else assigned.get(parent)
                ctx = ctx_parent and path.name.endswith(".slice")
            assigned[path] = policy
            is_ctx[path] = ctx
            if ctx:
                sink.add_slice(cid)
            if own is not None:
                sink.add(cid, own)
            if policy is not None:
                covered[cid] = ("/" + str(path.relative_to(root)).lstrip("."), policy)
        return covered
