"""Lowering: a PolicySpec -> the ordered rules it means (doc/DESIGN.md 2.1).

Order, first match wins:
  the [[rule]] entries, as written;
  1. identity deny lists: comm/exe/uid/gid in the list -> block;
  2. identity allow lists: value NOT in a non-empty list -> block;
  3-4. network.deny: destination in DENYSET -> block, or allow when any
     identity allow list is non-empty (only processes on those lists get
     this far, and a deny match is exempt for them: the seed's wget case);
     network.allow: destination in ALLOWSET -> allow;
  default: block if network.allow is non-empty, else allow.
DENYSET and ALLOWSET encode "longest matching prefix wins" between the two
lists as LPM sets: each list's prefixes are included in its own set and
excluded from the other's; on an equal prefix deny wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

from bouheki.common.api import Problem
from bouheki.policy.env import Environment
from bouheki.policy.model import (
    IDENTITY_DIMENSIONS,
    AddressSet,
    Dest,
    DomainName,
    ExeId,
    IdMatch,
    Item,
    ListField,
    LoweredPolicy,
    LpmSet,
    Net,
    PolicySpec,
    PortMatch,
    Rule,
    RuleSpec,
    fold_mapped,
)
from bouheki.policy.tables import PORT_PROTOCOLS, Action, Origin, Proto

# Rule field for each identity dimension of the spec.
_FIELD = {"command": "comm", "exe": "exe", "uid": "uid", "gid": "gid"}


# Unresolved names of one list warned about one by one; more make one warning.
UNRESOLVED_LISTED = 3
NO_ADDRESS = "has no resolved address; it matches nothing"


class _Resolver:
    """Resolves spec values against an Environment, collecting warnings."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.warnings: list[Problem] = []

    def _warn(self, origin: Origin, message: str) -> None:
        self.warnings.append(Problem(origin.file, origin.line, f"{origin.text}: {message}"))

    def networks(self, items: Iterable[Item[Dest]]) -> list[Net]:
        out: list[Net] = []
        unresolved: list[Item[Dest]] = []
        for item in items:
            dest = item.value
            if isinstance(dest, DomainName):
                found = self.env.names.get(dest.name)
                if not found:
                    unresolved.append(item)
                out += [fold_mapped(n) for n in found or ()]
            elif isinstance(dest, AddressSet):
                members = self.env.address_set(dest.name)
                if members is None:
                    self._warn(
                        item.origin, f"address set {dest} is not known yet; it matches nothing"
                    )
                out += [fold_mapped(n) for n in members or ()]
            else:
                out.append(dest)
        self._warn_unresolved(unresolved)
        return out

    def _warn_unresolved(self, unresolved: Sequence[Item[Dest]]) -> None:
        """One warning per name, or one for the list when there are many: a
        list of thousands of names that do not resolve yet is one fact."""
        if len(unresolved) <= UNRESOLVED_LISTED:
            for item in unresolved:
                self._warn(item.origin, f"'{item.value}' {NO_ADDRESS}")
            return
        first = unresolved[0].origin
        where = first.text.rsplit("[", 1)[0] if first.text.endswith("]") else first.text
        shown = ", ".join(f"'{i.value}'" for i in unresolved[:UNRESOLVED_LISTED])
        self.warnings.append(
            Problem(
                first.file,
                first.line,
                f"{where}: {len(unresolved)} names have no resolved address ({shown}, ...); "
                "they match nothing until they resolve",
            )
        )

    def values(self, dimension: str, items: Iterable[Item[Any]]) -> frozenset[Any]:
        if dimension != "exe":
            return frozenset(item.value for item in items)
        exes: set[ExeId] = set()
        for item in items:
            found = self.env.exes.get(item.value)
            if found is None:
                self._warn(item.origin, f"'{item.value}' does not exist; it matches nothing")
            else:
                exes.add(found)
        return frozenset(exes)


def _lpm_set(included: Sequence[Net], excluded: Sequence[Net], tie_included: bool) -> LpmSet:
    if not excluded:  # the common case, and hashing networks is not cheap
        return LpmSet(tuple(dict.fromkeys(included, True).items()))
    entries: dict[Net, bool] = {net: False for net in excluded}
    excluded_set = set(excluded)
    for net in included:
        entries[net] = tie_included if net in excluded_set else True
    return LpmSet(tuple(entries.items()))


