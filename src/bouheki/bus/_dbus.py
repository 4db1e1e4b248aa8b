"""The D-Bus library, behind one import so dbus-fast can stand in for dbus-next.

The distribution package python3-dbus-next is the supported dependency;
dbus-fast is its maintained fork with the same API, used when dbus-next is
absent (e.g. a pip install on a newer distribution).
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
