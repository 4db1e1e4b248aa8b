"""The path of an event's executable, when it can be known reliably.

The programs report an executable by its identity (kernel dev_t and inode),
read in the kernel at the moment of the call: that is what an event always
carries. Its path comes from /proc/PID/exe, trusted only while it still
names the same file (the process may be gone, or its pid reused, by the time
the event is read), or else from what this cache learnt earlier: paths seen
that way and the executables the policies name. Otherwise there is no path,
and the event says so by leaving the field out rather than empty.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from .environment import kernel_dev

# Where find() looks for an executable no process runs any more: the
# directories of a system PATH and where services' programs live.
SEARCH_DIRS = (
    "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
    "/usr/libexec", "/usr/lib/systemd", "/opt",
)  # fmt: skip
MAX_PATHS = 4096  # a bounded cache: a process cannot grow the daemon by exec'ing copies
DELETED = " (deleted)"  # what the kernel appends to the link of a replaced file


class ExePaths:
    def __init__(self) -> None:
        self._paths: OrderedDict[tuple[int, int], str] = OrderedDict()

    def learn(self, dev: int, ino: int, path: str) -> None:
        key = (dev, ino)
        self._paths[key] = path
        self._paths.move_to_end(key)
        while len(self._paths) > MAX_PATHS:
            self._paths.popitem(last=False)

    def of_process(self, pid: int, dev: int, ino: int) -> str | None:
        """The path of executable (dev, ino) that process pid ran, or None."""
        if ino and (path := self._from_proc(f"/proc/{pid}/exe", dev, ino)):
            return path
        return self._paths.get((dev, ino))

    def _from_proc(self, link: str, dev: int, ino: int) -> str | None:
        """The path a /proc/PID/exe link gives, while it still names (dev, ino)."""
        try:
            path = os.readlink(link)
        except OSError:
            return None
        if path.endswith(DELETED) or not self._same(link, dev, ino):
            return None
        self.learn(dev, ino, path)
        return path

    def find(self, dev: int, ino: int) -> str | None:
        """The path of executable (dev, ino) with no process to ask (what a
        learning policy recorded): the cache, the running processes, then
        SEARCH_DIRS (one level down, and a level more below /opt); a path
        is given only if its file is that executable now."""
        if not ino:
            return None
        if (dev, ino) in self._paths:
            return self._paths[(dev, ino)]
        for link in _proc_exes():
            if path := self._from_proc(link, dev, ino):
                return path
        for d in SEARCH_DIRS:
            for path in _files(Path(d), 2 if d == "/opt" else 1):
                if self._same(path, dev, ino):
                    self.learn(dev, ino, str(path))
                    return str(path)
        return None

    @staticmethod
    def _same(path: str | Path, dev: int, ino: int) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (kernel_dev(st.st_dev), st.st_ino) == (dev, ino)


def _proc_exes() -> list[str]:
    try:
        return [f"/proc/{p}/exe" for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def _files(d: Path, depth: int) -> list[Path]:
    out: list[Path] = []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return out
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False):  # the file itself, not a link's name
                out.append(Path(e.path))
            elif depth > 1 and e.is_dir(follow_symlinks=False):
                out += _files(Path(e.path), depth - 1)
        except OSError:
            continue
    return out
