"""The D-Bus library, behind one import so dbus-fast can stand in for dbus-next.

The distribution package python3-dbus-next is the supported dependency;
dbus-fast is its maintained fork with the same API, used when dbus-next is
absent (e.g. a pip install on a newer distribution). Every module that talks
D-Bus (bus/, ctl/, units/) imports it from here, so they all use the same one.

A dbus-fast that writes a wrong length for a non-ASCII string is refused:
the bus daemon drops a peer that sends such a message, so any reply, error or
signal carrying one (a process name, a path, a unit name chosen by someone
else) would cut bouheki off the bus. Bookworm's python3-dbus-fast 1.84.2 is
one (its compiled Marshaller counts characters, not bytes).
"""

from __future__ import annotations

try:
    from dbus_next import (
        BusType,
        DBusError,
        Message,
        MessageFlag,
        MessageType,
        NameFlag,
        PropertyAccess,
        ReleaseNameReply,
        RequestNameReply,
        Variant,
        introspection,
    )
    from dbus_next.aio import MessageBus
    from dbus_next.service import ServiceInterface, dbus_property, method, signal
    from dbus_next.signature import SignatureTree

    LIBRARY = "dbus-next"
except ImportError:  # pragma: no cover - exercised only where dbus-fast is installed
    from dbus_fast import (  # type: ignore[no-redef]
        BusType,
        DBusError,
        Message,
        MessageFlag,
        MessageType,
        NameFlag,
        PropertyAccess,
        ReleaseNameReply,
        RequestNameReply,
        Variant,
        introspection,
    )
    from dbus_fast.aio import MessageBus  # type: ignore[no-redef]
    from dbus_fast.service import (  # type: ignore[no-redef]
        ServiceInterface,
        dbus_property,
        method,
        signal,
    )
    from dbus_fast.signature import SignatureTree  # type: ignore[no-redef]

    LIBRARY = "dbus-fast"


def _marshals_utf8_lengths() -> bool:
    """A string's length on the wire is its UTF-8 byte count (the D-Bus
    specification, "Marshaling (Wire Format)": STRING)."""
    msg = Message(path="/", interface="a.b", member="M", signature="s", body=["\u0101"])
    # dbus-fast's takes negotiate_unix_fd; dbus-next's nothing.
    wire = msg._marshall(False) if LIBRARY == "dbus-fast" else msg._marshall()
    # The body is the last 7 bytes: a UINT32 length, the two bytes, a NUL.
    order = "little" if wire[:1] == b"l" else "big"
    return int.from_bytes(wire[-7:-3], order) == 2


if LIBRARY == "dbus-fast" and not _marshals_utf8_lengths():  # pragma: no cover - bookworm's
    from importlib.metadata import version

    raise ImportError(
        f"dbus-fast {version('dbus-fast')} writes the length of a non-ASCII string in "
        "characters instead of bytes, and the bus drops a peer that sends such a message: "
        "install python3-dbus-next (or a dbus-fast that marshals them right)"
    )

__all__ = [
    "LIBRARY",
    "BusType",
    "DBusError",
    "Message",
    "MessageBus",
    "MessageFlag",
    "MessageType",
    "NameFlag",
    "PropertyAccess",
    "ReleaseNameReply",
    "RequestNameReply",
    "ServiceInterface",
    "SignatureTree",
    "Variant",
    "dbus_property",
    "introspection",
    "method",
    "signal",
]
