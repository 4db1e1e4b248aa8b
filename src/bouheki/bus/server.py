"""serve(): what the daemon calls to put the engine on the bus."""

from __future__ import annotations

import logging
from typing import Optional

from ..common.api import Engine, Unsubscribe
from ..dbuslib import (
    LIBRARY,
    DBusError,
    Message,
    MessageBus,
    MessageType,
    NameFlag,
    RequestNameReply,
)
from . import names
from .dispatch import Dispatcher
from .manager import DEFAULT_BLOCKED_RATE, DEFAULT_PROPERTIES_INTERVAL, Manager

log = logging.getLogger("bouheki.bus")


class BusNameUnavailable(RuntimeError):
    """The bus name could not be owned: another instance runs, or the bus policy forbids it."""


class BusService:
    """The exported Manager and the owned name; close() undoes both."""

    def __init__(
        self, bus: MessageBus, manager: Manager, dispatcher: Dispatcher, unsubscribe: Unsubscribe
    ) -> None:
        self.bus = bus
        self.manager = manager
        self.dispatcher = dispatcher
        self._unsubscribe: Optional[Unsubscribe] = unsubscribe

    async def close(self, release_name: bool = True) -> None:
        """Stop serving. Idempotent; the bus connection itself stays the caller's."""
        if self._unsubscribe is None:
            return
        self._unsubscribe()
        self._unsubscribe = None
        self.manager.close()
        self.dispatcher.close()
        self.bus.remove_message_handler(self.dispatcher)
        self.bus.unexport(names.OBJECT_PATH, self.manager)
        if release_name and self.bus.connected:
            try:
                await self.bus.release_name(names.BUS_NAME)
            except DBusError as exc:  # the name may already be gone with the peer
                log.debug("releasing %s: %s", names.BUS_NAME, exc)


async def serve(
    engine: Engine,
    bus: MessageBus,
    *,
    blocked_rate: int = DEFAULT_BLOCKED_RATE,
    properties_interval: float = DEFAULT_PROPERTIES_INTERVAL,
) -> BusService:
    """Export the Manager object for `engine` on the connected `bus` and own the bus name.

    The object is exported and subscribed before the name is requested, so a
    client that sees the name appear can call at once. Raises
    BusNameUnavailable (with everything exported undone) if the name is taken
    or the bus policy refuses it. Run on the loop that the engine calls its
    listeners on.
    """
    manager = Manager(
        engine, bus, blocked_rate=blocked_rate, properties_interval=properties_interval
    )
    dispatcher = Dispatcher(manager, bus)
    bus.export(names.OBJECT_PATH, manager)
    bus.add_message_handler(dispatcher)
    service = BusService(bus, manager, dispatcher, engine.subscribe(manager))
    try:
        # DO_NOT_QUEUE: a second daemon must fail loudly, not wait in line.
        reply = await bus.request_name(names.BUS_NAME, NameFlag.DO_NOT_QUEUE)
    except DBusError as exc:
        await service.close(release_name=False)
        raise BusNameUnavailable(
            f"cannot own {names.BUS_NAME}: {exc.text} (is {names.BUS_NAME}.conf installed "
            "in /usr/share/dbus-1/system.d/, and is bouheki running as root?)"
        ) from exc
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        owner = await _describe_owner(bus)
        await service.close(release_name=False)
        raise BusNameUnavailable(
            f"{names.BUS_NAME} is already owned by {owner}: is another bouheki running?"
        )
    log.info("serving %s at %s (%s)", names.BUS_NAME, names.OBJECT_PATH, LIBRARY)
    return service


async def _describe_owner(bus: MessageBus) -> str:
    """The current owner as `:1.42 (pid 1234)`, for the error message; best effort."""
    owner = await _bus_call(bus, "GetNameOwner", names.BUS_NAME)
    if owner is None:
        return "another connection"
    pid = await _bus_call(bus, "GetConnectionUnixProcessID", owner)
    return f"{owner} (pid {pid})" if pid is not None else str(owner)


async def _bus_call(bus: MessageBus, member: str, arg: str) -> Optional[object]:
    reply = await bus.call(
        Message(
            destination=names.DBUS_NAME,
            path=names.DBUS_PATH,
            interface=names.DBUS_INTERFACE,
            member=member,
            signature="s",
            body=[arg],
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        return None
    return reply.body[0]
