from __future__ import annotations

import os
from pathlib import Path

import pytest

from bouheki.units import cgroupfs


def test_root_unified_and_hybrid() -> None:
    unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"
    hybrid = (
        "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    )
    assert cgroupfs.cgroup2_root(unified) == Path("/sys/fs/cgroup")
    assert cgroupfs.cgroup2_root(hybrid) == Path("/sys/fs/cgroup/unified")
    with pytest.raises(FileNotFoundError, match="cgroup v2"):
        cgroupfs.cgroup2_root("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n")


def test_walk_yields_parents_before_children(tmp_path: Path) -> None:
    for d in ("a/b/c", "a/d", "e"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "a" / "file").write_text("x")
    seen = [p.relative_to(tmp_path).as_posix() for p, _ in cgroupfs.walk(tmp_path)]
    assert sorted(seen) == [".", "a", "a/b", "a/b/c", "a/d", "e"]
    for i, p in enumerate(seen):
        if p != ".":
            parent = os.path.dirname(p) or "."
            assert seen.index(parent) < i
    ids = dict((p.relative_to(tmp_path).as_posix(), cid) for p, cid in cgroupfs.walk(tmp_path))
    assert ids["a/b"] == os.stat(tmp_path / "a" / "b").st_ino


def test_unit_path() -> None:
    root = Path("/sys/fs/cgroup")
    assert cgroupfs.unit_path(root, "/system.slice/x.service") == root / "system.slice/x.service"
