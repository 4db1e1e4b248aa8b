"""Helpers for the in-guest suites: load bouheki's programs, apply policies
written as files, serve the seed's addresses, make connections and read
what the kernel said about them."""

from __future__ import annotations

import ctypes
import errno
import http.server
import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bouheki.config import loader
from bouheki.kernel import loader as kloader
from bouheki.kernel.counters import GlobalCounts
from bouheki.kernel.enforcer import Applied, Enforcer
from bouheki.kernel.events import EventReader, KernelEvent
from bouheki.policy.assemble import CompiledPolicySet, compile_policy_set, policy_set_requirements
from bouheki.policy.env import Environment
from bouheki.policy.tables import MAX_RULES

SRC = Path(os.environ.get("BOUHEKI_SRC", Path(__file__).resolve().parents[3]))
SEED_ADDRS = ("10.0.1.1", "10.0.1.71", "93.184.216.34")
SEED_ADDRS6 = ("2001:db8::1", "2001:db8::71")
libc = ctypes.CDLL(None, use_errno=True)


def exe_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino


def environment_for(policy_set: Any) -> Environment:
    req = policy_set_requirements(policy_set)
    exes: dict[str, tuple[int, int] | None] = {}
    for p in req.exes:
        try:
            exes[p] = exe_id(p)
        except FileNotFoundError:
            exes[p] = None
    return Environment(exes=exes)


class Kernel:
    """bouheki's BPF programs, attached, with an event collector."""

    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer
        self.events: list[KernelEvent] = []
        self._lock = threading.Lock()
        self.reader = EventReader(enforcer.programs, self._on_event)
        self.tmp: Path = Path("/tmp")
        self.compiled: CompiledPolicySet | None = None

    @classmethod
    def load(cls) -> Kernel:
        return cls(Enforcer(kloader.load()))

    def _on_event(self, ev: KernelEvent) -> None:
        with self._lock:
            self.events.append(ev)

    def take_events(self) -> list[KernelEvent]:
        self.reader.drain()
        with self._lock:
            out, self.events = self.events, []
        return out

    def apply_files(self, files: dict[str, str], main: str | None = None) -> Applied:
        """files: path under a fresh config dir (e.g. 'units/x.service.toml') -> text."""
        d = self.tmp / f"conf-{secrets.token_hex(4)}"
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        main_path = d / (main or "bouheki.toml")
        if main is None:
            main_path.write_text(files.get("bouheki.toml", ""))
        ps = loader.load(main_path, search_dirs=[d])
        return self.apply_set(ps)

    def apply_yaml(self, text: str) -> Applied:
        p = self.tmp / f"legacy-{secrets.token_hex(4)}.yaml"
        p.write_text(text)
        return self.apply_set(loader.load(p))

    def apply_set(self, ps: Any) -> Applied:
        prev = self.compiled.ids if self.compiled else None
        self.compiled = compile_policy_set(ps, environment_for(ps), prev)
        return self.enforcer.apply(self.compiled)

    def clear(self) -> None:
        """No policy, no pending events, counters of the low policy ids at zero
        (the tests' policies get those ids)."""
        self.enforcer.clear()
        self.take_events()
        for pid in range(8):
            self.enforcer.counters.reset_policy(pid)
        self.compiled = None

    def global_counts(self) -> GlobalCounts:
        return self.enforcer.counters.global_counts()

    def blocked_total(self) -> int:
        """Blocked + would-block over every rule slot of every policy id in use
        (slots past a policy's current rule count hold its earlier versions')."""
        total = 0
        assert self.compiled is not None
        for pid in self.compiled.ids.values():
            for c in self.enforcer.counters.policy(pid, MAX_RULES):
                total += c.blocked + c.would_block
        return total

    def close(self) -> None:
        self.reader.stop()
        self.enforcer.clear()
        self.enforcer.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@dataclass
class TestHosts:
    """The seed's addresses, served by a local HTTP server on a dummy
    interface (the guest has no network device: nothing leaves it)."""

    ifname: str = "bhseed0"
    servers: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls) -> TestHosts:
        h = cls()
        subprocess.run(["ip", "link", "add", h.ifname, "type", "dummy"], check=True)
        for a in SEED_ADDRS:
            subprocess.run(["ip", "addr", "add", f"{a}/32", "dev", h.ifname], check=True)
        for a in SEED_ADDRS6:
            subprocess.run(["ip", "addr", "add", f"{a}/128", "dev", h.ifname, "nodad"], check=True)
        subprocess.run(["ip", "link", "set", h.ifname, "up"], check=True)
        srv = _Server6(("::", 80), _Quiet)  # dual-stack: v4 and v6
        h.servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return h

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()
        subprocess.run(["ip", "link", "del", self.ifname], check=False)


