"""Events that leave the host: a blocked connect's journal entry, sent by
systemd-journal-upload to a systemd-journal-remote listening on loopback,
arrives with every field of doc/EVENTS.md, none of them empty."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import UNITS, sh

UNIT = "bh-events.service"
REMOTE = Path("/var/tmp/bh-remote")
PORT = 19533  # not the packaged socket's 19532
MSG_BLOCKED = "970ffe9247c14e91a2dc0faca0c6ca78"
ALWAYS = {
    "MESSAGE_ID", "PRIORITY", "MESSAGE", "SYSLOG_IDENTIFIER", "BOUHEKI_SCHEMA",
    "BOUHEKI_ACTION", "BOUHEKI_DADDR", "BOUHEKI_DPORT", "BOUHEKI_PROTOCOL", "BOUHEKI_COMM",
    "BOUHEKI_EXE", "BOUHEKI_EXE_DEV", "BOUHEKI_EXE_INODE", "BOUHEKI_PID", "BOUHEKI_UID",
    "BOUHEKI_GID", "BOUHEKI_UNIT", "OBJECT_SYSTEMD_UNIT", "OBJECT_PID", "BOUHEKI_CGROUP_ID",
    "BOUHEKI_POLICY", "BOUHEKI_RULE", "BOUHEKI_HOOK", "BOUHEKI_REASON",
}  # fmt: skip


def entries(*args: str) -> list[dict[str, str]]:
    out = sh("journalctl", "-o", "json", "--no-pager", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def remote(daemon: None) -> Iterator[Path]:
    shutil.rmtree(REMOTE, ignore_errors=True)
    REMOTE.mkdir(parents=True)
    sh("systemd-run", "--quiet", "--unit=bh-jremote", "--",
       "/lib/systemd/systemd-journal-remote", f"--listen-http=127.0.0.1:{PORT}",
       f"--output={REMOTE}/remote.journal", "--split-mode=none")  # fmt: skip
    assert labkit.wait_for(
        lambda: sh("curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{PORT}/",
                   check=False).returncode == 0, 30)  # fmt: skip
    (UNITS / f"{UNIT}.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    assert sh("systemctl", "reload", "bouheki", check=False, timeout=300).returncode == 0
    yield REMOTE / "remote.journal"
    sh("systemctl", "stop", "bh-jremote", check=False)
    (UNITS / f"{UNIT}.toml").unlink()
    sh("systemctl", "reload", "bouheki", check=False, timeout=300)


def test_an_event_reaches_journal_remote_with_every_field(
    remote: Path, hosts: labkit.TestHosts
) -> None:
    sh("journalctl", "--sync")
    (last,) = entries("-n", "1")
    cursor = last["__CURSOR"]  # what comes after it is this test's
    since = int(last["__REALTIME_TIMESTAMP"])
    # The process lives on after its blocked connect, so its executable's
    # path can be read reliably (a process gone by then has only its
    # identity in the event: tests/unit/test_exe_paths.py).
    connect = (
        "import socket, time; s = socket.socket(); "
        "print(s.connect_ex(('10.0.1.71', 80))); time.sleep(3)"
    )
    r = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={UNIT}", "--",
           "/usr/bin/python3", "-c", connect)  # fmt: skip
    assert r.stdout.strip() == "1"  # EPERM
    match = (f"MESSAGE_ID={MSG_BLOCKED}", f"BOUHEKI_UNIT={UNIT}")

    def logged() -> list[dict[str, str]]:
        # Not --after-cursor with matches: journalctl 252 then finds nothing.
        sh("journalctl", "--sync")
        return [e for e in entries(*match) if int(e["__REALTIME_TIMESTAMP"]) > since]

    assert labkit.wait_for(lambda: bool(logged()), 30)
    (local,) = logged()
    sh("/lib/systemd/systemd-journal-upload", f"--url=http://127.0.0.1:{PORT}",
       f"--after-cursor={cursor}", "--follow=no", "--save-state=/var/tmp/bh-upload.state",
       timeout=300)  # fmt: skip
    assert labkit.wait_for(lambda: bool(entries(f"--file={remote}", *match)), 30), (
        "journal-remote wrote no such entry"
    )
    (received,) = entries(f"--file={remote}", *match)
    fields = {k: v for k, v in received.items() if not k.startswith("_")}
    assert set(fields) >= ALWAYS, ALWAYS - set(fields)
    assert all(v != "" for v in fields.values()), fields
    assert {k: local[k] for k in fields} == fields  # arrived as written
    assert fields["BOUHEKI_SCHEMA"] == "1"
    assert fields["BOUHEKI_EXE"] == os.path.realpath("/usr/bin/python3")
    st = os.stat(fields["BOUHEKI_EXE"])
    assert fields["BOUHEKI_EXE_INODE"] == str(st.st_ino)
    assert fields["BOUHEKI_EXE_DEV"] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
