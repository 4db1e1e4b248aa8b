"""Compile bpf/bouheki.bpf.c with bcc and attach its programs, or adopt the
identical programs a predecessor left pinned.

With pins (the daemon), the compile runs in a child process
(kernel/compiler.py) and the daemon holds only file descriptors: it never
loads bcc or LLVM. Without (the lab's tests), bcc compiles in-process and
nothing is pinned."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..policy.tables import MAX_POLICIES
from . import btf, compiler, requirements
from .adopt import adopt_links, obj_get, open_maps
from .pinning import Pins, layout_tag

BPF_SOURCE = compiler.BPF_SOURCE


def bpf_dir() -> Path:
    """The BPF sources: $BOUHEKI_BPF_DIR, the installed copy, or the checkout's."""
    env = os.environ.get("BOUHEKI_BPF_DIR")
    candidates = [Path(env)] if env else []
    candidates += [
        Path("/usr/share/bouheki/bpf"),
        Path(__file__).resolve().parents[3] / "bpf",
    ]
    for c in candidates:
        if (c / BPF_SOURCE).exists():
            return c
    raise requirements.KernelUnsupported(
        f"{BPF_SOURCE} not found in " + ", ".join(str(c) for c in candidates)
    )


def program_sources(src: Path) -> list[Path]:
    """The files the programs are built from: the source and every header it
    includes from bpf/, followed through their own includes. The adoption
    key hashes them all, so an edit to any of them compiles afresh."""
    out: list[Path] = []
    todo = [src / BPF_SOURCE]
    while todo:
        path = todo.pop(0)
        if path in out:
            continue
        out.append(path)
        for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.M):
            todo.append(src / name)
    return out


@dataclass(frozen=True)
class MapSizes:
    """Capacities of the kernel maps. Two generations coexist during a reload,
    so each must hold twice the largest policy set it is meant for."""

    scopes: int = 65536
    dst4: int = 262144
    dst6: int = 65536
    ports: int = 65536
    ident: int = 16384
    ringbuf_pages: int = 256

    def capacities(self) -> dict[str, int]:
        """max_entries of the maps that hold policy entries (as bouheki.bpf.c sizes them)."""
        ident = self.ident
        return {
            **{"dst4": self.dst4, "dst6": self.dst6, "ports": self.ports},
            **{"comms": ident, "exes": ident, "uids": ident, "gids": ident},
            "policies": 2 * MAX_POLICIES,
        }

    def cflags(self) -> list[str]:
        return [
            f"-DBH_MAX_SCOPES={self.scopes}",
            f"-DBH_MAX_DST4={self.dst4}",
            f"-DBH_MAX_DST6={self.dst6}",
            f"-DBH_MAX_PORTS={self.ports}",
            f"-DBH_MAX_IDENT={self.ident}",
            f"-DBH_RINGBUF_PAGES={self.ringbuf_pages}",
        ]


