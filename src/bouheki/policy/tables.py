"""Compiled per-policy tables: the contract between the compiler, the Python
twin and the kernel map writers.

Everything here mirrors bpf/bouheki.h. A policy is at most MAX_RULES ordered
rules; every dimension of a connection (destination, protocol+port, comm,
executable, uid, gid) maps to a u64 mask of the rules that accept that value.
The AND of the masks, lowest set bit, is the first matching rule; no bit set
means the policy's default action. See doc/DESIGN.md section 3.

Both LPM dimensions store *folded* masks: the mask of a prefix already
includes every rule that accepts it through a shorter prefix, so the longest
match alone is the answer. A miss in any dimension yields that dimension's
default mask (the rules that do not constrain it, or constrain it negated).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from bouheki.policy.lpm import PrefixTable

MAX_RULES = 64
MAX_POLICIES = 1024
# The host's policy always has this id: the hooks read its slot (bh_scope).
HOST_POLICY = 0
# Rule index reported when no rule matched and the policy default decided.
DEFAULT_RULE = MAX_RULES
COMM_LEN = 16

# LPM key data starts with {u32 gen, u32 policy}: 64 bits always matched.
LPM_SCOPE_BITS = 64
# The port LPM key adds one protocol byte, then the port in network order.
PORT_PROTO_BITS = 8


class Proto(IntEnum):
    """The protocol a rule names, as the hooks key it (bh_rule_proto): the
    socket's IP protocol, except that every raw socket is RAW and MPTCP is TCP."""

    ICMP = 1
    TCP = 6
    UDP = 17
    DCCP = 33
    ICMPV6 = 58
    SCTP = 132
    UDPLITE = 136
    RAW = 255


# The protocols whose destination port reaches the wire (bh_has_ports); the
# hooks judge the others with port 0, whatever the sockaddr says.
PORT_PROTOCOLS = frozenset({Proto.TCP, Proto.UDP, Proto.UDPLITE, Proto.SCTP, Proto.DCCP})
# Names in policies, events and explain.
PROTOCOL_NAMES: dict[str, Proto] = {p.name.lower(): p for p in Proto}


def has_ports(protocol: str) -> bool:
    """Whether the protocol of that name carries a port (PORT_PROTOCOLS)."""
    proto = PROTOCOL_NAMES.get(protocol)
    return proto is not None and proto in PORT_PROTOCOLS


def kernel_address(family: int, daddr: bytes) -> str:
    """A destination as bh_conn holds it (an event's, a learned entry's):
    IPv4 in the first 4 bytes."""
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(daddr[:4]))
    return str(ipaddress.IPv6Address(daddr[:16]))


def protocol_name(proto: int) -> str:
    try:
        return Proto(proto).name.lower()
    except ValueError:
        return str(proto)


class Action(IntEnum):
    ALLOW = 0
    BLOCK = 1


class Verdict(IntEnum):
    """What the kernel did, as reported in events and counters."""

    ALLOWED = 0
    BLOCKED = 1
    WOULD_BLOCK = 2  # monitor mode: the policy said block, the kernel allowed


class Hook(IntEnum):
    CONNECT = 0
    SENDMSG = 1
    SETSOCKOPT = 2
    SOCKET = 3  # socket_create
    SCTP = 4  # sctp_bind_connect


class Reason(IntEnum):
    """Why a call was refused (BH_REASON_*): POLICY when the rules decided,
    the others whatever the rules say (doc/THREATS.md)."""

    POLICY = 0
    ADDRESS = 1  # an address form the programs do not judge
    ROUTING = 2  # an option or ancillary data that routes packets elsewhere
    SCTP = 3  # SCTP where the policy does not name it
    BATCH = 4  # sendmmsg of several named messages (the kernel skips the hook for repeats)
    FAMILY = 5  # a socket family the programs do not judge (AF_SMC, AF_RDS...)


REASON_WORDS: dict[Reason, str] = {
    Reason.POLICY: "policy",
    Reason.ADDRESS: "address-form",
    Reason.ROUTING: "routing-option",
    Reason.SCTP: "sctp-not-named",
    Reason.BATCH: "batched-send",
    Reason.FAMILY: "socket-family",
}


# bh_policy.flags
POLICY_MONITOR = 1 << 0
# target: container -- a process in the host's mount namespace is not a
# container, so this policy does not apply to it (the host policy does).
POLICY_FOREIGN_MNTNS_ONLY = 1 << 1
# Emit events for allowed connections too.
POLICY_LOG_ALLOWED = 1 << 2
# A rule names SCTP: its sockets may exist in the policy's scope.
POLICY_SCTP = 1 << 7
# learn = true: the programs count each judged connection in the learned map.
POLICY_LEARN = 1 << 3


