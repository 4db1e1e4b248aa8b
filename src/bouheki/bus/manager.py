"""The org.bouheki.Bouheki1.Manager object: D-Bus in front of the engine, nothing more.

Every method forwards to bouheki.service.api.Engine and converts the answer
(bouheki.bus.wire); every engine exception becomes a D-Bus error reply under
org.bouheki.Bouheki1.Error. What the adapter adds is bus hygiene only: rate
limits on what it broadcasts, and a caller check where the daemon's
privileges would otherwise be lent to an unprivileged caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Iterator, Optional, Sequence

from ..service.api import (
    BadRequest,
    BlockedEvent,
    CheckResult,
    ConfigInvalid,
    Engine,
    EngineError,
    Status,
)
from . import names
from ._dbus import DBusError, Message, MessageBus, MessageFlag, MessageType, ServiceInterface
from ._dbus import Variant as _Variant
from .signatures import dbus_method, dbus_readonly_property, dbus_signal
from .throttle import Coalescer, SlidingWindowLimiter
from .wire import (
    BLOCKED_SUPPRESSED_KEY,
    decode_explain_query,
    encode,
    encode_list,
    format_problems,
)

log = logging.getLogger("bouheki.bus")

DEFAULT_BLOCKED_RATE = 20  # Blocked signals per second
DEFAULT_PROPERTIES_INTERVAL = 1.0  # seconds between two PropertiesChanged signals

# Status fields a reload changes; marked even if the engine forgets to say so.
_RELOAD_FIELDS = ("generation", "loaded_at_usec", "mode_summary")


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn engine exceptions into D-Bus error replies with readable messages.

    Unexpected exceptions are logged with their traceback here and replied to
    without it: a traceback helps the journal's reader, not the bus client.
    """
    try:
        yield
    except DBusError:
        raise
    except ConfigInvalid as exc:
        text = format_problems(exc.problems, f"{exc}; the running policy was kept:")
        raise DBusError(names.ERROR_CONFIG_INVALID, text) from None
    except BadRequest as exc:
        raise DBusError(names.ERROR_BAD_REQUEST, str(exc)) from None
    except EngineError as exc:
        raise DBusError(names.ERROR_FAILED, str(exc) or f"{what} failed") from None
    except Exception as exc:
        log.exception("%s failed", what)
        raise DBusError(
            names.ERROR_FAILED,
            f"{what} failed: internal error ({type(exc).__name__}); the daemon's journal has details",
        ) from None


