"""Atomic policy swap: write a whole new generation, flip one value, delete the old.

A hook reads state.active_gen once and uses it for every lookup, so it sees
the old or the new policy, never a mix. A failure while writing leaves the
running generation untouched and removes what was written.

The policies live in an array, one half per generation parity, so each
generation overwrites the slots of the one before the running one. Before
that and before deleting the old generation, the swap waits for an RCU grace
period (MapIO.wait_for_readers): no hook still holds a generation whose
entries are about to change.
"""

from __future__ import annotations

import ctypes as ct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..policy.tables import PolicyTables
from . import layout, pack

GEN_MAX = 0xFFFFFFFF


class MapIO(Protocol):
    """The few map operations the swap needs, by map name."""

    def update(self, name: str, key: ct.Structure, value: ct.Structure | ct.c_uint64) -> None: ...
    def delete(self, name: str, key: ct.Structure) -> None: ...
    def scope_keys(self, name: str = "scopes") -> Iterable[layout.ScopeKey]: ...
    def read_state(self) -> layout.State: ...
    def read_patterns(self) -> list[layout.Pattern]: ...
    def write_state(self, state: layout.State) -> None: ...
    def wait_for_readers(self) -> None: ...


@dataclass(frozen=True)
class UnitName:
    """A unit with a policy whose cgroup may not exist yet: name under parent."""

    parent_id: int
    name: str
    policy: int


@dataclass(frozen=True)
class UnitPattern:
    """PREFIX*SUFFIX under parent (0: anywhere), for cgroups yet to be created."""

    parent_id: int
    prefix: str
    suffix: str
    policy: int


class ApplyError(RuntimeError):
    """The new generation could not be written; the running one still enforces."""


