"""Every D-Bus name bouheki uses, in one place (the daemon, bouhekictl and the tests import them).

The files under dbus/ (bus policy, interface XML) repeat these strings because
dbus-daemon and introspection tools read them; tests/unit/test_bus_files.py
checks that they agree with this module.
"""

from __future__ import annotations

BUS_NAME = "org.bouheki.Bouheki1"
OBJECT_PATH = "/org/bouheki/Bouheki1"
INTERFACE = "org.bouheki.Bouheki1.Manager"

# Errors live under the bus name's own namespace, as D-Bus convention asks.
ERROR_PREFIX = f"{BUS_NAME}.Error"
ERROR_CONFIG_INVALID = f"{ERROR_PREFIX}.ConfigInvalid"  # message: one `file:line: msg` per line
ERROR_BAD_REQUEST = f"{ERROR_PREFIX}.BadRequest"  # malformed arguments
ERROR_ACCESS_DENIED = f"{ERROR_PREFIX}.AccessDenied"  # refused by the adapter (not the bus)
ERROR_FAILED = f"{ERROR_PREFIX}.Failed"  # anything else; the daemon logs the details

# Errors of the bus itself that bouhekictl interprets.
DBUS_ERROR_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
DBUS_ERRORS_NOT_RUNNING = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
)
DBUS_ERROR_NO_REPLY = "org.freedesktop.DBus.Error.NoReply"

# Methods of INTERFACE.
METHOD_RELOAD = "Reload"
# The polkit action of every call that changes the daemon's state (Reload).
ACTION_MANAGE = f"{BUS_NAME}.manage"
METHOD_LIST_POLICIES = "ListPolicies"
METHOD_GET_STATISTICS = "GetStatistics"
METHOD_EXPLAIN = "Explain"
METHOD_CHECK_CONFIG = "CheckConfig"
# What a learning policy recorded (it says where a unit connects: root or
# polkit's consent, like Reload), and forgetting it.
METHOD_LEARNED = "Learned"
METHOD_FORGET_LEARNED = "ForgetLearned"

# Signals of INTERFACE.
SIGNAL_RELOADED = "Reloaded"
SIGNAL_BLOCKED = "Blocked"

# D-Bus property name for each bouheki.common.api.Status field.
STATUS_PROPERTIES: dict[str, str] = {
    "version": "Version",
    "generation": "PolicyGeneration",
    "loaded_at_usec": "LoadedAt",
    "mode_summary": "ModeSummary",
    "blocked": "BlockedCount",
    "would_block": "WouldBlockCount",
}
# Owned by the adapter, not the engine: Blocked signals dropped by its rate limit.
PROPERTY_SUPPRESSED_SIGNALS = "SuppressedSignals"
SUPPRESSED_SIGNALS_FIELD = "suppressed_signals"  # its key in `bouhekictl status --json`

# The standard interfaces used alongside INTERFACE.
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
DBUS_INTERFACE = "org.freedesktop.DBus"

# Points bouhekictl (and the daemon) at a non-default bus, e.g. a private test bus.
ENV_BUS_ADDRESS = "BOUHEKI_BUS_ADDRESS"
