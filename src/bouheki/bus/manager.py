"""The org.bouheki.Bouheki1.Manager object: D-Bus in front of the engine, nothing more.

Every method forwards to bouheki.common.api.Engine and converts the answer
(bouheki.bus.wire); every engine exception becomes a D-Bus error reply under
org.bouheki.Bouheki1.Error. What the adapter adds is bus hygiene only: rate
limits on what it broadcasts, and a caller check where the daemon's
privileges would otherwise be lent to an unprivileged caller.

The library's decorators describe the members (introspection, signal
emission); calls are answered by bouheki.bus.dispatch, which says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from ..common.api import (
    STATUS_FIELDS,
    BadRequest,
    CheckResult,
    ConfigInvalid,
    ConnectionEvent,
    Engine,
    EngineError,
    Status,
)
from ..dbuslib import DBusError, MessageBus, ServiceInterface, Variant
from . import names
from .caller import authorize, caller_uid
from .signatures import dbus_method, dbus_readonly_property, dbus_signal
from .throttle import Coalescer, SlidingWindowLimiter
from .wire import (
    BLOCKED_SUPPRESSED_KEY,
    SPECS,
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

_STATUS_TYPES = SPECS[Status]  # the D-Bus type of each Status field
_PROPERTY_NAMES = frozenset([*names.STATUS_PROPERTIES.values(), names.PROPERTY_SUPPRESSED_SIGNALS])


def _status_property(field: str) -> Any:
    """The read-only D-Bus property for a Status field (name and type from one place)."""
    return dbus_readonly_property(names.STATUS_PROPERTIES[field], _STATUS_TYPES[field])


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
            f"{what} failed: internal error ({type(exc).__name__}); "
            "the daemon's journal has details",
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

    # --- methods -----------------------------------------------------------

    @dbus_method(names.METHOD_RELOAD, out="a{sv}")
    async def _reload(self) -> dict[str, Variant]:
        await authorize(self._bus, names.ACTION_MANAGE, "reloading needs root or polkit's consent")
        with engine_errors("reload"):
            return encode(await self._engine.reload())

    @dbus_method(names.METHOD_LIST_POLICIES, out="aa{sv}")
    def _list_policies(self) -> list[dict[str, Variant]]:
        with engine_errors("listing policies"):
            return encode_list(self._engine.list_policies())

    @dbus_method(names.METHOD_GET_STATISTICS, out="a{sv}")
    def _get_statistics(self) -> dict[str, Variant]:
        with engine_errors("reading statistics"):
            return encode(self._engine.statistics())

    @dbus_method(names.METHOD_EXPLAIN, "a{sv}", out="a{sv}")
    def _explain(self, query: dict[str, Variant]) -> dict[str, Variant]:
        with engine_errors("explain"):
            return encode(self._engine.explain(decode_explain_query(query)))

    @dbus_method(names.METHOD_CHECK_CONFIG, "s", out="a{sv}")
    async def _check_config(self, path: str) -> dict[str, Variant]:
        if path:
            # The daemon runs as root: checking a caller-chosen path would let
            # anyone probe files they cannot read, and parse errors may quote
            # their content. So a path needs a root caller.
            await self._require_root(
                "checking a configuration at a given path needs root, since the daemon "
                "would read it with its privileges; run `bouhekictl check-config PATH` "
                "(it reads the files with yours), or pass an empty path to check the "
                "daemon's own configuration"
            )
        with engine_errors("checking the configuration"):
            try:
                result = await self._engine.check_config(path or None)
            except ConfigInvalid as exc:
                # Invalid is the answer here, not a failure of the call.
                result = CheckResult(ok=False, problems=exc.problems)
            return encode(result)

    @dbus_method(names.METHOD_LEARNED, "s", out="a{sv}")
    async def _learned(self, unit: str) -> dict[str, Variant]:
        await authorize(
            self._bus,
            names.ACTION_MANAGE,
            "reading what a unit connects to needs root or polkit's consent",
        )
        with engine_errors("reading what was learned"):
            learned = await self._engine.learned(unit)
            # Up to MAX_LEARN records as a{sv}: seconds under emulation, off the loop.
            return await asyncio.to_thread(encode, learned)

    @dbus_method(names.METHOD_FORGET_LEARNED, "s", out="u")
    async def _forget_learned(self, unit: str) -> int:
        await authorize(
            self._bus,
            names.ACTION_MANAGE,
            "forgetting what was learned needs root or polkit's consent",
        )
        with engine_errors("forgetting what was learned"):
            return await self._engine.forget_learned(unit)

    # --- properties ----------------------------------------------------------

    def _status(self) -> Status:
        with engine_errors("reading the status"):
            return self._engine.status()

    @_status_property("version")
    def _version(self) -> str:
        return self._status().version

    @_status_property("generation")
    def _generation(self) -> int:
        return self._status().generation

    @_status_property("loaded_at_usec")
    def _loaded_at(self) -> int:
        return self._status().loaded_at_usec

    @_status_property("mode_summary")
    def _mode_summary(self) -> str:
        return self._status().mode_summary

    @_status_property("blocked")
    def _blocked_count(self) -> int:
        return self._status().blocked

    @_status_property("would_block")
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
    def _emit_blocked(self, body: dict[str, Variant]) -> dict[str, Variant]:
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

    def on_blocked(self, event: ConnectionEvent) -> None:
        if not self._bus.connected:
            return  # nobody to tell; logging each event would flood the journal
        if not self._limiter.allow():
            self._suppressed_since_last += 1
            self._suppressed_total += 1
            self._changes.add([names.SUPPRESSED_SIGNALS_FIELD])
            return
        try:
            body = encode(event)
            body[BLOCKED_SUPPRESSED_KEY] = Variant("t", self._suppressed_since_last)
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

    # --- for the dispatcher -----------------------------------------------------

    def property_values(self) -> dict[str, Variant]:
        """Every property with its value, for Properties.Get and GetAll."""
        status = self._status()
        values = {
            names.STATUS_PROPERTIES[field]: Variant(_STATUS_TYPES[field], getattr(status, field))
            for field in STATUS_FIELDS
        }
        values[names.PROPERTY_SUPPRESSED_SIGNALS] = Variant("t", self._suppressed_total)
        return values

    def property_names(self) -> frozenset[str]:
        """Every property's name (all are read-only), without asking the engine."""
        return _PROPERTY_NAMES

    async def _require_root(self, why: str) -> None:
        if await caller_uid(self._bus) != 0:
            raise DBusError(names.ERROR_ACCESS_DENIED, why)

    def close(self) -> None:
        self._changes.cancel()
