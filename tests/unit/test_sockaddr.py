"""The twin of bh_parse on the forms the kernel's handlers accept or refuse
(the lab's differential test checks it against the programs)."""

from __future__ import annotations

import socket
import struct

import pytest

from bouheki.policy.sockaddr import Outcome, Sock, parse
from bouheki.policy.tables import Connection, Proto, Reason

TCP4 = Sock(socket.AF_INET, socket.SOCK_STREAM, Proto.TCP)
TCP6 = Sock(socket.AF_INET6, socket.SOCK_STREAM, Proto.TCP)
UDP4 = Sock(socket.AF_INET, socket.SOCK_DGRAM, Proto.UDP)
UDP6 = Sock(socket.AF_INET6, socket.SOCK_DGRAM, Proto.UDP)
PING4 = Sock(socket.AF_INET, socket.SOCK_DGRAM, Proto.ICMP)
RAW4 = Sock(socket.AF_INET, 3, Proto.UDP)
MPTCP = Sock(socket.AF_INET, socket.SOCK_STREAM, 262)


def sin(addr: str, port: int, family: int = socket.AF_INET) -> bytes:
    return struct.pack("<H", family) + struct.pack(">H", port) + socket.inet_aton(addr) + bytes(8)


def sin6(addr: str, port: int, length: int = 28) -> bytes:
    raw = struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", port, 0)
    return (raw + socket.inet_pton(socket.AF_INET6, addr) + bytes(4))[:length]


def judged(sock: Sock, name: bytes, connect: bool = True) -> Connection | None:
    p = parse(sock, name, connect)
    assert p.outcome == Outcome.JUDGE, p
    return p.conn


def test_forms_the_kernel_accepts_are_judged() -> None:
    assert judged(TCP4, sin("10.0.1.71", 80)) == Connection(2, "10.0.1.71", 80, Proto.TCP)
    # tcp_v6_connect takes 24 bytes; a v4-mapped address is IPv4.
    assert judged(TCP6, sin6("2001:db8::71", 80, 24)) == Connection(10, "2001:db8::71", 80, 6)
    assert judged(UDP6, sin6("::ffff:10.0.1.71", 9, 24)).family == socket.AF_INET
    # ip6_datagram_connect and udpv6_sendmsg take AF_INET names.
    assert judged(UDP6, sin("10.0.1.71", 9)).daddr == "10.0.1.71"
    # udp_sendmsg reads AF_UNSPEC as IPv4; raw_sendmsg takes family 0 as its own.
    assert judged(UDP4, sin("10.0.1.71", 9, 0), connect=False).daddr == "10.0.1.71"
    assert judged(RAW4, sin("10.0.1.71", 9, 0), connect=False).proto == Proto.RAW
    # Protocols without ports are judged at port 0; MPTCP is TCP.
    assert judged(PING4, sin("10.0.1.71", 1234)).dport == 0
    assert judged(MPTCP, sin("10.0.1.71", 80)).proto == Proto.TCP


def test_what_sends_nothing_of_its_own_is_skipped() -> None:
    assert parse(TCP4, sin("10.0.1.71", 80, 0), True).outcome == Outcome.SKIP  # disconnect
    assert parse(UDP6, sin("10.0.1.71", 9, 0), False).outcome == Outcome.SKIP  # connected peer
    assert parse(UDP4, b"", False).outcome == Outcome.SKIP


@pytest.mark.parametrize(
    ("sock", "name", "connect"),
    [
        (TCP4, b"", True),
        (UDP4, b"\x02", False),
        (TCP4, sin("10.0.1.71", 80)[:15], True),
        (TCP6, sin6("2001:db8::71", 80, 23), True),
        (UDP4, sin6("2001:db8::71", 9), False),  # a v6 name on a v4 socket
        (TCP4, sin("10.0.1.71", 80, 0x29), True),
        (TCP4, sin("10.0.1.71", 80, 0), False),  # Fast Open's AF_UNSPEC
        (PING4, sin("10.0.1.71", 0, 0), False),
    ],
)
def test_what_the_programs_do_not_judge_is_refused(sock: Sock, name: bytes, connect: bool) -> None:
    p = parse(sock, name, connect)
    assert p.outcome == Outcome.REFUSE and p.reason == Reason.ADDRESS
