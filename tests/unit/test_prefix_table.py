"""The packed destination table (policy/lpm.py PrefixTable): the same
mapping as the dict it replaces, and the same longest match as a walk of
every prefix length, for IPv4 and IPv6; and what it saves."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterable, Mapping

import pytest

from bouheki.policy.lpm import PrefixTable


def random_table(rng: random.Random, bits: int, n: int) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    lengths = [0, 1, 8, 16, 23, 24, 31, 32] if bits == 32 else [0, 1, 32, 48, 64, 65, 127, 128]
    while len(out) < n:
        plen = rng.choice(lengths)
        # Few networks per length near the root, so that prefixes nest.
        value = rng.getrandbits(plen) << (bits - plen) if plen else 0
        out[(value, plen)] = rng.getrandbits(64)
    return out


def walk(table: dict[tuple[int, int], int], addr: int, bits: int) -> int | None:
    """The longest match the trie gives, by trying every length."""
    for plen in range(bits, -1, -1):
        mask = table.get((addr & ~((1 << (bits - plen)) - 1), plen))
        if mask is not None:
            return mask
    return None


@pytest.mark.parametrize("bits", [32, 128])
def test_the_packed_table_is_the_dict_it_replaces(bits: int) -> None:
    rng = random.Random(bits)
    for n in (0, 1, 7, 300):
        d = random_table(rng, bits, n)
        t = PrefixTable.of(d, bits)
        assert len(t) == len(d)
        assert t == d and dict(t.items()) == d and set(t) == set(d)
        assert sorted(t.values()) == sorted(d.values())
        assert t.masks == set(d.values())
        for key, mask in d.items():
            assert key in t and t[key] == mask
            value, plen = key
            if plen < bits:
                sibling = (value | 1 << (bits - plen - 1), plen + 1)
                assert (sibling in t) == (sibling in d)
        assert (1, 0) not in t and "x" not in t
        absent = next(
            k for k in ((rng.getrandbits(bits), bits) for _ in iter(int, 1)) if k not in d
        )
        with pytest.raises(KeyError):
            t[absent]


@pytest.mark.parametrize("bits", [32, 128])
def test_the_longest_match_is_the_tries(bits: int) -> None:
    rng = random.Random(7 + bits)
    for _ in range(20):
        d = random_table(rng, bits, rng.randrange(1, 200))
        t = PrefixTable.of(d, bits)
        keys = list(d)
        for _ in range(300):
            # Addresses inside listed prefixes, at their edges, and anywhere.
            value, plen = rng.choice(keys)
            span = (1 << (bits - plen)) - 1
            inside = value | rng.getrandbits(bits - plen) if span else value
            edges = (
                value,
                value | span,
                (value - 1) % (1 << bits),
                (value + span + 1) % (1 << bits),
            )
            for addr in (inside, rng.getrandbits(bits), *edges):
                assert t.longest(addr) == walk(d, addr, bits), (hex(addr), plen)


def test_a_prefix_takes_a_fraction_of_a_dict_entry() -> None:
    """100,000 /32s: the packed table holds them in less than a tenth of
    what the dict did (~170 bytes a prefix: bench/ section 5)."""
    d = {(0x0A000000 + 3 * i, 32): 1 << (i % 60) for i in range(100_000)}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        t = PrefixTable.of(d, 32)
        del d
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(t) == 100_000
    assert kept < 16 * 100_000, kept  # bytes: 4 for the network, 8 for the mask


def test_a_policy_varies_in_the_same_rules_whichever_table_it_holds() -> None:
    """dst_varies (which rules the destination can decide; bh_match and the
    twin skip the lookup without one) read from the packed table's distinct
    masks equals its reading of every entry of the dict."""
    from bouheki.policy.tables import Action, PolicyTables

    rng = random.Random(5)
    for default in (0, 0b1010, (1 << 64) - 1):
        d4 = {k: m & 0xFF for k, m in random_table(rng, 32, 200).items()}
        d6 = {k: m & 0xF00 for k, m in random_table(rng, 128, 50).items()}

        def tables(
            dst4: Mapping[tuple[int, int], int],
            dst6: Mapping[tuple[int, int], int],
            default: int = default,
        ) -> PolicyTables:
            return PolicyTables(
                1, "p", 0, Action.ALLOW, 12, 0, [], dst4=dst4, dst6=dst6, dst_default=default
            )

        packed = tables(PrefixTable.of(d4, 32), PrefixTable.of(d6, 128))
        plain = tables(d4, d6)
        assert packed.dst_varies == plain.dst_varies
        assert plain.dst_varies == _or(m ^ default for m in [*d4.values(), *d6.values()])


def _or(masks: Iterable[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out
