"""Pack compiled PolicyTables into the kernel's key/value structs of one generation."""

from __future__ import annotations

import ctypes as ct
import ipaddress
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..policy.inline import DIM_COMM, DIM_EXE, DIM_GID, DIM_PORT, DIM_UID, inline_sets
from ..policy.tables import LPM_SCOPE_BITS, PORT_PROTO_BITS, PolicyTables
from . import layout

Entry = tuple[str, ct.Structure, ct.Structure | ct.c_uint64]


def _mask(v: int) -> ct.c_uint64:
    return ct.c_uint64(v)


def policy_value(gen: int, t: PolicyTables, filter4: int = 0) -> layout.Policy:
    sets = inline_sets(t)
    uid_end, gid_end, comm_end, exe_end = sets.ends()
    value = layout.Policy(
        gen=gen,
        allow_bits=t.allow_bits,
        valid_bits=t.valid_bits,
        dst_default=t.dst_default,
        port_default=t.port_default,
        comm_default=t.comm_default,
        exe_default=t.exe_default,
        uid_default=t.uid_default,
        gid_default=t.gid_default,
        dst_varies=t.dst_varies,
        port_varies=t.port_varies,
        comm_varies=t.comm_varies,
        exe_varies=t.exe_varies,
        uid_varies=t.uid_varies,
        gid_varies=t.gid_varies,
        flags=t.flags,
        default_action=int(t.default_action),
        in_maps=sets.in_maps,
        id=t.policy_id,
        n_spans=len(sets.spans),
        uid_end=uid_end,
        gid_end=gid_end,
        comm_end=comm_end,
        exe_end=exe_end,
        filter4=filter4,
    )
    for slot, span in zip(value.spans, sets.spans):
        slot.mask, slot.lo, slot.hi, slot.protos = span.mask, span.lo, span.hi, span.protos
    for slot, key in zip(value.keys, sets.keys):
        slot.a, slot.b, slot.mask = key.a, key.b, key.mask
    return value


def held_in_maps(t: PolicyTables) -> dict[str, Mapping[Any, int]]:
    """Per kernel map, the table of t whose keys it holds: empty for a
    dimension the policy's value holds inline (policy/inline.py)."""
    in_maps = inline_sets(t).in_maps

    def held(dim: int, table: Mapping[Any, int]) -> Mapping[Any, int]:
        return table if in_maps & dim else {}

    return {
        "dst4": t.dst4,
        "dst6": t.dst6,
        "ports": held(DIM_PORT, t.ports),
        "comms": held(DIM_COMM, t.comm),
        "exes": held(DIM_EXE, t.exe),
        "uids": held(DIM_UID, t.uid),
        "gids": held(DIM_GID, t.gid),
    }


def filter_slots(tables: Iterable[PolicyTables]) -> dict[int, int]:
    """Policy id -> its filter (1..FILTERS) for the policies with the most
    IPv4 prefixes, those whose trie walks are longest (bouheki.h)."""
    ranked = sorted((t for t in tables if t.dst4), key=lambda t: (-len(t.dst4), t.policy_id))
    return {t.policy_id: n for n, t in enumerate(ranked[: layout.FILTERS], 1)}


def filter_words(dst4: Mapping[tuple[int, int], int]) -> array[int]:
    """The filter of a policy's IPv4 prefixes, as the hook reads it: bit b
    of word b // 64 (block b, the address >> 10) is set when a prefix meets
    block b: one inside it, or one that holds it. The bit of an address in
    no prefix may be set (a block shared with one), never the other way."""
    shift = 32 - layout.FILTER_BLOCK_BITS
    words = array("Q", bytes(8 * layout.FILTER_PAGES * layout.FILTER_PAGE_WORDS))
    for addr, plen in dst4:
        first = addr >> shift
        if plen >= layout.FILTER_BLOCK_BITS:
            words[first >> 6] |= 1 << (first & 63)
            continue
        last = first + (1 << (layout.FILTER_BLOCK_BITS - plen)) - 1
        if last - first >= 63:  # whole words (a /16 is 64 blocks, aligned)
            words[first >> 6 : (last >> 6) + 1] = array("Q", [(1 << 64) - 1]) * (
                (last >> 6) - (first >> 6) + 1
            )
            continue
        for block in range(first, last + 1):
            words[block >> 6] |= 1 << (block & 63)
    return words


def filter_entries(gen: int, filter4: int, t: PolicyTables) -> Iterator[Entry]:
    """The pages of t's filter, every one of them: the slot may hold the
    bits of an earlier policy of the same parity."""
    words = filter_words(t.dst4)
    per = layout.FILTER_PAGE_WORDS
    first = layout.filter_page(gen, filter4, 0)
    for n in range(layout.FILTER_PAGES):
        page = layout.FilterPage.from_buffer_copy(words[n * per : (n + 1) * per])
        yield "filters", layout.FilterPageSlot(first + n), page


def entries(gen: int, t: PolicyTables, filter4: int = 0) -> Iterator[Entry]:
    """(map name, key, value) for every entry of one policy in generation
    gen; filter4: its filter (filter_slots), 0 for none."""
    pid = t.policy_id
    if filter4:
        yield from filter_entries(gen, filter4, t)
    value = policy_value(gen, t, filter4)
    yield "policies", layout.PolicySlot(layout.policy_slot(gen, pid)), value
    held = held_in_maps(t)
    for (addr, plen), mask in held["dst4"].items():
        k4 = layout.Dst4Key(prefixlen=LPM_SCOPE_BITS + plen, gen=gen, policy=pid)
        k4.addr[:] = ipaddress.IPv4Address(addr).packed
        yield "dst4", k4, _mask(mask)
    for (addr, plen), mask in held["dst6"].items():
        k6 = layout.Dst6Key(prefixlen=LPM_SCOPE_BITS + plen, gen=gen, policy=pid)
        k6.addr[:] = ipaddress.IPv6Address(addr).packed
        yield "dst6", k6, _mask(mask)
    ports, comms, exes, uids, gids = (held[m] for m in ("ports", "comms", "exes", "uids", "gids"))
    for (proto, port, plen), mask in ports.items():
        kp = layout.PortKey(
            prefixlen=LPM_SCOPE_BITS + PORT_PROTO_BITS + plen, gen=gen, policy=pid, proto=proto
        )
        kp.port[:] = port.to_bytes(2, "big")
        yield "ports", kp, _mask(mask)
    for name, mask in comms.items():
        yield "comms", layout.CommKey(gen=gen, policy=pid, comm=name[:15]), _mask(mask)
    for (dev, ino), mask in exes.items():
        yield "exes", layout.ExeKey(gen=gen, policy=pid, ino=ino, dev=dev), _mask(mask)
    for uid, mask in uids.items():
        yield "uids", layout.IdKey(gen=gen, policy=pid, id=uid), _mask(mask)
    for gid, mask in gids.items():
        yield "gids", layout.IdKey(gen=gen, policy=pid, id=gid), _mask(mask)


def scope_entry(gen: int, cgroup_id: int, policy_id: int) -> Entry:
    return (
        "scopes",
        layout.ScopeKey(gen=gen, cgroup_id=cgroup_id),
        layout.ScopeVal(policy=policy_id),
    )
