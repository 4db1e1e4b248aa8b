"""Authorizing management calls through polkit, as firewalld and systemd do.

A caller with uid 0 is authorized without asking (root keeps working where
polkitd does not run). Anyone else is authorized only if polkit says so for
the action (org.bouheki.Bouheki1.manage: auth_admin_keep as shipped in
/usr/share/polkit-1/actions/; a rules.d file may grant it to a group). No
polkitd on the bus: refused. The subject is the caller's unique bus name,
which polkit resolves to its process and uid itself (no race on a pid).
"""

from __future__ import annotations

import asyncio
import time

from ..dbuslib import DBusError, Message, MessageBus, MessageType, Variant
from . import names

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
# CheckAuthorizationFlags: let polkit ask the user through an agent.
ALLOW_USER_INTERACTION = 1
# polkit answers within a human's reply time when it may ask: a bound anyway.
TIMEOUT_S = 120


# A refusal is remembered for a few seconds per caller and action, and one
# question at a time is asked per caller and action: a peer that floods
# Reload costs polkitd one question, not one per call (under the lab's TCG,
# polkitd took seconds for a burst). A grant is never remembered here:
# polkit keeps those itself (auth_admin_keep).
DENIAL_TTL_S = 5.0
MAX_REMEMBERED = 1024
_denied: dict[tuple[str, str], float] = {}
_asking: dict[tuple[str, str], asyncio.Future[bool]] = {}


async def check(bus: MessageBus, sender: str, action: str, interactive: bool) -> bool:
    """polkit's answer for `sender` and `action` (see DENIAL_TTL_S). Raises
    DBusError (access denied, with the reason) when polkit cannot be asked."""
    key = (sender, action)
    now = time.monotonic()
    if _denied.get(key, 0.0) > now:
        return False
    pending = _asking.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    _asking[key] = future
    try:
        allowed = await _ask(bus, sender, action, interactive)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as e:
        future.set_exception(e)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        raise
    finally:
        del _asking[key]
    future.set_result(allowed)
    if not allowed:
        if len(_denied) >= MAX_REMEMBERED:
            _denied.clear()
        _denied[key] = time.monotonic() + DENIAL_TTL_S
    return allowed


async def _ask(bus: MessageBus, sender: str, action: str, interactive: bool) -> bool:
    subject = ["system-bus-name", {"name": Variant("s", sender)}]
    flags = ALLOW_USER_INTERACTION if interactive else 0
    question = Message(
        destination=POLKIT_NAME,
        path=POLKIT_PATH,
        interface=POLKIT_INTERFACE,
        member="CheckAuthorization",
        signature="(sa{sv})sa{ss}us",
        body=[subject, action, {}, flags, ""],
    )
    try:
        reply = await asyncio.wait_for(bus.call(question), TIMEOUT_S)
    except asyncio.TimeoutError:
        raise DBusError(
            names.ERROR_ACCESS_DENIED, f"polkit did not answer within {TIMEOUT_S} s"
        ) from None
    if reply is None or reply.message_type == MessageType.ERROR:
        why = reply.error_name if reply is not None else "no reply"
        raise DBusError(
            names.ERROR_ACCESS_DENIED,
            f"only root may do this here: polkit could not be asked ({why})",
        )
    is_authorized, _is_challenge, _details = reply.body[0]
    return bool(is_authorized)
