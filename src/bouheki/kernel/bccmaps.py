"""MapIO over the programs' maps, by file descriptor: one syscall per entry,
through libbcc directly (bcc's Table.__setitem__ costs several times more)."""

from __future__ import annotations

import ctypes as ct
import errno as errno_mod
import os
from collections.abc import Iterable, Iterator
from typing import Any

from . import layout

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


def _lib() -> Any:
    from bcc.libbcc import lib

    return lib


def errno_of(rc: int) -> int:
    """The errno of a failed libbcc call: libbpf returns -errno, bcc's own
    wrappers -1 with errno set."""
    return -rc if rc != -1 else ct.get_errno()


class BccMaps:
    def __init__(self, programs: Any) -> None:
        self._lib = _lib()
        self._fds = {n: programs.map_fd(n) for n in MAP_NAMES}

    def _check(self, rc: int, what: str, name: str) -> None:
        if rc < 0:
            err = errno_of(rc)
            raise OSError(err, f"{what} in map {name}: {os.strerror(err)}")

    def update(self, name: str, key: ct.Structure, value: ct.Structure | ct.c_uint64) -> None:
        rc = self._lib.bpf_update_elem(self._fds[name], ct.byref(key), ct.byref(value), 0)
        if rc < 0:
            err = errno_of(rc)
            full = err in (errno_mod.E2BIG, errno_mod.ENOSPC, errno_mod.ENOMEM)
            hint = " (the map is full: raise its size)" if full else ""
            raise OSError(err, f"update of map {name} failed: {os.strerror(err)}{hint}")

    def delete(self, name: str, key: ct.Structure) -> None:
        self._lib.bpf_delete_elem(self._fds[name], ct.byref(key))  # a missing key is fine

    def _keys(self, name: str) -> Iterator[ct.Structure]:
        kt = _KEYS[name]
        fd = self._fds[name]
        cur = kt()
        nxt = kt()
        rc = self._lib.bpf_get_first_key(fd, ct.byref(nxt), ct.sizeof(kt))
        while rc == 0:
            yield kt.from_buffer_copy(nxt)
            ct.memmove(ct.byref(cur), ct.byref(nxt), ct.sizeof(kt))
            rc = self._lib.bpf_get_next_key(fd, ct.byref(cur), ct.byref(nxt))

    def scope_keys(self, name: str = "scopes") -> Iterable[layout.ScopeKey]:
        return list(self._keys(name))  # type: ignore[arg-type]

    def keys_of_gen(self, gen: int) -> Iterator[tuple[str, ct.Structure]]:
        for name in _KEYS:
            for k in list(self._keys(name)):
                if k.gen == gen:  # type: ignore[attr-defined]
                    yield name, k

    def read_state(self) -> layout.State:
        s = layout.State()
        zero = ct.c_int(0)
        rc = self._lib.bpf_lookup_elem(self._fds["state"], ct.byref(zero), ct.byref(s))
        self._check(rc, "lookup", "state")
        return s

    def read_patterns(self) -> list[layout.Pattern]:
        out = []
        for i in range(2 * layout.MAX_PATTERNS):
            p = layout.Pattern()
            idx = ct.c_int(i)
            rc = self._lib.bpf_lookup_elem(self._fds["patterns"], ct.byref(idx), ct.byref(p))
            self._check(rc, "lookup", "patterns")
            out.append(p)
        return out

    def write_state(self, state: layout.State) -> None:
        zero = ct.c_int(0)
        self.update("state", zero, state)  # type: ignore[arg-type]
