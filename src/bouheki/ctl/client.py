"""bouhekictl's side of the bus: calls to org.bouheki.Bouheki1, errors turned into CtlError.

Low-level method calls rather than proxy objects: a proxy first introspects
the daemon (one more round trip) and would tie bouhekictl to the library's
proxy generation; the names and signatures here come from bouheki.bus.names.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from ..bus import names
from ..bus.connection import BusTarget, connect
from ..bus.wire import unwrap
from ..dbuslib import DBusError, Message, MessageBus, MessageType
from .errors import (
    EXIT_CONFIG_INVALID,
    EXIT_DENIED,
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    CtlError,
)


async def open_bus(target: BusTarget) -> MessageBus:
    try:
        return await connect(target)
    except Exception as exc:
        # OSError (no socket, refused), or the library's InvalidAddressError,
        # AuthError, DBusError: all mean "cannot talk to bouheki over this bus".
        detail = exc.text if isinstance(exc, DBusError) else (str(exc) or type(exc).__name__)
        raise CtlError(
            f"cannot connect to {target.description}: {detail}", EXIT_NOT_RUNNING
        ) from None


def error_from_dbus(name: str, text: str, member: str, target: BusTarget) -> CtlError:
    """The CtlError (message and exit code) for a D-Bus error reply."""
    if name in names.DBUS_ERRORS_NOT_RUNNING:
        return CtlError(
            f"bouheki is not running (nothing owns {names.BUS_NAME} on {target.description})",
            EXIT_NOT_RUNNING,
            name,
        )
    if name == names.DBUS_ERROR_ACCESS_DENIED:
        return CtlError(
            f"permission denied: the bus policy does not let you call {member}"
            " (mutating calls need root)",
            EXIT_DENIED,
            name,
        )
    if name == names.ERROR_ACCESS_DENIED:
        return CtlError(f"permission denied: {text}", EXIT_DENIED, name)
    if name == names.ERROR_CONFIG_INVALID:
        # The first line is a summary, then one `file:line: message` per problem.
        return CtlError(text, EXIT_CONFIG_INVALID, name, text.splitlines()[1:])
    if name == names.ERROR_BAD_REQUEST:
        return CtlError(f"bad request: {text}", EXIT_USAGE, name)
    if name == names.DBUS_ERROR_NO_REPLY:
        return CtlError(f"bouheki did not reply to {member}: {text}", EXIT_FAILURE, name)
    return CtlError(f"{member} failed: {text}", EXIT_FAILURE, name)


class Client:
    def __init__(self, bus: MessageBus, target: BusTarget, timeout: float) -> None:
        self.bus = bus
        self.target = target
        self.timeout = timeout

    async def call(
        self,
        member: str,
        signature: str = "",
        body: Optional[list[Any]] = None,
        *,
        interface: str = names.INTERFACE,
        destination: str = names.BUS_NAME,
        path: str = names.OBJECT_PATH,
    ) -> list[Any]:
        """The reply body, unwrapped to plain Python values."""
        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        try:
            reply = await asyncio.wait_for(self.bus.call(message), self.timeout)
        except asyncio.TimeoutError:
            raise CtlError(
                f"no reply to {member} within {self.timeout:g} s (see --timeout)", EXIT_FAILURE
            ) from None
        if reply is None:
            raise CtlError(f"{member}: no reply", EXIT_FAILURE)
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            raise error_from_dbus(reply.error_name or "", str(text), member, self.target)
        return [unwrap(value) for value in reply.body]

    async def properties(self) -> dict[str, Any]:
        (values,) = await self.call(
            "GetAll", "s", [names.INTERFACE], interface=names.PROPERTIES_INTERFACE
        )
        return dict(values)

    async def bus_call(
        self, member: str, signature: str = "", body: Optional[list[Any]] = None
    ) -> list[Any]:
        """A call to the bus daemon itself (org.freedesktop.DBus); the reply body."""
        return await self.call(
            member,
            signature,
            body,
            interface=names.DBUS_INTERFACE,
            destination=names.DBUS_NAME,
            path=names.DBUS_PATH,
        )

    async def owner(self) -> Optional[str]:
        """The unique name that owns BUS_NAME, or None when bouheki is not running."""
        try:
            return str((await self.bus_call("GetNameOwner", "s", [names.BUS_NAME]))[0])
        except CtlError as exc:
            if exc.exit_code == EXIT_NOT_RUNNING:
                return None
            raise
