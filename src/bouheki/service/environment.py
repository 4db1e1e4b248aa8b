"""Resolve what a policy set needs from the outside world (executables,
domain names, address sets) into the compiler's immutable Environment."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from ..names.manager import NamesManager
from ..policy.env import Environment, Requirements


def usec_now() -> int:
    """CLOCK_REALTIME in microseconds, the API's time (common/api.py)."""
    return time.time_ns() // 1000


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (major << 20 | minor), as the hooks read it from the
    superblock; stat() returns the userspace encoding."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def exe_ids(paths: Iterable[str]) -> dict[str, tuple[int, int] | None]:
    out: dict[str, tuple[int, int] | None] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out[p] = None
            continue
        out[p] = (kernel_dev(st.st_dev), st.st_ino)
    return out


def build(req: Requirements, names: NamesManager | None = None) -> Environment:
    """Blocking (DNS, netlink): call from a worker thread. `names` keeps the
    domain names and @lan current between reloads; without one, they are
    resolved once (a name that does not resolve contributes nothing: the
    compiler warns). @loopback, @link-local and @multicast are fixed
    (policy/env.py)."""
    if names is None:
        once = NamesManager()
        try:
            networks, sets = once.prepare(req.names, req.sets)
        finally:
            once.stop()
    else:
        networks, sets = names.prepare(req.names, req.sets)
    return Environment(names=networks, sets=sets, exes=exe_ids(req.exes))
