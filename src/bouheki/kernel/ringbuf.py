"""Read one BPF ring buffer by its file descriptor, without libbcc.

The consumer side of kernel/bpf/ringbuf.c, as libbpf's ring_buffer__poll
does it (tools/lib/bpf/ringbuf.c): the map is mapped in two parts, the
consumer position (read-write page) and the producer position followed by
the data pages, which the kernel maps twice in a row so that a record that
wraps around reads as one piece. Each record starts with an 8-byte header
(struct bpf_ringbuf_hdr): its length, with BUSY set while the producer
writes it and DISCARD when it was dropped; records are 8-byte aligned.
The same code reads a ring buffer just created and one adopted from the BPF
file system.
"""

from __future__ import annotations

import mmap
import select
import struct
import threading
from collections.abc import Callable

from .bpfsys import map_info

BUSY = 1 << 31  # BPF_RINGBUF_BUSY_BIT
DISCARD = 1 << 30  # BPF_RINGBUF_DISCARD_BIT
HDR_SZ = 8  # BPF_RINGBUF_HDR_SZ
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


class RingBuffer:
    def __init__(self, map_fd: int, on_sample: Callable[[bytes], None]) -> None:
        self._on_sample = on_sample
        size = map_info(map_fd).max_entries  # a power of two, a multiple of the page
        page = mmap.PAGESIZE
        self._mask = size - 1
        shared, read, write = mmap.MAP_SHARED, mmap.PROT_READ, mmap.PROT_WRITE
        self._cons = mmap.mmap(map_fd, page, shared, read | write)
        self._prod = mmap.mmap(map_fd, page + 2 * size, shared, read, offset=page)
        self._data = page  # where the data pages start in _prod
        self._epoll: select.epoll | None = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)
        # Acquiring and releasing a lock is a full memory barrier (pthread
        # mutexes): it orders the reads of a header and of its record as
        # libbpf's smp_load_acquire() does, on any architecture.
        self._barrier = threading.Lock()

    def _fence(self) -> None:
        with self._barrier:
            pass

    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for data, then hand every record to on_sample."""
        if self._epoll is None:
            return
        self._epoll.poll(timeout_ms / 1000)
        self.consume()

    def consume(self) -> None:
        """Every record committed so far (ringbuf_process_ring)."""
        if self._epoll is None:
            return
        cons = _U64.unpack_from(self._cons, 0)[0]
        while True:
            progressed = False
            self._fence()
            prod = _U64.unpack_from(self._prod, 0)[0]
            while cons < prod:
                at = self._data + (cons & self._mask)
                length = _U32.unpack_from(self._prod, at)[0]
                if length & BUSY:
                    return  # not committed yet: the next poll reads it
                self._fence()
                progressed = True
                size = length & ~(BUSY | DISCARD)
                cons += (size + HDR_SZ + 7) & ~7
                sample = None if length & DISCARD else self._prod[at + HDR_SZ : at + HDR_SZ + size]
                self._fence()
                # Consumed before it is handed on: a callback that raises
                # loses that record, not the ring.
                _U64.pack_into(self._cons, 0, cons)
                if sample is not None:
                    self._on_sample(sample)
            if not progressed:
                return

    def close(self) -> None:
        """Only once no thread polls any more."""
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
            self._cons.close()
            self._prod.close()
