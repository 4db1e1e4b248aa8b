"""The bpf(2) system call, for the long-running daemon: maps and pins by file
descriptor without libbcc.

Only the short-lived compiler (kernel/compiler.py) loads bcc and its LLVM;
the daemon works on the maps and links it pinned, through these few
commands (include/uapi/linux/bpf.h: enum bpf_cmd and union bpf_attr), and
membarrier(2) for the RCU grace period the generation swap waits for.
"""

from __future__ import annotations

import ctypes as ct
import errno as errno_mod
import os
import platform

# enum bpf_cmd
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15

# __NR_bpf by architecture (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h).
_NR_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "i386": 357,
    "i686": 357,
    "armv7l": 386,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
}

# __NR_membarrier by architecture, as above.
_NR_MEMBARRIER = {
    "x86_64": 324,
    "aarch64": 283,
    "riscv64": 283,
    "loongarch64": 283,
    "i386": 375,
    "i686": 375,
    "armv7l": 389,
    "ppc64le": 365,
    "ppc64": 365,
    "s390x": 356,
}
MEMBARRIER_CMD_GLOBAL = 1  # include/uapi/linux/membarrier.h

_libc = ct.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ct.c_long


class _ElemAttr(ct.Structure):
    """The BPF_MAP_*_ELEM and BPF_MAP_GET_NEXT_KEY member of union bpf_attr."""

    _fields_ = [
        ("map_fd", ct.c_uint32),
        ("_pad", ct.c_uint32),
        ("key", ct.c_uint64),
        ("value", ct.c_uint64),  # next_key for BPF_MAP_GET_NEXT_KEY
        ("flags", ct.c_uint64),
    ]


class _ObjAttr(ct.Structure):
    """BPF_OBJ_PIN and BPF_OBJ_GET."""

    _fields_ = [
        ("pathname", ct.c_uint64),
        ("bpf_fd", ct.c_uint32),
        ("file_flags", ct.c_uint32),
    ]


class _InfoAttr(ct.Structure):
    """BPF_OBJ_GET_INFO_BY_FD."""

    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class MapInfo(ct.Structure):
    """The head of struct bpf_map_info: what the daemon needs of a map."""

    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
    ]


_NR = _NR_BPF.get(platform.machine())


def bpf(cmd: int, attr: ct.Structure) -> int:
    """bpf(cmd, &attr, sizeof attr); raises OSError with the errno."""
    if _NR is None:
        raise OSError(errno_mod.ENOSYS, f"bpf(2): no system call number for {platform.machine()}")
    rc = _syscall(ct.c_long(_NR), ct.c_int(cmd), ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
    if rc < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rc)


def _addr(obj: ct._CData | ct.Array[ct.c_char] | None) -> int:
    return 0 if obj is None else ct.addressof(obj)


def lookup(fd: int, key: ct._CData, value: ct._CData | ct.Array[ct.c_char]) -> None:
    bpf(BPF_MAP_LOOKUP_ELEM, _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(value)))


def update(fd: int, key: ct._CData, value: ct._CData | ct.Array[ct.c_char], flags: int = 0) -> None:
    bpf(BPF_MAP_UPDATE_ELEM, _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(value), flags=flags))


def delete(fd: int, key: ct._CData) -> None:
    bpf(BPF_MAP_DELETE_ELEM, _ElemAttr(map_fd=fd, key=_addr(key)))


def next_key(fd: int, key: ct._CData | None, out: ct._CData) -> bool:
    """The key after `key` (the first one when None) into `out`; False at the end."""
    try:
        bpf(BPF_MAP_GET_NEXT_KEY, _ElemAttr(map_fd=fd, key=_addr(key), value=_addr(out)))
    except OSError as e:
        if e.errno == errno_mod.ENOENT:
            return False
        raise
    return True


def obj_pin(fd: int, path: str) -> None:
    name = ct.create_string_buffer(os.fsencode(path))
    bpf(BPF_OBJ_PIN, _ObjAttr(pathname=ct.addressof(name), bpf_fd=fd))


def obj_get(path: str) -> int:
    """A new file descriptor for the object pinned at path."""
    name = ct.create_string_buffer(os.fsencode(path))
    return bpf(BPF_OBJ_GET, _ObjAttr(pathname=ct.addressof(name)))


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info), info=_addr(info)))
    return info


def rcu_grace_period() -> None:
    """Return once every BPF program that was running has finished.

    Non-sleepable BPF programs (the LSM hooks here) run inside an RCU
    read-side section (bpf_trampoline's __bpf_prog_enter takes
    rcu_read_lock), and membarrier(MEMBARRIER_CMD_GLOBAL) is
    synchronize_rcu() (kernel/sched/membarrier.c). Raises OSError: EINVAL
    on a nohz_full kernel, EPERM under a seccomp filter without it."""
    nr = _NR_MEMBARRIER.get(platform.machine())
    if nr is None:
        raise OSError(errno_mod.ENOSYS, f"membarrier(2): no number for {platform.machine()}")
    if _syscall(ct.c_long(nr), ct.c_int(MEMBARRIER_CMD_GLOBAL), ct.c_uint(0)) < 0:
        err = ct.get_errno()
        raise OSError(err, f"membarrier: {os.strerror(err)}")