class KeyLog:
    """The keys written for one generation, packed: per map, its key type and
    the keys' bytes end to end. A generation of 100,000 prefixes is kept in
    a few MB instead of the ~16 MB the key structures would take, for as
    long as it is in force (its keys are what the next swap deletes)."""

    def __init__(self) -> None:
        self._maps: dict[str, tuple[type[ct.Structure], bytearray]] = {}

    def append(self, entry: tuple[str, ct.Structure]) -> None:
        name, key = entry
        kind = type(key)
        if name not in self._maps:
            self._maps[name] = (kind, bytearray())
        known, packed = self._maps[name]
        if kind is not known:
            raise TypeError(f"map {name}: key {kind.__name__}, not {known.__name__}")
        packed += bytes(key)

    def __iter__(self) -> Iterator[tuple[str, ct.Structure]]:
        for name, (kind, packed) in list(self._maps.items()):
            size = ct.sizeof(kind)
            for off in range(0, len(packed), size):
                yield name, kind.from_buffer_copy(packed, off)

    def counts(self) -> Counter[str]:
        return Counter({name: len(p) // ct.sizeof(k) for name, (k, p) in self._maps.items()})


class ScopeSink:
    """Receives cgroup -> policy assignments while the new generation is pending.
    Writes go straight to the kernel, so a cgroup walk that writes a parent
    before listing its children cannot miss a child created meanwhile: the
    cgroup_mkdir program copies the parent's pending entry to it."""

    def __init__(self, io: MapIO, gen: int, written: KeyLog) -> None:
        self._io = io
        self._gen = gen
        self._written = written
        self.count = 0

    def add_slice(self, cgroup_id: int) -> None:
        """A slice outside every delegated subtree: names directly below it are units."""
        key = layout.ScopeKey(gen=self._gen, cgroup_id=cgroup_id)
        self._io.update("slices", key, ct.c_uint32(1))  # type: ignore[arg-type]
        self._written.append(("slices", key))

    def add(self, cgroup_id: int, policy_id: int) -> None:
        name, key, value = pack.scope_entry(self._gen, cgroup_id, policy_id)
        self._io.update(name, key, value)
        self._written.append((name, key))
        self.count += 1


def next_gen(gen: int) -> int:
    """The generation after gen, of the other parity (the policies array's
    halves alternate): after GEN_MAX (odd) comes 2, not 1."""
    return 2 if gen >= GEN_MAX else gen + 1


# What each map holds, for messages.
MAP_CONTENT = {
    "dst4": "IPv4 destination prefixes",
    "dst6": "IPv6 destination prefixes",
    "ports": "port prefixes",
    "comms": "command names",
    "exes": "executables",
    "uids": "uids",
    "gids": "gids",
    "policies": "policies",
}


def needed_entries(tables: Iterable[PolicyTables]) -> Counter[str]:
    """Entries per map that tables take in one generation."""
    n: Counter[str] = Counter()
    for t in tables:
        n["policies"] += 1
        for name, table in pack.held_in_maps(t).items():
            n[name] += len(table)
    return n


class GenerationSwap:
    def __init__(self, io: MapIO, capacities: Mapping[str, int] | None = None) -> None:
        """capacities: max_entries of the maps, to refuse a policy set that
        cannot fit before writing any of it."""
        self.io = io
        self.capacities = dict(capacities or {})
        self._live: KeyLog | None = None  # keys of the active gen

    @property
    def active_gen(self) -> int:
        return int(self.io.read_state().active_gen)

    def apply(
        self,
        tables: list[PolicyTables],
        fill_scopes: Callable[[ScopeSink], None],
        host_mntns: int = 0,
        unit_names: Sequence[UnitName] = (),
        patterns: Sequence[UnitPattern] = (),
    ) -> int:
        """Write tables as a new generation and make it active. Returns the generation."""
        self._check_room(tables)
        state = self.io.read_state()
        old = int(state.active_gen)
        gen = next_gen(old)
        written = KeyLog()
        state.pending_gen = gen
        self.io.write_state(state)
        # The slots gen writes were the generation before old's: a
        # predecessor that died between its flip and its grace period may
        # have left a hook on it.
        self.io.wait_for_readers()
        try:
            filters = pack.filter_slots(tables)
            for t in tables:
                for name, key, value in pack.entries(gen, t, filters.get(t.policy_id, 0)):
                    self.io.update(name, key, value)
                    written.append((name, key))
            for u in unit_names:
                key = layout.UnitKey(gen=gen, parent_id=u.parent_id, name=u.name.encode())
                self.io.update("unit_names", key, layout.ScopeVal(policy=u.policy))
                written.append(("unit_names", key))
            self._write_patterns(gen, old, patterns)
            # The host's policy, if any, is the table of id HOST_POLICY: the
            # hooks read its slot, no scope entry (bh_scope).
            fill_scopes(ScopeSink(self.io, gen, written))
        except Exception as e:
            self._delete(written)
            self._delete_scopes_of(gen)
            self._clear_patterns_of(gen)
            state.pending_gen = 0
            self.io.write_state(state)
            raise ApplyError(f"writing generation {gen} failed: {e}") from e

        state.active_gen = gen
        state.pending_gen = 0
        state.host_mntns = host_mntns
        self.io.write_state(state)

        if old:
            self.io.wait_for_readers()  # hooks still on old finish first
            if self._live is not None:
                self._delete(self._live)
            else:
                self._delete_everything_of(old)
            self._delete_scopes_of(old)
            self._clear_patterns_of(old)
        self._live = written
        return gen

    def clear(self) -> None:
        """Stop enforcing: no generation active, every entry removed."""
        state = self.io.read_state()
        old = int(state.active_gen)
        state.active_gen = 0
        state.pending_gen = 0
        self.io.write_state(state)
        self.io.wait_for_readers()
        if self._live is not None:
            self._delete(self._live)
        self._delete_scopes_of(old)
        self._clear_patterns_of(old)
        self._live = None

    def _check_room(self, tables: Sequence[PolicyTables]) -> None:
        """The new generation is written while the running one stays: both
        must fit at once. (After a restart the running generation's size is
        not known without a scan; the write itself then reports a full map.)"""
        if not self.capacities:
            return
        live = self._live.counts() if self._live is not None else Counter()
        for name, need in sorted(needed_entries(tables).items()):
            cap = self.capacities.get(name)
            if cap is None or need + live[name] <= cap:
                continue
            what = MAP_CONTENT.get(name, name)
            if need > cap // 2:
                hint = (
                    f"at most {cap // 2:,} fit (the kernel map holds {cap:,} for two policy sets)"
                )
            else:
                hint = f"{cap - live[name]:,} fit beside the running policy's {live[name]:,}"
            raise ApplyError(f"the policies need {need:,} {what} in the kernel: {hint}")

    def _write_patterns(self, gen: int, old: int, patterns: Sequence[UnitPattern]) -> None:
        slots = self.io.read_patterns()
        free = [i for i, p in enumerate(slots) if p.gen == 0 or p.gen != old]
        if len(patterns) > min(len(free), layout.MAX_PATTERNS):
            raise ApplyError(
                f"{len(patterns)} unit patterns: the kernel checks at most {layout.MAX_PATTERNS}"
            )
        for slot, pat in zip(free, patterns):
            value = layout.Pattern(
                gen=gen,
                policy=pat.policy,
                parent_id=pat.parent_id,
                prefix_len=len(pat.prefix.encode()),
                suffix_len=len(pat.suffix.encode()),
                prefix=pat.prefix.encode(),
                suffix=pat.suffix.encode(),
            )
            self.io.update("patterns", ct.c_int(slot), value)  # type: ignore[arg-type]

    def _clear_patterns_of(self, gen: int) -> None:
        for i, p in enumerate(self.io.read_patterns()):
            if p.gen == gen:
                self.io.update("patterns", ct.c_int(i), layout.Pattern())  # type: ignore[arg-type]

    def _delete(self, keys: Iterable[tuple[str, ct.Structure]]) -> None:
        for name, key in keys:
            self.io.delete(name, key)

    def _delete_scopes_of(self, gen: int) -> None:
        # cgroup_mkdir adds entries the daemon never wrote.
        for name in ("scopes", "slices"):
            stale = [k for k in self.io.scope_keys(name) if k.gen == gen]
            for k in stale:
                self.io.delete(name, k)

    def _delete_everything_of(self, gen: int) -> None:
        """After adopting state we did not write (a restart), find the old
        generation's keys by scanning."""
        scan = getattr(self.io, "keys_of_gen", None)
        if scan is not None:
            self._delete(list(scan(gen)))
