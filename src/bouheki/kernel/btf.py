"""Field offsets of kernel structs, read from the running kernel's BTF.

The programs read a dozen kernel fields (the socket's protocol, the task's
executable inode, the cgroup's kernfs node...). Including the headers that
define those structs (net/sock.h above all) makes bcc's compile several
times slower, and struct mnt_namespace is in no installed header at all. The
kernel describes its own types in /sys/kernel/btf/vmlinux: we read the
offsets there and hand them to the compiler as constants.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F

# kinds
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

# Extra bytes after the 12-byte btf_type, fixed or per vlen item.
_FIXED = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_ITEM = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}


class BTFError(RuntimeError):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


@dataclass(frozen=True)
class Type:
    kind: int
    name: str
    size_or_type: int
    members: tuple[Member, ...] = ()


class BTF:
    """Decodes lazily: one pass records where each type starts and the id of
    each named struct; names and members are decoded only for the types
    asked for. Decoding every type into objects took 3.4 s of the daemon's
    start-up under TCG (bench/RESULTS.md) to answer twenty questions."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF data too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BTFError("not BTF data (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        base = hdr_len
        if base + max(type_off + type_len, str_off + str_len) > len(data):
            raise BTFError("BTF sections run past the end of the data")
        self._data = data
        self._strings = data[base + str_off : base + str_off + str_len]
        self._pos: list[int] = [0]  # type ids start at 1
        self._structs: dict[int, int] = {}  # name offset -> first struct with that name
        self._cache: dict[int, Type] = {}
        self._index(base + type_off, base + type_off + type_len)

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _index(self, pos: int, end: int) -> None:
        unpack = struct.unpack_from
        data = self._data
        positions = self._pos
        structs = self._structs
        fixed, per_item = _FIXED, _PER_ITEM
        while pos < end:
            name_off, info = unpack("<II", data, pos)
            positions.append(pos)
            kind = (info >> 24) & 0x1F
            if kind == STRUCT and name_off and name_off not in structs:
                structs[name_off] = len(positions) - 1
            pos += 12 + fixed.get(kind, 0) + per_item.get(kind, 0) * (info & 0xFFFF)

    def type(self, tid: int) -> Type | None:
        if not 0 < tid < len(self._pos):
            return None
        t = self._cache.get(tid)
        if t is None:
            t = self._cache[tid] = self._decode(self._pos[tid])
        return t

    def _decode(self, pos: int) -> Type:
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        kind = (info >> 24) & 0x1F
        members: tuple[Member, ...] = ()
        if kind in (STRUCT, UNION):
            kflag = info >> 31
            ms = []
            for i in range(info & 0xFFFF):
                m_name, m_type, m_off = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
                bits, size = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                ms.append(Member(self._str(m_name) if m_name else "", m_type, bits, size))
            members = tuple(ms)
        return Type(kind, self._str(name_off) if name_off else "", size_or_type, members)

    @classmethod
    def load(cls, path: Path = VMLINUX) -> BTF:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BTFError(f"cannot read {path}: {e.strerror}") from e

    def struct(self, name: str) -> Type:
        # BTF stores each string once: the name's offset is where it appears
        # as a whole NUL-terminated string.
        needle = name.encode() + b"\0"
        start = 0 if self._strings.startswith(needle) else -1
        if start < 0:
            at = self._strings.find(b"\0" + needle)
            start = at + 1 if at >= 0 else -1
        tid = self._structs.get(start) if start > 0 else None
        t = self.type(tid) if tid is not None else None
        if t is None:
            raise BTFError(f"struct {name} is not in the kernel's BTF")
        return t

    def _find(self, t: Type, member: str, base_bits: int) -> int | None:
        for m in t.members:
            if m.name == member:
                if m.bitfield_size:
                    raise BTFError(f"{t.name}.{member} is a bitfield")
                return base_bits + m.bit_offset
            if not m.name:  # an anonymous struct or union: look inside
                inner = self._resolve(m.type_id)
                if inner is not None and inner.kind in (STRUCT, UNION):
                    found = self._find(inner, member, base_bits + m.bit_offset)
                    if found is not None:
                        return found
        return None

    def _resolve(self, tid: int) -> Type | None:
        t = self.type(tid)
        while t is not None and t.kind in (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG):
            t = self.type(t.size_or_type)
        return t

    def offset(self, struct_name: str, member: str) -> int:
        """Byte offset of member in struct struct_name (anonymous members
        searched). member may list names a field had in other kernels: a|b."""
        t = self.struct(struct_name)
        bits = None
        for name in member.split("|"):
            bits = self._find(t, name, 0)
            if bits is not None:
                break
        if bits is None:
            raise BTFError(f"struct {struct_name} has no member {member}")
        if bits % 8:
            raise BTFError(f"{struct_name}.{member} is not byte-aligned")
        return bits // 8


# (macro, struct, member): every kernel field the programs read.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("BH_OFF_SOCKET_SK", "socket", "sk"),
    ("BH_OFF_SOCK_PROTOCOL", "sock", "sk_protocol"),
    ("BH_OFF_SOCK_TYPE", "sock", "sk_type"),
    ("BH_OFF_SOCK_COMMON", "sock", "__sk_common"),
    ("BH_OFF_SKC_FAMILY", "sock_common", "skc_family"),
    ("BH_OFF_MSGHDR_NAME", "msghdr", "msg_name"),
    ("BH_OFF_MSGHDR_NAMELEN", "msghdr", "msg_namelen"),
    ("BH_OFF_MSGHDR_CONTROL", "msghdr", "msg_control"),
    ("BH_OFF_MSGHDR_CONTROLLEN", "msghdr", "msg_controllen"),
    ("BH_OFF_TASK_MM", "task_struct", "mm"),
    ("BH_OFF_TASK_NSPROXY", "task_struct", "nsproxy"),
    ("BH_OFF_TASK_COMM", "task_struct", "comm"),
    ("BH_OFF_TASK_CRED", "task_struct", "cred"),
    ("BH_OFF_CRED_UID", "cred", "uid"),
    ("BH_OFF_CRED_GID", "cred", "gid"),
    ("BH_OFF_MM_EXE_FILE", "mm_struct", "exe_file"),
    ("BH_OFF_FILE_INODE", "file", "f_inode"),
    ("BH_OFF_INODE_INO", "inode", "i_ino"),
    ("BH_OFF_INODE_SB", "inode", "i_sb"),
    ("BH_OFF_SB_DEV", "super_block", "s_dev"),
    ("BH_OFF_NSPROXY_MNT_NS", "nsproxy", "mnt_ns"),
    ("BH_OFF_MNT_NS_NS", "mnt_namespace", "ns"),
    ("BH_OFF_NS_COMMON_INUM", "ns_common", "inum"),
    ("BH_OFF_CGROUP_ROOT", "cgroup", "root"),
    ("BH_OFF_CGROUP_KN", "cgroup", "kn"),
    ("BH_OFF_CGROUP_ROOT_HID", "cgroup_root", "hierarchy_id"),
    ("BH_OFF_KN_ID", "kernfs_node", "id"),
    ("BH_OFF_KN_PARENT", "kernfs_node", "parent|__parent"),  # __parent since 6.15
    ("BH_OFF_KN_NAME", "kernfs_node", "name"),
)


# Read where the architecture has them (x86: the syscall's number and
# arguments, for bh_batched); absent, the program compiles without them.
OPTIONAL_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("BH_OFF_PT_REGS_ORIG_AX", "pt_regs", "orig_ax"),
    ("BH_OFF_PT_REGS_BX", "pt_regs", "bx"),
    ("BH_OFF_PT_REGS_DX", "pt_regs", "dx"),
)


def offsets(btf: BTF, fields: Iterable[tuple[str, str, str]] = FIELDS) -> dict[str, int]:
    return {macro: btf.offset(s, m) for macro, s, m in fields}


def optional_offsets(btf: BTF) -> dict[str, int]:
    """OPTIONAL_FIELDS, all of them or none."""
    try:
        return offsets(btf, OPTIONAL_FIELDS)
    except BTFError:
        return {}


def cflags(btf: BTF | None = None) -> list[str]:
    btf = btf or BTF.load()
    found = {**offsets(btf), **optional_offsets(btf)}
    return [f"-D{k}={v}" for k, v in found.items()]
