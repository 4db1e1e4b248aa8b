"""Who is calling: the caller of the method being run, set by the
dispatcher (bus/dispatch.py) for the call's duration, and the checks the
Manager's methods make on it (root, or polkit's consent)."""

from __future__ import annotations

import contextvars
from typing import Optional

from ..dbuslib import DBusError, Message, MessageBus, MessageType
from . import names, polkit

# The unique bus name of the caller of the method being run, and whether
# its call allows interactive authorization (the message flag).
current_caller: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "bouheki_bus_caller", default=None
)
current_interactive: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bouheki_bus_interactive", default=False
)
ALLOW_INTERACTIVE_AUTHORIZATION = 0x4  # the D-Bus specification's message flag


async def authorize(bus: MessageBus, action: str, why: str) -> None:
    """Return if the current caller may do `action`: root, or polkit says
    so (bus/polkit.py); else raise AccessDenied saying `why`."""
    uid = await caller_uid(bus)
    if uid == 0:
        return
    sender = current_caller.get()
    if sender is None or not await polkit.check(bus, sender, action, current_interactive.get()):
        raise DBusError(names.ERROR_ACCESS_DENIED, f"{why} (polkit action {action})")


async def caller_uid(bus: MessageBus) -> Optional[int]:
    """The uid of the current method's caller, asked of the bus; None if unknown."""
    sender = current_caller.get()
    if sender is None:
        return None
    reply = await bus.call(
        Message(
            destination=names.DBUS_NAME,
            path=names.DBUS_PATH,
            interface=names.DBUS_INTERFACE,
            member="GetConnectionUnixUser",
            signature="s",
            body=[sender],
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply is not None and reply.body else "no reply"
        raise DBusError(names.ERROR_FAILED, f"cannot identify the caller: {detail}")
    return int(reply.body[0])
