from __future__ import annotations

from typing import Any

from bouheki.common.api import ConnectionEvent
from bouheki.service.journal import (
    MSG_BLOCKED,
    MSG_SUPPRESSED,
    Journal,
    RateLimit,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def event(
    unit: str = "nginx.service", verdict: str = "blocked", exe: str = "/usr/bin/curl"
) -> ConnectionEvent:
    return ConnectionEvent(
        verdict=verdict, unit=unit, policy=unit, rule=1, origin="/etc/bouheki/units/x.toml:4",
        daddr="10.0.1.71", dport=80, protocol="tcp", comm="curl", exe=exe,
        exe_dev=(254 << 20) | 1, exe_ino=1234, pid=42, uid=1000, gid=1000, cgroup_id=77,
        hook="connect", timestamp_usec=1_700_000_000_000_000,
    )  # fmt: skip


def test_no_field_is_sent_empty_and_the_executable_is_always_identified() -> None:
    sent: list[dict[str, Any]] = []
    Journal(send=lambda m, **f: sent.append(f)).connection(event(unit="", exe=""))
    (f,) = sent
    assert all(v != "" for v in f.values()), f
    assert "BOUHEKI_EXE" not in f and "BOUHEKI_UNIT" not in f
    assert f["BOUHEKI_EXE_DEV"] == "254:1" and f["BOUHEKI_EXE_INODE"] == "1234"
    assert f["BOUHEKI_SCHEMA"] == "1"


def test_fields_of_a_blocked_event() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    j = Journal(send=lambda m, **f: sent.append((m, f)))
    assert j.connection(event())
    ((msg, f),) = sent
    assert f["MESSAGE_ID"] == MSG_BLOCKED
    assert f["OBJECT_SYSTEMD_UNIT"] == "nginx.service"
    assert f["PRIORITY"] == "4"
    assert f["BOUHEKI_ACTION"] == "BLOCKED"
    assert f["BOUHEKI_DADDR"] == "10.0.1.71" and f["BOUHEKI_DPORT"] == "80"
    assert f["BOUHEKI_RULE"] == "/etc/bouheki/units/x.toml:4"
    assert "nginx.service: Blocked tcp connection of curl" in msg


def test_host_events_have_no_unit_object() -> None:
    sent: list[dict[str, Any]] = []
    Journal(send=lambda m, **f: sent.append(f)).connection(event(unit=""))
    assert "OBJECT_SYSTEMD_UNIT" not in sent[0]


def test_rate_limit_per_unit_and_suppressed_count_is_logged() -> None:
    clock = Clock()
    sent: list[dict[str, Any]] = []
    j = Journal(RateLimit(burst=3, interval=10, clock=clock), send=lambda m, **f: sent.append(f))
    logged = [j.connection(event()) for _ in range(10)]
    assert logged == [True] * 3 + [False] * 7
    assert j.connection(event(unit="other.service"))  # its own budget
    clock.t = 11
    assert j.connection(event())
    suppressed = [f for f in sent if f["MESSAGE_ID"] == MSG_SUPPRESSED]
    assert len(suppressed) == 1
    assert suppressed[0]["BOUHEKI_SUPPRESSED"] == "7"
    assert suppressed[0]["OBJECT_SYSTEMD_UNIT"] == "nginx.service"
    assert j.suppressed_total == 7


def test_a_rate_limit_of_zero_means_no_limit() -> None:
    rate = RateLimit(burst=0, interval=10.0, clock=lambda: 0.0)
    assert all(rate.admit("u.service") == (True, 0) for _ in range(1000))
    assert rate.flush() == {}
