"""bouheki as a systemd service, against the guest's real systemd, D-Bus and
journald: notify start-up, unit and slice policies, synchronous reload that
keeps the running policy when a file is broken, journal events per unit,
the watchdog, and no window when a protected unit starts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import labkit
from labkit import UNITS, sh

from bouheki.kernel.layout import ScopeKey

DENY_71 = '[network]\nallow = ["10.0.1.0/24"]\ndeny = ["10.0.1.71"]\n'
MSG_BLOCKED = "970ffe9247c14e91a2dc0faca0c6ca78"
MSG_RELOAD_FAILED = "b6790b0f3121403095cd8928b37a8102"


def prop(unit: str, name: str) -> str:
    return sh("systemctl", "show", "-P", name, unit).stdout.strip()


def generation() -> int:
    out = sh("busctl", "get-property", "org.bouheki.Bouheki1", "/org/bouheki/Bouheki1",
             "org.bouheki.Bouheki1.Manager", "PolicyGeneration").stdout  # fmt: skip
    return int(out.split()[1])


def in_unit(unit: str, *cmd: str, slice_: str | None = None) -> int:
    """Run cmd as a fresh transient service called unit; its exit code."""
    extra = [f"--slice={slice_}"] if slice_ else []
    r = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}",
           *extra, "--", *cmd, check=False)  # fmt: skip
    return r.returncode


def curl_in(unit: str, url: str, slice_: str | None = None) -> int:
    return in_unit(unit, "curl", "-s", "-o", "/dev/null", "--max-time", "5", url, slice_=slice_)


def journal(*match: str, since: str | None = None) -> list[dict]:
    sh("journalctl", "--sync")
    args = ["journalctl", "-o", "json", "--no-pager", *match]
    if since:
        args += ["--since", since]
    out = sh(*args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def reload() -> subprocess.CompletedProcess[str]:
    return sh("systemctl", "reload", "bouheki", check=False, timeout=300)


def test_started_with_notify_and_status(daemon: None) -> None:
    assert prop("bouheki.service", "ActiveState") == "active"
    assert prop("bouheki.service", "Type") == "notify"
    status = prop("bouheki.service", "StatusText")
    assert "policies" in status or "policy" in status, status
    assert "generation" in status


def test_unit_policy_blocks_only_that_unit(daemon: None) -> None:
    (UNITS / "bh-demo-a.service.toml").write_text(DENY_71)
    r = reload()
    assert r.returncode == 0, r.stderr
    assert curl_in("bh-demo-a.service", "http://10.0.1.71/") == 7
    assert curl_in("bh-demo-a.service", "http://10.0.1.1/") == 0
    assert curl_in("bh-demo-b.service", "http://10.0.1.71/") == 0


def test_journal_shows_the_block_under_the_unit(daemon: None) -> None:
    mark = time.strftime("%Y-%m-%d %H:%M:%S")
    (UNITS / "bh-demo-j.service.toml").write_text(DENY_71)
    assert reload().returncode == 0
    assert curl_in("bh-demo-j.service", "http://10.0.1.71/") == 7
    assert labkit.wait_for(
        lambda: journal("-u", "bh-demo-j.service", f"MESSAGE_ID={MSG_BLOCKED}", since=mark)
    )
    (e,) = journal("-u", "bh-demo-j.service", f"MESSAGE_ID={MSG_BLOCKED}", since=mark)
    assert e["OBJECT_SYSTEMD_UNIT"] == "bh-demo-j.service"
    assert e["BOUHEKI_ACTION"] == "BLOCKED"
    assert e["BOUHEKI_DADDR"] == "10.0.1.71"
    assert e["BOUHEKI_DPORT"] == "80"
    assert e["BOUHEKI_PROTOCOL"] == "tcp"
    assert e["BOUHEKI_COMM"] == "curl"
    assert e["BOUHEKI_UNIT"] == "bh-demo-j.service"
    assert e["BOUHEKI_POLICY"] == "bh-demo-j.service"
    assert e["BOUHEKI_RULE"].startswith(str(UNITS / "bh-demo-j.service.toml") + ":")
    assert e["BOUHEKI_HOOK"] == "connect"
    assert e["PRIORITY"] == "4"
    for f in ("BOUHEKI_PID", "BOUHEKI_UID", "BOUHEKI_GID", "BOUHEKI_CGROUP_ID", "BOUHEKI_EXE"):
        assert f in e


def test_slice_policy_covers_its_services(daemon: None) -> None:
    (UNITS / "bhdemo.slice.toml").write_text(DENY_71)
    assert reload().returncode == 0
    assert curl_in("bh-demo-s.service", "http://10.0.1.71/", slice_="bhdemo.slice") == 7
    assert curl_in("bh-demo-s2.service", "http://10.0.1.71/") == 0


def test_unit_policy_follows_the_unit_into_any_slice(daemon: None) -> None:
    """The slice is created with the unit, after the reload: the kernel still
    knows the unit by name as systemd creates its cgroup."""
    (UNITS / "bh-demo-elsewhere.service.toml").write_text(DENY_71)
    assert reload().returncode == 0
    slice_ = "bhother-x.slice"
    assert curl_in("bh-demo-elsewhere.service", "http://10.0.1.71/", slice_=slice_) == 7
    assert curl_in("bh-demo-elsewhere.service", "http://10.0.1.1/", slice_=slice_) == 0
    assert curl_in("bh-demo-other.service", "http://10.0.1.71/", slice_=slice_) == 0


def test_broken_dropin_is_refused_and_the_old_policy_stays(daemon: None) -> None:
    (UNITS / "bh-demo-a.service.toml").write_text(DENY_71)
    assert reload().returncode == 0
    gen = generation()
    dropins = UNITS / "bh-demo-a.service.d"
    dropins.mkdir(exist_ok=True)
    (dropins / "50-broken.toml").write_text('[network]\ndeny = ["10.0.1.300"]\n')
    mark = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        assert reload().returncode != 0  # systemctl reload fails...
        r = sh("bouhekictl", "reload", check=False)  # ...and the caller is told where
        assert r.returncode != 0
        assert f"{dropins / '50-broken.toml'}:2:" in r.stdout + r.stderr
        failed = journal(f"MESSAGE_ID={MSG_RELOAD_FAILED}", since=mark)
        assert failed and "50-broken.toml:2:" in failed[-1]["MESSAGE"]
        assert prop("bouheki.service", "ActiveState") == "active"
        assert curl_in("bh-demo-a.service", "http://10.0.1.71/") == 7
        assert generation() == gen
    finally:
        sh("rm", "-rf", str(dropins))
    assert reload().returncode == 0


def test_sighup_reloads(daemon: None) -> None:
    before = generation()
    sh("systemctl", "kill", "-s", "HUP", "bouheki")
    assert labkit.wait_for(lambda: generation() == before + 1, 60)


def test_unit_first_connect_is_judged_every_start(daemon: None) -> None:
    """No window: the cgroup gets its policy in the kernel as systemd creates
    it, before the unit's first instruction."""
    (UNITS / "bh-demo-fast.service.toml").write_text(DENY_71)
    assert reload().returncode == 0
    code = "import socket; s=socket.socket(); s.settimeout(3); s.connect(('10.0.1.71', 80))"
    starts = 100
    escaped = sum(
        in_unit("bh-demo-fast.service", "python3", "-c", code) == 0 for _ in range(starts)
    )
    assert escaped == 0, f"{escaped} of {starts} starts connected to a denied address"


