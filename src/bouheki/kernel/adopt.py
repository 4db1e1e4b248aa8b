"""Adopt a predecessor's pinned programs instead of compiling our own.

When the pinned links of a previous instance belong to the very layout this
daemon would build (same BPF source, same compile flags, same kernel struct
offsets: kernel/pinning.py's layout tag), the programs attached are exactly
the ones a compile would produce. The new instance then takes their links
over by renaming the pin directory, opens the pinned maps, and compiles
nothing: the programs never stop judging, and a restart costs seconds
instead of the half minute clang takes."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from . import bpfsys
from .maps import MAP_NAMES
from .pinning import Pins

# Every map the daemon touches by file descriptor: Maps', the counters', the events'.
MAPS = (*MAP_NAMES, "counters", "gcounters", "events")
_PROBE = re.compile(r"^\s*(LSM_PROBE|RAW_TRACEPOINT_PROBE)\((\w+)", re.M)


def program_names(source: str) -> set[str]:
    """The names bcc gives the links of these programs: lsm__<hook> for an
    LSM_PROBE, the tracepoint for a RAW_TRACEPOINT_PROBE."""
    return {f"lsm__{n}" if kind == "LSM_PROBE" else n for kind, n in _PROBE.findall(source)}


def obj_get(path: Path) -> int:
    try:
        return bpfsys.obj_get(str(path))
    except OSError as e:
        raise OSError(e.errno, f"cannot open pinned {path}: {e.strerror}") from None


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def open_maps(maps_dir: Path) -> dict[str, int] | None:
    """All of them or none: a layout with a map missing cannot be adopted."""
    fds: dict[str, int] = {}
    try:
        for name in MAPS:
            fds[name] = obj_get(maps_dir / name)
    except OSError:
        _close_all(fds.values())
        return None
    return fds


def adopt_links(pins: Pins, tag: str, source: str) -> tuple[str, dict[str, int], list[int]] | None:
    """Take over the newest complete set of links of this layout: returns
    (predecessor instance, map fds, link fds), or None to compile instead."""
    want = program_names(source)
    for name, progs in pins.link_sets(tag):
        if progs != want:
            continue  # a predecessor that died while pinning: not ours to trust
        fds = open_maps(pins.maps_dir(tag))
        if fds is None:
            return None
        try:
            links_dir = pins.take_over(name, tag)
        except OSError:
            _close_all(fds.values())
            continue  # gone meanwhile
        links: list[int] = []
        try:
            for p in sorted(links_dir.iterdir()):
                links.append(obj_get(p))
        except OSError:
            # The pins are ours now and still hold the programs attached;
            # holding fds as well only matters for a clean stop.
            _close_all(links)
            links = []
        return name.partition("_")[2], fds, links
    return None
