"""The few questions bouheki asks systemd over the system bus."""

from __future__ import annotations

import os
from typing import Any

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"

# A stop that is half of one of these is followed by a start of the same unit.
RESTARTING_JOBS = ("restart", "try-restart", "reload-or-restart", "reload-or-try-restart")


async def _call(bus: Any, path: str, interface: str, member: str, sig: str, body: list) -> Any:
    # Imported here: the rest of units/ must not need a D-Bus library.
    from ..dbuslib import Message, MessageType

    reply = await bus.call(
        Message(destination=SYSTEMD, path=path, interface=interface, member=member,
                signature=sig, body=body)
    )  # fmt: skip
    if reply.message_type == MessageType.ERROR:
        raise LookupError(f"{member}: {reply.error_name}: {reply.body}")
    return reply.body[0]


async def own_job_type(bus: Any, pid: int | None = None) -> str:
    """The type of the job systemd runs on the unit of pid ('' if none)."""
    unit_path = await _call(bus, MANAGER_PATH, MANAGER, "GetUnitByPID", "u", [pid or os.getpid()])
    job = await _call(bus, unit_path, PROPERTIES, "Get", "ss", [f"{SYSTEMD}.Unit", "Job"])
    job_id, job_path = job.value
    if not job_id:
        return ""
    kind = await _call(bus, job_path, PROPERTIES, "Get", "ss", [f"{SYSTEMD}.Job", "JobType"])
    return str(kind.value)


async def is_restarting(bus: Any) -> bool:
    try:
        return await own_job_type(bus) in RESTARTING_JOBS
    except (LookupError, OSError):
        return False