def test_watchdog_keeps_the_service_alive(daemon: None) -> None:
    d = Path("/run/systemd/system/bouheki.service.d")
    d.mkdir(parents=True, exist_ok=True)
    (d / "watchdog.conf").write_text("[Service]\nWatchdogSec=3s\n")
    try:
        sh("systemctl", "daemon-reload")
        sh("systemctl", "restart", "bouheki", timeout=300)
        pid = prop("bouheki.service", "MainPID")
        assert prop("bouheki.service", "WatchdogUSec") == "3s"
        time.sleep(10)
        assert prop("bouheki.service", "ActiveState") == "active"
        assert prop("bouheki.service", "MainPID") == pid
        assert prop("bouheki.service", "NRestarts") == "0"
    finally:
        (d / "watchdog.conf").unlink()
        sh("systemctl", "daemon-reload")
        sh("systemctl", "restart", "bouheki", timeout=300)


def scope_cgroup_ids() -> set[int]:
    """The cgroup ids in the kernel's scopes map, read from its pin."""
    from bouheki.kernel import bpfsys

    path = next(Path("/sys/fs/bpf/bouheki").glob("*/maps/scopes"))
    fd = bpfsys.obj_get(str(path))
    ids: set[int] = set()
    cur, nxt = None, ScopeKey()
    while bpfsys.next_key(fd, cur, nxt):
        ids.add(int(nxt.cgroup_id))
        cur = ScopeKey.from_buffer_copy(nxt)
    os.close(fd)
    return ids


