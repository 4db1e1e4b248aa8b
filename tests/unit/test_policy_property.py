"""Property tests over seeded random policies and connections.

1. twin(compile(lower(spec))) == reference(lower(spec)): the classifier
   compiler and the twin agree with trying the rules one by one.
2. reference(lower(spec)) == the doc/DESIGN.md 2.1 steps evaluated directly on
   the spec: the lowering means what the design says.
A failure prints its seed; rerun with that seed to reproduce.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

import pytest
import randgen
from reference import reference_decide

from bouheki.config.loader import parse_policy_text
from bouheki.config.toml_lines import scan_toml_lines
from bouheki.policy.compiler import compile_policy
from bouheki.policy.env import Environment
from bouheki.policy.lower import lower
from bouheki.policy.lpm import range_to_prefixes
from bouheki.policy.model import (
    IDENTITY_DIMENSIONS,
    AddressSet,
    Dest,
    DomainName,
    IPAddress,
    Item,
    Net,
    PolicySpec,
    RuleSpec,
    fold_mapped,
    unmap,
)
from bouheki.policy.tables import Action, Connection, Proto
from bouheki.policy.twin import decide, kernel_comm

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

UNIVERSE = randgen.Universe()
ENV = UNIVERSE.environment()


def _cases(seed: int, policies: int, conns: int, **kw: object) -> None:
    rng = random.Random(seed)
    for n in range(policies):
        spec = randgen.random_spec(rng, UNIVERSE, **kw)  # type: ignore[arg-type]
        lowered, _ = lower(spec, ENV)
        tables = compile_policy(lowered, 3, "random")
        for _ in range(conns):
            c = randgen.random_connection(rng, UNIVERSE)
            got, want = decide(tables, c), reference_decide(lowered, c, 3)
            assert got == want, f"seed {seed}, policy {n}: {c}\n{got}\n{want}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_twin_matches_reference(seed: int) -> None:
    _cases(seed, policies=150, conns=20)


def test_twin_matches_reference_many_rules() -> None:
    _cases(99, policies=30, conns=40, max_rules=50, simple_form=False)


# -- the design's steps, evaluated directly --------------------------------


def _networks(dests: Sequence[Item[Dest]], env: Environment) -> list[Net]:
    out: list[Net] = []
    for item in dests:
        d = item.value
        if isinstance(d, DomainName):
            out += [fold_mapped(n) for n in env.names.get(d.name, ())]
        elif isinstance(d, AddressSet):
            out += [fold_mapped(n) for n in env.address_set(d.name) or ()]
        else:
            out.append(d)
    return out


def _identity(dimension: str, c: Connection) -> object:
    return {"command": kernel_comm(c.comm), "exe": c.exe, "uid": c.uid, "gid": c.gid}[dimension]


def _in(dimension: str, items: Sequence[Item[object]], c: Connection, env: Environment) -> bool:
    values = [item.value for item in items]
    if dimension == "exe":
        values = [env.exes.get(str(v)) for v in values]
        return c.exe is not None and c.exe in values
    return _identity(dimension, c) in values


def _rule_matches(r: RuleSpec, addr: IPAddress, c: Connection, env: Environment) -> bool:
    if r.to is not None and not any(addr in n for n in _networks(r.to, env)):
        return False
    # Ports are a thing of TCP, UDP, UDP-Lite, SCTP and DCCP: the others are at port 0.
    has_ports = c.proto in (Proto.TCP, Proto.UDP, Proto.UDPLITE, Proto.SCTP, Proto.DCCP)
    port = c.dport if has_ports else 0
    if r.protocol is not None and c.proto != r.protocol:
        return False
    in_ports = r.ports is None or any(lo <= port <= hi for lo, hi in r.ports)
    if not in_ports or (r.ports is not None and not has_ports):
        return False
    for dimension in IDENTITY_DIMENSIONS:
        items = getattr(r, dimension)
        if items is not None and not _in(dimension, items, c, env):
            return False
    return True


def design_action(spec: PolicySpec, c: Connection, env: Environment) -> Action:
    # SCTP exists in a scope only where a rule names it.
    if c.proto == Proto.SCTP and not any(r.protocol == Proto.SCTP for r in spec.rules):
        return Action.BLOCK
    addr = unmap(ipaddress.ip_address(c.daddr))
    if addr.is_unspecified:  # 0.0.0.0 and :: are refused
        return Action.BLOCK
    for rule in spec.rules:
        if _rule_matches(rule, addr, c, env):
            return rule.action
    # 1. identity deny lists
    for d in IDENTITY_DIMENSIONS:
        if _in(d, spec.identity(d).deny.items, c, env):
            return Action.BLOCK
    # 2. non-empty identity allow lists admit only their members
    allow_lists = [d for d in IDENTITY_DIMENSIONS if spec.identity(d).allow]
    for d in allow_lists:
        if not _in(d, spec.identity(d).allow.items, c, env):
            return Action.BLOCK
    # 3. longest matching prefix over both lists, deny wins ties
    allow = [n for n in _networks(spec.network.allow.items, env) if addr in n]
    deny = [n for n in _networks(spec.network.deny.items, env) if addr in n]
    best_allow = max((n.prefixlen for n in allow), default=-1)
    best_deny = max((n.prefixlen for n in deny), default=-1)
    # 4.
    if best_deny >= 0 and best_deny >= best_allow:
        return Action.ALLOW if allow_lists else Action.BLOCK
    if best_allow >= 0:
        return Action.ALLOW
    return Action.BLOCK if spec.network.allow else Action.ALLOW


@pytest.mark.parametrize("seed", [11, 12])
def test_lowering_means_the_design(seed: int) -> None:
    rng = random.Random(seed)
    for n in range(150):
        spec = randgen.random_spec(rng, UNIVERSE, max_rules=rng.choice([0, 0, 3]))
        lowered, _ = lower(spec, ENV)
        for _ in range(20):
            c = randgen.random_connection(rng, UNIVERSE, port_zero=0)
            want = design_action(spec, c, ENV)
            got = reference_decide(lowered, c).action
            assert got == want, f"seed {seed}, policy {n}: {c}"


# -- building blocks -----------------------------------------------------------


def test_range_to_prefixes_covers_exactly() -> None:
    rng = random.Random(5)
    for _ in range(500):
        lo = rng.randint(0, 65535)
        hi = rng.randint(lo, min(65535, lo + rng.choice([0, 3, 300, 70000])))
        covered: list[int] = []
        for value, plen in range_to_prefixes(lo, hi, 16):
            size = 1 << (16 - plen)
            assert value % size == 0, "blocks are aligned"
            covered += range(value, value + size)
        assert covered == list(range(lo, hi + 1))
    assert range_to_prefixes(0, 65535, 16) == [(0, 0)]
    assert range_to_prefixes(1, 65535, 16)[0] == (1, 16)


def test_generated_toml_round_trips_with_lines() -> None:
    rng = random.Random(8)
    for _ in range(100):
        doc = randgen.random_policy(rng, UNIVERSE)
        text = randgen.to_toml(doc, rng)
        assert tomllib.loads(text) == doc
        lines = text.splitlines()
        scan = scan_toml_lines(text)
        for key, table in doc.items():
            entries = table if isinstance(table, list) else [table]
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    continue
                base = (key, i) if isinstance(table, list) else (key,)
                for field, value in entry.items():
                    if not isinstance(value, list):
                        continue
                    for j, element in enumerate(value):
                        line = lines[scan.line((*base, field, j)) - 1]
                        assert str(element) in line, (element, line)


def test_random_spec_parses_with_origins() -> None:
    spec = randgen.random_spec(random.Random(3), UNIVERSE, max_rules=4)
    for rule in spec.rules:
        assert rule.origin.file == "<random>" and rule.origin.line >= 1


def test_connections_stay_in_the_universe() -> None:
    rng = random.Random(4)
    small = randgen.Universe(addrs=("10.0.0.1", "fd00::2"), comms=("a",), uids=(5,), exes={})
    for _ in range(200):
        c = randgen.random_connection(rng, small)
        assert str(unmap(ipaddress.ip_address(c.daddr))) in small.addrs
        assert c.comm == b"a" and c.uid == 5 and c.exe is None
    spec = parse_policy_text(randgen.random_policy_toml(rng, small, max_rules=8))
    assert all(rule.exe is None for rule in spec.rules)


@pytest.mark.parametrize("seed", range(4))
def test_rule_origins_are_the_lowered_rules_origins(seed: int) -> None:
    """rule_origins() (what the loader counts rules with, without lowering)
    names the rules lower() makes, in its order, whatever the environment."""
    from bouheki.policy.lower import rule_origins

    rng = random.Random(seed)
    for n in range(200):
        spec = randgen.random_spec(rng, UNIVERSE)
        want = rule_origins(spec)
        for env in (ENV, Environment()):
            got = [rule.origin for rule in lower(spec, env)[0].rules]
            assert got == want, f"seed {seed}, policy {n}"
