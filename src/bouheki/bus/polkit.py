"""Authorizing management calls through polkit, as firewalld and systemd do.

A caller with uid 0 is authorized without asking (root keeps working where
polkitd does not run). Anyone else is authorized only if polkit says so for
the action (org.bouheki.Bouheki1.manage: auth_admin_keep as shipped in
/usr/share/polkit-1/actions/; a rules.d file may grant it to a group). No
polkitd on the bus: refused. The subject is the caller's unique bus name,
which polkit resolves to its process and uid itself (no race on a pid).
"""

from __future__ import annotations

from ..dbuslib import DBusError, Message, MessageBus, MessageType, Variant
from . import names

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
# CheckAuthorizationFlags: let polkit ask the user through an agent.
ALLOW_USER_INTERACTION = 1
# polkit answers within a human's reply time when it may ask: a bound anyway.
TIMEOUT_S = 120


async def check(bus: MessageBus, sender: str, action: str, interactive: bool) -> bool:
    """polkit's answer for `sender` and `action`. Raises DBusError (access
    denied, with the reason) when polkit cannot be asked."""
    subject = ["system-bus-name", {"name": Variant("s", sender)}]
    flags = ALLOW_USER_INTERACTION if interactive else 0
    reply = await bus.call(
        Message(
            destination=POLKIT_NAME,
            path=POLKIT_PATH,
            interface=POLKIT_INTERFACE,
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[subject, action, {}, flags, ""],
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        why = reply.error_name if reply is not None else "no reply"
        raise DBusError(
            names.ERROR_ACCESS_DENIED,
            f"only root may do this here: polkit could not be asked ({why})",
        )
    is_authorized, _is_challenge, _details = reply.body[0]
    return bool(is_authorized)
