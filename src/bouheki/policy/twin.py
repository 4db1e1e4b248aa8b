"""The Python twin of the BPF classifier: judges a Connection against
PolicyTables exactly as bpf/ does, step for step (Explain uses it, and the
in-kernel differential test compares the two). Keep it parallel to the C.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

from bouheki.policy.inline import (
    DIM_COMM,
    DIM_EXE,
    DIM_GID,
    DIM_PORT,
    DIM_UID,
    comm_words,
    inline_sets,
    key_mask,
    ports_answer,
    span_mask,
)
from bouheki.policy.lpm import PrefixTable
from bouheki.policy.tables import (
    COMM_LEN,
    DEFAULT_RULE,
    POLICY_SCTP,
    PORT_PROTOCOLS,
    Action,
    Connection,
    Decision,
    PolicyTables,
    Proto,
    Reason,
    Verdict,
)


def _lpm(table: Mapping[tuple[int, int], int], addr: int, width: int) -> int | None:
    if isinstance(table, PrefixTable):
        return table.longest(addr)
    for plen in range(width, -1, -1):
        key = addr & ~((1 << (width - plen)) - 1)
        mask = table.get((key, plen))
        if mask is not None:
            return mask
    return None


def judged_address(daddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address the hooks judge (bh_parse): ::ffff:a.b.c.d as IPv4."""
    addr = ipaddress.ip_address(daddr)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def judged_port(proto: int, port: int) -> int:
    """Protocols without ports are judged with port 0 (bh_has_ports)."""
    return port if proto in PORT_PROTOCOLS else 0


def _dst_mask(t: PolicyTables, daddr: str) -> int:
    addr = judged_address(daddr)
    mask = _lpm(t.dst4, int(addr), 32) if addr.version == 4 else _lpm(t.dst6, int(addr), 128)
    return t.dst_default if mask is None else mask


def _port_mask(t: PolicyTables, proto: int, port: int) -> int:
    sets = inline_sets(t)
    if not sets.in_maps & DIM_PORT:
        return span_mask(sets.spans, proto, port, t.port_default)
    return ports_answer(t, proto, port)


def _exact_mask(
    t: PolicyTables,
    dim: int,
    table: Mapping[Any, int],
    default: int,
    key: object,
    words: tuple[int, int],
) -> int:
    """An exact-match dimension's mask: from its inline keys, as two words
    (bh_key_mask), or from its map (a hash lookup)."""
    sets = inline_sets(t)
    if sets.in_maps & dim:
        return table.get(key, default)
    return key_mask(sets.keys_of(dim), *words, default)


def kernel_comm(comm: bytes) -> bytes:
    """comm as the kernel's key holds it: at most 15 bytes, up to a NUL."""
    return comm.split(b"\0", 1)[0][: COMM_LEN - 1]


def refused(t: PolicyTables, reason: Reason) -> Decision:
    """A call refused whatever the rules say (bh_judge with a reason)."""
    verdict = Verdict.WOULD_BLOCK if t.monitor else Verdict.BLOCKED
    return Decision(verdict, Action.BLOCK, DEFAULT_RULE, None, t.policy_id, reason=reason)


def decide(t: PolicyTables, c: Connection) -> Decision:
    if c.family not in (socket.AF_INET, socket.AF_INET6):
        return Decision(Verdict.ALLOWED, Action.ALLOW, -1, None, t.policy_id, ignored=True)
    if c.family == socket.AF_INET and ":" in c.daddr:
        raise ValueError(f"AF_INET connection to an IPv6 address {c.daddr}")
    if c.proto == Proto.SCTP and not t.flags & POLICY_SCTP:
        return refused(t, Reason.SCTP)
    # 0.0.0.0 and :: are this host, at an address the kernel picks from the
    # socket's binding and options: refused rather than guessed.
    if judged_address(c.daddr).is_unspecified:
        return refused(t, Reason.ADDRESS)

    # A destination with port 0 is still a destination: judged like any.
    # As bh_match: a dimension is looked up only while a live rule varies
    # in it; otherwise its default stands for every key.
    # A dimension's keys are inline in the policy's value (scanned) or in
    # its map (looked up), as bh_match does it: the same answer either way.
    m = t.valid_bits
    m &= _dst_mask(t, c.daddr) if m & t.dst_varies else t.dst_default
    port = judged_port(c.proto, c.dport)
    m &= _port_mask(t, c.proto, port) if m & t.port_varies else t.port_default
    m &= (
        _exact_mask(t, DIM_UID, t.uid, t.uid_default, c.uid, (c.uid, 0))
        if m & t.uid_varies
        else t.uid_default
    )
    m &= (
        _exact_mask(t, DIM_GID, t.gid, t.gid_default, c.gid, (c.gid, 0))
        if m & t.gid_varies
        else t.gid_default
    )
    comm = kernel_comm(c.comm)
    m &= (
        _exact_mask(t, DIM_COMM, t.comm, t.comm_default, comm, comm_words(comm))
        if m & t.comm_varies
        else t.comm_default
    )
    dev, ino = (0, 0) if c.exe is None else c.exe  # no executable: inode 0 (bh_read_exe)
    m &= (
        _exact_mask(t, DIM_EXE, t.exe, t.exe_default, (dev, ino), (ino, dev))
        if m & t.exe_varies
        else t.exe_default
    )
    if m:
        rule = (m & -m).bit_length() - 1  # lowest set bit: the first matching rule
        action = Action.ALLOW if t.allow_bits >> rule & 1 else Action.BLOCK
        origin = t.origins[rule]
    else:
        rule = DEFAULT_RULE
        action = t.default_action
        origin = t.origins[t.rule_count]

    if action == Action.ALLOW:
        verdict = Verdict.ALLOWED
    else:
        verdict = Verdict.WOULD_BLOCK if t.monitor else Verdict.BLOCKED
    return Decision(verdict, action, rule, origin, t.policy_id)
