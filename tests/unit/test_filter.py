"""The filter in front of a policy's IPv4 destination trie (bouheki.h
bh_filter_page, kernel/pack.py): a clear bit must mean that the trie misses,
so the hook may take the default without walking it."""

from __future__ import annotations

import ctypes as ct
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from test_generation import DictMaps

from bouheki.kernel import layout, pack
from bouheki.kernel.generation import GenerationSwap
from bouheki.policy.lpm import PrefixTable
from bouheki.policy.tables import Action, Origin, PolicyTables

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "bouheki.h"
BLOCK_SHIFT = 32 - layout.FILTER_BLOCK_BITS


def hook_reads(words: list[int] | object, addr: int) -> int:
    """The bit bh_filter_hit reads for addr, from the words of one filter
    (its pages end to end): page addr >> 25, word (addr >> 16) & 511, bit
    (addr >> 10) & 63."""
    page = addr >> 25
    word = (addr >> 16) & (layout.FILTER_PAGE_WORDS - 1)
    return (words[page * layout.FILTER_PAGE_WORDS + word] >> ((addr >> 10) & 63)) & 1  # type: ignore[index]


def random_dst4(rng: random.Random, n: int) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    while len(out) < n:
        plen = rng.choice([0, 4, 8, 15, 16, 17, 20, 21, 22, 23, 24, 30, 32, 32, 32])
        value = rng.getrandbits(32) & ~((1 << (32 - plen)) - 1) if plen else 0
        out[(value, plen)] = 1
    return out


def meets_block(table: dict[tuple[int, int], int], block: int) -> bool:
    lo = block << BLOCK_SHIFT
    hi = lo + (1 << BLOCK_SHIFT) - 1
    for value, plen in table:
        end = value + (1 << (32 - plen)) - 1
        if value <= hi and lo <= end:
            return True
    return False


def longest(table: dict[tuple[int, int], int], addr: int) -> int | None:
    for plen in range(32, -1, -1):
        mask = table.get((addr & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF, plen))
        if mask is not None:
            return mask
    return None


@pytest.mark.parametrize("n", [0, 1, 5, 40])
def test_a_clear_bit_means_the_trie_misses(n: int) -> None:
    rng = random.Random(n)
    for _ in range(5 if n else 1):
        table = random_dst4(rng, n) if n else {}
        if n:
            table.pop((0, 0), None)  # a /0 sets every bit: tried apart below
        words = pack.filter_words(PrefixTable.of(table, 32))
        assert len(words) == layout.FILTER_PAGES * layout.FILTER_PAGE_WORDS
        # Addresses in, next to and far from the prefixes.
        probes = [rng.getrandbits(32) for _ in range(300)]
        for value, plen in table:
            size = 1 << (32 - plen)
            probes += [value, value + size - 1, (value - 1) % 2**32, (value + size) % 2**32]
            probes += [value ^ (1 << rng.randrange(32))]
        for addr in probes:
            bit = hook_reads(words, addr)
            assert bit == meets_block(table, addr >> BLOCK_SHIFT), hex(addr)
            if not bit:
                assert longest(table, addr) is None, hex(addr)
        set_bits = sum(bin(w).count("1") for w in words)
        assert set_bits == sum(1 for b in _candidate_blocks(table) if meets_block(table, b))


def _candidate_blocks(table: dict[tuple[int, int], int]) -> set[int]:
    out: set[int] = set()
    for value, plen in table:
        first = value >> BLOCK_SHIFT
        out.update(range(first, first + (1 << max(0, layout.FILTER_BLOCK_BITS - plen))))
    return out


def test_a_default_route_sets_every_bit() -> None:
    words = pack.filter_words({(0, 0): 1})
    assert all(w == (1 << 64) - 1 for w in words)


def _tables(pid: int, n: int) -> PolicyTables:
    dst4 = {((10 << 24) + (i << 8), 24): 1 for i in range(n)}
    return PolicyTables(
        policy_id=pid, name=f"p{pid}", flags=0, default_action=Action.ALLOW, rule_count=1,
        allow_bits=0, origins=[Origin("f", 1), Origin("f", 1)], dst4=dst4,
    )  # fmt: skip