def test_a_stopped_units_cgroup_leaves_the_map(daemon: None) -> None:
    """cgroup_rmdir removes the entry cgroup_mkdir made: the map does not
    fill up with the ids of units long gone."""
    unit = "bh-rmdir.service"
    (UNITS / f"{unit}.toml").write_text(DENY_71)
    assert reload().returncode == 0
    sh("systemd-run", "--quiet", f"--unit={unit}", "--", "sleep", "300")
    try:
        cgroup = Path("/sys/fs/cgroup/system.slice") / unit
        assert labkit.wait_for(cgroup.exists, 10)
        cid = cgroup.stat().st_ino
        assert cid in scope_cgroup_ids()
    finally:
        sh("systemctl", "stop", unit, check=False)
        (UNITS / f"{unit}.toml").unlink()
    assert labkit.wait_for(lambda: not cgroup.exists(), 10)
    assert labkit.wait_for(lambda: cid not in scope_cgroup_ids(), 5), "entry left behind"


def test_stop_detaches(daemon: None) -> None:
    (UNITS / "bh-demo-a.service.toml").write_text(DENY_71)
    assert reload().returncode == 0
    assert curl_in("bh-demo-a.service", "http://10.0.1.71/") == 7
    sh("systemctl", "stop", "bouheki")
    try:
        assert curl_in("bh-demo-a.service", "http://10.0.1.71/") == 0
    finally:
        sh("systemctl", "start", "bouheki", timeout=300)
    assert curl_in("bh-demo-a.service", "http://10.0.1.71/") == 7


GUARDED = """\
[Unit]
Description=a unit that must never run unprotected
Requires=bouheki.service
After=bouheki.service

[Service]
ExecStart=/usr/bin/curl -s --max-time 5 http://10.0.1.71/

[Install]
WantedBy=multi-user.target
"""


def test_enabled_with_a_guarded_unit_the_boot_has_no_ordering_cycle(daemon: None) -> None:
    """bouheki is ordered before sysinit.target, and no longer after
    dbus.socket (which is after sysinit.target): systemd used to break that
    cycle at boot by dropping bouheki, and every unit requiring it."""
    unit = Path("/etc/systemd/system/bh-guarded.service")
    unit.write_text(GUARDED)
    try:
        sh("systemctl", "daemon-reload")
        sh("systemctl", "enable", "bouheki.service", "bh-guarded.service")
        r = sh("systemd-analyze", "verify", "default.target", check=False, timeout=300)
        out = r.stdout + r.stderr
        assert "cycle" not in out.lower(), out
        assert "bouheki" not in out, out  # nothing at all to say about bouheki
        after = prop("bouheki.service", "After").split()
        assert "dbus.socket" not in after and "sysinit.target" in prop("bouheki.service", "Before")
    finally:
        sh("systemctl", "disable", "bouheki.service", "bh-guarded.service", check=False)
        unit.unlink()
        sh("systemctl", "daemon-reload")


def test_warnings_reach_the_journal_as_warnings(daemon: None) -> None:
    """journalctl -p warning -u bouheki shows the daemon's warnings (the
    lines carry their priority); its routine messages stay below."""
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    (UNITS / "bh-warn.service.toml").write_text('[network]\ndeny = ["bh-nowhere.invalid"]\n')
    try:
        assert reload().returncode == 0
        sh("journalctl", "--sync")
        warn = sh("journalctl", "-u", "bouheki", "-p", "warning", "-o", "cat", "--no-pager",
                  "--since", since).stdout  # fmt: skip
        assert "bh-nowhere.invalid" in warn, warn
        info = sh("journalctl", "-u", "bouheki", "-p", "info", "-o", "cat", "--no-pager",
                  "--since", since).stdout  # fmt: skip
        assert "Policy generation" in info and "Policy generation" not in warn
    finally:
        (UNITS / "bh-warn.service.toml").unlink()
        reload()


def start_fails_without_a_restart_loop(status: int) -> None:
    """systemctl start fails with `status`, one of RestartPreventExitStatus=:
    systemd does not restart a daemon that would fail the same way again,
    and nothing is left attached."""
    r = sh("systemctl", "start", "bouheki", check=False, timeout=300)
    assert r.returncode != 0
    time.sleep(4)  # RestartSec=1s: a loop would have restarted by now
    assert prop("bouheki.service", "ActiveState") == "failed"
    assert prop("bouheki.service", "ExecMainStatus") == str(status)
    assert prop("bouheki.service", "NRestarts") == "0"
    assert not Path("/sys/fs/bpf/bouheki").exists()


