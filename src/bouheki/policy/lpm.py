"""Folding per-rule prefix sets into one longest-prefix-match table.

Each rule constrains a dimension with (prefix, included) entries: a value is
accepted by the rule iff the rule's longest entry containing it is included.
The kernel does one LPM lookup per dimension, so each table key must already
hold the answer of every rule: for a prefix P of the union U of all rules'
prefixes, mask(P) = rules not constraining the dimension | rules whose own
longest entry covering P is included. A value's longest match P in U then
gives the right mask: a rule's longest entry containing the value is its
longest entry covering P, since no entry of any rule lies between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Prefix(NamedTuple):
    """`plen` leading bits of `value`, in an address space of `width` bits.
    `space` separates independent spaces folded together (a protocol).
    A tuple: a large policy builds hundreds of thousands of them, and a
    frozen dataclass costs several times more to build and to hash."""

    space: int
    value: int  # host bits are zero
    plen: int
    width: int

    @staticmethod
    def of(space: int, value: int, plen: int, width: int) -> Prefix:
        return Prefix(space, value & ~((1 << (width - plen)) - 1), plen, width)


def fold(
    constraints: Mapping[int, Iterable[tuple[Prefix, bool]]], unconstrained: int
) -> dict[Prefix, int]:
    """constraints: rule index -> its (prefix, included) entries.

    Returns the folded mask of every prefix in the union. Walking a prefix's
    ancestors from the longest, the first entry a rule has decides for it.
    """
    # prefix -> (rules including it, rules excluding it)
    by_prefix: dict[Prefix, tuple[int, int]] = {}
    for rule, entries in constraints.items():
        bit = 1 << rule
        for prefix, included in entries:
            inc, exc = by_prefix.get(prefix, (0, 0))
            by_prefix[prefix] = (inc | bit, exc & ~bit) if included else (inc & ~bit, exc | bit)
    # Ancestors are looked up on plain tuples, and only at the prefix lengths
    # some entry of the same space has: building a Prefix for each of the up
    # to 129 ancestors of every prefix made this most of a large compile.
    flat = {(p.space, p.width, p.plen, p.value): v for p, v in by_prefix.items()}
    lengths: dict[tuple[int, int], list[int]] = {}
    for p in by_prefix:
        lengths.setdefault((p.space, p.width), []).append(p.plen)
    ladders = {k: sorted(set(v), reverse=True) for k, v in lengths.items()}
    every = 0
    for rule in constraints:
        every |= 1 << rule
    out: dict[Prefix, int] = {}
    for prefix, (inc, exc) in by_prefix.items():
        if inc | exc == every:
            # Every rule has an entry for this very prefix: its own longest
            # entry is this one, no ancestor can decide (a single list, the
            # usual large policy, never walks).
            out[prefix] = unconstrained | inc
            continue
        space, width = prefix.space, prefix.width
        mask = decided = 0
        for plen in ladders[(space, width)]:
            if plen > prefix.plen:
                continue
            value = prefix.value & ~((1 << (width - plen)) - 1)
            found = flat.get((space, width, plen, value))
            if found is not None:
                inc, exc = found
                mask |= inc & ~decided
                decided |= inc | exc
        out[prefix] = unconstrained | mask
    return out


def range_to_prefixes(lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """The aligned (value, plen) blocks that exactly cover [lo, hi]."""
    out: list[tuple[int, int]] = []
    while lo <= hi:
        size = (lo & -lo) if lo else 1 << width
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, width - size.bit_length() + 1))
        lo += size
    return out
