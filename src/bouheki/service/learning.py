"""What a learning policy recorded (the kernel's learned map), as the API's
Learned: destinations as the hooks judged them, executables by path when one
can be found, the policy's domain names that resolve to each address now,
and the programs' CLOCK_MONOTONIC stamps as CLOCK_REALTIME."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..common import api
from ..kernel.enforcer import Enforcer
from ..kernel.layout import MAX_LEARN
from ..names.manager import NamesManager
from ..policy.tables import PolicyTables, kernel_address, protocol_name
from .environment import usec_now
from .exe_paths import ExePaths
from .running import PolicyFacts


def learned(
    unit: str,
    t: PolicyTables,
    enforcer: Enforcer,
    names: dict[str, set[str]],
    exe_paths: ExePaths,
) -> api.Learned:
    # The programs stamp CLOCK_MONOTONIC; the API speaks CLOCK_REALTIME.
    offset_us = usec_now() - time.monotonic_ns() // 1000
    observations = []
    for k, v in enforcer.maps.learned():
        if k.policy != t.policy_id:
            continue
        address = kernel_address(k.family, bytes(k.daddr))
        observations.append(
            api.Observation(
                address=address, port=k.dport, protocol=protocol_name(k.proto), uid=k.uid,
                exe=exe_paths.find(k.exe_dev, k.exe_ino) or "",
                names=sorted(names.get(address, ())),
                allowed=v.allowed, would_block=v.would_block, blocked=v.blocked,
                first_usec=offset_us + v.first_ns // 1000,
                last_usec=offset_us + v.last_ns // 1000,
            )
        )  # fmt: skip
    observations.sort(key=lambda o: (o.protocol, o.port, o.address, o.exe, o.uid))
    return api.Learned(
        unit=unit,
        policy=t.name,
        learning=t.learning,
        observations=observations,
        missed=enforcer.counters.global_counts().learn_full,
        capacity=MAX_LEARN,
    )


def name_addresses(
    facts: Iterable[PolicyFacts], policy: str, names: NamesManager
) -> dict[str, set[str]]:
    """address -> the domain names of `policy` that resolve to it now."""
    out: dict[str, set[str]] = {}
    for p in facts:
        if p.name != policy:
            continue
        for state in names.states(p.needs.names):
            for a in state.addresses:
                out.setdefault(a.address, set()).add(state.name)
    return out
