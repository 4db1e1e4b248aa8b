"""The daemon's bpf(2) calls (kernel/bpfsys.py) and what is built on them,
against the host kernel: it creates maps for root, though it refuses LSM
programs (those are the lab's)."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bouheki.kernel import bpfsys
from bouheki.kernel.percpu import PerCpuArray, parse_cpu_list, possible_cpus
from bouheki.kernel.ringbuf import RingBuffer

BPF_MAP_CREATE = 0
HASH, PERCPU_ARRAY, RINGBUF = 1, 6, 27


class _CreateAttr(ct.Structure):
    _fields_ = [
        ("map_type", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
    ]


def create(kind: int, key: int, value: int, entries: int) -> int:
    try:
        return bpfsys.bpf(BPF_MAP_CREATE, _CreateAttr(kind, key, value, entries, 0))
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            pytest.skip(f"this kernel does not let us create BPF maps: {e}")
        raise


@pytest.fixture
def hash_map() -> Iterator[int]:
    fd = create(HASH, 4, 8, 8)
    yield fd
    os.close(fd)


def test_update_lookup_iterate_delete(hash_map: int) -> None:
    for k in (3, 1, 2):
        bpfsys.update(hash_map, ct.c_uint32(k), ct.c_uint64(k * 100))
    out = ct.c_uint64()
    bpfsys.lookup(hash_map, ct.c_uint32(2), out)
    assert out.value == 200
    keys, cur, nxt = [], None, ct.c_uint32()
    while bpfsys.next_key(hash_map, cur, nxt):
        keys.append(nxt.value)
        cur = ct.c_uint32(nxt.value)
    assert sorted(keys) == [1, 2, 3]
    bpfsys.delete(hash_map, ct.c_uint32(2))
    with pytest.raises(FileNotFoundError):
        bpfsys.lookup(hash_map, ct.c_uint32(2), out)


def test_errors_carry_the_errno(hash_map: int) -> None:
    for k in range(8):
        bpfsys.update(hash_map, ct.c_uint32(k), ct.c_uint64(0))
    with pytest.raises(OSError) as full:
        bpfsys.update(hash_map, ct.c_uint32(99), ct.c_uint64(0))
    assert full.value.errno == errno.E2BIG
    with pytest.raises(OSError) as bad:
        bpfsys.lookup(-1, ct.c_uint32(0), ct.c_uint64())
    assert bad.value.errno == errno.EBADF


@pytest.fixture
def bpffs(tmp_path: Path) -> Iterator[Path]:
    """A BPF file system of the test's own."""
    r = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(tmp_path)], capture_output=True, check=False
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a BPF file system: {r.stderr.decode().strip()}")
    yield tmp_path
    subprocess.run(["umount", str(tmp_path)], check=False)


def test_pin_and_get(hash_map: int, bpffs: Path) -> None:
    path = bpffs / "bh-test"
    bpfsys.update(hash_map, ct.c_uint32(7), ct.c_uint64(70))
    bpfsys.obj_pin(hash_map, str(path))
    try:
        fd = bpfsys.obj_get(str(path))
        out = ct.c_uint64()
        bpfsys.lookup(fd, ct.c_uint32(7), out)
        assert out.value == 70
        assert bpfsys.map_info(fd).max_entries == 8
        os.close(fd)
    finally:
        path.unlink()
    with pytest.raises(FileNotFoundError):
        bpfsys.obj_get(str(path))


def test_per_cpu_values_one_per_possible_cpu() -> None:
    assert parse_cpu_list("0-3,5,8-9\n") == [0, 1, 2, 3, 5, 8, 9]
    assert parse_cpu_list("0\n") == [0]
    fd = create(PERCPU_ARRAY, 4, 8, 2)
    try:
        arr = PerCpuArray(fd, ct.c_uint64)
        assert arr.get(1) == [0] * possible_cpus()
        arr.zero(1)
        with pytest.raises(OSError):
            arr.get(5)
    finally:
        os.close(fd)


def test_an_empty_ring_buffer_reads_nothing() -> None:
    """The mappings and positions of a real ring buffer (records come from
    the programs: every lab test that checks an event reads them)."""
    fd = create(RINGBUF, 0, 0, 4 * 4096)
    seen: list[bytes] = []
    try:
        ring = RingBuffer(fd, seen.append)
        ring.poll(10)
        ring.consume()
        ring.close()
        ring.close()  # idempotent
    finally:
        os.close(fd)
    assert seen == []
