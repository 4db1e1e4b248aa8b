"""Small sets kept inline in the policy's own kernel value (bpf/bouheki.h:
struct bh_policy's spans and keys), and the twin of the hook's scans.

A hook has already read the policy's value when it matches; a lookup in a
map of its own costs one more cold touch (~1 us under TCG, bench/). So the
ports of a policy, cut into spans where the ports table's answer is
constant, and its uid, gid, comm and executable keys live in the value
while they fit; a dimension with more stays in its map (in_maps). Either
way the answer is the same: port_spans() is checked against the ports
table's longest match for every port (tests/unit/test_inline.py), and the
in-kernel differential test judges policies of both kinds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

from bouheki.policy.tables import COMM_LEN, PolicyTables, Proto

INLINE_SPANS = 48  # BH_INLINE_SPANS
INLINE_KEYS = 64  # BH_INLINE_KEYS, a power of 2 (bh_key_mask masks its index)

# BH_DIM_*: a bit of bh_policy.in_maps, the dimension is in its map.
DIM_PORT = 1
DIM_UID = 2
DIM_GID = 4
DIM_COMM = 8
DIM_EXE = 16

# bh_proto_bit: a protocol's bit in a span's protos.
PROTO_BITS: dict[int, int] = {
    Proto.ICMP: 1,
    Proto.TCP: 2,
    Proto.UDP: 4,
    Proto.DCCP: 8,
    Proto.ICMPV6: 16,
    Proto.SCTP: 32,
    Proto.UDPLITE: 64,
    Proto.RAW: 128,
}

_PORT_BITS = 16
_PORT_MAX = (1 << _PORT_BITS) - 1
K = TypeVar("K")


class Span(NamedTuple):
    """struct bh_port_span: ports lo..hi of the protocols in protos."""

    lo: int
    hi: int
    protos: int
    mask: int


class Key(NamedTuple):
    """struct bh_inline_key: an exact-match key as two words, and its mask."""

    a: int
    b: int
    mask: int


class InlineSets(NamedTuple):
    """What one policy's value holds besides its masks. The keys are in the
    value's order: uid, gid, comm, executable."""

    in_maps: int
    spans: tuple[Span, ...]
    uid: tuple[Key, ...]
    gid: tuple[Key, ...]
    comm: tuple[Key, ...]
    exe: tuple[Key, ...]

    @property
    def keys(self) -> tuple[Key, ...]:
        return self.uid + self.gid + self.comm + self.exe

    def keys_of(self, dim: int) -> tuple[Key, ...]:
        return {DIM_UID: self.uid, DIM_GID: self.gid, DIM_COMM: self.comm, DIM_EXE: self.exe}[dim]

    def ends(self) -> tuple[int, int, int, int]:
        """uid_end, gid_end, comm_end, exe_end: where each range of keys ends."""
        uid_end = len(self.uid)
        gid_end = uid_end + len(self.gid)
        comm_end = gid_end + len(self.comm)
        return uid_end, gid_end, comm_end, comm_end + len(self.exe)


def comm_words(comm: bytes) -> tuple[int, int]:
    """A comm key as bh_match loads it: 16 bytes, zero-padded, as two
    native-order u64 words."""
    raw = comm[: COMM_LEN - 1].ljust(COMM_LEN, b"\0")
    return int.from_bytes(raw[:8], sys.byteorder), int.from_bytes(raw[8:], sys.byteorder)


def ports_answer(t: PolicyTables, proto: int, port: int) -> int:
    """The ports map's answer: the mask of proto's longest prefix holding
    port, else port_default (the LPM lookup bh_match makes on the map)."""
    for plen in range(_PORT_BITS, -1, -1):
        mask = t.ports.get((proto, port & ~((1 << (_PORT_BITS - plen)) - 1), plen))
        if mask is not None:
            return mask
    return t.port_default


def port_spans(t: PolicyTables) -> list[Span]:
    """The ports table cut into runs of ports with the same answer, per
    protocol; runs whose answer is port_default are left out (a port in no
    span takes the default), and equal runs of several protocols share a
    span."""
    # The answer can change only where some prefix starts or ends.
    cuts: dict[int, set[int]] = {}
    for proto, value, plen in t.ports:
        end = value + (1 << (_PORT_BITS - plen))
        cuts.setdefault(proto, {0}).update((value, end) if end <= _PORT_MAX else (value,))
    shared: dict[tuple[int, int, int], int] = {}
    for proto, at in cuts.items():
        starts = sorted(at)
        runs: list[list[int]] = []  # [lo, hi, mask], adjacent equal runs merged
        for i, lo in enumerate(starts):
            hi = starts[i + 1] - 1 if i + 1 < len(starts) else _PORT_MAX
            mask = ports_answer(t, proto, lo)
            if runs and runs[-1][2] == mask:
                runs[-1][1] = hi
            else:
                runs.append([lo, hi, mask])
        bit = PROTO_BITS[proto]
        for lo, hi, mask in runs:
            if mask != t.port_default:
                shared[(lo, hi, mask)] = shared.get((lo, hi, mask), 0) | bit
    return sorted(Span(lo, hi, protos, mask) for (lo, hi, mask), protos in shared.items())


def _keys(
    table: Mapping[K, int], default: int, words: Callable[[K], tuple[int, int]]
) -> tuple[Key, ...]:
    out = []
    for key, mask in table.items():
        if mask != default:  # a miss gives the default anyway
            out.append(Key(*words(key), mask))
    return tuple(sorted(out))


def inline_sets(t: PolicyTables) -> InlineSets:
    """Which dimensions of t fit in its value, and their entries there.
    Computed once per compiled policy (the tables are not changed after
    the compiler builds them)."""
    if isinstance(t.inline, InlineSets):
        return t.inline
    in_maps = 0
    spans: tuple[Span, ...] = tuple(port_spans(t))
    if len(spans) > INLINE_SPANS:
        in_maps |= DIM_PORT
        spans = ()
    # In the order bh_match consults them: a dimension that does not fit
    # in what is left goes to its map, and the next may still fit.
    dims = (
        (DIM_UID, _keys(t.uid, t.uid_default, lambda uid: (uid, 0))),
        (DIM_GID, _keys(t.gid, t.gid_default, lambda gid: (gid, 0))),
        (DIM_COMM, _keys(t.comm, t.comm_default, comm_words)),
        # bh_inline_key of an executable: its inode in a, its dev in b.
        (DIM_EXE, _keys(t.exe, t.exe_default, lambda dev_ino: (dev_ino[1], dev_ino[0]))),
    )
    room = INLINE_KEYS
    kept: list[tuple[Key, ...]] = []
    for dim, keys in dims:
        if len(keys) <= room:
            room -= len(keys)
            kept.append(keys)
        else:
            in_maps |= dim
            kept.append(())
    sets = InlineSets(in_maps, spans, *kept)
    t.inline = sets
    return sets


def span_mask(spans: tuple[Span, ...], proto: int, port: int, default: int) -> int:
    """bh_span_mask: the first span of proto holding port, else default."""
    bit = PROTO_BITS.get(proto, 0)
    for s in spans:
        if s.protos & bit and s.lo <= port <= s.hi:
            return s.mask
    return default


def key_mask(keys: tuple[Key, ...], a: int, b: int, default: int) -> int:
    """bh_key_mask: the mask of key (a, b) among keys, else default."""
    for k in keys:
        if k.a == a and k.b == b:
            return k.mask
    return default
