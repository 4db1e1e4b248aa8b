"""Which bus to use, and connecting to it (shared by the daemon and bouhekictl).

Precedence: an explicit address, then an explicit bus type, then
$BOUHEKI_BUS_ADDRESS, then the system bus. The environment variable exists so
tests (and a lab) can point both the daemon and bouhekictl at a private
dbus-daemon without touching the real system bus.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from ..dbuslib import BusType, MessageBus
from . import names

BUS_CHOICES = ("system", "session")


@dataclass(frozen=True)
class BusTarget:
    address: Optional[str]  # None: the standard address of bus_type
    bus_type: BusType
    description: str  # for messages: "the system bus", "the bus at unix:path=..."


def resolve_bus(
    bus: Optional[str] = None,
    address: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> BusTarget:
    env = os.environ if environ is None else environ
    if address:
        return BusTarget(address, BusType.SYSTEM, f"the bus at {address}")
    if bus is None and env.get(names.ENV_BUS_ADDRESS):
        env_address = env[names.ENV_BUS_ADDRESS]
        return BusTarget(
            env_address, BusType.SYSTEM, f"the bus at {env_address} (${names.ENV_BUS_ADDRESS})"
        )
    if bus in (None, "system"):
        return BusTarget(None, BusType.SYSTEM, "the system bus")
    if bus == "session":
        return BusTarget(None, BusType.SESSION, "the session bus")
    raise ValueError(f"unknown bus {bus!r}: expected one of {', '.join(BUS_CHOICES)}")


async def connect(target: BusTarget) -> MessageBus:
    """A connected MessageBus; raises OSError (or the library's errors) if unreachable."""
    if target.address:
        bus = MessageBus(bus_address=target.address)
    else:
        bus = MessageBus(bus_type=target.bus_type)
    return await bus.connect()
