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

from .environment import kernel_dev

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
        if ino:
            try:
                path = os.readlink(f"/proc/{pid}/exe")
                st = os.stat(f"/proc/{pid}/exe")
            except OSError:
                pass
            else:
                same = (kernel_dev(st.st_dev), st.st_ino) == (dev, ino)
                if same and not path.endswith(DELETED):
                    self.learn(dev, ino, path)
                    return path
        return self._paths.get((dev, ino))