class Manager(ServiceInterface):
    """The exported interface; also the engine's listener (see api.EngineListener)."""

    def __init__(
        self,
        engine: Engine,
        bus: MessageBus,
        *,
        blocked_rate: int = DEFAULT_BLOCKED_RATE,
        properties_interval: float = DEFAULT_PROPERTIES_INTERVAL,
    ) -> None:
        super().__init__(names.INTERFACE)
        self._engine = engine
        self._bus = bus
        self._limiter = SlidingWindowLimiter(blocked_rate)
        self._suppressed_since_last = 0
        self._suppressed_total = 0
        self._changes = Coalescer(self._emit_properties_changed, properties_interval)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- methods -----------------------------------------------------------

    @dbus_method(names.METHOD_RELOAD, out="a{sv}")
    async def _reload(self) -> dict[str, _Variant]:
        with engine_errors("reload"):
            return encode(await self._engine.reload())

    @dbus_method(names.METHOD_LIST_POLICIES, out="aa{sv}")
    def _list_policies(self) -> list[dict[str, _Variant]]:
        with engine_errors("listing policies"):
            return encode_list(self._engine.list_policies())

    @dbus_method(names.METHOD_GET_STATISTICS, out="a{sv}")
    def _get_statistics(self) -> dict[str, _Variant]:
        with engine_errors("reading statistics"):
            return encode(self._engine.statistics())

    @dbus_method(names.METHOD_EXPLAIN, "a{sv}", out="a{sv}")
    def _explain(self, query: dict[str, _Variant]) -> dict[str, _Variant]:
        with engine_errors("explain"):
            return encode(self._engine.explain(decode_explain_query(query)))

    @dbus_method(names.METHOD_CHECK_CONFIG, "s", out="a{sv}")
    def _check_config_method(self, path: str) -> dict[str, _Variant]:
        # A non-empty path never gets here: message_filter() takes it first.
        return self._check_config(path)

    def _check_config(self, path: str) -> dict[str, _Variant]:
        with engine_errors("checking the configuration"):
            try:
                result = self._engine.check_config(path or None)
            except ConfigInvalid as exc:
                # Invalid is the answer here, not a failure of the call.
                result = CheckResult(ok=False, problems=exc.problems)
            return encode(result)

    # --- properties ----------------------------------------------------------

    def _status(self) -> Status:
        with engine_errors("reading the status"):
            return self._engine.status()

    @dbus_readonly_property(names.STATUS_PROPERTIES["version"], "s")
    def _version(self) -> str:
        return self._status().version

    @dbus_readonly_property(names.STATUS_PROPERTIES["generation"], "t")
    def _generation(self) -> int:
        return self._status().generation

    @dbus_readonly_property(names.STATUS_PROPERTIES["loaded_at_usec"], "t")
    def _loaded_at(self) -> int:
        return self._status().loaded_at_usec

    @dbus_readonly_property(names.STATUS_PROPERTIES["mode_summary"], "s")
    def _mode_summary(self) -> str:
        return self._status().mode_summary

    @dbus_readonly_property(names.STATUS_PROPERTIES["blocked"], "t")
    def _blocked_count(self) -> int:
        return self._status().blocked

    @dbus_readonly_property(names.STATUS_PROPERTIES["would_block"], "t")
    def _would_block_count(self) -> int:
        return self._status().would_block

    @dbus_readonly_property(names.PROPERTY_SUPPRESSED_SIGNALS, "t")
    def _suppressed_signals(self) -> int:
        return self._suppressed_total

    # --- signals ------------------------------------------------------------

    @dbus_signal(names.SIGNAL_RELOADED, out="t")
    def _emit_reloaded(self, generation: int) -> int:
        return generation

    @dbus_signal(names.SIGNAL_BLOCKED, out="a{sv}")
    def _emit_blocked(self, body: dict[str, _Variant]) -> dict[str, _Variant]:
        return body

    # --- api.EngineListener ---------------------------------------------------
    # Called by the engine on the loop thread. A failure to broadcast must not
    # travel back into the engine, so each logs and returns.

    def on_reloaded(self, generation: int) -> None:
        try:
            self._emit_reloaded(generation)
        except Exception:
            log.exception("could not emit %s", names.SIGNAL_RELOADED)
        self._changes.add(_RELOAD_FIELDS)

    def on_blocked(self, event: BlockedEvent) -> None:
        if not self._limiter.allow():
            self._suppressed_since_last += 1
            self._suppressed_total += 1
            self._changes.add([names.SUPPRESSED_SIGNALS_FIELD])
            return
        try:
            body = encode(event)
            body[BLOCKED_SUPPRESSED_KEY] = _Variant("t", self._suppressed_since_last)
            self._emit_blocked(body)
        except Exception:
            log.exception("could not emit %s", names.SIGNAL_BLOCKED)
            return
        self._suppressed_since_last = 0

    def on_properties_changed(self, names_: Sequence[str]) -> None:
        self._changes.add(names_)

    def _emit_properties_changed(self, fields: set[str]) -> None:
        try:
            changed: dict[str, Any] = {}
            status_fields = [f for f in fields if f in names.STATUS_PROPERTIES]
            if status_fields:
                status = self._engine.status()
                for field in status_fields:
                    changed[names.STATUS_PROPERTIES[field]] = getattr(status, field)
            if names.SUPPRESSED_SIGNALS_FIELD in fields:
                changed[names.PROPERTY_SUPPRESSED_SIGNALS] = self._suppressed_total
            if changed:
                self.emit_properties_changed(changed)
        except Exception:
            log.exception("could not emit PropertiesChanged")

    # --- caller checks --------------------------------------------------------

    def message_filter(self, msg: Message) -> Optional[bool]:
        """Take CheckConfig calls with a path before the normal dispatch.

        The daemon runs as root: checking a caller-chosen path would let anyone
        probe files they cannot read, and parse errors may quote their content.
        Such calls therefore need a root caller. Method handlers do not see
        the sender, so this filter (run by the library before dispatch) does.
        """
        if (
            msg.message_type == MessageType.METHOD_CALL
            and msg.path == names.OBJECT_PATH
            and msg.interface == names.INTERFACE
            and msg.member == names.METHOD_CHECK_CONFIG
            and msg.signature == "s"
            and msg.body[0] != ""
        ):
            task = asyncio.ensure_future(self._check_config_as_root(msg))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)
            return True
        return None

    async def _check_config_as_root(self, msg: Message) -> None:
        try:
            uid = await self._caller_uid(msg.sender)
            if uid != 0:
                raise DBusError(
                    names.ERROR_ACCESS_DENIED,
                    "checking a configuration at a given path needs root, since the "
                    "daemon would read it with its privileges; run `bouhekictl "
                    "check-config PATH` (it reads the files with yours), or pass an "
                    "empty path to check the daemon's own configuration",
                )
            reply = Message.new_method_return(msg, "a{sv}", [self._check_config(msg.body[0])])
        except DBusError as exc:
            reply = Message.new_error(msg, exc.type, exc.text)
        except Exception as exc:
            log.exception("CheckConfig failed")
            reply = Message.new_error(msg, names.ERROR_FAILED, f"internal error: {exc}")
        if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            self._bus.send(reply)

    async def _caller_uid(self, sender: str) -> int:
        reply = await self._bus.call(
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

    def close(self) -> None:
        self._changes.cancel()
        for task in list(self._tasks):
            task.cancel()