def test_the_policies_with_the_most_prefixes_get_the_filters() -> None:
    tables = [_tables(pid, n) for pid, n in enumerate([3, 0, 50, 7, 50, 1, 9, 2])]
    slots = pack.filter_slots(tables)
    # The 4 largest, ties by id; none for a policy without IPv4 prefixes.
    assert slots == {2: 1, 4: 2, 6: 3, 3: 4}
    assert pack.filter_slots([_tables(0, 0)]) == {}


class ArrayMaps(DictMaps):
    """test_generation's maps, with the filters array kept as the kernel
    keeps it: kernel/maps.py leaves its pages at a delete."""

    def delete(self, name: str, key: ct.Structure) -> None:
        if name != "filters":
            super().delete(name, key)

    def policy(self, gen: int, pid: int) -> layout.Policy:
        key = bytes(layout.PolicySlot(layout.policy_slot(gen, pid)))
        return layout.Policy.from_buffer_copy(self.maps["policies"][key])

    def filter_bit(self, gen: int, filter4: int, addr: int) -> int:
        """The bit the hook reads for addr in filter4 of gen's parity."""
        first = layout.filter_page(gen, filter4, 0)
        words = [
            w
            for n in range(layout.FILTER_PAGES)
            for w in layout.FilterPage.from_buffer_copy(
                self.maps["filters"][bytes(layout.FilterPageSlot(first + n))]
            ).w
        ]
        return hook_reads(words, addr)


def test_a_swap_writes_each_filter_whole_in_its_parity() -> None:
    io = ArrayMaps()
    swap = GenerationSwap(io)
    inside, outside = (10 << 24) + (5 << 8) + 7, (11 << 24) + 1
    # Generation 1: policy 0 has the filter; generation 2 (other parity)
    # gives policy 1 the same slot number.
    g1 = swap.apply([_tables(0, 10)], fill_scopes=lambda s: None)
    assert io.policy(g1, 0).filter4 == 1
    assert io.filter_bit(g1, 1, inside) == 1 and io.filter_bit(g1, 1, outside) == 0
    g2 = swap.apply([_tables(1, 2), _tables(0, 0)], fill_scopes=lambda s: None)
    assert io.policy(g2, 1).filter4 == 1 and io.policy(g2, 0).filter4 == 0
    assert io.filter_bit(g2, 1, inside) == 0  # policy 1's 10.0.0/24, 10.0.1/24 only
    assert io.filter_bit(g1, 1, inside) == 1  # the other parity's is untouched
    # Generation 3 (gen 1's parity) rewrites slot 1 whole: no bit of
    # policy 0's from generation 1 is left.
    g3 = swap.apply([_tables(2, 1)], fill_scopes=lambda s: None)
    assert g3 % 2 == g1 % 2
    assert io.filter_bit(g3, 1, inside) == 0 and io.filter_bit(g3, 1, 10 << 24) == 1
    pages = {layout.FilterPageSlot.from_buffer_copy(k).index for k in io.maps["filters"]}
    assert pages == set(range(0, layout.FILTER_PAGES)) | set(
        range(layout.FILTERS * layout.FILTER_PAGES, (layout.FILTERS + 1) * layout.FILTER_PAGES)
    )


def test_filter_page_matches_the_header(tmp_path: Path) -> None:
    """layout.filter_page is bh_filter_page, compiled and run."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler on this machine")
    cases = [
        (g, f, a)
        for g in (1, 2, 0xFFFFFFFF)
        for f in range(1, layout.FILTERS + 1)
        for a in (0, 0x0A000001, 0x7F000001, 0xFFFFFFFF, 0x01FFFFFF, 0x02000000)
    ]
    calls = "".join(f'printf("%u\\n", bh_filter_page({g}u, {f}u, {a}u));\n' for g, f, a in cases)
    (tmp_path / "f.c").write_text(
        "#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n{calls}return 0; }}\n'
    )
    subprocess.run([cc, "-o", str(tmp_path / "f"), str(tmp_path / "f.c")], check=True)
    out = subprocess.run([str(tmp_path / "f")], check=True, capture_output=True, text=True)
    assert [int(x) for x in out.stdout.split()] == [layout.filter_page(*c) for c in cases]
    # Every page of both parities' filters is inside the array.
    assert layout.filter_page(1, layout.FILTERS, 0xFFFFFFFF) == (
        2 * layout.FILTERS * layout.FILTER_PAGES - 1
    )