def _lower_rule(spec: RuleSpec, r: _Resolver) -> Rule:
    port: Optional[PortMatch] = None
    if spec.protocol is not None:
        port = PortMatch(frozenset([spec.protocol]), spec.ports)
    elif spec.ports is not None:
        # Ports without a protocol: every protocol that has ports (UDP-Lite,
        # SCTP and DCCP too, or a deny rule would miss them).
        port = PortMatch(PORT_PROTOCOLS, spec.ports)
    fields: dict[str, Any] = {}
    for dimension in IDENTITY_DIMENSIONS:
        items = getattr(spec, dimension)
        if items is not None:
            fields[_FIELD[dimension]] = IdMatch(r.values(dimension, items))
    dst = None if spec.to is None else _lpm_set(r.networks(spec.to), (), True)
    return Rule(action=spec.action, origin=spec.origin, dst=dst, port=port, **fields)


def _list_origin(spec: PolicySpec, lst: ListField[Any], text: str) -> Origin:
    base = lst.origin or spec.origin
    return Origin(base.file, base.line, base.text if lst.origin else text)


def _identity_lists(spec: PolicySpec) -> Iterator[tuple[bool, str, ListField[Any], Origin]]:
    """Steps 1 and 2: (negated, dimension, list, origin) per non-empty list."""
    for negated, which in ((False, "deny"), (True, "allow")):
        for dimension in IDENTITY_DIMENSIONS:
            lst: ListField[Any] = getattr(spec.identity(dimension), which)
            if lst:
                yield negated, dimension, lst, _list_origin(spec, lst, f"{dimension}.{which}")


def _network_rules(spec: PolicySpec) -> Iterator[tuple[str, Action, Origin]]:
    """Steps 3 and 4: (list, action, origin) of the network lists' rules."""
    if spec.network.deny:
        exempt = any(spec.identity(d).allow for d in IDENTITY_DIMENSIONS)
        origin = _list_origin(spec, spec.network.deny, "network.deny")
        if exempt:
            origin = Origin(origin.file, origin.line, f"{origin.text} (exempt: on an allow list)")
        yield "deny", Action.ALLOW if exempt else Action.BLOCK, origin
    if spec.network.allow:
        yield "allow", Action.ALLOW, _list_origin(spec, spec.network.allow, "network.allow")


def rule_origins(spec: PolicySpec) -> list[Origin]:
    """The origins of the rules lower() makes of `spec`, in its order, without
    lowering: what counting them needs (the count depends on the spec only,
    and building a 100,000-prefix list's LPM set took a quarter of a reload's
    parse just to count to 60)."""
    return [
        *(rule.origin for rule in spec.rules),
        *(origin for *_, origin in _identity_lists(spec)),
        *(origin for *_, origin in _network_rules(spec)),
    ]


def lower(spec: PolicySpec, env: Environment) -> tuple[LoweredPolicy, list[Problem]]:
    """The ordered rules of `spec`, and warnings about unresolved values.
    Their origins are rule_origins(spec), whatever `env`."""
    r = _Resolver(env)
    rules = [_lower_rule(rule, r) for rule in spec.rules]

    for negated, dimension, lst, origin in _identity_lists(spec):
        match = IdMatch(r.values(dimension, lst.items), negated=negated)
        rules.append(Rule(Action.BLOCK, origin, **{_FIELD[dimension]: match}))

    allow, deny = spec.network.allow, spec.network.deny
    allow_nets, deny_nets = r.networks(allow.items), r.networks(deny.items)
    for which, action, origin in _network_rules(spec):
        if which == "deny":
            dst = _lpm_set(deny_nets, allow_nets, tie_included=True)
        else:
            dst = _lpm_set(allow_nets, deny_nets, False)
        rules.append(Rule(action, origin, dst=dst))

    if allow:
        default_action = Action.BLOCK
        base = _list_origin(spec, allow, "network.allow")
        default_origin = Origin(base.file, base.line, "default: block (network.allow is set)")
    else:
        default_action = Action.ALLOW
        default_origin = Origin(spec.origin.file, spec.origin.line, "default: allow")
    names_sctp = any(rule.protocol == Proto.SCTP for rule in spec.rules)
    lowered = LoweredPolicy(
        tuple(rules), default_action, default_origin, spec.monitor, spec.learning, names_sctp
    )
    return lowered, r.warnings
