"""bh_before_nul (bpf/bouheki.bpf.c) keeps the bytes of a word before its
first NUL with a bit trick instead of a byte loop (which the verifier would
walk path by path). The trick, step for step in Python, against the plain
definition, for every position of the first NUL and any bytes around it."""

from __future__ import annotations

import random

ONES = 0x0101010101010101
HIGHS = 0x8080808080808080
MASK64 = (1 << 64) - 1


def before_nul(w: int) -> tuple[int, bool]:
    t = ((w - ONES) & MASK64) & ~w & HIGHS
    if not t:
        return w, False
    lowest = t & -t
    return w & ((lowest >> 7) - 1), True


def plain(w: int) -> tuple[int, bool]:
    data = w.to_bytes(8, "little")
    if b"\0" not in data:
        return w, False
    kept = data.split(b"\0", 1)[0]
    return int.from_bytes(kept.ljust(8, b"\0"), "little"), True


def test_the_trick_is_the_definition() -> None:
    rng = random.Random(5)
    for _ in range(20000):
        data = bytearray(rng.choice([rng.randrange(256), 1, 0x80, 0xFF]) for _ in range(8))
        if rng.random() < 0.8:
            data[rng.randrange(8)] = 0  # a NUL somewhere, bytes after it anything
        w = int.from_bytes(data, "little")
        assert before_nul(w) == plain(w), data.hex()
    assert before_nul(0) == (0, True)
    assert before_nul(int.from_bytes(b"curl\0\x01\x00\x80", "little"))[0] == int.from_bytes(
        b"curl\0\0\0\0", "little"
    )
