"""Per-CPU arrays by file descriptor: a lookup returns one value per
possible CPU, each slot rounded up to 8 bytes, as the kernel copies them."""

from __future__ import annotations

import ctypes as ct
from typing import Any

from . import bpfsys

POSSIBLE = "/sys/devices/system/cpu/possible"


def parse_cpu_list(text: str) -> list[int]:
    """A kernel CPU list, "0-3,5" (Documentation/admin-guide/cputopology.rst)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus += range(int(low), int(high or low) + 1)
    return cpus


def possible_cpus() -> int:
    """How many slots the kernel copies: one per possible CPU."""
    with open(POSSIBLE, encoding="ascii") as f:
        return len(parse_cpu_list(f.read()))


class PerCpuArray:
    def __init__(self, map_fd: int, value: type[Any], ncpus: int | None = None) -> None:
        self._fd = map_fd
        self._value = value
        self._ncpus = ncpus or possible_cpus()
        self._stride = (ct.sizeof(value) + 7) & ~7
        self._size = self._stride * self._ncpus

    def get(self, index: int) -> list[Any]:
        buf = ct.create_string_buffer(self._size)
        try:
            bpfsys.lookup(self._fd, ct.c_int(index), buf)
        except OSError as e:
            raise OSError(e.errno, f"lookup of per-CPU slot {index} failed: {e.strerror}") from None
        out = [self._value.from_buffer_copy(buf.raw, i * self._stride) for i in range(self._ncpus)]
        return [v.value for v in out] if issubclass(self._value, ct._SimpleCData) else out

    def zero(self, index: int) -> None:
        buf = ct.create_string_buffer(self._size)
        try:
            bpfsys.update(self._fd, ct.c_int(index), buf)
        except OSError as e:
            raise OSError(e.errno, f"reset of per-CPU slot {index} failed: {e.strerror}") from None
