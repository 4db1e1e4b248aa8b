"""The bitmap classifier compiler: LoweredPolicy -> PolicyTables.

Rule i is bit i. For every dimension, a table maps each value the rules
mention to the mask of rules accepting it, and the dimension's default mask
holds the rules accepting a value none of them mentions (doc/DESIGN.md 3).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Optional

from bouheki.policy.lpm import Prefix, PrefixTable, fold, range_to_prefixes
from bouheki.policy.model import IdMatch, LoweredPolicy, PortMatch, Rule
from bouheki.policy.tables import (
    MAX_RULES,
    POLICY_LEARN,
    POLICY_MONITOR,
    POLICY_SCTP,
    Action,
    PolicyTables,
)

_PORT_BITS = 16


class TooManyRules(ValueError):
    pass


def _bits(rules: Sequence[Rule], pick: Any) -> int:
    return sum(1 << i for i, rule in enumerate(rules) if pick(rule))


def _dst_tables(rules: Sequence[Rule]) -> tuple[PrefixTable, PrefixTable]:
    unconstrained = _bits(rules, lambda r: r.dst is None)
    constraints = {
        i: [
            # A Net holds no host bits: no masking needed.
            (Prefix(net.version, net.value, net.prefixlen, net.max_prefixlen), inc)
            for net, inc in rule.dst.entries
        ]
        for i, rule in enumerate(rules)
        if rule.dst is not None
    }
    by_length: dict[int, dict[int, dict[int, int]]] = {4: {}, 6: {}}
    for p, mask in fold(constraints, unconstrained).items():
        by_length[p.space].setdefault(p.plen, {})[p.value] = mask
    return PrefixTable(by_length[4], 32), PrefixTable(by_length[6], 128)


def port_prefixes(match: PortMatch) -> list[Prefix]:
    """A rule's port constraint as (protocol, port prefix) entries."""
    out: list[Prefix] = []
    for proto in sorted(match.protos):
        if match.ranges is None:
            out.append(Prefix(proto, 0, 0, _PORT_BITS))
            continue
        for lo, hi in match.ranges:
            out += [
                Prefix(proto, v, p, _PORT_BITS) for v, p in range_to_prefixes(lo, hi, _PORT_BITS)
            ]
    return out


def _port_table(rules: Sequence[Rule]) -> dict[tuple[int, int, int], int]:
    unconstrained = _bits(rules, lambda r: r.port is None)
    constraints = {
        i: [(p, True) for p in port_prefixes(rule.port)]
        for i, rule in enumerate(rules)
        if rule.port is not None
    }
    folded = fold(constraints, unconstrained)
    return {(p.space, p.value, p.plen): mask for p, mask in folded.items()}


def _identity_table(rules: Sequence[Rule], attr: str) -> tuple[dict[Any, int], int]:
    matches: list[Optional[IdMatch[Any]]] = [getattr(rule, attr) for rule in rules]
    default = sum(1 << i for i, m in enumerate(matches) if m is None or m.negated)
    keys: set[Hashable] = set()
    for m in matches:
        if m is not None:
            keys |= m.values
    table = {
        key: sum(1 << i for i, m in enumerate(matches) if m is None or m.matches(key))
        for key in keys
    }
    return table, default


def compile_policy(
    lowered: LoweredPolicy, policy_id: int, name: str, flags: int = 0
) -> PolicyTables:
    """The tables of one policy. `flags` adds POLICY_* bits to the policy's
    own (POLICY_MONITOR comes from the policy's mode)."""
    rules = lowered.rules
    if len(rules) > MAX_RULES:
        raise TooManyRules(f"policy {name} has {len(rules)} rules, at most {MAX_RULES} are allowed")
    dst4, dst6 = _dst_tables(rules)
    comm, comm_default = _identity_table(rules, "comm")
    exe, exe_default = _identity_table(rules, "exe")
    uid, uid_default = _identity_table(rules, "uid")
    gid, gid_default = _identity_table(rules, "gid")
    return PolicyTables(
        policy_id=policy_id,
        name=name,
        flags=flags
        | (POLICY_MONITOR if lowered.monitor else 0)
        | (POLICY_SCTP if lowered.names_sctp else 0)
        | (POLICY_LEARN if lowered.learn else 0),
        default_action=lowered.default_action,
        rule_count=len(rules),
        allow_bits=_bits(rules, lambda r: r.action == Action.ALLOW),
        origins=[rule.origin for rule in rules] + [lowered.default_origin],
        dst4=dst4,
        dst6=dst6,
        ports=_port_table(rules),
        comm=comm,
        exe=exe,
        uid=uid,
        gid=gid,
        dst_default=_bits(rules, lambda r: r.dst is None),
        port_default=_bits(rules, lambda r: r.port is None),
        comm_default=comm_default,
        exe_default=exe_default,
        uid_default=uid_default,
        gid_default=gid_default,
    )
