"""BTF parsing, on a small hand-built BTF blob and on the host kernel's."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bouheki.kernel import btf


def blob() -> bytes:
    """struct inner { int a, b; }; struct outer { int x; struct { int y; }; struct inner in; }"""
    strings = b"\0int\0inner\0a\0b\0outer\0x\0y\0in\0"

    def off(s: bytes) -> int:
        return strings.index(s + b"\0")

    types = b""
    types += struct.pack("<III", off(b"int"), btf.INT << 24, 4) + struct.pack("<I", 32)  # 1
    types += struct.pack("<III", off(b"inner"), (btf.STRUCT << 24) | 2, 8)  # 2
    types += struct.pack("<III", off(b"a"), 1, 0) + struct.pack("<III", off(b"b"), 1, 32)
    types += struct.pack("<III", 0, (btf.STRUCT << 24) | 1, 4)  # 3: anonymous
    types += struct.pack("<III", off(b"y"), 1, 0)
    types += struct.pack("<III", off(b"outer"), (btf.STRUCT << 24) | 3, 16)  # 4
    types += struct.pack("<III", off(b"x"), 1, 0) + struct.pack("<III", 0, 3, 32)
    types += struct.pack("<III", off(b"in"), 2, 64)
    hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_offsets_including_anonymous_members() -> None:
    b = btf.BTF(blob())
    assert b.offset("outer", "x") == 0
    assert b.offset("outer", "y") == 4
    assert b.offset("outer", "in") == 8
    assert b.offset("inner", "b") == 4
    assert b.offset("outer", "nope|y") == 4
    with pytest.raises(btf.BTFError, match="no member z"):
        b.offset("outer", "z")
    with pytest.raises(btf.BTFError, match="struct missing"):
        b.offset("missing", "x")


def test_not_btf() -> None:
    with pytest.raises(btf.BTFError, match="magic"):
        btf.BTF(b"\0" * 64)


@pytest.mark.skipif(not btf.VMLINUX.exists(), reason="the host kernel has no BTF")
def test_every_field_the_programs_read_is_in_the_host_kernel() -> None:
    offs = btf.offsets(btf.BTF.load())
    assert set(offs) == {f[0] for f in btf.FIELDS}
    assert offs["BH_OFF_MSGHDR_NAME"] == 0  # msg_name leads struct msghdr
    src = (Path(__file__).resolve().parents[2] / "bpf" / "bouheki.bpf.c").read_text()
    for macro in offs:
        assert macro in src, f"{macro} is no longer used by the programs"
