"""Explain: which verdict, policy and rule a connection would get, through
the Python twin of the programs (policy/twin.py). The daemon asks it about
the running policy (where the unit runs now); `bouhekictl explain --offline`
about the files (where systemd would put the unit), with the same answer
for the same placement."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from ..common import api
from ..policy import twin
from ..policy.assemble import CompiledPolicySet
from ..policy.tables import (
    DEFAULT_RULE,
    PROTOCOL_NAMES,
    REASON_WORDS,
    Connection,
    Reason,
    Verdict,
)
from ..units.scope import ScopePlan, bindings
from . import environment

VERDICT_WORDS = {Verdict.ALLOWED: "allowed", Verdict.BLOCKED: "blocked",
                 Verdict.WOULD_BLOCK: "would-block"}  # fmt: skip

# The refusals twin.decide can give explain, in words.
_REFUSED_WHY = {
    Reason.SCTP: "no rule of the policy names sctp",
    Reason.ADDRESS: "0.0.0.0 and :: mean this host, at an address the kernel picks",
}


def policy_for_unit(
    compiled: CompiledPolicySet, unit: str | None, cgroup: Sequence[str] | None = None
) -> int | None:
    """The policy that judges a process of `unit` (None: in no unit) whose
    cgroup path is `cgroup` (None: where systemd would put it), as the
    programs choose it (ScopePlan.policy_at), else the host's."""
    plan = ScopePlan(bindings(compiled))
    if unit:
        parts = list(cgroup) if cgroup is not None else None
        if parts is None:
            parts = [p for p in plan.parent_of(unit).split("/") if p] + [unit]
        policy = plan.policy_at(parts)
        if policy is not None:
            return policy
    return compiled.host_policy_id


def explain(
    compiled: CompiledPolicySet | None, policy_id: int | None, query: api.ExplainQuery
) -> api.Explanation:
    try:
        addr = ipaddress.ip_address(query.address)
    except ValueError as e:
        raise api.BadRequest(f"{query.address!r} is not an IP address") from e
    if query.port is None:
        raise api.BadRequest("give the destination port (ADDRESS:PORT): rules can depend on it")
    port = query.port
    if not 0 <= port <= 65535:
        raise api.BadRequest(f"port {port} is out of range (0-65535)")
    proto = PROTOCOL_NAMES.get(query.protocol)
    if proto is None:
        names = ", ".join(PROTOCOL_NAMES)
        raise api.BadRequest(f"protocol must be one of {names}, not {query.protocol!r}")
    t = None
    if compiled is not None and policy_id is not None:
        t = next((t for t in compiled.tables if t.policy_id == policy_id), None)
    if t is None:
        return api.Explanation("allowed", "", api.NO_RULE, "", 0, "",
                               "no policy applies to this process")  # fmt: skip
    exe = None
    if query.exe:
        exe = environment.exe_ids([query.exe]).get(query.exe)
    conn = Connection(
        family=socket.AF_INET6 if addr.version == 6 else socket.AF_INET,
        daddr=str(addr), dport=port, proto=int(proto), comm=query.comm.encode(),
        exe=exe, uid=query.uid, gid=query.gid,
    )  # fmt: skip
    d = twin.decide(t, conn)
    if d.reason != Reason.POLICY:
        why = _REFUSED_WHY.get(d.reason, "")
        return api.Explanation(VERDICT_WORDS[d.verdict], t.name, api.NO_RULE, "", 0, "",
                               f"refused whatever the rules say: {REASON_WORDS[d.reason]} "
                               f"({why})")  # fmt: skip
    o = d.origin
    word = VERDICT_WORDS[d.verdict]
    if d.rule == DEFAULT_RULE:
        reason = f"no rule matched: the default of policy {t.name} is {d.action.name.lower()}"
    else:
        reason = f"rule {d.rule} of policy {t.name} ({o.text if o else ''}) matched"
    return api.Explanation(
        verdict=word, policy=t.name,
        rule=d.rule if d.rule != DEFAULT_RULE else api.NO_RULE,
        origin_file=o.file if o else "", origin_line=o.line if o else 0,
        origin_text=o.text if o else "", reason=reason,
    )  # fmt: skip
