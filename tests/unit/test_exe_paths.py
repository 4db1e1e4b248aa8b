"""An event's executable path only when it is known to be that file."""

from __future__ import annotations

import os
import subprocess

from bouheki.service.environment import kernel_dev
from bouheki.service.exe_paths import ExePaths


def test_the_path_of_a_live_process_then_from_the_cache() -> None:
    sleep = os.path.realpath("/usr/bin/sleep")
    st = os.stat(sleep)
    dev, ino = kernel_dev(st.st_dev), st.st_ino
    proc = subprocess.Popen([sleep, "30"])
    paths = ExePaths()
    try:
        assert paths.of_process(proc.pid, dev, ino) == sleep
        # The pid names another file than the event's (reused, or re-exec'd): not trusted.
        assert ExePaths().of_process(proc.pid, dev, ino + 1) is None
    finally:
        proc.kill()
        proc.wait()
    # Gone: what was learnt while it lived.
    assert paths.of_process(proc.pid, dev, ino) == sleep
    assert paths.of_process(proc.pid, dev, ino + 1) is None


def test_the_cache_is_bounded() -> None:
    paths = ExePaths()
    for i in range(5000):
        paths.learn(1, i, f"/bin/x{i}")
    assert paths.of_process(0, 1, 0) is None  # the oldest went
    assert paths.of_process(0, 1, 4999) == "/bin/x4999"
