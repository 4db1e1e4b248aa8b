"""Answering calls to the Manager object, in place of the library's dispatcher.

Why not let dbus-next dispatch:
- dbus-next 0.2.3 logs an ERROR with a traceback for every error reply raised
  from a method or property handler (its SendReply context manager does not
  report the exception as handled; dbus-fast fixed it in PR #127). Any
  unprivileged caller could then flood the daemon's journal with tracebacks
  just by sending bad requests.
- A method handler cannot see who called it; CheckConfig with a path needs to.

So serve() installs a Dispatcher with add_message_handler(), which the library
runs before its own dispatch. It answers our methods (found through the
MethodSpecs that bouheki.bus.signatures attaches) and Properties calls for our
path; everything else (Introspect, Peer, unknown members) stays the library's.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Any, Optional, Union

from . import names
from ._dbus import DBusError, Message, MessageBus, MessageFlag, MessageType
from .signatures import MethodSpec, method_specs

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger("bouheki.bus")

ERROR_UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
ERROR_UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
ERROR_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"

# The unique bus name of the caller of the method being run.
_caller: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "bouheki_bus_caller", default=None
)


async def caller_uid(bus: MessageBus) -> Optional[int]:
    """The uid of the current method's caller, asked of the bus; None if unknown."""
    sender = _caller.get()
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


class Dispatcher:
    """The message handler that answers calls to `manager` on `bus`."""

    def __init__(self, manager: Manager, bus: MessageBus) -> None:
        self._manager = manager
        self._bus = bus
        self._specs = method_specs(type(manager))
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, msg: Message) -> Union[Message, bool, None]:
        """None: not ours, the library handles it; True: handled; a Message: send it."""
        if msg.message_type != MessageType.METHOD_CALL or msg.path != names.OBJECT_PATH:
            return None
        if msg.interface == names.PROPERTIES_INTERFACE:
            return self._finish(msg, self._properties(msg))
        if msg.interface != names.INTERFACE:
            return None
        spec = self._specs.get(msg.member)
        if spec is None or msg.signature != spec.in_signature:
            return None
        token = _caller.set(msg.sender)
        try:
            if spec.is_async:
                # The task copies the current context, caller included.
                task = asyncio.ensure_future(self._run_async(msg, spec))
                self._tasks.add(task)  # keep a reference until it is done
                task.add_done_callback(self._tasks.discard)
                return True
            try:
                reply = _method_return(msg, spec, spec.fn(self._manager, *msg.body))
            except Exception as exc:
                reply = _error_reply(msg, exc)
        finally:
            _caller.reset(token)
        return self._finish(msg, reply)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    @staticmethod
    def _finish(msg: Message, reply: Optional[Message]) -> Union[Message, bool, None]:
        if reply is None:
            return None
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return reply

    async def _run_async(self, msg: Message, spec: MethodSpec) -> None:
        try:
            reply = _method_return(msg, spec, await spec.fn(self._manager, *msg.body))
        except Exception as exc:
            reply = _error_reply(msg, exc)
        if not msg.flags & MessageFlag.NO_REPLY_EXPECTED and self._bus.connected:
            self._bus.send(reply)

    def _properties(self, msg: Message) -> Optional[Message]:
        """Get, GetAll and Set of org.freedesktop.DBus.Properties; None if another member."""
        signatures = {"Get": "ss", "GetAll": "s", "Set": "ssv"}
        if signatures.get(msg.member) != msg.signature:
            return None
        interface = msg.body[0]
        try:
            if interface != names.INTERFACE:
                raise DBusError(ERROR_UNKNOWN_INTERFACE, f"no interface {interface!r} here")
            if msg.member == "Set":
                raise DBusError(ERROR_READ_ONLY, f"{msg.body[1]} is read-only")
            values = self._manager.property_values()
            if msg.member == "GetAll":
                return Message.new_method_return(msg, "a{sv}", [values])
            if msg.body[1] not in values:
                raise DBusError(ERROR_UNKNOWN_PROPERTY, f"no property {msg.body[1]!r}")
            return Message.new_method_return(msg, "v", [values[msg.body[1]]])
        except Exception as exc:
            return _error_reply(msg, exc)


def _method_return(msg: Message, spec: MethodSpec, result: Any) -> Message:
    body = [result] if spec.out_signature else []
    return Message.new_method_return(msg, spec.out_signature, body)


def _error_reply(msg: Message, exc: Exception) -> Message:
    if isinstance(exc, DBusError):
        return Message.new_error(msg, exc.type, exc.text)
    # The manager converts the engine's exceptions (engine_errors), so this is
    # a bug of the adapter itself: the details go to the log, not to the caller.
    log.error("%s.%s failed", msg.interface, msg.member, exc_info=exc)
    return Message.new_error(msg, names.ERROR_FAILED, f"{msg.member} failed: internal error")