def connect_errno(addr: str, port: int = 80, family: int | None = None,
                  proto: int = socket.IPPROTO_TCP) -> int:  # fmt: skip
    """0 when connected, else the errno of connect()."""
    fam = family or (socket.AF_INET6 if ":" in addr else socket.AF_INET)
    kind = socket.SOCK_STREAM if proto == socket.IPPROTO_TCP else socket.SOCK_DGRAM
    s = socket.socket(fam, kind)
    s.settimeout(3)
    try:
        s.connect((addr, port))
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        s.close()


UNITS = Path("/etc/bouheki/units")


def sh(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def curl(url: str, prefix: list[str] | None = None) -> int:
    """curl's exit code: 0 fetched, 7 could not connect."""
    return run(
        [*(prefix or []), "curl", "-s", "-o", "/dev/null", "--max-time", "5", url]
    ).returncode


def container_prefix(own_mount_ns: bool = True) -> list[str]:
    """A container-like process: its own docker-<id>.scope and mount namespace."""
    unit = f"docker-{secrets.token_hex(12)}.scope"
    cmd = ["systemd-run", "--quiet", "--scope", f"--unit={unit}", "--"]
    return cmd + (["unshare", "-m", "--"] if own_mount_ns else [])


def as_user(uid: int = 1000) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def set_comm(name: str) -> None:
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def daemon_rss_kib() -> int:
    """The running bouheki's resident memory."""
    pid = sh("systemctl", "show", "-P", "MainPID", "bouheki").stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def stats() -> dict[str, Any]:
    """`bouhekictl --json stats`: the daemon's counters."""
    return json.loads(sh("bouhekictl", "--json", "stats").stdout)  # type: ignore[no-any-return]


@dataclass
class Meanwhile:
    """A long command's outcome, and how long each probe run during it took."""

    returncode: int
    stdout: str
    stderr: str
    waits: list[float]


def probe_while(cmd: list[str], probe: list[str], limit: float = 330) -> Meanwhile:
    """Run cmd in the background and the probe over and over until it ends
    (or `limit` seconds pass): does the daemon keep answering meanwhile?
    cmd's output goes to files (a reply of megabytes into a pipe nobody reads
    while probing would stall it), read once it has ended."""
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("w") as out, err_path.open("w") as err:
            p = subprocess.Popen(cmd, stdout=out, stderr=err)
        waits = []
        while p.poll() is None and time.monotonic() - started < limit:
            t = time.monotonic()
            sh(*probe, timeout=60)
            waits.append(time.monotonic() - t)
        p.wait(timeout=30)
        return Meanwhile(p.returncode, out_path.read_text(), err_path.read_text(), waits)


def wait_for(pred: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


EPERM = errno.EPERM


def figure(line: str) -> None:
    """A measured figure worth keeping (counts, timings): printed, and
    appended to /results/figures.txt, which the host keeps after the run."""
    print(line)
    results = Path("/results")
    if results.is_dir():
        with open(results / "figures.txt", "a") as f:
            f.write(line + "\n")


class Capture:
    """Every IPv4/IPv6 packet that crosses `ifname` towards one of `addrs`
    while open: an AF_PACKET receiver that sees what no socket would take
    (port 0, closed ports, SYNs, routed detours). Packets to the guest's own
    addresses, those on dummy interfaces included, all cross lo."""

    def __init__(self, addrs: tuple[str, ...] | list[str], ifname: str = "lo") -> None:
        import ipaddress

        self.targets = {ipaddress.ip_address(a).packed for a in addrs}
        self.hits: list[bytes] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._sock.bind((ifname, 0))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            ethertype = int.from_bytes(frame[12:14], "big")
            if ethertype == 0x0800:
                dst = frame[14 + 16 : 14 + 20]
            elif ethertype == 0x86DD:
                dst = frame[14 + 24 : 14 + 40]
            else:
                continue
            if dst in self.targets:
                self.hits.append(frame[14:])

    def packets(self, settle: float = 0.5) -> list[bytes]:
        """What reached a target so far (after letting queued packets land)."""
        time.sleep(settle)
        return list(self.hits)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ATTACKER = Path(__file__).resolve().parent / "attacker.py"


def attack(attempts: list[list[Any]], uid: int = 1000) -> list[int]:
    """Run attacker.py's attempts as an unprivileged user in this unit (the
    judged one): the errno of each, 0 where the call succeeded."""
    import json
    import sys

    r = subprocess.run(
        [sys.executable, str(ATTACKER), json.dumps(attempts)],
        capture_output=True, text=True, timeout=120, user=uid, group=uid, extra_groups=[],
    )  # fmt: skip
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"attacker failed ({r.returncode}): {r.stdout}{r.stderr}")
    if r.stderr.strip():
        print(r.stderr)
    return list(json.loads(r.stdout.strip().splitlines()[-1]))
