"""Asking polkit (bus/polkit.py): one question per caller and action at a
time, and a refusal remembered for a few seconds, so a flood of Reload calls
costs polkitd one question."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bouheki.bus import polkit
from bouheki.dbuslib import MessageType


class FakeReply:
    def __init__(self, allowed: bool) -> None:
        self.message_type = MessageType.METHOD_RETURN
        self.body = [[allowed, False, {}]]


class FakeBus:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.calls: list[Any] = []

    async def call(self, msg: Any) -> FakeReply:
        self.calls.append(msg)
        await asyncio.sleep(0.05)  # polkitd thinking
        return FakeReply(self.allowed)


@pytest.fixture(autouse=True)
def forget() -> None:
    polkit._denied.clear()
    polkit._asking.clear()


def test_a_burst_from_one_caller_asks_once_and_a_refusal_is_remembered() -> None:
    bus = FakeBus(allowed=False)

    async def burst() -> list[bool]:
        return list(await asyncio.gather(*(
            polkit.check(bus, ":1.42", "org.bouheki.Bouheki1.manage", False) for _ in range(50)
        )))  # fmt: skip

    assert asyncio.run(burst()) == [False] * 50
    assert len(bus.calls) == 1
    assert asyncio.run(burst()) == [False] * 50  # within DENIAL_TTL_S
    assert len(bus.calls) == 1
    # Another caller is asked about on its own.
    assert not asyncio.run(polkit.check(bus, ":1.43", "org.bouheki.Bouheki1.manage", False))
    assert len(bus.calls) == 2
    (subject, action, _details, flags, _cancel) = bus.calls[0].body
    assert subject[0] == "system-bus-name" and subject[1]["name"].value == ":1.42"
    assert (action, flags) == ("org.bouheki.Bouheki1.manage", 0)


def test_a_grant_is_not_remembered_by_us() -> None:
    bus = FakeBus(allowed=True)
    for _ in range(3):
        assert asyncio.run(polkit.check(bus, ":1.7", "org.bouheki.Bouheki1.manage", True))
    assert len(bus.calls) == 3  # polkit keeps grants itself (auth_admin_keep)
    assert bus.calls[0].body[3] == polkit.ALLOW_USER_INTERACTION
