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
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF data too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BTFError("not BTF data (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        base = hdr_len
        self._strings = data[base + str_off : base + str_off + str_len]
        self.types: list[Type | None] = [None]  # type ids start at 1
        self._by_name: dict[tuple[int, str], int] = {}
        self._parse(data, base + type_off, base + type_off + type_len)

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self, data: bytes, pos: int, end: int) -> None:
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, size_or_type = unpack("<III", data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kflag = info >> 31
            members: tuple[Member, ...] = ()
            if kind in (STRUCT, UNION):
                ms = []
                for i in range(vlen):
                    m_name, m_type, m_off = unpack("<III", data, pos + 12 * i)
                    bits, size = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                    ms.append(Member(self._str(m_name), m_type, bits, size))
                members = tuple(ms)
            step = _FIXED.get(kind, 0) + _PER_ITEM.get(kind, 0) * vlen
            pos += step
            name = self._str(name_off) if name_off else ""
            self.types.append(Type(kind, name, size_or_type, members))
            if kind in (STRUCT, UNION) and name:
                self._by_name.setdefault((kind, name), len(self.types) - 1)

    @classmethod
    def load(cls, path: Path = VMLINUX) -> BTF:
        try:
            return cls(path.read_bytes())
        except OSError as e:
            raise BTFError(f"cannot read {path}: {e.strerror}") from e

    def struct(self, name: str) -> Type:
        tid = self._by_name.get((STRUCT, name))
        if tid is None:
            raise BTFError(f"struct {name} is not in the kernel's BTF")
        t = self.types[tid]
        assert t is not None
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
        t = self.types[tid] if 0 < tid < len(self.types) else None
        while t is not None and t.kind in (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG):
            t = self.types[t.size_or_type]
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
    ("BH_OFF_MSGHDR_NAME", "msghdr", "msg_name"),
    ("BH_OFF_MSGHDR_NAMELEN", "msghdr", "msg_namelen"),
    ("BH_OFF_TASK_MM", "task_struct", "mm"),
    ("BH_OFF_TASK_NSPROXY", "task_struct", "nsproxy"),
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


def offsets(btf: BTF, fields: Iterable[tuple[str, str, str]] = FIELDS) -> dict[str, int]:
    return {macro: btf.offset(s, m) for macro, s, m in fields}


def cflags(btf: BTF | None = None) -> list[str]:
    return [f"-D{k}={v}" for k, v in offsets(btf or BTF.load()).items()]
