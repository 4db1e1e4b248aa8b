"""Per-CPU arrays by file descriptor: a lookup returns one value per
possible CPU, each slot rounded up to 8 bytes, as the kernel copies them."""

from __future__ import annotations

import ctypes as ct
import os
from typing import Any

from .bccmaps import errno_of


def possible_cpus() -> int:
    """How many slots the kernel copies: /sys/devices/system/cpu/possible."""
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


class PerCpuArray:
    def __init__(self, map_fd: int, value: type[Any], ncpus: int | None = None) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self._fd = map_fd
        self._value = value
        self._ncpus = ncpus or possible_cpus()
        self._stride = (ct.sizeof(value) + 7) & ~7
        self._size = self._stride * self._ncpus

    def _check(self, rc: int, what: str, index: int) -> None:
        if rc < 0:
            err = errno_of(rc)
            raise OSError(err, f"{what} of per-CPU slot {index} failed: {os.strerror(err)}")

    def get(self, index: int) -> list[Any]:
        buf = ct.create_string_buffer(self._size)
        key = ct.c_int(index)
        self._check(self._lib.bpf_lookup_elem(self._fd, ct.byref(key), buf), "lookup", index)
        out = [self._value.from_buffer_copy(buf.raw, i * self._stride) for i in range(self._ncpus)]
        return [v.value for v in out] if issubclass(self._value, ct._SimpleCData) else out

    def zero(self, index: int) -> None:
        buf = ct.create_string_buffer(self._size)
        key = ct.c_int(index)
        self._check(self._lib.bpf_update_elem(self._fd, ct.byref(key), buf, 0), "reset", index)
