"""Typed events from the hooks' ring buffer."""

from __future__ import annotations

import ctypes as ct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..policy.tables import Hook, Reason, Verdict, kernel_address, protocol_name
from . import layout
from .ringbuf import RingBuffer


@dataclass(frozen=True)
class KernelEvent:
    ts_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    gid: int
    comm: str
    exe_dev: int
    exe_ino: int
    policy_id: int
    gen: int
    rule: int
    verdict: Verdict
    hook: Hook
    family: int
    protocol: int
    daddr: str
    dport: int
    reason: Reason = Reason.POLICY

    @property
    def protocol_name(self) -> str:
        return protocol_name(self.protocol)


def decode(raw: layout.Event) -> KernelEvent:
    addr = kernel_address(raw.family, bytes(raw.daddr))
    return KernelEvent(
        ts_ns=raw.ts_ns,
        cgroup_id=raw.cgroup_id,
        pid=raw.pid,
        tid=raw.tid,
        uid=raw.uid,
        gid=raw.gid,
        comm=raw.comm.decode(errors="replace"),
        exe_dev=raw.exe_dev,
        exe_ino=raw.exe_ino,
        policy_id=raw.policy,
        gen=raw.gen,
        rule=raw.rule,
        verdict=Verdict(raw.verdict),
        hook=Hook(raw.hook),
        family=raw.family,
        protocol=raw.proto,
        daddr=addr,
        dport=raw.dport,
        reason=Reason(raw.reason),
    )


class EventReader:
    """Polls the ring buffer on a thread of its own and hands each decoded
    event to a callback."""

    def __init__(self, programs: Any, callback: Callable[[KernelEvent], None]) -> None:
        self._callback = callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring = RingBuffer(programs.map_fd("events"), self._on_raw)

    def _on_raw(self, data: bytes) -> None:
        if len(data) < ct.sizeof(layout.Event):
            return  # not one of ours: the programs only submit whole events
        self._callback(decode(layout.Event.from_buffer_copy(data)))

    def poll(self, timeout_ms: int = 100) -> None:
        self._ring.poll(timeout_ms)

    def drain(self) -> None:
        self._ring.consume()

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self._ring.poll(200)

        self._thread = threading.Thread(target=run, name="bouheki-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():
                return  # still inside a poll: freeing the ring under it would crash
        self._ring.close()
