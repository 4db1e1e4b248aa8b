"""common/memory.py: after a bulk build is freed, give_back() returns the C
heap's free pages to the system, which glibc keeps while a later
allocation pins the heap's top (what a reload leaves: bench/ section 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = textwrap.dedent("""
    from bouheki.common import memory

    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    base = rss_mib()
    # 100,000 blocks of 1,000 bytes: from malloc's heap, not Python's arenas.
    built = [bytearray(1000) for _ in range(100_000)]
    pin = bytearray(1000)  # allocated last: the heap's top stays in use
    del built
    freed = rss_mib()
    assert memory.give_back()
    print(base, freed, rss_mib())
""")


def test_freed_pages_go_back_to_the_system() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC)},
    ).stdout
    base, freed, after = (float(x) for x in out.split())
    assert freed - base > 60, (base, freed, after)  # glibc kept them...
    assert after - base < 10, (base, freed, after)  # ...until given back
