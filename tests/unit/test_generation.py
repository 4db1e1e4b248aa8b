"""The generation swap protocol, against an in-memory stand-in for the maps."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path

import pytest

from bouheki.kernel import layout
from bouheki.kernel.generation import ApplyError, GenerationSwap, ScopeSink, UnitPattern
from bouheki.policy import inline
from bouheki.policy.tables import Action, Origin, PolicyTables


class DictMaps:
    def __init__(self) -> None:
        self.maps: dict[str, dict[bytes, bytes]] = {}
        self.state = layout.State()
        self.patterns = [layout.Pattern() for _ in range(2 * layout.MAX_PATTERNS)]
        self.fail_on: str | None = None
        self.state_log: list[tuple[int, int]] = []
        self.log: list[str] = []  # state writes, grace periods and writes of policy slots

    def update(self, name: str, key: ct.Structure, value: ct.Structure) -> None:
        if name == self.fail_on:
            raise OSError(28, "no space")
        if name == "patterns":
            self.patterns[key.value] = layout.Pattern.from_buffer_copy(value)  # type: ignore[attr-defined]
            return
        self.maps.setdefault(name, {})[bytes(key)] = bytes(value)
        if name == "policies":
            self.log.append(f"slot {key.slot}")  # type: ignore[attr-defined]

    def delete(self, name: str, key: ct.Structure) -> None:
        self.maps.get(name, {}).pop(bytes(key), None)
        if name == "policies":  # the real array's slot is cleared: a write
            self.log.append(f"slot {key.slot}")  # type: ignore[attr-defined]

    def scope_keys(self, name: str = "scopes") -> list[layout.ScopeKey]:
        return [layout.ScopeKey.from_buffer_copy(k) for k in self.maps.get(name, {})]

    def read_state(self) -> layout.State:
        return layout.State.from_buffer_copy(self.state)

    def write_state(self, state: layout.State) -> None:
        self.state = layout.State.from_buffer_copy(state)
        self.state_log.append((state.active_gen, state.pending_gen))
        self.log.append(f"state {state.active_gen}/{state.pending_gen}")

    def wait_for_readers(self) -> None:
        self.log.append("grace")

    def read_patterns(self) -> list[layout.Pattern]:
        return list(self.patterns)

    def gens(self, name: str) -> set[int]:
        if name == "policies":  # an array: the slot's value says its generation
            return {layout.Policy.from_buffer_copy(v).gen for v in self.maps.get(name, {}).values()}
        return {
            int.from_bytes(k[4:8] if name in LPM else k[:4], "little")
            for k in self.maps.get(name, {})
        }


LPM = {"dst4", "dst6", "ports"}


def tables(pid: int = 0) -> PolicyTables:
    t = PolicyTables(
        policy_id=pid, name="p", flags=0, default_action=Action.ALLOW, rule_count=1,
        allow_bits=0, origins=[Origin("f", 1), Origin("f", 1)],
        dst4={(0x0A000147, 32): 1}, comm={b"curl": 1}, uid={1000: 1},
    )  # fmt: skip
    # Its comm and uid in their maps, as a large policy's: the swap must
    # write and delete those keys too (policy/inline.py).
    every = inline.DIM_PORT | inline.DIM_UID | inline.DIM_GID | inline.DIM_COMM | inline.DIM_EXE
    t.inline = inline.InlineSets(every, (), (), (), (), ())
    return t


def test_apply_then_reapply_keeps_only_the_new_generation() -> None:
    io = DictMaps()
    swap = GenerationSwap(io)
    g1 = swap.apply([tables()], fill_scopes=lambda s: s.add(77, 0))
    assert g1 == 1 and io.state.active_gen == 1
    g2 = swap.apply([tables()], fill_scopes=lambda s: s.add(78, 0))
    assert g2 == 2
    for name in ("policies", "dst4", "comms", "uids", "scopes"):
        assert io.gens(name) == {2}, name
    assert [k.cgroup_id for k in io.scope_keys()] == [78]


def test_scopes_are_written_while_the_generation_is_pending() -> None:
    io = DictMaps()
    swap = GenerationSwap(io)
    seen: list[tuple[int, int]] = []

    def fill(sink: ScopeSink) -> None:
        seen.append((io.state.active_gen, io.state.pending_gen))
        sink.add(5, 0)

    swap.apply([tables()], fill)
    swap.apply([tables()], fill)
    assert seen == [(0, 1), (1, 2)]
    assert io.state.pending_gen == 0


def test_failure_leaves_the_running_generation_untouched() -> None:
    io = DictMaps()
    swap = GenerationSwap(io)
    swap.apply([tables()], lambda s: s.add(9, 0))
    before = {n: dict(m) for n, m in io.maps.items()}
    io.fail_on = "uids"
    with pytest.raises(ApplyError, match="generation 2"):
        swap.apply([tables()], lambda s: s.add(10, 0))
    io.fail_on = None
    assert io.state.active_gen == 1 and io.state.pending_gen == 0
    assert io.maps == before


def test_failing_scope_walk_rolls_back_kernel_added_scopes() -> None:
    io = DictMaps()
    swap = GenerationSwap(io)
    swap.apply([tables()], lambda s: s.add(9, 0))

    def fill(sink: ScopeSink) -> None:
        # as if cgroup_mkdir had copied an entry into the pending generation
        io.maps["scopes"][bytes(layout.ScopeKey(gen=2, cgroup_id=99))] = bytes(layout.ScopeVal())
        raise RuntimeError("cgroup walk failed")

    with pytest.raises(ApplyError):
        swap.apply([tables()], fill)
    assert io.gens("scopes") == {1}


def test_patterns_use_free_slots_and_old_ones_are_cleared() -> None:
    io = DictMaps()
    swap = GenerationSwap(io)
    pat = UnitPattern(parent_id=0, prefix="docker-", suffix=".scope", policy=0)
    swap.apply([tables()], lambda s: None, patterns=[pat])
    swap.apply([tables()], lambda s: None, patterns=[pat, pat])
    live = [(p.gen, p.prefix, p.suffix) for p in io.patterns if p.gen]
    assert live == [(2, b"docker-", b".scope")] * 2
    too_many = [pat] * (layout.MAX_PATTERNS + 1)
    with pytest.raises(ApplyError, match="at most 16"):
        swap.apply([tables()], lambda s: None, patterns=too_many)
    assert io.state.active_gen == 2


def test_every_map_the_swap_touches_exists_in_the_programs() -> None:
    import re
    from pathlib import Path

    from bouheki.kernel.generation import UnitName
    from bouheki.kernel.maps import MAP_NAMES

    touched: set[str] = set()

    class Recording(DictMaps):
        def update(self, name: str, key: ct.Structure, value: ct.Structure) -> None:
            touched.add(name)
            super().update(name, key, value)

    io = Recording()
    swap = GenerationSwap(io)

    def fill(sink: ScopeSink) -> None:
        sink.add_slice(3)
        sink.add(4, 0)

    pat = UnitPattern(parent_id=0, prefix="docker-", suffix=".scope", policy=0)
    swap.apply([tables()], fill, unit_names=[UnitName(3, "x.service", 0)], patterns=[pat])
    assert touched <= set(MAP_NAMES)
    src = (Path(__file__).resolve().parents[2] / "bpf" / "bouheki.bpf.c").read_text()
    declared = set(re.findall(r'^BH_MAP\("\w+", [^,]+, [^,]+, (\w+),', src, re.M))
    assert set(MAP_NAMES) <= declared, set(MAP_NAMES) - declared


def test_adoption_opens_every_map_the_programs_declare() -> None:
    """One list of map names (kernel/maps.py, and the per-CPU and ring buffer
    maps beside it): adoption opens all of the declared ones, or none."""
    import re
    from pathlib import Path

    from bouheki.kernel.adopt import MAPS

    src = (Path(__file__).resolve().parents[2] / "bpf" / "bouheki.bpf.c").read_text()
    declared = set(re.findall(r'^BH_MAP\("\w+", [^,]+, [^,]+, (\w+),', src, re.M))
    ring = set(re.findall(r"^struct events_table_t (\w+) =", src, re.M))
    assert ring == {"events"}
    assert set(MAPS) == declared | ring
    assert len(MAPS) == len(set(MAPS))


def test_the_adoption_key_covers_every_file_the_programs_include(tmp_path: Path) -> None:
    from bouheki.kernel.loader import BPF_SOURCE, bpf_dir, program_sources

    assert {p.name for p in program_sources(bpf_dir())} == {BPF_SOURCE, "bouheki.h"}
    (tmp_path / BPF_SOURCE).write_text('#include <linux/in.h>\n#include "a.h"\n')
    (tmp_path / "a.h").write_text('#include "b.h"\n#include "a.h"\n')
    (tmp_path / "b.h").write_text("")
    assert [p.name for p in program_sources(tmp_path)] == [BPF_SOURCE, "a.h", "b.h"]


def test_a_policy_set_too_large_for_the_maps_is_refused_before_any_write() -> None:
    io = DictMaps()
    swap = GenerationSwap(io, capacities={"dst4": 4, "comms": 8})
    big = tables()
    big.dst4.update({(0x0B000000 + i, 32): 1 for i in range(2)})  # 3 prefixes
    assert swap.apply([big], fill_scopes=lambda s: None) == 1
    before = {name: set(io.maps.get(name, {})) for name in ("dst4", "policies", "scopes")}
    # 2 fit in 4 only if the running 3 were gone: both sets live at once.
    small = tables()
    small.dst4[(0x0B000000, 32)] = 1
    with pytest.raises(ApplyError, match=r"need 2 IPv4 destination prefixes.*1 fit beside"):
        swap.apply([small], fill_scopes=lambda s: None)
    huge = tables()
    huge.dst4.update({(0x0C000000 + i, 32): 1 for i in range(4)})
    with pytest.raises(ApplyError, match=r"need 5 IPv4 .*at most 2 fit"):
        swap.apply([huge], fill_scopes=lambda s: None)
    assert io.state.active_gen == 1 and io.state.pending_gen == 0
    assert {name: set(io.maps.get(name, {})) for name in ("dst4", "policies", "scopes")} == before


def test_a_generation_never_writes_the_half_of_the_policies_hooks_read() -> None:
    """The policies array has one half per generation parity. A swap writes
    only the half the running generation does not use, and only after an RCU
    grace period that followed the last flip: no hook still holds the
    generation that half belonged to. Failures, flips back and forth, and
    clearing keep to it."""
    io = DictMaps()
    swap = GenerationSwap(io)
    swap.apply([tables(0), tables(5)], fill_scopes=lambda s: s.add(77, 5))
    swap.apply([tables(0)], fill_scopes=lambda s: None)
    io.fail_on = "comms"
    with pytest.raises(ApplyError):
        swap.apply([tables(3)], fill_scopes=lambda s: None)
    io.fail_on = None
    swap.apply([tables(3), tables(0)], fill_scopes=lambda s: None)
    swap.clear()

    half = layout.MAX_POLICIES
    active, grace_since_flip, slot_writes = 0, True, 0
    for entry in io.log:
        if entry.startswith("state "):
            new_active = int(entry.split()[1].split("/")[0])
            if new_active != active:
                active, grace_since_flip = new_active, False
        elif entry == "grace":
            grace_since_flip = True
        else:
            slot = int(entry.split()[1])
            slot_writes += 1
            assert grace_since_flip, f"{entry} before a grace period after the flip to {active}"
            if active:
                assert slot // half != active % 2, f"{entry} is in generation {active}'s half"
    assert slot_writes >= 8
    assert io.gens("policies") == set(), "clear() left policy slots"


def test_generations_alternate_parity_across_the_wrap() -> None:
    from bouheki.kernel.generation import GEN_MAX, next_gen

    for gen in (0, 1, 2, 77, GEN_MAX - 2, GEN_MAX - 1, GEN_MAX):
        nxt = next_gen(gen)
        assert nxt != 0
        if gen:
            assert nxt % 2 != gen % 2, (gen, nxt)
    assert next_gen(GEN_MAX) == 2


def test_policy_slots_are_written_with_their_generation() -> None:
    io = DictMaps()
    swap = GenerationSwap(io)
    gen = swap.apply([tables(7)], fill_scopes=lambda s: None)
    (key,) = io.maps["policies"]
    assert int.from_bytes(key, "little") == layout.policy_slot(gen, 7) == (gen % 2) * 1024 + 7
    assert layout.Policy.from_buffer_copy(io.maps["policies"][key]).gen == gen


def test_the_key_log_gives_back_every_key_it_packed() -> None:
    from bouheki.kernel.generation import KeyLog

    log = KeyLog()
    keys = [("dst4", layout.Dst4Key(prefixlen=96, gen=3, policy=i)) for i in range(500)]
    keys += [("policies", layout.PolicySlot(7)), ("scopes", layout.ScopeKey(gen=3, cgroup_id=9))]
    for entry in keys:
        log.append(entry)
    assert [(n, bytes(k)) for n, k in log] == [(n, bytes(k)) for n, k in keys]
    assert [type(k) for _, k in log] == [type(k) for _, k in keys]
    assert log.counts() == {"dst4": 500, "policies": 1, "scopes": 1}
    with pytest.raises(TypeError):
        log.append(("dst4", layout.ScopeKey()))


def test_the_host_policy_is_its_reserved_slot_and_no_scope_entry() -> None:
    """bh_scope reads the host's policy from slot HOST_POLICY of the
    generation: a swap writes that slot and no scope entry for it."""
    from bouheki.policy.tables import HOST_POLICY

    io = DictMaps()
    gen = GenerationSwap(io).apply([tables(HOST_POLICY)], fill_scopes=lambda s: None)
    assert "scopes" not in io.maps or not io.maps["scopes"]
    (key,) = io.maps["policies"]
    assert int.from_bytes(key, "little") == layout.policy_slot(gen, HOST_POLICY)
