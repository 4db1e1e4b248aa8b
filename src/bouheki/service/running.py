"""The configuration in force, as one record: replaced whole on reload."""

from __future__ import annotations

from dataclasses import dataclass

from ..kernel.enforcer import Applied
from ..policy.assemble import CompiledPolicySet
from ..policy.policyset import PolicySet
from ..policy.tables import PolicyTables


@dataclass
class Running:
    """The configuration in force, as one unit: replaced whole on reload."""

    policy_set: PolicySet
    compiled: CompiledPolicySet
    applied: Applied
    loaded_at_usec: int

    def tables(self, policy_id: int) -> PolicyTables | None:
        for t in self.compiled.tables:
            if t.policy_id == policy_id:
                return t
        return None
