"""Events to journald: one MESSAGE_ID per event type (see
systemd/bouheki.catalog), OBJECT_SYSTEMD_UNIT so that `journalctl -u UNIT`
shows what bouheki did about that unit, and BOUHEKI_* fields."""

from __future__ import annotations

import syslog
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..common import api
from ..policy.tables import DEFAULT_RULE

# The version of the events' fields (doc/EVENTS.md), in every entry as
# BOUHEKI_SCHEMA: a field renamed, removed or changed in meaning raises it.
EVENT_SCHEMA = "1"
MSG_BLOCKED = "970ffe9247c14e91a2dc0faca0c6ca78"
MSG_WOULD_BLOCK = "3234b6df9a994f988ba6d3e353dd38e7"
MSG_ALLOWED = "d34783590b2e45af87330b9d4b06e13c"
MSG_RELOADED = "63bc0c4997484b858c8ba97ae043341a"
MSG_RELOAD_FAILED = "b6790b0f3121403095cd8928b37a8102"
MSG_SUPPRESSED = "b0e725fb6ece42ff924bb17d1b58ed94"
MSG_STARTED = "4fa9bc3a4a0747d7821b223da3088918"

SendFn = Callable[..., Any]


def _default_send() -> SendFn:
    try:
        from systemd import journal

        return journal.send
    except ImportError:  # not on a systemd host: stderr, where the caller can see it
        import sys

        def send(message: str, **fields: Any) -> None:
            print(message, fields, file=sys.stderr)

        return send


@dataclass
class _Bucket:
    start: float
    count: int = 0
    suppressed: int = 0


@dataclass
class RateLimit:
    """At most `burst` events per unit per `interval` seconds."""

    burst: int = 20
    interval: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, key: str) -> tuple[bool, int]:
        """(log it?, events suppressed in the window that just ended)"""
        if self.burst <= 0:  # event_rate_limit = 0: no limit (bouheki.toml(5))
            return True, 0
        now = self.clock()
        b = self._buckets.get(key)
        ended = 0
        if b is None or now - b.start >= self.interval:
            ended = b.suppressed if b is not None else 0
            b = self._buckets[key] = _Bucket(start=now)
        if b.count < self.burst:
            b.count += 1
            return True, ended
        b.suppressed += 1
        return False, ended

    def flush(self) -> dict[str, int]:
        """Suppressed counts of every window, e.g. at shutdown."""
        out = {k: b.suppressed for k, b in self._buckets.items() if b.suppressed}
        self._buckets.clear()
        return out


class Journal:
    def __init__(self, rate: RateLimit | None = None, send: SendFn | None = None) -> None:
        self.rate = rate or RateLimit()
        raw = send or _default_send()

        def send_as_bouheki(message: str, **fields: Any) -> Any:
            # Not the interpreter's name: `journalctl -t bouheki` finds them all.
            # No field is sent empty (doc/EVENTS.md): an unknown one is left out.
            kept = {k: v for k, v in fields.items() if v != ""}
            return raw(message, SYSLOG_IDENTIFIER="bouheki", BOUHEKI_SCHEMA=EVENT_SCHEMA, **kept)

        self.send = send_as_bouheki
        self.suppressed_total = 0

    def admit(self, unit: str) -> bool:
        """Whether the unit's next event may be logged ('' is the host);
        logs how many were suppressed when a window ends."""
        key = unit or "@host"
        ok, ended = self.rate.admit(key)
        if ended:
            self.suppressed(key, ended)
        if not ok:
            self.suppressed_total += 1
        return ok

    def connection(self, ev: api.ConnectionEvent, check_rate: bool = True) -> bool:
        """Log one event, unless its unit is over its rate. Returns whether it was logged."""
        if check_rate and not self.admit(ev.unit):
            return False
        mid, prio, word = {
            "blocked": (MSG_BLOCKED, syslog.LOG_WARNING, "Blocked"),
            "would-block": (MSG_WOULD_BLOCK, syslog.LOG_NOTICE, "Would block"),
        }.get(ev.verdict, (MSG_ALLOWED, syslog.LOG_INFO, "Allowed"))
        where = f"{ev.unit}: " if ev.unit else ""
        fields: dict[str, Any] = {
            "MESSAGE_ID": mid,
            "PRIORITY": str(prio),
            "BOUHEKI_ACTION": ev.verdict.upper().replace("-", "_"),
            "BOUHEKI_DADDR": ev.daddr,
            "BOUHEKI_DPORT": str(ev.dport),
            "BOUHEKI_PROTOCOL": ev.protocol,
            "BOUHEKI_COMM": ev.comm,
            "BOUHEKI_EXE": ev.exe,
            "BOUHEKI_EXE_DEV": f"{ev.exe_dev >> 20}:{ev.exe_dev & 0xFFFFF}",
            "BOUHEKI_EXE_INODE": str(ev.exe_ino),
            "BOUHEKI_PID": str(ev.pid),
            "BOUHEKI_UID": str(ev.uid),
            "BOUHEKI_GID": str(ev.gid),
            "BOUHEKI_UNIT": ev.unit,
            "BOUHEKI_CGROUP_ID": str(ev.cgroup_id),
            "BOUHEKI_POLICY": ev.policy,
            # The rule's index where it has no line; the default's is 64.
            "BOUHEKI_RULE": ev.origin or str(ev.rule if ev.rule != api.NO_RULE else DEFAULT_RULE),
            "BOUHEKI_HOOK": ev.hook,
            "BOUHEKI_REASON": ev.reason,
        }
        if ev.unit:
            fields["OBJECT_SYSTEMD_UNIT"] = ev.unit
        if ev.pid:
            fields["OBJECT_PID"] = str(ev.pid)
        by = ev.origin or "policy " + ev.policy
        if ev.reason != "policy":
            # Refused whatever the rules say: no destination was judged.
            text = f"{word} {ev.hook} on a {ev.protocol} socket of {ev.comm}"
            by = f"{ev.reason} (fail closed, policy {ev.policy})"
        else:
            text = f"{word} {ev.protocol} connection of {ev.comm}"
            text += f" (pid {ev.pid}, uid {ev.uid}) to {ev.daddr} port {ev.dport}"
        self.send(f"{where}{text} by {by}", **fields)
        return True

    def suppressed(self, key: str, count: int) -> None:
        fields: dict[str, Any] = {
            "MESSAGE_ID": MSG_SUPPRESSED,
            "PRIORITY": str(syslog.LOG_WARNING),
            "BOUHEKI_SUPPRESSED": str(count),
            "BOUHEKI_UNIT": "" if key == "@host" else key,
        }
        if key != "@host":
            fields["OBJECT_SYSTEMD_UNIT"] = key
        self.send(f"{key}: {count} connection events suppressed by the rate limit", **fields)

    def reloaded(self, generation: int, summary: str) -> None:
        self.send(
            f"Policy generation {generation} applied: {summary}",
            MESSAGE_ID=MSG_RELOADED,
            PRIORITY=str(syslog.LOG_INFO),
            BOUHEKI_GENERATION=str(generation),
        )

    def reload_failed(self, problems: list[str]) -> None:
        self.send(
            "Reload refused, the running policy stays in force:\n" + "\n".join(problems),
            MESSAGE_ID=MSG_RELOAD_FAILED,
            PRIORITY=str(syslog.LOG_ERR),
            BOUHEKI_PROBLEMS="\n".join(problems),
        )

    def started(self, summary: str) -> None:
        self.send(
            f"bouheki enforcing: {summary}", MESSAGE_ID=MSG_STARTED, PRIORITY=str(syslog.LOG_INFO)
        )
