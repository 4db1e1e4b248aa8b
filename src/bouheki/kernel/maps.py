"""MapIO over the programs' maps, by file descriptor: one bpf(2) call per
entry (kernel/bpfsys.py; bcc's Table.__setitem__ costs several times more,
and the daemon does not load bcc at all)."""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno as errno_mod
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from . import bpfsys, layout

log = logging.getLogger(__name__)

FALLBACK_GRACE_S = 0.05

MAP_NAMES = (
    "state",
    "scopes",
    "policies",
    "filters",
    "dst4",
    "dst6",
    "ports",
    "comms",
    "exes",
    "uids",
    "gids",
    "unit_names",
    "patterns",
    "slices",
    "learned",
)
# The hash and LPM maps, by key type: what scanning for a generation walks.
_KEYS: dict[str, type[ct.Structure]] = {
    "dst4": layout.Dst4Key,
    "dst6": layout.Dst6Key,
    "ports": layout.PortKey,
    "comms": layout.CommKey,
    "exes": layout.ExeKey,
    "uids": layout.IdKey,
    "gids": layout.IdKey,
    "scopes": layout.ScopeKey,
    "unit_names": layout.UnitKey,
    "slices": layout.ScopeKey,
}


class Maps:
    def __init__(self, programs: Any) -> None:
        self._fds = {n: programs.map_fd(n) for n in MAP_NAMES}
        self._grace_refused = False

    def update(self, name: str, key: ct.Structure, value: ct.Structure | ct.c_uint64) -> None:
        try:
            bpfsys.update(self._fds[name], key, value)
        except OSError as e:
            full = e.errno in (errno_mod.E2BIG, errno_mod.ENOSPC, errno_mod.ENOMEM)
            hint = " (the map is full: raise its size)" if full else ""
            raise OSError(e.errno, f"update of map {name} failed: {e.strerror}{hint}") from None

    def delete(self, name: str, key: ct.Structure) -> None:
        if name == "policies":  # an array: its slots are cleared, not deleted
            self.update(name, key, layout.Policy())
            return
        if name == "filters":
            # An array too, read only through a policy slot that names it:
            # the next generation of its parity writes it whole.
            return
        with contextlib.suppress(FileNotFoundError):  # a missing key is fine
            bpfsys.delete(self._fds[name], key)

    def wait_for_readers(self) -> None:
        """Return once no hook can still be reading what it looked up before
        the call: an RCU grace period (bpfsys.rcu_grace_period). Where the
        kernel refuses that, or skips it (one CPU: membarrier does not wait
        there, and a preemptible kernel may preempt a hook), a pause that a
        hook's few microseconds fit in many thousand times."""
        try:
            if os.sysconf("SC_NPROCESSORS_ONLN") > 1:
                bpfsys.rcu_grace_period()
                return
        except OSError as e:
            if not self._grace_refused:
                log.warning("no RCU grace period (%s): policy swaps pause %g s instead",
                            e.strerror, FALLBACK_GRACE_S)  # fmt: skip
            self._grace_refused = True
        time.sleep(FALLBACK_GRACE_S)

    def _keys(self, name: str) -> Iterator[ct.Structure]:
        kt = _KEYS[name]
        fd = self._fds[name]
        cur: ct.Structure | None = None
        nxt = kt()
        while bpfsys.next_key(fd, cur, nxt):
            yield kt.from_buffer_copy(nxt)
            cur = kt.from_buffer_copy(nxt)

    def scope_keys(self, name: str = "scopes") -> Iterable[layout.ScopeKey]:
        return list(self._keys(name))  # type: ignore[arg-type]

    def keys_of_gen(self, gen: int) -> Iterator[tuple[str, ct.Structure]]:
        for name in _KEYS:
            for k in list(self._keys(name)):
                if k.gen == gen:  # type: ignore[attr-defined]
                    yield name, k
        for pid in range(layout.MAX_POLICIES):
            slot = layout.PolicySlot(layout.policy_slot(gen, pid))
            p = layout.Policy()
            bpfsys.lookup(self._fds["policies"], slot, p)
            if p.gen == gen:
                yield "policies", slot

    def learned(self) -> list[tuple[layout.LearnKey, layout.LearnVal]]:
        """Every entry of the learned map (bounded by its max_entries)."""
        fd = self._fds["learned"]
        out = []
        cur: layout.LearnKey | None = None
        nxt = layout.LearnKey()
        while bpfsys.next_key(fd, cur, nxt):
            key = layout.LearnKey.from_buffer_copy(nxt)
            val = layout.LearnVal()
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                bpfsys.lookup(fd, key, val)
                out.append((key, val))
            cur = key
        return out

    def forget_learned(self, policy: int) -> int:
        """Delete a policy's learned entries; how many there were."""
        keys = [k for k, _ in self.learned() if k.policy == policy]
        for k in keys:
            self.delete("learned", k)
        return len(keys)

    def read_state(self) -> layout.State:
        s = layout.State()
        bpfsys.lookup(self._fds["state"], ct.c_int(0), s)
        return s

    def read_patterns(self) -> list[layout.Pattern]:
        out = []
        for i in range(2 * layout.MAX_PATTERNS):
            p = layout.Pattern()
            bpfsys.lookup(self._fds["patterns"], ct.c_int(i), p)
            out.append(p)
        return out

    def write_state(self, state: layout.State) -> None:
        zero = ct.c_int(0)
        self.update("state", zero, state)  # type: ignore[arg-type]
