"""The twin on hand-written tables: the evaluation contract of tables.py,
independent of the compiler."""

from __future__ import annotations

import socket

from bouheki.policy.tables import (
    DEFAULT_RULE,
    POLICY_MONITOR,
    Action,
    Connection,
    Origin,
    PolicyTables,
    Proto,
    Verdict,
)
from bouheki.policy.twin import decide, kernel_comm

ORIGINS = [Origin("f", i + 1, f"rule {i}") for i in range(3)] + [Origin("f", 9, "default")]


def tables(**kw: object) -> PolicyTables:
    base: dict[str, object] = dict(
        policy_id=5,
        name="p",
        flags=0,
        default_action=Action.BLOCK,
        rule_count=3,
        allow_bits=0b101,
        origins=ORIGINS,
        dst_default=0b111,
        port_default=0b111,
        comm_default=0b111,
        exe_default=0b111,
        uid_default=0b111,
        gid_default=0b111,
    )
    base.update(kw)
    return PolicyTables(**base)  # type: ignore[arg-type]


def conn(daddr: str = "10.0.0.1", port: int = 80, **kw: object) -> Connection:
    family = socket.AF_INET6 if ":" in daddr else socket.AF_INET
    return Connection(family, daddr, port, kw.pop("proto", Proto.TCP), **kw)  # type: ignore[arg-type]


def test_lowest_set_bit_decides() -> None:
    d = decide(tables(), conn())
    assert (d.rule, d.action, d.verdict, d.policy_id) == (0, Action.ALLOW, Verdict.ALLOWED, 5)
    assert d.origin == ORIGINS[0]
    d = decide(tables(dst_default=0b110), conn())
    assert (d.rule, d.action, d.verdict) == (1, Action.BLOCK, Verdict.BLOCKED)


def test_no_bit_means_default_with_its_origin() -> None:
    d = decide(tables(uid={1000: 0}), conn(uid=1000))
    assert (d.rule, d.action, d.origin) == (DEFAULT_RULE, Action.BLOCK, ORIGINS[3])


def test_bits_beyond_rule_count_are_ignored() -> None:
    d = decide(tables(dst_default=0b1000, rule_count=3), conn())
    assert d.rule == DEFAULT_RULE


def test_monitor_turns_block_into_would_block() -> None:
    t = tables(flags=POLICY_MONITOR, dst_default=0b010)
    assert decide(t, conn()).verdict == Verdict.WOULD_BLOCK
    assert decide(tables(flags=POLICY_MONITOR), conn()).verdict == Verdict.ALLOWED


def test_dst_longest_prefix_and_mapped() -> None:
    t = tables(dst4={(0x0A000000, 8): 0b010, (0x0A000100, 24): 0b100}, dst_default=0)
    assert decide(t, conn("10.0.1.9")).rule == 2
    assert decide(t, conn("10.9.0.1")).rule == 1
    assert decide(t, conn("11.0.0.1")).rule == DEFAULT_RULE
    assert decide(t, conn("::ffff:10.0.1.9")).rule == 2
    t6 = tables(dst6={(0x20010DB8 << 96, 32): 0b100}, dst_default=0)
    assert decide(t6, conn("2001:db8::1")).rule == 2
    assert decide(t6, conn("2001:db9::1")).rule == DEFAULT_RULE


def test_zero_length_prefix_is_a_real_entry() -> None:
    t = tables(dst4={(0, 0): 0b100}, dst_default=0b010)
    assert decide(t, conn("192.0.2.1")).rule == 2
    assert decide(t, conn("2001:db8::1")).rule == 1


def test_port_lpm_per_protocol() -> None:
    ports = {(Proto.TCP, 8000, 11): 0b001, (Proto.TCP, 8000, 16): 0b010, (Proto.UDP, 0, 0): 0b100}
    t = tables(ports=ports, port_default=0)
    assert decide(t, conn(port=8000)).rule == 1
    assert decide(t, conn(port=8001)).rule == 0  # 8000/11 covers 7680..8191
    assert decide(t, conn(port=9000)).rule == DEFAULT_RULE
    assert decide(t, conn(port=9000, proto=Proto.UDP)).rule == 2


def test_identity_lookups() -> None:
    t = tables(
        comm={b"curl": 0b010},
        exe={(1, 2): 0b100},
        gid={7: 0b110},
        comm_default=0b101,
        exe_default=0b011,
    )
    assert decide(t, conn(comm=b"curl", exe=(1, 2), gid=7)).rule == DEFAULT_RULE
    assert decide(t, conn(comm=b"wget", exe=(1, 2), gid=7)).rule == 2
    assert decide(t, conn(comm=b"curl", exe=None)).rule == 1
    assert decide(t, conn(comm=b"wget", exe=(9, 9))).rule == 0


def test_ignored_connections() -> None:
    t = tables()
    d = decide(t, Connection(socket.AF_UNIX, "x", 80, 0))
    assert d.ignored and d.rule == -1 and d.verdict == Verdict.ALLOWED and d.policy_id == 5
    assert not decide(t, conn(port=0)).ignored  # port 0 is a destination


def test_kernel_comm() -> None:
    assert kernel_comm(b"a" * 20) == b"a" * 15
    assert kernel_comm(b"curl\0\0\0") == b"curl"