@dataclass(frozen=True)
class Origin:
    """Where a rule came from, for Explain and for events."""

    file: str
    line: int
    text: str = ""  # a short human description, e.g. 'network.deny 10.0.1.71'


def _varies(table: Mapping[Any, int], default: int) -> int:
    out = 0
    for mask in table.masks if isinstance(table, PrefixTable) else table.values():
        out |= mask ^ default
    return out


@dataclass
class PolicyTables:
    """One policy, compiled. Keys are plain Python values; the kernel layer
    packs them into the structs of bouheki.h.

    dst4/dst6: (network address as int, prefix length) -> folded mask
    ports: (proto, port value, prefix length over the 16 port bits) -> folded mask.
        prefix length 0 means "this protocol, any port". A rule that accepts
        any protocol and any port is not listed: it is in port_default.
    comm: comm bytes (<= 15 bytes, no NUL) -> mask
    exe: (kernel dev_t, inode) -> mask
    uid/gid: id -> mask
    """

    policy_id: int
    name: str
    flags: int
    default_action: Action
    rule_count: int
    allow_bits: int  # bit i set: rule i allows; clear: rule i blocks
    origins: list[Origin]  # index i: rule i; index rule_count: the default
    # The compiler gives a PrefixTable (policy/lpm.py), packed; a dict does.
    dst4: Mapping[tuple[int, int], int] = field(default_factory=dict)
    dst6: Mapping[tuple[int, int], int] = field(default_factory=dict)
    ports: dict[tuple[int, int, int], int] = field(default_factory=dict)
    comm: dict[bytes, int] = field(default_factory=dict)
    exe: dict[tuple[int, int], int] = field(default_factory=dict)
    uid: dict[int, int] = field(default_factory=dict)
    gid: dict[int, int] = field(default_factory=dict)
    dst_default: int = 0
    port_default: int = 0
    comm_default: int = 0
    exe_default: int = 0
    uid_default: int = 0
    gid_default: int = 0
    # What the kernel value holds inline (policy/inline.py inline_sets),
    # derived from the fields above on first use.
    inline: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def monitor(self) -> bool:
        return bool(self.flags & POLICY_MONITOR)

    @property
    def learning(self) -> bool:
        return bool(self.flags & POLICY_LEARN)

    @property
    def valid_bits(self) -> int:
        return (1 << self.rule_count) - 1

    # Per dimension, the rules whose verdict depends on it: the bits in
    # which some key's mask differs from the default. While no rule still
    # in the running varies in a dimension, its lookup cannot change the
    # outcome, so bh_match (and the twin) skip it.
    @property
    def dst_varies(self) -> int:
        return _varies(self.dst4, self.dst_default) | _varies(self.dst6, self.dst_default)

    @property
    def port_varies(self) -> int:
        return _varies(self.ports, self.port_default)

    @property
    def comm_varies(self) -> int:
        return _varies(self.comm, self.comm_default)

    @property
    def exe_varies(self) -> int:
        return _varies(self.exe, self.exe_default)

    @property
    def uid_varies(self) -> int:
        return _varies(self.uid, self.uid_default)

    @property
    def gid_varies(self) -> int:
        return _varies(self.gid, self.gid_default)


@dataclass(frozen=True)
class Connection:
    """What the hook sees of one connect/sendmsg, for the twin.

    daddr is the destination as the socket gave it; an IPv4-mapped IPv6
    address is judged as IPv4 (the twin unmaps it, like the kernel does), and
    the unspecified address is refused. proto is a Proto value (raw sockets
    RAW); the port of a protocol without ports is judged as 0.
    """

    family: int  # socket.AF_INET or socket.AF_INET6
    daddr: str
    dport: int
    proto: int
    comm: bytes = b""
    exe: tuple[int, int] | None = None  # (kernel dev_t, inode)
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Decision:
    """The twin's verdict and the rule that decided it."""

    verdict: Verdict
    action: Action
    rule: int  # DEFAULT_RULE when the default or a refusal decided; -1 when ignored
    origin: Origin | None
    policy_id: int
    ignored: bool = False  # a family the hooks do not judge
    reason: Reason = Reason.POLICY  # not POLICY: refused whatever the rules say
