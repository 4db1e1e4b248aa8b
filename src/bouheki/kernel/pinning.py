"""Keep enforcement in the kernel while no daemon runs.

The maps and the programs' links live in the BPF file system under
/sys/fs/bpf/bouheki: a crashed daemon leaves its programs attached and its
policy in force, and a starting daemon adopts the maps, attaches its own
programs, and only then lets go of its predecessor's (so there is no moment
with nothing attached). `systemctl stop` detaches and removes everything,
because that is what the admin asked for; a restart keeps it.

    /sys/fs/bpf/bouheki/<layout>/maps/<map>              maps of one program layout
    /sys/fs/bpf/bouheki/links/<layout>_<instance>/<prog> links of one daemon instance

<layout> hashes the BPF source and its compile flags: a daemon whose
programs lay their maps out differently (an upgrade) starts with fresh maps,
while the old programs keep enforcing the old ones until it has attached.
A daemon whose layout is the same adopts the links as they are: the programs
it would compile are the ones already attached (kernel/adopt.py). No name
holds a dot: the BPF file system refuses them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from . import bpfsys

ROOT = Path("/sys/fs/bpf/bouheki")


def layout_tag(sources: Iterable[Path], cflags: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in sources:
        h.update(p.read_bytes())
    for f in cflags:
        h.update(f.encode() + b"\0")
    return h.hexdigest()[:16]


class Pins:
    def __init__(self, root: Path = ROOT, instance: str | None = None) -> None:
        self.root = root
        self.instance = instance or f"{os.getpid()}-{os.urandom(4).hex()}"

    def maps_dir(self, tag: str) -> Path:
        d = self.root / tag / "maps"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _links(self) -> Path:
        return self.root / "links"

    def links_dir(self, tag: str) -> Path:
        return self._links() / f"{tag}_{self.instance}"

    def pin_links(self, fds: dict[str, int], tag: str) -> list[Path]:
        """Pin every link (program name -> link fd) under this instance."""
        d = self.links_dir(tag)
        d.mkdir(parents=True, exist_ok=True)
        pinned = []
        for name, fd in fds.items():
            path = d / name
            try:
                bpfsys.obj_pin(fd, str(path))
            except OSError as e:
                raise OSError(e.errno, f"pinning {path} failed: {e.strerror}") from None
            pinned.append(path)
        return pinned

    def link_sets(self, tag: str) -> list[tuple[str, set[str]]]:
        """Other instances' links of this layout, newest first: (instance, program names)."""
        links = self._links()
        if not links.is_dir():
            return []
        found = [d for d in links.iterdir() if d.name.startswith(f"{tag}_") and d.is_dir()]
        found.sort(key=lambda d: d.stat().st_mtime_ns, reverse=True)
        return [(d.name, {p.name for p in d.iterdir()}) for d in found]

    def take_over(self, name: str, tag: str) -> Path:
        """Make another instance's pinned links ours. A rename: the pins, and
        so the attachments, exist at every moment."""
        target = self.links_dir(tag)
        (self._links() / name).rename(target)
        return target

    def others(self) -> dict[str, Path]:
        """The link directories of every other instance, by instance."""
        links = self._links()
        if not links.is_dir():
            return {}
        return {
            d.name.partition("_")[2] or d.name: d
            for d in links.iterdir()
            if not d.name.endswith(f"_{self.instance}")
        }

    def release_others(self) -> list[str]:
        """Unpin the links of every other instance: their programs detach
        once no file descriptor holds them (their daemons are gone)."""
        others = self.others()
        for d in others.values():
            shutil.rmtree(d, ignore_errors=True)
        return list(others)

    def prune_layouts(self, keep: str) -> None:
        """Maps of other layouts: no program uses them once the links are gone."""
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name not in (keep, "links"):
                    shutil.rmtree(d, ignore_errors=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
