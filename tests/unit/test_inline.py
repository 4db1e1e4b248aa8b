"""Small sets inline in the policy's kernel value (policy/inline.py): the
spans and keys answer exactly as the maps they stand for, the twin judges
the same either way, and what goes inline is not written to the maps."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import randgen
from reference import reference_decide

from bouheki.kernel import generation, layout, pack
from bouheki.policy import inline
from bouheki.policy.compiler import compile_policy
from bouheki.policy.lower import lower
from bouheki.policy.tables import PolicyTables
from bouheki.policy.twin import decide

SPILL_EXES = {f"/usr/bin/spill-{i}": (0x800001, 3000 + i) for i in range(inline.INLINE_KEYS + 1)}
UNIVERSE = randgen.Universe(
    exes={**randgen.Universe().exes, **SPILL_EXES},
    ports=(22, 53, 80, 443, 8000, 8080, 8443, 65535, 60001, 60003, 60098, 60099),
)
ENV = UNIVERSE.environment()


def _compiled(text: str) -> PolicyTables:
    from bouheki.config.loader import parse_policy_text

    lowered, _ = lower(parse_policy_text(text, "<test>"), ENV)
    return compile_policy(lowered, 3, "test")


def _lpm_answer(t: PolicyTables, proto: int, port: int) -> int:
    """The ports map's answer: the longest prefix of proto holding port."""
    for plen in range(16, -1, -1):
        mask = t.ports.get((proto, port & ~((1 << (16 - plen)) - 1), plen))
        if mask is not None:
            return mask
    return t.port_default


def _cut_points(t: PolicyTables) -> set[int]:
    """Every port where some prefix starts or ends, and its neighbours: the
    answer is constant between them."""
    out = {0, 1, 65534, 65535}
    for _, value, plen in t.ports:
        end = value + (1 << (16 - plen)) - 1
        out |= {p for p in (value - 1, value, value + 1, end - 1, end, end + 1) if 0 <= p <= 65535}
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_spans_answer_as_the_ports_map_for_every_port(seed: int) -> None:
    rng = random.Random(seed)
    checked = 0
    for _ in range(60):
        t = _compiled(randgen.random_policy_toml(rng, UNIVERSE, max_rules=10))
        spans = tuple(inline.port_spans(t))
        for proto in inline.PROTO_BITS:
            points = _cut_points(t) | {rng.randint(0, 65535) for _ in range(50)}
            for port in points:
                got = inline.span_mask(spans, proto, port, t.port_default)
                assert got == _lpm_answer(t, proto, port), (seed, proto, port, spans)
                checked += 1
        # No span is the default's, and one protocol's spans never overlap.
        for s in spans:
            assert s.mask != t.port_default and s.lo <= s.hi
        for bit in inline.PROTO_BITS.values():
            mine = sorted((s.lo, s.hi) for s in spans if s.protos & bit)
            assert all(a[1] < b[0] for a, b in zip(mine, mine[1:]))
    assert checked > 10_000


def test_equal_runs_of_several_protocols_share_a_span() -> None:
    t = _compiled('[[rule]]\naction = "block"\nports = [80, "1000-1999"]\n')
    spans = inline.port_spans(t)
    tcp_udp = inline.PROTO_BITS[6] | inline.PROTO_BITS[17]
    assert [(s.lo, s.hi) for s in spans] == [(80, 80), (1000, 1999)]
    assert all(s.protos & tcp_udp == tcp_udp for s in spans)


