"""Shared fixtures of the in-guest suite (runs as root in the lab guest)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(os.environ.get("BOUHEKI_SRC", Path(__file__).resolve().parents[3]))
# The checkout's package, unless a test installed bouheki system-wide.
sys.path.insert(0, str(SRC / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))  # randgen

import labkit  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def ping_for_everyone() -> None:
    """Unprivileged ICMP ping sockets for every group, as systemd's default
    sysctl (50-default.conf) sets on most distributions: the attacker and
    the differential test's workers use them."""
    Path("/proc/sys/net/ipv4/ping_group_range").write_text("0 2147483647\n")


@pytest.fixture(scope="session")
def kernel() -> Iterator[labkit.Kernel]:
    k = labkit.Kernel.load()
    yield k
    k.close()


@pytest.fixture(scope="session")
def hosts() -> Iterator[labkit.TestHosts]:
    h = labkit.TestHosts.start()
    yield h
    h.stop()


@pytest.fixture
def enforce(kernel: labkit.Kernel, tmp_path: Path) -> Iterator[labkit.Kernel]:
    """The kernel programs with a clean slate for one test."""
    kernel.clear()
    kernel.tmp = tmp_path
    yield kernel
    kernel.clear()


@pytest.fixture(scope="session")
def daemon(hosts: labkit.TestHosts) -> Iterator[None]:
    """bouheki installed from the checkout and running as a systemd service."""
    labkit.sh(f"{labkit.SRC}/tests/vm/guest-install")
    for f in labkit.UNITS.glob("*"):
        labkit.sh("rm", "-rf", str(f))
    r = labkit.sh("systemctl", "start", "bouheki", timeout=300, check=False)
    if r.returncode != 0:
        log = labkit.sh("journalctl", "-u", "bouheki", "-n", "40", "--no-pager", check=False)
        labkit.sh("systemctl", "stop", "bouheki", check=False)
        labkit.sh("systemctl", "reset-failed", "bouheki", check=False)
        pytest.fail(f"bouheki did not start:\n{log.stdout}", pytrace=False)
    yield
    labkit.sh("systemctl", "stop", "bouheki", check=False)
    for f in labkit.UNITS.glob("*"):
        labkit.sh("rm", "-rf", str(f))
