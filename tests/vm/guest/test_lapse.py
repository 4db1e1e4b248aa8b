"""Enforcement never lapses: while a protected unit connects to a denied
address in a loop, the daemon is killed, restarted and reloaded; not one
connection may get through."""

from __future__ import annotations

import errno
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
REPLACING_RESTARTS = int(os.environ.get("BOUHEKI_LAPSE_REPLACING_RESTARTS", "3"))
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


GAP_UNIT = "bh-lapse-gap.service"
GAP_GO = Path("/run/bh-lapse-gap.go")
GAP_DONE = Path("/run/bh-lapse-gap.json")
GAP = f"""
import errno, json, os, socket, time
while not os.path.exists("{GAP_GO}"):
    time.sleep(0.01)
s = socket.socket()
try:
    s.connect(("10.0.1.71", 4242))
    e = 0
except OSError as x:
    e = x.errno
at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
with open("{GAP_DONE}", "w") as f:
    json.dump({{"errno": e, "at_usec": at}}, f)
"""


def test_kill_9_leaves_enforcement_in_place(loop: None) -> None:
    """And what the programs report while no daemon runs is read by the next."""
    (UNITS / f"{GAP_UNIT}.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    assert sh("bouhekictl", "reload", check=False).returncode == 0
    GAP_GO.unlink(missing_ok=True)
    GAP_DONE.unlink(missing_ok=True)
    sh("systemd-run", "--quiet", f"--unit={GAP_UNIT}", "--collect", "python3", "-c", GAP)
    try:
        pid = main_pid()
        lost_before = int(json.loads(sh("bouhekictl", "stats", "--json").stdout)["events_lost"])
        sh("systemctl", "kill", "-s", "KILL", "bouheki")
        GAP_GO.touch()  # the gap unit connects now, with no daemon running
        before = counts()
        wait_active(pid)
        settle_and_check(before)
        links = [d.name for d in (PINS / "links").iterdir()]
        assert len(links) == 1, f"predecessor links still pinned: {links}"

        assert labkit.wait_for(GAP_DONE.exists, 10)
        gap = json.loads(GAP_DONE.read_text())
        assert gap["errno"] == errno.EPERM, gap
        started = int(sh("systemctl", "show", "-P", "ExecMainStartTimestampMonotonic",
                         "bouheki").stdout)  # fmt: skip
        assert gap["at_usec"] < started, "the connect came after the new daemon started"

        def logged() -> bool:
            sh("journalctl", "--sync")
            out = sh("journalctl", "-o", "cat", "--no-pager", f"_PID={main_pid()}",
                     "BOUHEKI_DADDR=10.0.1.71", "BOUHEKI_DPORT=4242").stdout  # fmt: skip
            return bool(out.strip())

        # The loop's blocks fill the ring buffer while no daemon reads it: the
        # gap's event is read by the new daemon, or counted as lost, never
        # silently dropped (and never the race this test depends on).
        def lost() -> int:
            out = sh("bouhekictl", "stats", "--json", check=False).stdout
            return int(json.loads(out)["events_lost"]) if out.strip() else -1

        assert labkit.wait_for(lambda: logged() or lost() > lost_before, 30), (
            "the gap's event was neither read by the new daemon nor counted as lost"
        )
        # Whatever the new daemon read of the old generation is not pinned on
        # a policy file of its own: it says which generation it came from.
        old = sh("journalctl", "-o", "cat", "--no-pager", f"_PID={main_pid()}",
                 "OBJECT_SYSTEMD_UNIT=" + UNIT).stdout  # fmt: skip
        assert GAP_UNIT not in old, old[-2000:]
    finally:
        sh("systemctl", "stop", GAP_UNIT, check=False)
        (UNITS / f"{GAP_UNIT}.toml").unlink()


def journal_of(pid: str) -> str:
    sh("journalctl", "--sync")
    return sh("journalctl", f"_PID={pid}", "-o", "cat", "--no-pager").stdout


def restart_storm(n: int, logged: str, how: str) -> None:
    """n restarts while the loop runs, none letting a connection through; the
    last daemon's journal says `logged` (which way it took the programs over)."""
    t0 = time.monotonic()
    for i in range(n):
        pid = main_pid()
        sh("systemctl", "restart", "bouheki", timeout=300)
        wait_active(pid)
        if i % 10 == 9:  # fail early, with the restart that let one through
            now = counts()
            assert now["through"] == 0, f"after restart {i + 1}: {now}"
    settle_and_check(counts())
    each = (time.monotonic() - t0) / max(n, 1)
    log = journal_of(main_pid())
    assert logged in log, log[-2000:]
    labkit.figure(
        f"lapse: {n} restarts {how} ({each:.1f} s each), {counts()['tries']} attempts, 0 through"
    )


@pytest.fixture
def replacing() -> Iterator[None]:
    """Every start compiles and replaces the programs, as after an upgrade
    that changes them."""
    d = Path("/run/systemd/system/bouheki.service.d")
    d.mkdir(parents=True, exist_ok=True)
    (d / "50-replace.conf").write_text("[Service]\nEnvironment=BOUHEKI_REPLACE_PROGRAMS=1\n")
    sh("systemctl", "daemon-reload")
    yield
    (d / "50-replace.conf").unlink()
    sh("systemctl", "daemon-reload")


def test_restarts_that_replace_the_programs_keep_enforcing(loop: None, replacing: None) -> None:
    """The new programs attach before the old ones detach. Runs before the
    adopting storm: in the lab, replacing the programs after many minutes of
    adopted ones under the loop's hammering twice left a vCPU of the TCG guest
    spinning on the patched call in bpf_lsm_socket_connect (a soft lockup with
    the other vCPU idle; not under single-threaded TCG); see the README's
    known limits."""
    restart_storm(REPLACING_RESTARTS, "replaced the pinned programs",
                  "compiling and replacing the programs")  # fmt: skip


def test_daemon_restarts_keep_enforcing(loop: None) -> None:
    """A restart adopts the pinned programs as they are: nothing recompiles,
    nothing detaches."""
    restart_storm(RESTARTS, "adopted the pinned programs", "adopting the pinned programs")


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


@pytest.fixture
def changed_programs() -> Iterator[None]:
    """The BPF sources as an upgrade changes them: another layout, so the
    new daemon compiles programs with maps of their own, empty at first."""
    src = Path("/usr/share/bouheki/bpf")
    new = Path("/run/bh-bpf-upgrade")
    sh("rm", "-rf", str(new))
    sh("cp", "-r", str(src), str(new))
    with open(new / "bouheki.bpf.c", "a") as f:
        f.write("\n/* the upgrade */\n")
    d = Path("/run/systemd/system/bouheki.service.d")
    d.mkdir(parents=True, exist_ok=True)
    (d / "50-upgrade.conf").write_text(f"[Service]\nEnvironment=BOUHEKI_BPF_DIR={new}\n")
    sh("systemctl", "daemon-reload")
    yield
    (d / "50-upgrade.conf").unlink()
    sh("systemctl", "daemon-reload")
    sh("systemctl", "restart", "bouheki", timeout=300)
    sh("rm", "-rf", str(new))


def test_an_upgrade_that_changes_the_programs_keeps_enforcing(
    loop: None, changed_programs: None
) -> None:
    """The old programs keep blocking until the new ones hold the policy:
    only then are they released (no connect judged by empty maps)."""
    restart_storm(1, "replaced the pinned programs", "to programs of another layout")
    assert len(list((PINS / "links").iterdir())) == 1
    layouts = [d for d in PINS.iterdir() if d.name != "links"]
    assert len(layouts) == 1, f"old layouts left: {layouts}"


def policy_counts(part: str) -> dict[str, int]:
    stats = json.loads(sh("bouhekictl", "stats", "--json").stdout)
    (p,) = [p for p in stats["policies"] if part in p["name"]]
    return {"hits": int(p["hits"]), "blocked": int(p["blocked"])}


def test_an_adopting_successor_keeps_each_policys_id(daemon: None) -> None:
    """A kill -9, then a new policy file that fresh ids would give the
    lowest id: the successor adopts the generation in force with its ids
    (/run/bouheki/policy-ids.json), so a policy's counters stay its own and
    what it blocked while no daemon ran is logged under its name."""
    x, a = "bh-ids-x.service", "bh-ids-a.service"
    deny = '[network]\ndeny = ["10.0.1.71"]\n'
    connect = (
        "import socket; s = socket.socket(); s.settimeout(3); "
        "print(s.connect_ex(('10.0.1.71', 4243)))"
    )
    (UNITS / f"{x}.toml").write_text(deny)
    try:
        assert sh("bouhekictl", "reload", check=False).returncode == 0
        run = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={x}",
               "python3", "-c", connect]  # fmt: skip
        assert sh(*run).stdout.strip() == str(errno.EPERM)
        assert policy_counts(x) == {"hits": 1, "blocked": 1}
        ids = json.loads(Path("/run/bouheki/policy-ids.json").read_text())
        (UNITS / f"{a}.toml").write_text(deny)  # read by the successor only
        pid = main_pid()
        sh("systemctl", "kill", "-s", "KILL", "bouheki")
        assert sh(*run).stdout.strip() == str(errno.EPERM)  # while no daemon runs
        wait_active(pid)
        assert "adopted the pinned programs" in journal_of(main_pid())
        assert policy_counts(x) == {"hits": 2, "blocked": 2}
        assert policy_counts(a) == {"hits": 0, "blocked": 0}
        kept = json.loads(Path("/run/bouheki/policy-ids.json").read_text())["ids"]
        assert {n: i for n, i in kept.items() if n in ids["ids"]} == ids["ids"]

        def gap_logged() -> list[dict]:
            sh("journalctl", "--sync")
            out = sh("journalctl", "-o", "json", "--no-pager", f"_PID={main_pid()}",
                     "BOUHEKI_DPORT=4243").stdout  # fmt: skip
            return [json.loads(line) for line in out.splitlines() if line.strip()]

        assert labkit.wait_for(lambda: bool(gap_logged()), 30)
        assert {e["BOUHEKI_POLICY"] for e in gap_logged()} == {x}, gap_logged()
    finally:
        for unit in (x, a):
            (UNITS / f"{unit}.toml").unlink(missing_ok=True)
        sh("bouhekictl", "reload", check=False)
