"""Read one BPF ring buffer by its file descriptor.

Through libbcc's libbpf wrapper rather than bcc's table object, so that a
ring buffer adopted from the BPF file system (kernel/adopt.py) reads exactly
like one bcc has just created."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable
from typing import Any


class RingBuffer:
    def __init__(self, map_fd: int, on_sample: Callable[[int, int], None]) -> None:
        from bcc.libbcc import _RINGBUF_CB_TYPE, lib

        self._lib = lib

        def sample(_ctx: Any, data: int, size: int) -> int:
            on_sample(data, size)
            return 0

        self._fn = _RINGBUF_CB_TYPE(sample)  # libbpf calls it: keep it alive
        self._rb = lib.bpf_new_ringbuf(map_fd, self._fn, None)
        if not self._rb:
            err = ct.get_errno()
            raise OSError(err, f"cannot open the events ring buffer (map fd {map_fd})")

    def poll(self, timeout_ms: int) -> None:
        if self._rb:
            self._lib.bpf_poll_ringbuf(self._rb, timeout_ms)

    def consume(self) -> None:
        if self._rb:
            self._lib.bpf_consume_ringbuf(self._rb)

    def close(self) -> None:
        """Only once no thread polls any more."""
        if self._rb:
            self._lib.bpf_free_ringbuf(self._rb)
            self._rb = None
