"""The two boots of tests/vm/reboot/run-reboot. `before`: install, enable,
ask for a reboot (exit 3: not finished). `after`: bouheki came up at boot,
before the unit that requires it, whose first connect it blocked and logged;
the boot had no ordering cycle; the API came once the bus did. Figures go
to /results/figures.txt.

BOUHEKI_REBOOT_INSTALL=deb installs the built .deb with apt instead of the
checkout (tests/vm/guest-install): the package's own unit, enabled by its
postinst, is what comes up at boot."""

from __future__ import annotations

import errno
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path("/src")
STATE = Path("/var/lib/bh-reboot")
RESULTS = Path("/results")
GUARDED = "bh-guarded.service"
CONNECT = f"""
import json, socket, time
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("10.0.1.71", 80))
    e = 0
except OSError as x:
    e = x.errno
with open("{STATE}/guarded.json", "w") as f:
    json.dump({{"errno": e, "at_usec": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}}, f)
"""
UNIT = f"""\
[Unit]
Description=a unit that must never run unprotected
Requires=bouheki.service
After=bouheki.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 {STATE}/connect.py

[Install]
WantedBy=multi-user.target
"""


def sh(*cmd: str, check: bool = True) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise SystemExit(f"{cmd}: {r.returncode}: {r.stdout}{r.stderr}")
    return r.stdout + r.stderr


def prop(unit: str, name: str) -> str:
    return sh("systemctl", "show", "-P", name, unit).strip()


def figure(line: str) -> None:
    print(line, flush=True)
    with open(RESULTS / "figures.txt", "a") as f:
        f.write(line + "\n")


def install() -> str:
    """How bouheki was installed: from the checkout, or the .deb with apt."""
    if os.environ.get("BOUHEKI_REBOOT_INSTALL") != "deb":
        sh(str(SRC / "tests/vm/guest-install"))
        return "checkout"
    version = sh("bash", "-c", f". {SRC}/packaging/lib.sh && pkg_version").strip()
    deb = SRC / "dist" / f"bouheki_{version}_all.deb"
    if not deb.is_file():
        raise SystemExit(f"no {deb}: run `make deb` first ({glob.glob(str(SRC / 'dist/*.deb'))})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "-q", str(deb)],
                       capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"apt-get install {deb}: {r.returncode}: {r.stdout}{r.stderr}")
    # The package enabled and started it; the reboot must bring it back.
    if prop("bouheki.service", "UnitFileState") != "enabled":
        raise SystemExit("the package did not enable bouheki.service")
    return "deb"


def before() -> int:
    how = install()
    (RESULTS / "installed-from").write_text(how)
    Path("/etc/bouheki/units/bh-guarded.service.toml").write_text(
        '[network]\ndeny = ["10.0.1.71"]\n'
    )
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "connect.py").write_text(CONNECT)
    Path(f"/etc/systemd/system/{GUARDED}").write_text(UNIT)
    sh("systemctl", "daemon-reload")
    sh("systemctl", "enable", "bouheki.service", GUARDED)
    verify = sh("systemd-analyze", "verify", "default.target", check=False)
    (RESULTS / "verify-before-reboot.txt").write_text(verify)
    if "cycle" in verify.lower():
        print(verify)
        return 1
    (STATE / "installed").touch()
    # When this job ends, reboot instead of powering off (a runtime drop-in:
    # gone after the reboot, so the second boot powers off).
    d = Path("/run/systemd/system/bouheki-lab.service.d")
    d.mkdir(parents=True, exist_ok=True)
    (d / "reboot.conf").write_text(
        "[Service]\nExecStopPost=\nExecStopPost=/bin/systemctl reboot --no-block\n"
    )
    sh("systemctl", "daemon-reload")
    print(f"[reboot] installed ({how}) and enabled; rebooting", flush=True)
    return 3  # not finished: the second boot writes the verdict


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.5)
    return bool(pred())


def after() -> int:
    failures: list[str] = []
    how = (RESULTS / "installed-from").read_text()

    def check(ok: bool, what: str) -> None:
        print(f"[reboot] {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    # (Not is-system-running --wait: this job is itself part of the boot.)
    check(prop("bouheki.service", "ActiveState") == "active", "bouheki is active after the boot")
    done = wait_for((STATE / "guarded.json").exists, 60)
    check(done, f"{GUARDED} ran at boot")
    if done:
        got = json.loads((STATE / "guarded.json").read_text())
        check(got["errno"] == errno.EPERM, f"its first connect was blocked (errno {got['errno']})")
        ready = int(prop("bouheki.service", "ActiveEnterTimestampMonotonic"))
        check(got["at_usec"] >= ready, "it connected after bouheki was ready")
    start = int(prop("bouheki.service", "ExecMainStartTimestampMonotonic"))
    ready = int(prop("bouheki.service", "ActiveEnterTimestampMonotonic"))
    guarded_start = int(prop(GUARDED, "ExecMainStartTimestampMonotonic"))
    check(0 < ready <= guarded_start, f"{GUARDED} started after bouheki's READY=1")

    def logged() -> bool:
        sh("journalctl", "--sync")
        out = sh("journalctl", "-b", "-o", "cat", "--no-pager", "BOUHEKI_DADDR=10.0.1.71",
                 f"OBJECT_SYSTEMD_UNIT={GUARDED}")  # fmt: skip
        return bool(out.strip())

    check(wait_for(logged, 30), "the block is in the journal under the guarded unit")
    boot_log = sh("journalctl", "-b", "-o", "cat", "--no-pager")
    check("ordering cycle" not in boot_log.lower(), "systemd found no ordering cycle at boot")

    # The API came once the bus did: bouheki started before dbus.socket.
    def answers() -> bool:
        r = subprocess.run(["bouhekictl", "status"], capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and "Policy generation" in r.stdout

    check(wait_for(answers, 60), "bouhekictl status answers over D-Bus")
    dbus_up = int(prop("dbus.service", "ActiveEnterTimestampMonotonic") or 0)
    check(start < dbus_up, "bouheki started before the system bus")
    # (systemd-analyze critical-chain has nothing to say before the boot,
    # which this job is part of, has finished: the timestamps say it.)
    figure(f"reboot ({how}): bouheki start to READY=1 at boot {(ready - start) / 1e6:.1f} s; "
           f"READY=1 at {ready / 1e6:.1f} s after boot; {GUARDED} started at "
           f"{guarded_start / 1e6:.1f} s")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(before() if sys.argv[1:] == ["before"] else after())