class Programs:
    """The attached programs, by their maps' file descriptors: either
    compiled by bcc in this process (bpf is set, nothing pinned), or pinned
    (compiled by a child now, or adopted from a predecessor)."""

    def __init__(
        self,
        bpf: Any,
        sizes: MapSizes,
        pins: Pins | None = None,
        map_fds: dict[str, int] | None = None,
        link_fds: list[int] | None = None,
        compiled: bool = True,
    ) -> None:
        self.bpf = bpf
        self.sizes = sizes
        self.pins = pins
        self._map_fds = map_fds
        self._link_fds = link_fds or []
        self.compiled = compiled  # compiled for this instance, rather than adopted
        self.adopted: list[str] = []  # predecessor instances whose links we replaced or took
        self._keep_layout: str | None = None  # set while predecessors still enforce

    def pending_release(self) -> list[str]:
        """Earlier instances whose programs still enforce beside ours."""
        if self.pins is None or self._keep_layout is None:
            return []
        return list(self.pins.others())

    def release_predecessors(self) -> list[str]:
        """Unpin the programs of earlier instances, once ours enforce the
        policy (Enforcer.apply): until then both judge and theirs block what
        the policy denies. Returns the instances released."""
        if self.pins is None or self._keep_layout is None:
            return []
        released = self.pins.release_others()
        self.pins.prune_layouts(keep=self._keep_layout)
        self._keep_layout = None
        self.adopted += released
        return released

    def map_fd(self, name: str) -> int:
        if self._map_fds is not None:
            return self._map_fds[name]
        return int(self.bpf[name.encode()].map_fd)

    def close(self, keep_pinned: bool = False) -> None:
        """Detach, unless keep_pinned: then the pinned links stay attached and
        the pinned maps keep the policy, for the next instance to adopt."""
        if self.pins is not None and not keep_pinned:
            self.pins.remove_all()
        if self.bpf is not None:
            self.bpf.cleanup()
        for fd in [*self._link_fds, *(self._map_fds or {}).values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._link_fds, self._map_fds = [], {}


def load(
    sizes: MapSizes | None = None,
    check: bool = True,
    pins: Pins | None = None,
    adopt: bool = True,
) -> Programs:
    """Adopt identical pinned programs, or compile, load and attach. bcc
    attaches LSM_PROBE and RAW_TRACEPOINT_PROBE functions as it loads them;
    with no generation active yet, the hooks allow everything until the
    first apply."""
    sizes = sizes or MapSizes()
    if check:
        requirements.check()
    src = bpf_dir()
    try:
        offsets = btf.cflags()
    except btf.BTFError as e:
        raise requirements.KernelUnsupported(
            f"cannot read kernel struct layouts from BTF: {e} (the kernel needs "
            "CONFIG_DEBUG_INFO_BTF=y)"
        ) from e
    cflags = [f"-I{src}", "-Wno-macro-redefined", *sizes.cflags(), *offsets]
    if pins is None:
        return Programs(compiler.compile_programs(src, cflags), sizes)
    tag = layout_tag(program_sources(src), cflags)
    taken = adopt_links(pins, tag, (src / BPF_SOURCE).read_text()) if adopt else None
    if taken is not None:
        predecessor, map_fds, link_fds = taken
        programs = Programs(None, sizes, pins, map_fds=map_fds, link_fds=link_fds, compiled=False)
        programs.adopted = [predecessor]
        programs._keep_layout = tag
        # Adopted maps hold the running policy: the predecessors may go now.
        programs.release_predecessors()
        return programs
    cflags.append(f'-DBH_PIN_DIR="{pins.maps_dir(tag)}"')
    _compile_in_child(src, cflags, pins, tag)
    programs = _open_own(pins, tag, sizes)
    # Compiled ones start empty (no generation: they judge nothing): the
    # predecessors' programs keep blocking until the first apply fills ours.
    programs._keep_layout = tag
    return programs


def _compile_in_child(src: Path, cflags: list[str], pins: Pins, tag: str) -> None:
    """kernel/compiler.py in a process of its own, with this interpreter."""
    request = {"src": str(src), "cflags": cflags, "root": str(pins.root), "tag": tag,
               "instance": pins.instance}  # fmt: skip
    # The package as this process found it (a checkout's src/ included).
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "bouheki.kernel.compiler"],
        input=json.dumps(request), capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    why = r.stderr.strip().splitlines()
    if r.returncode == compiler.EXIT_UNSUPPORTED:
        raise requirements.KernelUnsupported(why[-1] if why else "the compiler gave no reason")
    if r.returncode != 0:
        detail = "\n".join(why[-20:]) or f"exit status {r.returncode}"
        raise RuntimeError(f"compiling the BPF programs failed: {detail}")


def _open_own(pins: Pins, tag: str, sizes: MapSizes) -> Programs:
    """The maps and links the child pinned for this instance."""
    map_fds = open_maps(pins.maps_dir(tag))
    if map_fds is None:
        raise RuntimeError(f"the compiler left no complete set of maps in {pins.maps_dir(tag)}")
    links = sorted(pins.links_dir(tag).iterdir())
    link_fds = [obj_get(p) for p in links]
    return Programs(None, sizes, pins, map_fds=map_fds, link_fds=link_fds, compiled=True)
