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

import labkit  # noqa: E402


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
