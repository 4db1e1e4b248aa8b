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

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple


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


class _Column:
    """Fixed-width big-endian unsigned ints packed in one bytes object, for
    IPv6 networks (no array type holds 128 bits): a sorted column bisect
    can search, since big-endian bytes sort as the ints do."""

    __slots__ = ("_blob", "_width")

    def __init__(self, values: Iterable[int], width: int) -> None:
        self._blob = b"".join(v.to_bytes(width, "big") for v in values)
        self._width = width

    def __len__(self) -> int:
        return len(self._blob) // self._width

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(i)
        w = self._width
        return int.from_bytes(self._blob[i * w : (i + 1) * w], "big")

    def __iter__(self) -> Iterator[int]:
        blob, w = self._blob, self._width
        for at in range(0, len(blob), w):
            yield int.from_bytes(blob[at : at + w], "big")


class PrefixTable(Mapping[tuple[int, int], int]):
    """A folded destination table, (network as int, prefix length) -> mask,
    packed: per prefix length, the sorted networks in one array and their
    masks in another. ~12 bytes an IPv4 prefix (24 an IPv6 one) against
    ~170 for a dict entry: the daemon keeps the running policy's tables for
    Explain, events and the twin, and a long prefix list is their bulk. It
    also kept the arenas of the freed parse, among whose objects the dict's
    were allocated (bench/ section 5). Read-only once built."""

    __slots__ = ("_bits", "_len", "_lengths", "masks")

    def __init__(self, by_length: Mapping[int, Mapping[int, int]], bits: int) -> None:
        """by_length: prefix length -> {network as int: mask}."""
        self._bits = bits
        # Longest first: the order a lookup tries them in.
        self._lengths: list[tuple[int, Any, array[int]]] = []
        self._len = 0
        for plen in sorted(by_length, reverse=True):
            table = by_length[plen]
            networks = sorted(table)
            column = array("I", networks) if bits <= 32 else _Column(networks, bits // 8)
            self._lengths.append((plen, column, array("Q", map(table.__getitem__, networks))))
            self._len += len(networks)
        # The distinct masks, a handful however long the table: what a
        # policy's X_varies is computed from, on every Explain.
        self.masks: frozenset[int] = frozenset().union(*(m for _, _, m in self._lengths))

    @classmethod
    def of(cls, items: Mapping[tuple[int, int], int], bits: int) -> PrefixTable:
        by_length: dict[int, dict[int, int]] = {}
        for (value, plen), mask in items.items():
            by_length.setdefault(plen, {})[value] = mask
        return cls(by_length, bits)

    def _find(self, value: int, plen: int) -> int | None:
        for length, column, masks in self._lengths:
            if length == plen:
                i = bisect_left(column, value)
                if i < len(column) and column[i] == value:
                    return masks[i]  # type: ignore[no-any-return]
                return None
        return None

    def __getitem__(self, key: tuple[int, int]) -> int:
        mask = self._find(*key)
        if mask is None:
            raise KeyError(key)
        return mask

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self._find(*key) is not None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for plen, column, _ in self._lengths:
            for value in column:
                yield (value, plen)

    def __len__(self) -> int:
        return self._len

    def items(self) -> Iterator[tuple[tuple[int, int], int]]:  # type: ignore[override]
        for plen, column, masks in self._lengths:
            for value, mask in zip(column, masks):
                yield (value, plen), mask

    def values(self) -> Iterator[int]:  # type: ignore[override]
        for _, _, masks in self._lengths:
            yield from masks

    def longest(self, addr: int) -> int | None:
        """The mask of the longest prefix holding addr (the LPM trie's
        lookup), trying only the lengths the table has."""
        for plen, column, masks in self._lengths:
            value = addr & ~((1 << (self._bits - plen)) - 1)
            i = bisect_left(column, value)
            if i < len(column) and column[i] == value:
                return masks[i]  # type: ignore[no-any-return]
        return None
