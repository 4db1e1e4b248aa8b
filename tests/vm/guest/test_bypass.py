"""Every way around the connect hook that the design closes, each tried for
real against a denied destination; counters and events count each attempt."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import attacker
import labkit
import pytest

from bouheki.policy.tables import Hook, Verdict

UNIT = "bouheki-lab.service"
DENY_71 = """\
[network]
allow = ["10.0.1.0/24", "2001:db8::/64"]
deny = ["10.0.1.71", "2001:db8::71"]
"""
MSG_FASTOPEN = 0x20000000


def sendmmsg_errno(addr: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return attacker.sendmmsg(s, [(attacker.sin(addr, port), b"")])


def sendto_errno(addr: str, port: int, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM,
                 flags: int = 0) -> int:  # fmt: skip
    s = socket.socket(family, kind)
    s.settimeout(3)
    try:
        s.sendto(b"x", flags, (addr, port))
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        s.close()


def sendmsg_errno(addr: str, port: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendmsg([b"x"], [], 0, (addr, port))
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        s.close()


@pytest.fixture
def denied(enforce: labkit.Kernel, hosts: labkit.TestHosts) -> labkit.Kernel:
    enforce.apply_files({f"units/{UNIT}.toml": DENY_71})
    return enforce


def test_each_bypass_is_blocked_and_counted(denied: labkit.Kernel) -> None:
    attempts = {
        "connect": lambda: labkit.connect_errno("10.0.1.71"),
        "v4-mapped on AF_INET6": lambda: labkit.connect_errno(
            "::ffff:10.0.1.71", family=socket.AF_INET6
        ),
        "v6": lambda: labkit.connect_errno("2001:db8::71"),
        "udp connect": lambda: labkit.connect_errno("10.0.1.71", 53, proto=socket.IPPROTO_UDP),
        "udp sendto": lambda: sendto_errno("10.0.1.71", 53),
        "udp sendto v4-mapped": lambda: sendto_errno("::ffff:10.0.1.71", 53, socket.AF_INET6),
        "udp sendmsg": lambda: sendmsg_errno("10.0.1.71", 53),
        "udp sendmmsg": lambda: sendmmsg_errno("10.0.1.71", 53),
        "tcp fast open": lambda: sendto_errno(
            "10.0.1.71", 80, kind=socket.SOCK_STREAM, flags=MSG_FASTOPEN
        ),
    }  # fmt: skip
    results = {name: fn() for name, fn in attempts.items()}
    assert results == {name: labkit.EPERM for name in attempts}
    # The allowed neighbour still works, through the same paths.
    assert labkit.connect_errno("10.0.1.1") == 0
    assert sendto_errno("10.0.1.1", 53) == 0
    events = denied.take_events()
    assert len(events) == len(attempts)
    assert all(e.verdict == Verdict.BLOCKED for e in events)
    hooks = [e.hook for e in events]
    assert hooks.count(Hook.SENDMSG) == 5  # sendto x2, sendmsg, sendmmsg, fast open
    assert {e.daddr for e in events} == {"10.0.1.71", "2001:db8::71"}
    assert denied.blocked_total() == len(attempts)


def test_children_threads_and_exec_are_covered(denied: labkit.Kernel) -> None:
    # A forked child
    pid = os.fork()
    if pid == 0:
        os._exit(1 if labkit.connect_errno("10.0.1.71") == labkit.EPERM else 0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    # Another thread
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(labkit.connect_errno("10.0.1.71")))
    t.start()
    t.join()
    assert out == [labkit.EPERM]
    # An exec'd program, two levels down
    r = subprocess.run(["sh", "-c", "curl -s --max-time 5 http://10.0.1.71/"], timeout=30)
    assert r.returncode == 7
    r = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('10.0.1.1', 80), 5)"]
    )
    assert r.returncode == 0
    assert len(denied.take_events()) == 3
    assert denied.blocked_total() == 3


def test_renaming_comm_does_not_escape_an_exe_rule(
    enforce: labkit.Kernel, hosts: labkit.TestHosts
) -> None:
    py = os.path.realpath(sys.executable)
    enforce.apply_files({f"units/{UNIT}.toml": f'[exe]\ndeny = ["{py}"]\n'})
    code = (
        "import ctypes, socket, errno\n"
        "ctypes.CDLL(None).prctl(15, b'wget', 0, 0, 0)\n"
        "s = socket.socket()\n"
        "try:\n    s.connect(('10.0.1.1', 80)); print(0)\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=30)
    assert int(r.stdout) == labkit.EPERM
    (ev,) = enforce.take_events()
    assert ev.comm == "wget"  # it did rename itself; the inode still gave it away
    # curl is another executable: the same rule lets it through.
    assert labkit.curl("http://10.0.1.1/") == 0


def test_comm_rules_are_spoofable_by_design(
    enforce: labkit.Kernel, hosts: labkit.TestHosts
) -> None:
    """Documented: [command] matches comm, which a process may change."""
    enforce.apply_files({f"units/{UNIT}.toml": '[command]\ndeny = ["python3"]\n'})
    assert labkit.connect_errno("10.0.1.1") == labkit.EPERM  # pytest runs as comm python3
    labkit.set_comm("innocent")
    try:
        assert labkit.connect_errno("10.0.1.1") == 0
    finally:
        labkit.set_comm("python3")
    assert len(enforce.take_events()) == 1
