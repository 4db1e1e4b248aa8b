"""Answering calls to the Manager object, in place of the library's dispatcher.

Why not let dbus-next dispatch:
- dbus-next 0.2.3 logs an ERROR with a traceback for every error reply raised
  from a method or property handler (its SendReply context manager does not
  report the exception as handled; dbus-fast fixed it in PR #127). Any
  unprivileged caller could then flood the daemon's journal with tracebacks
  just by sending bad requests.
- A method handler cannot see who called it; CheckConfig with a path needs to.
- Its default Properties handler raises its errors inside SendReply (the same
  bug: any caller's Properties.Get with a wrong signature, or on another path,
  logged a traceback). Its Peer.GetMachineId handler cannot pass on the bus's
  error (the system bus refuses the question, so the caller waited for a reply
  that never came) and fails on its second call (its cached answer is not a list).

So serve() installs a Dispatcher with add_message_handler(), which the library
runs before its own dispatch. It answers our methods (found through the
MethodSpecs that bouheki.bus.signatures attaches) and every Properties and Peer
call; everything else (Introspect, unknown members) stays the library's.
serve() is the only exporter on the daemon's connection, so a Properties call
on any other path is for an object that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Optional, Union

from ..dbuslib import DBusError, Message, MessageBus, MessageFlag, MessageType, SignatureTree
from . import names
from .caller import ALLOW_INTERACTIVE_AUTHORIZATION, current_caller, current_interactive
from .signatures import MethodSpec, method_specs

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger("bouheki.bus")

ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
ERROR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
ERROR_UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
ERROR_UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
ERROR_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"
ERROR_DBUS_FAILED = "org.freedesktop.DBus.Error.Failed"
PEER_INTERFACE = "org.freedesktop.DBus.Peer"

# The longest error text sent. Texts may quote what the caller sent (repr()
# turns one byte into up to four characters), and a message over the bus's
# limit (32 MiB on the system bus) makes dbus-daemon drop the *sender*: one
# unprivileged 9 MB Properties.Get or Explain used to take the daemon off the
# bus. 64 Ki characters (at most 256 KiB) still fit hundreds of problem lines.
MAX_ERROR_TEXT = 64 * 1024
# How much of a caller-chosen name an error message quotes.
QUOTE_LIMIT = 100

# dbus-next memoises the parse of every signature it unmarshals (message
# bodies and variants) in a dict that never shrinks. Signatures are chosen by
# the caller, so any peer could grow the daemon without bound by sending
# distinct ones (a long one costs ~40 KB). Emptying a memo is harmless; real
# traffic uses a few dozen signatures and never reaches the bound (~10 MB).
SIGNATURE_CACHE_LIMIT = 256

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


class Dispatcher:
    """The message handler that answers calls to `manager` on `bus`."""

    def __init__(self, manager: Manager, bus: MessageBus) -> None:
        self._manager = manager
        self._bus = bus
        self._specs = method_specs(type(manager))
        self._tasks: set[asyncio.Task[None]] = set()
        self._machine_id: Optional[str] = None

    def __call__(self, msg: Message) -> Union[Message, bool, None]:
        """None: not ours, the library handles it; True: handled; a Message: send it."""
        _bound_signature_cache()
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if not msg.interface:
            # The interface is optional in a call, and the libraries differ:
            # dbus-next refuses such a call, dbus-fast runs the first method of
            # that name, past this dispatcher (and so without the caller's
            # identity). Refused here, whichever library runs.
            return self._finish(msg, _error_reply(msg, _unknown_method(msg)))
        # Both for every path, not only ours: see the module's docstring.
        if msg.interface == names.PROPERTIES_INTERFACE:
            return self._finish(msg, self._properties(msg))
        if msg.interface == PEER_INTERFACE:
            return self._finish(msg, self._peer(msg))
        if msg.path != names.OBJECT_PATH or msg.interface != names.INTERFACE:
            return None
        spec = self._specs.get(msg.member)
        if spec is None or msg.signature != spec.in_signature:
            return None
        token = current_caller.set(msg.sender)
        interactive = current_interactive.set(bool(msg.flags & ALLOW_INTERACTIVE_AUTHORIZATION))
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
            current_caller.reset(token)
            current_interactive.reset(interactive)
        return self._finish(msg, reply)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def settled(self) -> None:
        """Until the async methods already called have finished: a call that
        wants no reply (NO_REPLY_EXPECTED) gives no other sign of it."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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

    def _properties(self, msg: Message) -> Message:
        """Any call to org.freedesktop.DBus.Properties, on any path."""
        signatures = {"Get": "ss", "GetAll": "s", "Set": "ssv"}
        try:
            if signatures.get(msg.member) != msg.signature:
                raise _unknown_method(msg)
            if msg.path != names.OBJECT_PATH:
                raise DBusError(ERROR_UNKNOWN_OBJECT, f"no object at {_quote(msg.path)}")
            interface = msg.body[0]
            if interface != names.INTERFACE:
                raise DBusError(ERROR_UNKNOWN_INTERFACE, f"no interface {_quote(interface)} here")
            if msg.member == "Set":
                # Every property is read-only; an unknown name is still unknown.
                if msg.body[1] not in self._manager.property_names():
                    raise DBusError(ERROR_UNKNOWN_PROPERTY, f"no property {_quote(msg.body[1])}")
                raise DBusError(ERROR_READ_ONLY, f"{msg.body[1]} is read-only")
            values = self._manager.property_values()
            if msg.member == "GetAll":
                return Message.new_method_return(msg, "a{sv}", [values])
            if msg.body[1] not in values:
                raise DBusError(ERROR_UNKNOWN_PROPERTY, f"no property {_quote(msg.body[1])}")
            return Message.new_method_return(msg, "v", [values[msg.body[1]]])
        except Exception as exc:
            return _error_reply(msg, exc)

    def _peer(self, msg: Message) -> Message:
        """Ping and GetMachineId of org.freedesktop.DBus.Peer, on any path."""
        if msg.member == "Ping" and msg.signature == "":
            return Message.new_method_return(msg)
        if msg.member == "GetMachineId" and msg.signature == "":
            if self._machine_id is None:
                # Read here rather than asked of the bus: the system bus policy
                # does not let the daemon ask it.
                self._machine_id = _read_machine_id()
            if self._machine_id is None:
                return Message.new_error(msg, ERROR_DBUS_FAILED, "cannot read the machine ID")
            return Message.new_method_return(msg, "s", [self._machine_id])
        return _error_reply(msg, _unknown_method(msg))


