"""The Python twin of bh_parse (bpf/bouheki.bpf.c): what the hooks make of
a sockaddr given to connect() or named by a message, before any policy is
consulted. Each rule mirrors the kernel function named beside it in the C;
tests/vm/guest/test_differential.py feeds both random sockaddrs and checks
that they agree.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
from dataclasses import dataclass

from bouheki.policy.tables import PORT_PROTOCOLS, Connection, Proto, Reason

SOCK_RAW = 3
IPPROTO_MPTCP = 262
IPPROTO_SMC = 256
SIN_LEN = 16  # sizeof(struct sockaddr_in)
SIN6_LEN_RFC2133 = 24  # sockaddr_in6 without sin6_scope_id


@dataclass(frozen=True)
class Sock:
    """The socket as the hooks read it from struct sock."""

    family: int
    type: int
    protocol: int

    @property
    def rule_proto(self) -> int:
        """bh_rule_proto: raw sockets are RAW, MPTCP is TCP."""
        if self.type == SOCK_RAW:
            return Proto.RAW
        if self.protocol in (IPPROTO_MPTCP, IPPROTO_SMC):
            return Proto.TCP
        return self.protocol & 0xFF


class Outcome(enum.Enum):
    SKIP = "skip"  # nothing leaves for a destination of its own
    JUDGE = "judge"  # the policy decides on .conn
    REFUSE = "refuse"  # refused whatever the policy says


@dataclass(frozen=True)
class Parsed:
    outcome: Outcome
    conn: Connection | None = None
    reason: Reason = Reason.POLICY


def _refuse() -> Parsed:
    return Parsed(Outcome.REFUSE, reason=Reason.ADDRESS)


def parse(sock: Sock, name: bytes, connect: bool) -> Parsed:
    """bh_parse."""
    if not connect and not name:
        return Parsed(Outcome.SKIP)  # socket_sendmsg: no name, the connected peer
    if len(name) < 2:
        return _refuse()
    family = struct.unpack_from("<H", name)[0]
    if family == socket.AF_UNSPEC:
        if connect:
            return Parsed(Outcome.SKIP)  # a disconnect
        if sock.type == SOCK_RAW:
            family = sock.family
        elif sock.protocol in (Proto.UDP, Proto.UDPLITE):
            if sock.family == socket.AF_INET6:
                return Parsed(Outcome.SKIP)  # udpv6_sendmsg: the connected peer
            family = socket.AF_INET
        else:
            return _refuse()
    proto = sock.rule_proto
    if family == socket.AF_INET:
        if len(name) < SIN_LEN:
            return _refuse()
        port = struct.unpack_from(">H", name, 2)[0]
        daddr = str(ipaddress.IPv4Address(name[4:8]))
        fam = socket.AF_INET
    elif family == socket.AF_INET6 and sock.family == socket.AF_INET6:
        if len(name) < SIN6_LEN_RFC2133:
            return _refuse()
        port = struct.unpack_from(">H", name, 2)[0]
        addr6 = ipaddress.IPv6Address(name[8:24])
        if addr6.ipv4_mapped is not None:
            fam, daddr = socket.AF_INET, str(addr6.ipv4_mapped)
        else:
            fam, daddr = socket.AF_INET6, str(addr6)
    else:
        return _refuse()
    if ipaddress.ip_address(daddr).is_unspecified:
        return _refuse()  # this host, at an address the kernel picks
    if proto not in PORT_PROTOCOLS:
        port = 0
    return Parsed(Outcome.JUDGE, Connection(fam, daddr, port, proto))
