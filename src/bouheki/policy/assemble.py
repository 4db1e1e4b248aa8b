"""A whole PolicySet -> tables with policy ids, and where each id applies.

Ids are kept per policy name across reloads when the previous assignment is
passed back, because the daemon keeps its counters per id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

from bouheki.common.api import Problem
from bouheki.common.gcpause import without_gc
from bouheki.common.units import unit_glob
from bouheki.policy.compiler import compile_policy
from bouheki.policy.env import Environment, Requirements, requirements, union
from bouheki.policy.lower import lower
from bouheki.policy.policyset import PolicySet
from bouheki.policy.tables import HOST_POLICY, MAX_POLICIES, POLICY_LOG_ALLOWED, PolicyTables


@dataclass(frozen=True)
class ScopeEntry:
    """Processes in `unit` (and the cgroups below it) get `policy_id`.

    glob: the shell pattern to match unit names with when `unit` is a pattern
    ('docker-*.scope') or a template ('getty@.service' -> 'getty@*.service');
    None when `unit` names exactly one unit.
    """

    unit: str
    glob: Optional[str]
    policy_id: int


@dataclass
class CompiledPolicySet:
    tables: list[PolicyTables]  # ordered by policy_id
    scopes: list[ScopeEntry]
    host_policy_id: Optional[int]
    ids: dict[str, int]  # policy name -> id: pass back as `previous` on reload
    warnings: list[Problem] = field(default_factory=list)


def assign_ids(
    names: Iterable[str],
    previous: Optional[Mapping[str, int]] = None,
    host: Optional[str] = None,
) -> dict[str, int]:
    """Stable ids: the host's policy (named `host`) has HOST_POLICY, which
    no other takes; any other name keeps its previous id; a new name takes
    the lowest id never used in `previous` (so counters of a removed policy
    are not mixed into a new one), or else the lowest free one."""
    previous = previous or {}
    wanted = list(dict.fromkeys(names))
    if len(set(wanted) - {host}) > MAX_POLICIES - 1:
        raise ValueError(
            f"{len(wanted)} policies, at most {MAX_POLICIES - 1} are supported beside the host's"
        )
    ids = {
        n: previous[n]
        for n in wanted
        if n in previous and 0 <= previous[n] < MAX_POLICIES and previous[n] != HOST_POLICY
    }
    if host is not None:
        ids[host] = HOST_POLICY
    taken = set(ids.values()) | {HOST_POLICY}
    old = set(previous.values())
    fresh = (i for i in range(MAX_POLICIES) if i not in taken and i not in old)
    reused = (i for i in range(MAX_POLICIES) if i not in taken and i in old)
    for name in wanted:
        if name not in ids:
            new = next(fresh, None)
            ids[name] = new if new is not None else next(reused)
    return ids


def policy_set_requirements(policy_set: PolicySet) -> Requirements:
    """Every domain name, address set and executable the policies use: what
    the daemon must resolve into an Environment before compiling."""
    return union(requirements(p.spec) for p in policy_set.policies())


@without_gc
def compile_policy_set(
    policy_set: PolicySet,
    env: Environment,
    previous: Optional[Mapping[str, int]] = None,
) -> CompiledPolicySet:
    policies = policy_set.policies()
    host = policy_set.host
    ids = assign_ids((p.name for p in policies), previous, host.name if host else None)
    log_flag = POLICY_LOG_ALLOWED if policy_set.settings.log_allowed else 0
    tables: list[PolicyTables] = []
    scopes: list[ScopeEntry] = []
    warnings: list[Problem] = []
    for policy in policies:
        policy_id = ids[policy.name]
        lowered, problems = lower(policy.spec, env)
        warnings += problems
        tables.append(compile_policy(lowered, policy_id, policy.name, policy.flags | log_flag))
        scopes += [ScopeEntry(unit, unit_glob(unit), policy_id) for unit in policy.units]
    return CompiledPolicySet(
        tables=sorted(tables, key=lambda t: t.policy_id),
        scopes=scopes,
        host_policy_id=ids[host.name] if host is not None else None,
        ids=ids,
        warnings=warnings,
    )