def _method_return(msg: Message, spec: MethodSpec, result: Any) -> Message:
    body = [result] if spec.out_signature else []
    return Message.new_method_return(msg, spec.out_signature, body)


def _error_reply(msg: Message, exc: Exception) -> Message:
    if isinstance(exc, DBusError):
        return Message.new_error(msg, exc.type, _bounded(exc.text))
    # The manager converts the engine's exceptions (engine_errors), so this is
    # a bug of the adapter itself: the details go to the log, not to the caller.
    log.error("%s.%s failed", msg.interface, msg.member, exc_info=exc)
    return Message.new_error(msg, names.ERROR_FAILED, f"{msg.member} failed: internal error")


def _unknown_method(msg: Message) -> DBusError:
    where = f"in {_quote(msg.interface)}" if msg.interface else "(the call names no interface)"
    return DBusError(
        ERROR_UNKNOWN_METHOD,
        f"no method {_quote(msg.member)} with signature {_quote(msg.signature)} {where}",
    )


def _quote(value: str) -> str:
    """A caller-chosen name for an error message: quoted, and cut when long."""
    if len(value) > QUOTE_LIMIT:
        return f"{value[:QUOTE_LIMIT]!r}... ({len(value)} characters)"
    return repr(value)


def _bounded(text: str) -> str:
    """`text` cut to MAX_ERROR_TEXT characters (see there)."""
    if len(text) <= MAX_ERROR_TEXT:
        return text
    return f"{text[:MAX_ERROR_TEXT]}... ({len(text) - MAX_ERROR_TEXT} more characters cut)"


def _bound_signature_cache() -> None:
    """Empty dbus-next's signature memo when it has grown past its bound (see there)."""
    cache = getattr(SignatureTree, "_cache", None)  # dbus-fast's differs: left alone
    if isinstance(cache, dict) and len(cache) > SIGNATURE_CACHE_LIMIT:
        cache.clear()


def _read_machine_id() -> Optional[str]:
    for path in MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii") as f:
                machine_id = f.read().strip()
        except (OSError, ValueError):
            continue
        if len(machine_id) == 32 and all(c in "0123456789abcdef" for c in machine_id):
            return machine_id
    return None
