"""The generation swap protocol, against an in-memory stand-in for the maps."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path

import pytest

from bouheki.kernel import layout
from bouheki.kernel.generation import ApplyError, GenerationSwap, ScopeSink, UnitPattern
from bouheki.policy.tables import Action, Origin, PolicyTables


class DictMaps:
    def __init__(self) -> None:
        self.maps: dict[str, dict[bytes, bytes]] = {}
        self.state = layout.State()
        self.patterns = [layout.Pattern() for _ in range(2 * layout.MAX_PATTERNS)]
        self.fail_on: str | None = None
        self.state_log: list[tuple[int, int]] = []

    def update(self, name: str, key: ct.Structure, value: ct.Structure) -> None:
        if name == self.fail_on:
            raise OSError(28, "no space")
        if name == "patterns":
            self.patterns[key.value] = layout.Pattern.from_buffer_copy(value)  # type: ignore[attr-defined]
            return
        self.maps.setdefault(name, {})[bytes(key)] = bytes(value)

    def delete(self, name: str, key: ct.Structure) -> None:
        self.maps.get(name, {}).pop(bytes(key), None)

    def scope_keys(self, name: str = "scopes") -> list[layout.ScopeKey]:
        return [layout.ScopeKey.from_buffer_copy(k) for k in self.maps.get(name, {})]

    def read_state(self) -> layout.State:
        return layout.State.from_buffer_copy(self.state)

    def write_state(self, state: layout.State) -> None:
        self.state = layout.State.from_buffer_copy(state)
        self.state_log.append((state.active_gen, state.pending_gen))

    def read_patterns(self) -> list[layout.Pattern]:
        return list(self.patterns)

    def gens(self, name: str) -> set[int]:
        return {
            int.from_bytes(k[4:8] if name in LPM else k[:4], "little")
            for k in self.maps.get(name, {})
        }


LPM = {"dst4", "dst6", "ports"}


def tables(pid: int = 0) -> PolicyTables:
    return PolicyTables(
        policy_id=pid, name="p", flags=0, default_action=Action.ALLOW, rule_count=1,
        allow_bits=0, origins=[Origin("f", 1), Origin("f", 1)],
        dst4={(0x0A000147, 32): 1}, comm={b"curl": 1}, uid={1000: 1},
    )  # fmt: skip


def test_apply_then_reapply_keeps_only_the_new_generation() -> None:
    io = DictMaps()
    swap = GenerationSwap(io, grace_s=0)
    g1 = swap.apply([tables()], host_policy=0, fill_scopes=lambda s: s.add(77, 0))
    assert g1 == 1 and io.state.active_gen == 1
    g2 = swap.apply([tables()], host_policy=None, fill_scopes=lambda s: s.add(78, 0))
    assert g2 == 2
    for name in ("policies", "dst4", "comms", "uids", "scopes"):
        assert io.gens(name) == {2}, name
    assert [k.cgroup_id for k in io.scope_keys()] == [78]


def test_scopes_are_written_while_the_generation_is_pending() -> None:
    io = DictMaps()
    swap = GenerationSwap(io, grace_s=0)
    seen: list[tuple[int, int]] = []

    def fill(sink: ScopeSink) -> None:
        seen.append((io.state.active_gen, io.state.pending_gen))
        sink.add(5, 0)

    swap.apply([tables()], None, fill)
    swap.apply([tables()], None, fill)
    assert seen == [(0, 1), (1, 2)]
    assert io.state.pending_gen == 0


def test_failure_leaves_the_running_generation_untouched() -> None:
    io = DictMaps()
    swap = GenerationSwap(io, grace_s=0)
    swap.apply([tables()], 0, lambda s: s.add(9, 0))
    before = {n: dict(m) for n, m in io.maps.items()}
    io.fail_on = "uids"
    with pytest.raises(ApplyError, match="generation 2"):
        swap.apply([tables()], 0, lambda s: s.add(10, 0))
    io.fail_on = None
    assert io.state.active_gen == 1 and io.state.pending_gen == 0
    assert io.maps == before


def test_failing_scope_walk_rolls_back_kernel_added_scopes() -> None:
    io = DictMaps()
    swap = GenerationSwap(io, grace_s=0)
    swap.apply([tables()], 0, lambda s: None)

    def fill(sink: ScopeSink) -> None:
        # as if cgroup_mkdir had copied an entry into the pending generation
        io.maps["scopes"][bytes(layout.ScopeKey(gen=2, cgroup_id=99))] = bytes(layout.ScopeVal())
        raise RuntimeError("cgroup walk failed")

    with pytest.raises(ApplyError):
        swap.apply([tables()], 0, fill)
    assert io.gens("scopes") == {1}


def test_patterns_use_free_slots_and_old_ones_are_cleared() -> None:
    io = DictMaps()
    swap = GenerationSwap(io, grace_s=0)
    pat = UnitPattern(parent_id=0, prefix="docker-", suffix=".scope", policy=0)
    swap.apply([tables()], None, lambda s: None, patterns=[pat])
    swap.apply([tables()], None, lambda s: None, patterns=[pat, pat])
    live = [(p.gen, p.prefix, p.suffix) for p in io.patterns if p.gen]
    assert live == [(2, b"docker-", b".scope")] * 2
    too_many = [pat] * (layout.MAX_PATTERNS + 1)
    with pytest.raises(ApplyError, match="at most 16"):
        swap.apply([tables()], None, lambda s: None, patterns=too_many)
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
    swap = GenerationSwap(io, grace_s=0)

    def fill(sink: ScopeSink) -> None:
        sink.add_slice(3)
        sink.add(4, 0)

    pat = UnitPattern(parent_id=0, prefix="docker-", suffix=".scope", policy=0)
    swap.apply([tables()], 0, fill, unit_names=[UnitName(3, "x.service", 0)], patterns=[pat])
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
    swap = GenerationSwap(io, grace_s=0, capacities={"dst4": 4, "comms": 8})
    big = tables()
    big.dst4.update({(0x0B000000 + i, 32): 1 for i in range(2)})  # 3 prefixes
    assert swap.apply([big], host_policy=0, fill_scopes=lambda s: None) == 1
    before = {name: set(io.maps.get(name, {})) for name in ("dst4", "policies", "scopes")}
    # 2 fit in 4 only if the running 3 were gone: both sets live at once.
    small = tables()
    small.dst4[(0x0B000000, 32)] = 1
    with pytest.raises(ApplyError, match=r"need 2 IPv4 destination prefixes.*1 fit beside"):
        swap.apply([small], host_policy=0, fill_scopes=lambda s: None)
    huge = tables()
    huge.dst4.update({(0x0C000000 + i, 32): 1 for i in range(4)})
    with pytest.raises(ApplyError, match=r"need 5 IPv4 .*at most 2 fit"):
        swap.apply([huge], host_policy=0, fill_scopes=lambda s: None)
    assert io.state.active_gen == 1 and io.state.pending_gen == 0
    assert {name: set(io.maps.get(name, {})) for name in ("dst4", "policies", "scopes")} == before
