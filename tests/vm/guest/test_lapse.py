"""Enforcement never lapses: while a protected unit connects to a denied
address in a loop, the daemon is killed, restarted and reloaded; not one
connection may get through."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import UNITS, sh

UNIT = "bh-lapse-loop.service"
COUNTS = Path("/run/bh-lapse.json")
RESTARTS = int(os.environ.get("BOUHEKI_LAPSE_RESTARTS", "50"))
RELOADS = int(os.environ.get("BOUHEKI_LAPSE_RELOADS", "200"))
PINS = Path("/sys/fs/bpf/bouheki")
LOOP = f"""
import errno, json, os, socket, time
tries = ok = 0
last = 0.0
while True:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("10.0.1.71", 9))
        ok += 1
    except OSError as e:
        if e.errno != errno.EPERM:
            ok += 1  # refused or anything else: the hook let it through
    finally:
        s.close()
    tries += 1
    if time.monotonic() - last > 0.2:
        with open("{COUNTS}.tmp", "w") as f:
            json.dump({{"tries": tries, "through": ok}}, f)
        os.replace("{COUNTS}.tmp", "{COUNTS}")
        last = time.monotonic()
"""


def counts() -> dict[str, int]:
    return json.loads(COUNTS.read_text())


def main_pid() -> str:
    return sh("systemctl", "show", "-P", "MainPID", "bouheki").stdout.strip()


def wait_active(old_pid: str, timeout: float = 300) -> None:
    def ready() -> bool:
        state = sh("systemctl", "is-active", "bouheki", check=False).stdout.strip()
        return state == "active" and main_pid() not in ("0", old_pid)

    assert labkit.wait_for(ready, timeout), "bouheki did not come back"


@pytest.fixture
def loop(daemon: None) -> Iterator[None]:
    (UNITS / f"{UNIT}.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    assert sh("bouhekictl", "reload", check=False).returncode == 0
    COUNTS.unlink(missing_ok=True)
    sh("systemd-run", "--quiet", f"--unit={UNIT}", "--collect", "python3", "-c", LOOP)
    assert labkit.wait_for(lambda: COUNTS.exists() and counts()["tries"] > 20, 60)
    assert counts()["through"] == 0
    yield
    sh("systemctl", "stop", UNIT, check=False)
    (UNITS / f"{UNIT}.toml").unlink()


def settle_and_check(before: dict[str, int]) -> None:
    time.sleep(2)
    after = counts()
    assert after["tries"] > before["tries"], "the loop stopped"
    assert after["through"] == 0, f"{after['through']} of {after['tries']} connections got through"


def test_kill_9_leaves_enforcement_in_place(loop: None) -> None:
    pid = main_pid()
    sh("systemctl", "kill", "-s", "KILL", "bouheki")
    before = counts()
    wait_active(pid)
    settle_and_check(before)
    links = [d.name for d in (PINS / "links").iterdir()]
    assert len(links) == 1, f"predecessor links still pinned: {links}"


def test_daemon_restarts_keep_enforcing(loop: None) -> None:
    t0 = time.monotonic()
    for i in range(RESTARTS):
        pid = main_pid()
        sh("systemctl", "restart", "bouheki", timeout=300)
        wait_active(pid)
        if i % 10 == 9:  # fail early, with the restart that let one through
            now = counts()
            assert now["through"] == 0, f"after restart {i + 1}: {now}"
    settle_and_check(counts())
    each = (time.monotonic() - t0) / max(RESTARTS, 1)
    labkit.figure(
        f"lapse: {RESTARTS} restarts ({each:.1f} s each), {counts()['tries']} attempts, 0 through"
    )


def test_reload_storm(loop: None) -> None:
    call = ["busctl", "call", "org.bouheki.Bouheki1", "/org/bouheki/Bouheki1",
            "org.bouheki.Bouheki1.Manager", "Reload"]  # fmt: skip
    for _ in range(RELOADS):
        assert sh(*call, check=False).returncode == 0
    settle_and_check(counts())
    labkit.figure(f"lapse: {RELOADS} reloads, {counts()['tries']} attempts, 0 through")


def test_stop_removes_the_pins(daemon: None) -> None:
    assert PINS.exists()
    sh("systemctl", "stop", "bouheki")
    try:
        assert not PINS.exists()
    finally:
        sh("systemctl", "start", "bouheki", timeout=300)
