"""The naive meaning of a LoweredPolicy: try the rules one by one.

No tables, no folding: this is what the compiler and the twin must agree
with, and what the property tests compare them to.
"""

from __future__ import annotations

import ipaddress
import socket

from bouheki.policy.model import LoweredPolicy, unmap
from bouheki.policy.tables import DEFAULT_RULE, Action, Connection, Decision, Verdict
from bouheki.policy.twin import kernel_comm


def reference_decide(policy: LoweredPolicy, c: Connection, policy_id: int = 0) -> Decision:
    if c.dport == 0 or c.family not in (socket.AF_INET, socket.AF_INET6):
        return Decision(Verdict.ALLOWED, Action.ALLOW, -1, None, policy_id, ignored=True)
    addr = unmap(ipaddress.ip_address(c.daddr))
    comm = kernel_comm(c.comm)
    for index, rule in enumerate(policy.rules):
        if rule.matches(addr, c.proto, c.dport, comm, c.exe, c.uid, c.gid):
            action, origin, number = rule.action, rule.origin, index
            break
    else:
        action, origin, number = policy.default_action, policy.default_origin, DEFAULT_RULE
    if action == Action.ALLOW:
        verdict = Verdict.ALLOWED
    else:
        verdict = Verdict.WOULD_BLOCK if policy.monitor else Verdict.BLOCKED
    return Decision(verdict, action, number, origin, policy_id)
