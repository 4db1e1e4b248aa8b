"""The configuration in force, as one record: replaced whole on reload."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..kernel.enforcer import Applied
from ..policy.assemble import CompiledPolicySet
from ..policy.env import Requirements, requirements, union
from ..policy.policyset import PolicySet
from ..policy.tables import PolicyTables


@dataclass(frozen=True)
class PolicyFacts:
    """What the daemon reports of a running policy (bouhekictl policies,
    statistics, suggest), kept without its parsed text."""

    name: str
    units: tuple[str, ...]
    files: tuple[str, ...]
    needs: Requirements  # its domain names, address sets and executables

    @classmethod
    def of(cls, policy_set: PolicySet) -> list[PolicyFacts]:
        return [
            cls(p.name, tuple(p.units), tuple(p.files), requirements(p.spec))
            for p in policy_set.policies()
        ]


@dataclass
class Running:
    """The configuration in force, as one unit: replaced whole on reload.

    The parsed configuration is kept only while a refresh may recompile it
    (its policies use domain names or address sets, whose addresses
    change): a parsed prefix costs several times its compiled entry (about
    600 bytes against 170, bench/), and a policy set of plain addresses
    changes only on reload, which reads the files again."""

    facts: Sequence[PolicyFacts]
    compiled: CompiledPolicySet
    applied: Applied
    loaded_at_usec: int
    policy_set: PolicySet | None  # None: nothing a refresh could change

    @classmethod
    def of(
        cls, policy_set: PolicySet, compiled: CompiledPolicySet, applied: Applied, now_usec: int
    ) -> Running:
        running = cls(PolicyFacts.of(policy_set), compiled, applied, now_usec, None)
        needs = running.needs
        if needs.names or needs.sets:
            running.policy_set = policy_set
        return running

    @property
    def needs(self) -> Requirements:
        """What every running policy uses (policy_set_requirements)."""
        return union(f.needs for f in self.facts)

    def tables(self, policy_id: int) -> PolicyTables | None:
        for t in self.compiled.tables:
            if t.policy_id == policy_id:
                return t
        return None