@pytest.mark.parametrize(
    "spilled",
    [(), ("ports",), ("uid", "command"), ("gid", "exe"), randgen.SPILLABLE],
)
def test_twin_agrees_with_the_reference_inline_or_in_maps(spilled: tuple[str, ...]) -> None:
    """With every dimension inline, some in their maps, or all in their
    maps, the twin (which follows bh_match's choice) gives the rule-by-rule
    reference's answer."""
    rng = random.Random(hash(spilled) & 0xFFFF)
    spill = randgen.spill_rules(spilled, exes=sorted(SPILL_EXES))
    want_maps = {
        "ports": inline.DIM_PORT,
        "uid": inline.DIM_UID,
        "gid": inline.DIM_GID,
        "command": inline.DIM_COMM,
        "exe": inline.DIM_EXE,
    }
    for n in range(60):
        spec = randgen.random_spec(rng, UNIVERSE, spill=spill, max_rules=8)
        lowered, _ = lower(spec, ENV)
        tables = compile_policy(lowered, 3, "random")
        in_maps = inline.inline_sets(tables).in_maps
        for dim in spilled:
            assert in_maps & want_maps[dim], (dim, in_maps)
        for _ in range(30):
            c = randgen.random_connection(rng, UNIVERSE)
            got, want = decide(tables, c), reference_decide(lowered, c, 3)
            assert got == want, f"policy {n}: {c}\n{got}\n{want}"


def test_a_dimension_that_does_not_fit_goes_to_its_map_and_the_next_may_still_fit() -> None:
    k = inline.INLINE_KEYS

    def sets(uids: int) -> inline.InlineSets:
        listed = list(range(100, 100 + uids))
        return inline.inline_sets(
            _compiled(f'[[rule]]\naction = "block"\nuid = {listed}\ncommand = ["curl"]\n')
        )

    assert sets(k - 1).in_maps == 0  # k keys in all: every one inline
    full = sets(k)  # the uids fill the room: the comm goes to its map
    assert full.in_maps == inline.DIM_COMM and len(full.uid) == k and full.comm == ()
    spilled = sets(k + 1)  # the uids go to their map: the comm fits
    assert spilled.in_maps == inline.DIM_UID and spilled.uid == () and len(spilled.comm) == 1


def test_what_is_inline_is_in_the_value_and_not_in_the_maps() -> None:
    t = _compiled(
        '[[rule]]\naction = "block"\nuid = [1000]\ngid = [33]\ncommand = ["curl"]\n'
        'ports = [80]\nexe = ["/usr/bin/curl"]\nto = ["192.0.2.0/24"]\n'
    )
    maps = {name for name, _, _ in pack.entries(5, t)}
    assert maps == {"policies", "dst4"}
    needed = generation.needed_entries([t])
    assert {name: n for name, n in needed.items() if n} == {"policies": 1, "dst4": 1}
    value = pack.policy_value(5, t)
    assert isinstance(value, layout.Policy)
    assert (value.in_maps, value.n_spans) == (0, 1)
    assert (value.uid_end, value.gid_end, value.comm_end, value.exe_end) == (1, 2, 3, 4)
    span = value.spans[0]
    assert (span.lo, span.hi, span.mask) == (80, 80, t.ports[(6, 80, 16)])
    keys = [(value.keys[i].a, value.keys[i].b) for i in range(4)]
    dev, ino = UNIVERSE.exes["/usr/bin/curl"]
    assert keys == [(1000, 0), (33, 0), inline.comm_words(b"curl"), (ino, dev)]

    spilled = _compiled(
        '[[rule]]\naction = "block"\nuid = [1000]\n' + randgen.spill_rules(["uid", "ports"])
    )
    maps = {name for name, _, _ in pack.entries(5, spilled)}
    assert maps == {"policies", "uids", "ports"}
    assert pack.policy_value(5, spilled).in_maps == inline.DIM_UID | inline.DIM_PORT


def test_the_twin_follows_the_inline_sets() -> None:
    """The twin reads the inline keys, not the table, when the dimension is
    inline: a doctored key shows in its answer (so the differential test in
    the lab judges the kernel's scan, not the map it replaced)."""
    t = _compiled('[[rule]]\naction = "block"\nuid = [1000]\n')
    c = randgen.Connection(2, "192.0.2.1", 80, 6, b"curl", None, 1000, 0)
    assert decide(t, c).rule == 0
    sets = inline.inline_sets(t)
    doctored = replace(t)
    doctored.inline = sets._replace(uid=(inline.Key(1001, 0, sets.uid[0].mask),))
    assert decide(doctored, c).rule != 0