def test_an_invalid_configuration_at_start_is_no_restart_loop(daemon: None) -> None:
    """Exit 1, and the journal says which file and line."""
    bad = UNITS / "bh-broken.service.toml"
    sh("systemctl", "stop", "bouheki")
    bad.write_text("[network]\ndeny = [\n")
    try:
        start_fails_without_a_restart_loop(1)
        log = sh("journalctl", "-u", "bouheki", "-n", "20", "-o", "cat", "--no-pager").stdout
        assert "bh-broken.service.toml:" in log, log
    finally:
        bad.unlink()
        sh("systemctl", "reset-failed", "bouheki", check=False)
        sh("systemctl", "start", "bouheki", timeout=300)


def test_missing_kernel_headers_stop_the_start_and_name_the_package(daemon: None) -> None:
    """Exit 3: the status names the headers package of the running kernel."""
    build = Path(f"/lib/modules/{os.uname().release}/build")
    aside = build.with_name("build.bh-aside")
    sh("systemctl", "stop", "bouheki")
    build.rename(aside)
    try:
        start_fails_without_a_restart_loop(3)
        status = prop("bouheki.service", "StatusText")
        assert f"linux-headers-{os.uname().release}" in status, status
    finally:
        aside.rename(build)
        sh("systemctl", "reset-failed", "bouheki", check=False)
        sh("systemctl", "start", "bouheki", timeout=300)


def test_the_daemon_does_not_carry_bcc_or_llvm(daemon: None) -> None:
    """The programs are compiled by a short-lived child (kernel/compiler.py):
    the daemon itself maps no libbcc, LLVM or clang. (Its RSS is bench/'s.)"""
    pid = prop("bouheki.service", "MainPID")
    maps = Path(f"/proc/{pid}/maps").read_text()
    carried = {
        line.split()[-1]
        for line in maps.splitlines()
        if any(lib in line for lib in ("libbcc", "libLLVM", "libclang", "libbpf"))
    }
    assert carried == set()
    assert "bouheki" in maps or "python3" in maps  # the right process was read


def policy_slots() -> dict[int, int]:
    """slot -> generation of every written slot of the pinned policies array."""
    from bouheki.kernel import bpfsys, layout

    path = next(Path("/sys/fs/bpf/bouheki").glob("*/maps/policies"))
    fd = bpfsys.obj_get(str(path))
    try:
        out = {}
        for slot in range(2 * layout.MAX_POLICIES):
            p = layout.Policy()
            bpfsys.lookup(fd, layout.PolicySlot(slot), p)
            if p.gen:
                out[slot] = int(p.gen)
        return out
    finally:
        os.close(fd)


def test_reloads_alternate_the_policies_halves_after_a_grace_period(daemon: None) -> None:
    """Each reload writes its policies into the half of the array that the
    generation in force does not use, and clears the old half once no hook
    can read it: the array holds only the generation in force, one slot
    per policy, in its parity's half. The grace period is the kernel's
    (membarrier passes the unit's system call filter): no fallback pause."""
    from bouheki.kernel import layout

    since = time.strftime("%Y-%m-%d %H:%M:%S")
    (UNITS / "bh-halves-a.service.toml").write_text(DENY_71)
    (UNITS / "bh-halves-b.service.toml").write_text(DENY_71)
    try:
        seen_halves = set()
        for _ in range(3):
            assert reload().returncode == 0
            gen = generation()
            slots = policy_slots()
            assert set(slots.values()) == {gen}, slots
            halves = {slot // layout.MAX_POLICIES for slot in slots}
            assert halves == {gen % 2}, (gen, slots)
            npolicies = len(json.loads(sh("bouhekictl", "--json", "policies").stdout))
            assert len(slots) == npolicies, (slots, npolicies)
            seen_halves |= halves
        assert seen_halves == {0, 1}
        assert curl_in("bh-halves-a.service", "http://10.0.1.71/") == 7
        assert curl_in("bh-halves-a.service", "http://10.0.1.1/") == 0
    finally:
        (UNITS / "bh-halves-a.service.toml").unlink()
        (UNITS / "bh-halves-b.service.toml").unlink()
        assert reload().returncode == 0
    sh("journalctl", "--sync")
    logged = sh("journalctl", "-u", "bouheki", "-o", "cat", "--no-pager", "--since", since).stdout
    assert "no RCU grace period" not in logged, logged
