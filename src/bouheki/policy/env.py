"""The outside facts a policy depends on, as one immutable snapshot.

The compiler is pure: the daemon resolves what `requirements()` lists
(domain names, address sets, executables) and passes the answers in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bouheki.policy.model import AddressSet, DomainName, ExeId, IPNetwork, PolicySpec


def _nets(*texts: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


# Sets that never change; @lan depends on the interfaces and comes from the
# daemon. An Environment may still override these.
BUILTIN_SETS: dict[str, tuple[IPNetwork, ...]] = {
    "loopback": _nets("127.0.0.0/8", "::1/128"),
    "link-local": _nets("169.254.0.0/16", "fe80::/10"),
    "multicast": _nets("224.0.0.0/4", "ff00::/8"),
}


@dataclass(frozen=True)
class Environment:
    """names: domain name (lower case, no final dot) -> its networks;
    sets: address set name without '@' -> its networks;
    exes: absolute path -> (kernel dev_t, inode), None if the file is missing.
    A name or path absent from the snapshot contributes nothing (with a
    warning from the compiler)."""

    names: Mapping[str, Sequence[IPNetwork]] = field(default_factory=dict)
    sets: Mapping[str, Sequence[IPNetwork]] = field(default_factory=dict)
    exes: Mapping[str, ExeId | None] = field(default_factory=dict)

    def address_set(self, name: str) -> Sequence[IPNetwork] | None:
        if name in self.sets:
            return self.sets[name]
        return BUILTIN_SETS.get(name)


@dataclass(frozen=True)
class Requirements:
    names: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()
    exes: frozenset[str] = frozenset()

    def __or__(self, other: Requirements) -> Requirements:
        return Requirements(
            self.names | other.names, self.sets | other.sets, self.exes | other.exes
        )


def requirements(spec: PolicySpec) -> Requirements:
    """The domain names, address sets and executable paths `spec` uses."""
    dests = [item.value for item in spec.network.allow.items + spec.network.deny.items]
    exes = [item.value for item in spec.exe.allow.items + spec.exe.deny.items]
    for rule in spec.rules:
        dests += [item.value for item in rule.to or ()]
        exes += [item.value for item in rule.exe or ()]
    return Requirements(
        names=frozenset(d.name for d in dests if isinstance(d, DomainName)),
        sets=frozenset(d.name for d in dests if isinstance(d, AddressSet)),
        exes=frozenset(exes),
    )


def union(reqs: Iterable[Requirements]) -> Requirements:
    out = Requirements()
    for r in reqs:
        out = out | r
    return out
