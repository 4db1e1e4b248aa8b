"""Compile, load and attach the BPF programs in a short-lived process.

bcc brings LLVM and clang into the process that uses it (over 100 MiB
resident for the daemon's whole life). So the daemon runs this module as a
child (kernel/loader.py): it compiles bpf/bouheki.bpf.c, lets bcc load and
attach the programs with their maps pinned (BH_PIN_DIR in the flags), pins
the programs' links under the daemon's instance, and exits. The daemon then
opens the pinned maps and links by file descriptor, as it adopts a
predecessor's. Should the child fail before it pinned the links, its
programs detach when it exits: nothing half-made is left enforcing.

Request on standard input, JSON: {"src": dir, "cflags": [...], "root": pin
root, "tag": layout tag, "instance": the daemon's instance}. Exit 0 when
done; EXIT_UNSUPPORTED with the reason on standard error when this host
cannot run the programs; anything else is a failure, also explained there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .pinning import Pins
from .requirements import KernelUnsupported, explain_load_error

EXIT_UNSUPPORTED = 3
BPF_SOURCE = "bouheki.bpf.c"


def compile_programs(src: Path, cflags: list[str]) -> Any:
    """bcc's BPF object: compiled, loaded, its programs attached. In this
    process: the child's (below), or a lab test's that pins nothing."""
    try:
        from bcc import BPF
    except ImportError as e:
        raise KernelUnsupported(
            "the bcc Python module is missing: install python3-bpfcc (Debian/Ubuntu) or "
            "python3-bcc (Fedora); the PyPI package named 'bcc' is unrelated"
        ) from e
    try:
        # bcc attaches each program as it loads it: from here on, these
        # programs and any predecessor's pinned ones both judge, on the
        # pinned maps, until the predecessor's links are released.
        bpf = BPF(src_file=str(src / BPF_SOURCE).encode(), cflags=cflags)
    except Exception as e:  # bcc raises bare Exception for compile and load errors
        raise explain_load_error(e) from e
    return bpf


def compile_and_pin(src: Path, cflags: list[str], pins: Pins, tag: str) -> list[str]:
    """The names of the programs attached and pinned."""
    bpf = compile_programs(src, cflags)
    fds = {**bpf.lsm_fds, **bpf.raw_tracepoint_fds}
    links = {(k.decode() if isinstance(k, bytes) else str(k)): int(fd) for k, fd in fds.items()}
    pins.pin_links(links, tag)
    return sorted(links)


def main() -> int:
    req = json.load(sys.stdin)
    pins = Pins(Path(req["root"]), instance=req["instance"])
    try:
        compile_and_pin(Path(req["src"]), list(req["cflags"]), pins, req["tag"])
    except KernelUnsupported as e:
        print(e, file=sys.stderr)
        return EXIT_UNSUPPORTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
