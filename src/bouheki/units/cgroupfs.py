"""The cgroup v2 tree: where it is mounted, cgroup ids, and a walk in the
order the generation swap needs (a directory before its children)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

CGROUP2_MAGIC_MOUNT_TYPES = ("cgroup2",)


def cgroup2_root(mounts: str | None = None) -> Path:
    """/sys/fs/cgroup on unified systems, /sys/fs/cgroup/unified on hybrid ones."""
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] in CGROUP2_MAGIC_MOUNT_TYPES:
            return Path(fields[1])
    raise FileNotFoundError("no cgroup2 file system is mounted (bouheki needs cgroup v2)")


def cgroup_id(path: Path) -> int:
    """A cgroup's id is its directory's inode number: what
    bpf_get_current_cgroup_id() returns for a process inside it."""
    return os.stat(path).st_ino


def unit_path(root: Path, control_group: str) -> Path:
    """systemd's ControlGroup property ('/system.slice/x.service') under the mount."""
    return root / control_group.lstrip("/")


def walk(top: Path) -> Iterator[tuple[Path, int]]:
    """top and every cgroup below it, each yielded before its children are
    listed, so an entry written for a directory is in place before any child
    created afterwards is copied from it in the kernel."""
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            cid = cgroup_id(d)
        except FileNotFoundError:
            continue  # removed meanwhile
        yield d, cid
        try:
            with os.scandir(d) as it:
                children = [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        stack.extend(sorted(children, reverse=True))


def mount_ns_inode(pid: int | str = 1) -> int:
    """The mount namespace of a process; PID 1's is the host's."""
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino
