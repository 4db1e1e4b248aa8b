"""@lan (names/lan.py + the manager) against real netlink, in a fresh network
namespace (`unshare -n`) so the host's interfaces are never touched: add an
address, the manager asks for an apply within a second and @lan has it;
remove it, and @lan drops it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = r"""
import asyncio, json, subprocess, time
from bouheki.names.lan import connected_subnets
from bouheki.names.manager import NamesManager

def ip(*args):
    subprocess.run(["ip", *args], check=True)

async def main():
    out = {}
    ip("link", "set", "lo", "up")
    ip("link", "add", "bhv0", "type", "veth", "peer", "name", "bhv1")
    ip("addr", "add", "198.51.100.7/24", "dev", "bhv1")
    out["dump"] = [str(n) for n in connected_subnets()]
    loop = asyncio.get_running_loop()
    m = NamesManager()
    changes = asyncio.Queue()

    async def on_change():
        changes.put_nowait(time.monotonic())
        return True

    async def lan():
        _, sets = await loop.run_in_executor(None, m.prepare, [], ["lan"])
        return [str(n) for n in sets["lan"]]

    out["compiled"] = await lan()
    m.activate([], ["lan"])
    m.start(on_change)
    await asyncio.sleep(0.5)
    out["spurious"] = changes.qsize()

    async def step(key, *cmd):
        t0 = time.monotonic()
        ip(*cmd)
        try:
            t = await asyncio.wait_for(changes.get(), 5)
            out[key + "_latency"] = t - t0
        except asyncio.TimeoutError:
            out[key + "_latency"] = None
        out[key] = await lan()

    await step("added", "addr", "add", "192.0.2.5/24", "dev", "bhv0")
    await step("added6", "-6", "addr", "add", "2001:db8:5::1/64", "dev", "bhv0", "nodad")
    await step("removed", "addr", "del", "192.0.2.5/24", "dev", "bhv0")
    m.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def netns_run() -> dict:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a private network namespace")
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot create a veth pair in a new network namespace: {probe.stderr}")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_dump_lists_connected_subnets_without_loopback(netns_run: dict) -> None:
    assert netns_run["dump"] == ["198.51.100.0/24"]
    assert netns_run["compiled"] == ["198.51.100.0/24"]


def test_starting_the_watch_applies_nothing_new(netns_run: dict) -> None:
    assert netns_run["spurious"] == 0


def test_an_added_address_is_in_lan_within_a_second(netns_run: dict) -> None:
    assert netns_run["added"] == ["192.0.2.0/24", "198.51.100.0/24"]
    assert netns_run["added_latency"] is not None and netns_run["added_latency"] < 1.0
    assert "2001:db8:5::/64" in netns_run["added6"]
    assert netns_run["added6_latency"] is not None and netns_run["added6_latency"] < 1.0


def test_a_removed_address_leaves_lan(netns_run: dict) -> None:
    assert "192.0.2.0/24" not in netns_run["removed"]
    assert "2001:db8:5::/64" in netns_run["removed"]
    assert netns_run["removed_latency"] is not None and netns_run["removed_latency"] < 1.0
