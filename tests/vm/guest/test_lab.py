"""The lab itself: the guest kernel can enforce, and the system services answer.

Runs inside the lab guest as root (tests/vm/run)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import labkit
import pytest

PROBE = r"""
#include <linux/socket.h>
#include <linux/in.h>
BPF_ARRAY(seen_cgroup, u64, 1);
LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen) {
    if (address->sa_family != AF_INET)
        return 0;
    struct sockaddr_in *in = (struct sockaddr_in *)address;
    if (in->sin_addr.s_addr != DENIED)
        return 0;
    int zero = 0;
    u64 id = bpf_get_current_cgroup_id();
    seen_cgroup.update(&zero, &id);
    return -EPERM;
}
"""


def connect_errno(addr: str) -> int:
    return labkit.connect_errno(addr, 9)


def test_bpf_is_an_active_lsm() -> None:
    lsms = Path("/sys/kernel/security/lsm").read_text().split(",")
    assert "bpf" in lsms


def test_kernel_has_btf() -> None:
    assert Path("/sys/kernel/btf/vmlinux").stat().st_size > 0


@pytest.fixture(scope="module")
def probe():
    from bcc import BPF

    denied = int.from_bytes(socket.inet_aton("127.0.0.2"), "little")
    b = BPF(text=PROBE, cflags=[f"-DDENIED={denied}u"])
    yield b
    b.cleanup()


def test_lsm_program_blocks_one_address_and_not_another(probe) -> None:
    assert connect_errno("127.0.0.2") == errno.EPERM
    assert connect_errno("127.0.0.1") == errno.ECONNREFUSED


def test_cgroup_id_is_the_inode_of_the_unit_cgroup(probe) -> None:
    assert connect_errno("127.0.0.2") == errno.EPERM
    seen = probe["seen_cgroup"][0].value
    rel = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
    assert rel.endswith("bouheki-lab.service"), rel
    assert seen == os.stat(f"/sys/fs/cgroup{rel}").st_ino


def test_detaching_restores_connectivity() -> None:
    from bcc import BPF

    denied = int.from_bytes(socket.inet_aton("127.0.0.3"), "little")
    b = BPF(text=PROBE, cflags=[f"-DDENIED={denied}u"])
    assert connect_errno("127.0.0.3") == errno.EPERM
    b.cleanup()
    assert connect_errno("127.0.0.3") == errno.ECONNREFUSED


def test_system_bus_answers() -> None:
    out = subprocess.run(
        ["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
         "org.freedesktop.DBus.Peer", "Ping"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_journald_records_structured_fields() -> None:
    from systemd import journal

    mark = uuid.uuid4().hex
    journal.send("lab check", BOUHEKI_LABMARK=mark, SYSLOG_IDENTIFIER="bouheki-lab-test")
    subprocess.run(["journalctl", "--sync"], check=True, timeout=30)
    out = subprocess.run(
        ["journalctl", "-o", "json", f"BOUHEKI_LABMARK={mark}", "--no-pager"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(entries) == 1
    assert entries[0]["MESSAGE"] == "lab check"
    assert entries[0]["SYSLOG_IDENTIFIER"] == "bouheki-lab-test"
