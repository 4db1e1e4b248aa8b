"""MapIO over the programs' maps, by file descriptor: one bpf(2) call per
entry (kernel/bpfsys.py; bcc's Table.__setitem__ costs several times more,
and the daemon does not load bcc at all)."""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno as errno_mod
from collections.abc import Iterable, Iterator
from typing import Any

from . import bpfsys, layout

MAP_NAMES = (
    "state",
    "scopes",
    "policies",
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
_KEYS: dict[str, type[ct.Structure]] = {
    "policies": layout.PolicyKey,
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

    def update(self, name: str, key: ct.Structure, value: ct.Structure | ct.c_uint64) -> None:
        try:
            bpfsys.update(self._fds[name], key, value)
        except OSError as e:
            full = e.errno in (errno_mod.E2BIG, errno_mod.ENOSPC, errno_mod.ENOMEM)
            hint = " (the map is full: raise its size)" if full else ""
            raise OSError(e.errno, f"update of map {name} failed: {e.strerror}{hint}") from None

    def delete(self, name: str, key: ct.Structure) -> None:
        with contextlib.suppress(FileNotFoundError):  # a missing key is fine
            bpfsys.delete(self._fds[name], key)

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
