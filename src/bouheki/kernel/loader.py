"""Compile bpf/bouheki.bpf.c with bcc and attach its programs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import btf, requirements

BPF_SOURCE = "bouheki.bpf.c"


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
    """The loaded and attached programs and their maps. Closing detaches."""

    def __init__(self, bpf: Any, sizes: MapSizes) -> None:
        self.bpf = bpf
        self.sizes = sizes

    def __getitem__(self, name: str) -> Any:
        return self.bpf[name.encode()]

    def close(self) -> None:
        self.bpf.cleanup()


def load(sizes: MapSizes | None = None, check: bool = True) -> Programs:
    """Compile, load and attach. bcc attaches LSM_PROBE and
    RAW_TRACEPOINT_PROBE functions as it loads them; with no generation
    active yet, the hooks allow everything until the first apply."""
    sizes = sizes or MapSizes()
    if check:
        requirements.check()
    try:
        from bcc import BPF
    except ImportError as e:
        raise requirements.KernelUnsupported(
            "the bcc Python module is missing: install python3-bpfcc (Debian/Ubuntu) or "
            "python3-bcc (Fedora); the PyPI package named 'bcc' is unrelated"
        ) from e
    src = bpf_dir()
    try:
        offsets = btf.cflags()
    except btf.BTFError as e:
        raise requirements.KernelUnsupported(
            f"cannot read kernel struct layouts from BTF: {e} (the kernel needs "
            "CONFIG_DEBUG_INFO_BTF=y)"
        ) from e
    try:
        bpf = BPF(
            src_file=str(src / BPF_SOURCE).encode(),
            cflags=[f"-I{src}", "-Wno-macro-redefined", *sizes.cflags(), *offsets],
        )
    except Exception as e:  # bcc raises bare Exception for compile and load errors
        raise requirements.explain_load_error(e) from e
    return Programs(bpf, sizes)
