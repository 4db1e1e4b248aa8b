"""The naive meaning of a LoweredPolicy: try the rules one by one.

No tables, no folding: this is what the compiler and the twin must agree
with, and what the property tests compare them to.
"""

from __future__ import annotations

import ipaddress
import socket

from bouheki.policy.model import LoweredPolicy, unmap
from bouheki.policy.tables import (
    DEFAULT_RULE,
    PORT_PROTOCOLS,
    Action,
    Connection,
    Decision,
    Proto,
    Reason,
    Verdict,
)
from bouheki.policy.twin import kernel_comm


def _refused(policy: LoweredPolicy, policy_id: int, reason: Reason) -> Decision:
    verdict = Verdict.WOULD_BLOCK if policy.monitor else Verdict.BLOCKED
    return Decision(verdict, Action.BLOCK, DEFAULT_RULE, None, policy_id, reason=reason)


def reference_decide(policy: LoweredPolicy, c: Connection, policy_id: int = 0) -> Decision:
    if c.family not in (socket.AF_INET, socket.AF_INET6):
        return Decision(Verdict.ALLOWED, Action.ALLOW, -1, None, policy_id, ignored=True)
    if c.proto == Proto.SCTP and not policy.names_sctp:
        return _refused(policy, policy_id, Reason.SCTP)
    addr = unmap(ipaddress.ip_address(c.daddr))
    if addr.is_unspecified:  # this host, at an address the kernel picks: refused
        return _refused(policy, policy_id, Reason.ADDRESS)
    port = c.dport if c.proto in PORT_PROTOCOLS else 0
    comm = kernel_comm(c.comm)
    for index, rule in enumerate(policy.rules):
        if rule.matches(addr, c.proto, port, comm, c.exe, c.uid, c.gid):
            action, origin, number = rule.action, rule.origin, index
            break
    else:
        action, origin, number = policy.default_action, policy.default_origin, DEFAULT_RULE
    if action == Action.ALLOW:
        verdict = Verdict.ALLOWED
    else:
        verdict = Verdict.WOULD_BLOCK if policy.monitor else Verdict.BLOCKED
    return Decision(verdict, action, number, origin, policy_id)
