"""The benchmark, inside the lab guest (bench/guest-bench runs it as root).

Phases, each writing its part of /results/bench.json as soon as it is done:

connect  connect() cost from inside a unit, under (a) no program, (b) bouheki
         with 10 prefixes, (c) bouheki with 100,000 prefixes and 60 rules,
         (d) systemd's IPAddressDeny= with the same prefixes; rounds
         interleave a, b, c, d (rotated each round) to cancel drift. Then the
         programs' own cost per call from the kernel's BPF statistics.
         bouheki's programs are loaded once, through the library the daemon
         uses; (a) and (d) detach its LSM programs, (b) and (c) re-attach
         them (bcc keeps the loaded programs: no recompile).
pieces   each piece of a judging program alone (bench/pieces.py): the empty
         program, the cgroup id, each map lookup, the counter, the task's
         fields; ns per call by the kernel's accounting, minus the floor.
reload   parse, compile and map-write times for 1k, 10k, 100k prefixes, and
         the kernel memory one generation of them takes (the memory cgroup's
         kernel counters around an apply).
startup  time to READY=1 and RSS: bouheki.service next to a bare bcc script
         loading the same program with the same flags, interleaved.
footprint the daemon's RSS after reloads that add and remove a unit policy
         of 100k prefixes.
flood    one process doing blocked connects for 10 s against the running
         daemon: attempts, events received, dropped, journal entries, CPU, RSS.

Knobs (tests/vm/run --env NAME=VALUE): BENCH_PHASES=connect,pieces,reload,startup,footprint,flood
and BENCH_QUICK=1 (small sizes and few repeats, to try the machinery).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policies
from summary import ratio, summarise

SRC = Path(os.environ.get("BOUHEKI_SRC", "/src"))
RESULTS = Path(os.environ.get("BENCH_RESULTS", "/results"))
LOOP = str(SRC / "build/bench/connect-loop")
WORK = Path("/run/bench")
CONF = WORK / "conf"
UNITS_ETC = Path("/etc/bouheki/units")
# Below the ephemeral range (32768-60999): a connect to a closed port in that
# range can pick the port itself as its source and connect to itself.
LISTEN_PORT, CLOSED_PORT = "12001", "12002"
TARGETS = {"listener": LISTEN_PORT, "closed": CLOSED_PORT}
CONFIGS = ("a", "b", "c", "d")
UNIT = {c: f"bench-{c}.service" for c in CONFIGS}
LOOP_CPU = "1"  # the loops and the listener share vCPU 1; the rest runs on 0
MSG_BLOCKED = "970ffe9247c14e91a2dc0faca0c6ca78"
MSG_SUPPRESSED = "b0e725fb6ece42ff924bb17d1b58ed94"
T0 = time.monotonic()


@dataclass
class Knobs:
    rounds: int = 7  # connect rounds (each: a, b, c, d once)
    n: int = 2000  # connects per loop run and target
    large: int = 100_000  # prefixes of (c) and (d)
    stats_repeats: int = 5
    stats_n: int = 1000
    reload_sizes: tuple[int, ...] = (1000, 10_000, 100_000)
    reload_repeats: int = 5
    startup_repeats: int = 5
    flood_repeats: int = 5
    flood_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> Knobs:
        if os.environ.get("BENCH_QUICK"):
            return cls(rounds=2, n=300, large=10_000, stats_repeats=2, stats_n=200,
                       reload_sizes=(1000, 10_000), reload_repeats=2, startup_repeats=1,
                       flood_repeats=1, flood_seconds=3.0)  # fmt: skip
        return cls()


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def sh(*cmd: str, timeout: float = 900, check: bool = True, **kw: Any) -> str:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:200]} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.monotonic()
    out = fn()
    return out, time.monotonic() - t


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False) + "\n")
        tmp.replace(self.path)


# -- small system helpers -------------------------------------------------


def own_cgroup() -> Path:
    rel = Path("/proc/self/cgroup").read_text().split("::", 1)[1].strip()
    return Path("/sys/fs/cgroup") / rel.lstrip("/")


def memstat(cg: Path) -> dict[str, int]:
    out = {}
    for line in (cg / "memory.stat").read_text().splitlines():
        k, v = line.split()
        out[k] = int(v)
    return out


def mem_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = ("kernel", "slab_unreclaimable", "percpu", "vmalloc", "anon")
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    return out


def unit_props(unit: str, *names: str) -> dict[str, str]:
    out = sh("systemctl", "show", unit, "--property=" + ",".join(names))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def bpftool_json(*args: str) -> Any:
    return json.loads(sh("bpftool", "-j", *args) or "null")


def prog_stats(ids: list[int]) -> dict[int, tuple[int, int]]:
    """prog id -> (run_time_ns, run_cnt)"""
    out = {}
    for p in bpftool_json("prog", "show"):
        if p["id"] in ids:
            out[p["id"]] = (int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0)))
    return out


def lsm_prog_ids() -> dict[str, int]:
    return {
        p["name"]: p["id"]
        for p in bpftool_json("prog", "show")
        if p.get("type") == "lsm" and p.get("name") in ("socket_connect", "socket_sendmsg")
    }


def host_address(prefix: str) -> str:
    net = ipaddress.ip_network(prefix)
    return str(net.network_address if net.prefixlen == 32 else net[1])


def wait_port(port: str, timeout: float = 30) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(port))) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


# -- the connect loop, in a unit --------------------------------------------


def loop_cmd(unit: str, mode: str, addr: str, n: int, ports: list[str]) -> list[str]:
    return [
        "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}",
        "-p", f"CPUAffinity={LOOP_CPU}", "--", LOOP, mode, addr, str(n), *ports,
    ]  # fmt: skip


def busy_jiffies() -> int:
    """CPU time spent by anything, all CPUs, in USER_HZ ticks."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    v = [int(x) for x in f]
    return sum(v) - v[3] - v[4]  # minus idle and iowait


def pid1_jiffies() -> int:
    f = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def wait_idle(limit: float = 30.0) -> float:
    """Until the guest is idle (under 10% of its CPUs over half a second):
    after a unit starts, systemd and dbus-daemon work for a while (seconds
    with a 100,000-entry IPAddressDeny=), and under TCG a busy vCPU slows the
    other one. Returns the time waited."""
    t0 = time.monotonic()
    last, quiet = busy_jiffies(), 0
    while time.monotonic() - t0 < limit and quiet < 3:  # 1.5 s in a row
        time.sleep(0.5)
        now = busy_jiffies()
        quiet = quiet + 1 if now - last <= 10 else 0
        last = now
    return time.monotonic() - t0


def run_loop(
    unit: str, n: int, ports: list[str], while_held: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """run_once(), again (twice at most) when systemd worked during the loop."""
    for attempt in range(3):
        data = run_once(unit, n, ports, while_held)
        data["attempt"] = attempt
        if data["pid1_busy_s"] <= 0.1:
            break
        log(f"{unit}: systemd was busy for {data['pid1_busy_s']:.2f} s during the loop: again")
    return data


def run_once(
    unit: str, n: int, ports: list[str], while_held: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """The connect loop in a fresh transient unit, started once the guest has
    settled after the unit's start; while_held() runs after the loop while
    the unit (its cgroup, whatever systemd attached to it) still exists."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        loop_cmd(unit, "client-sync", "127.0.0.1", n, ports),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdin is not None and p.stdout is not None
    try:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{unit}: the loop did not start")
        waited = wait_idle()
        pid1 = pid1_jiffies()
        t_go = time.monotonic()
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        loop_s = time.monotonic() - t_go
        pid1 = pid1_jiffies() - pid1
        if not line:
            raise RuntimeError(f"{unit}: the loop failed")
        data = json.loads(line)
        data["held"] = while_held() if while_held else None
    finally:
        p.stdin.close()
        p.wait(timeout=120)
    data["settle_s"] = waited
    data["loop_s"] = loop_s
    data["pid1_busy_s"] = pid1 / os.sysconf("SC_CLK_TCK")
    data["unit_wall_s"] = time.monotonic() - t0
    return data


TRY_CONNECT = """
import errno, socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], 80))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"""


def try_connect(unit: str, addr: str) -> str:
    """One TCP connect from inside the unit: connected, timeout or an errno name."""
    return sh(
        "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}", "--",
        "python3", "-c", TRY_CONNECT, addr, timeout=120,
    ).strip()  # fmt: skip


def check_runs(cfg: str, data: dict[str, Any]) -> None:
    n = data["n"]
    for run in data["runs"]:
        want = "ok" if str(run["port"]) == LISTEN_PORT else "refused"
        if run[want] != n:
            raise RuntimeError(f"({cfg}) port {run['port']}: {run} (expected {want} = {n})")


# -- phase: connect ------------------------------------------------------------


class Lsm:
    """Attach/detach bouheki's LSM programs without reloading them."""

    NAMES = ("socket_connect", "socket_sendmsg")

    def __init__(self, programs: Any) -> None:
        self.bpf = programs.bpf
        self.attached = True

    def set(self, on: bool) -> None:
        if on == self.attached:
            return
        for name in self.NAMES:
            (self.bpf.attach_lsm if on else self.bpf.detach_lsm)(name)
        self.attached = on
        # Untimed connects right after the change (fresh trampolines, freed
        # ones), so that the next timed loop does not pay for it.
        sh("taskset", "-c", LOOP_CPU, LOOP, "client", "127.0.0.1", "500", LISTEN_PORT, CLOSED_PORT,
           check=False)  # fmt: skip


@contextlib.contextmanager
def listener() -> Iterator[None]:
    p = subprocess.Popen(["taskset", "-c", LOOP_CPU, LOOP, "serve", LISTEN_PORT])
    try:
        wait_port(LISTEN_PORT)
        yield
    finally:
        p.kill()
        p.wait()


@contextlib.contextmanager
def dummy_hosts(addrs: list[str]) -> Iterator[None]:
    """Local addresses for the blocked-connect checks: systemd's filter acts
    on packets, so a denied address must be routable to be tried at all."""
    sh("ip", "link", "add", "bhbench0", "type", "dummy")
    try:
        for a in addrs:
            sh("ip", "addr", "add", f"{a}/32", "dev", "bhbench0")
        sh("ip", "link", "set", "bhbench0", "up")
        yield
    finally:
        sh("ip", "link", "del", "bhbench0", check=False)


def write_conf(files: dict[str, str], main: str = "") -> Path:
    if CONF.exists():
        sh("rm", "-rf", str(CONF))
    (CONF / "units").mkdir(parents=True)
    (CONF / "bouheki.toml").write_text(main)
    for name, text in files.items():
        (CONF / "units" / name).write_text(text)
    return CONF / "bouheki.toml"


def apply_conf(
    enforcer: Any, main: Path, previous: dict[str, int] | None = None
) -> tuple[Any, dict[str, float]]:
    """The daemon's reload path on the configuration at main, timed: parse,
    compile, write. Returns the compiled set and the three times."""
    from bouheki.config import loader
    from bouheki.policy.assemble import compile_policy_set
    from bouheki.policy.env import Environment

    ps, t_parse = timed(lambda: loader.load(main, [CONF]))
    compiled, t_compile = timed(lambda: compile_policy_set(ps, Environment(), previous))
    _, t_write = timed(lambda: enforcer.apply(compiled))
    return compiled, {"parse": t_parse, "compile": t_compile, "write": t_write}


def applied_times(times: dict[str, float]) -> str:
    return ", ".join(f"{step} {s:.1f} s" for step, s in times.items())


def phase_connect(k: Knobs, res: Results, state: dict[str, Any]) -> None:
    from bouheki.kernel import loader as kloader
    from bouheki.kernel.enforcer import Enforcer

    out: dict[str, Any] = {"n": k.n, "rounds": k.rounds, "large_prefixes": k.large}
    large_text, large_prefixes = policies.large_policy(k.large)
    small_prefixes = policies.prefixes(10)
    main = write_conf({
        "bench-b.service.toml": policies.small_policy(10),
        "bench-c.service.toml": large_text,
    })  # fmt: skip
    cg = own_cgroup()
    m0 = memstat(cg)
    programs, t_load = timed(kloader.load)
    time.sleep(2)
    out["programs_load_s"] = t_load
    out["programs_load_kernel_mem"] = mem_delta(m0, memstat(cg))
    log(f"programs loaded in {t_load:.1f} s")
    enforcer = Enforcer(programs)
    state["programs"], state["enforcer"] = programs, enforcer
    compiled, times = apply_conf(enforcer, main)
    state["compiled"] = compiled
    tables = {t.name: t for t in compiled.tables}
    c_tables = tables[UNIT["c"]]
    from bouheki.kernel.pack import filter_slots
    from bouheki.policy.inline import inline_sets

    filters = filter_slots(compiled.tables)

    out["policies"] = {
        name: {"rules": t.rule_count, "dst4_entries": len(t.dst4),
               "port_entries": len(t.ports), "identity_entries":
               len(t.comm) + len(t.exe) + len(t.uid) + len(t.gid),
               # what the policy's value holds inline, and the dimensions in maps
               "inline_spans": len(inline_sets(t).spans),
               "inline_keys": len(inline_sets(t).keys),
               "in_maps": inline_sets(t).in_maps,
               "filter4": filters.get(t.policy_id, 0)}
        for name, t in tables.items()
    }  # fmt: skip
    out["apply_bc_s"] = times
    log(f"(b)+(c) applied: {applied_times(times)};"
        f" (c) has {c_tables.rule_count} rules, {len(c_tables.dst4)} IPv4 prefixes")  # fmt: skip
    lsm = Lsm(programs)
    lsm.set(False)
    state["lsm"] = lsm

    # (d): the same prefixes as IPAddressDeny= of the transient unit, in a drop-in.
    dropin = Path(f"/run/systemd/system/{UNIT['d']}.d")
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "50-bench.conf").write_text("[Service]\n" + policies.systemd_deny(large_prefixes))
    _, t_reload = timed(lambda: sh("systemctl", "daemon-reload"))
    out["systemd"] = {"deny_entries": len(large_prefixes), "daemon_reload_s": t_reload}
    log(f"(d): {len(large_prefixes)} IPAddressDeny= entries; daemon-reload {t_reload:.1f} s")

    # Blocked-connect checks: each configuration enforces what it claims.
    rule_count = policies.rules_to_count()
    addr_b = host_address(small_prefixes[0])
    addr_c = host_address(large_prefixes[rule_count])  # first of network.deny
    checks = {}
    with dummy_hosts([addr_b, addr_c]), listener():
        for cfg, addr in (("b", addr_b), ("c", addr_c), ("d", addr_c), ("a", addr_c)):
            lsm.set(cfg in "bc")
            outcome = try_connect(UNIT[cfg], addr)
            # bouheki refuses the connect (EPERM); systemd drops the SYN, so
            # the connect times out; nothing listens there, so an allowed
            # connect is refused.
            blocked = outcome in ("EPERM", "timeout")
            checks[cfg] = {"addr": addr, "outcome": outcome, "blocked": blocked}
            if blocked != (cfg != "a"):
                raise RuntimeError(f"({cfg}) does not enforce its policy: {addr} -> {outcome}")
        out["blocked_checks"] = checks
        log(f"checks: {checks}")

        rounds: list[dict[str, Any]] = []
        for r in range(k.rounds):
            order = CONFIGS[r % 4 :] + CONFIGS[: r % 4]
            row: dict[str, Any] = {}
            for cfg in order:
                lsm.set(cfg in "bc")
                data = run_loop(UNIT[cfg], k.n, [LISTEN_PORT, CLOSED_PORT])
                check_runs(cfg, data)
                row[cfg] = data
            rounds.append(row)
            brief = " ".join(
                f"{c}={row[c]['runs'][0]['cpu_ns'] / row[c]['n'] / 1e3:.0f}/"
                f"{row[c]['runs'][1]['cpu_ns'] / row[c]['n'] / 1e3:.0f}"
                for c in CONFIGS
            )
            settle = max(row[c]["settle_s"] for c in CONFIGS)
            log(f"round {r + 1}/{k.rounds} ({''.join(order)}), cpu us listener/closed: {brief}; "
                f"settled within {settle:.1f} s")  # fmt: skip
        out["raw_rounds"] = rounds
        out["summary"] = summarise_connect(rounds)
        res.put("connect", out)

        out["bpf_stats"] = bpf_stats_pass(k, lsm)
        res.put("connect", out)
        out["host_policy"] = host_policy_stats(k, lsm, enforcer, compiled, addr_c)
        res.put("connect", out)
    lsm.set(True)
    sh("rm", "-rf", str(dropin))
    sh("systemctl", "daemon-reload")


def per_connect_us(run: dict[str, Any], metric: str) -> float:
    """The run's median chunk, in microseconds per connect: a burst of host
    contention spoils a chunk or two, not the figure."""
    per = run["n"] / run["chunks"] if "chunks" in run else run["n"]
    chunks = run.get(f"chunk_{metric}") or [run[metric]]
    return statistics.median(chunks) / per / 1e3


def summarise_connect(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, port in TARGETS.items():
        for metric in ("cpu_ns", "ns"):
            per: dict[str, list[float]] = {c: [] for c in CONFIGS}
            for row in rounds:
                for c in CONFIGS:
                    run = next(x for x in row[c]["runs"] if str(x["port"]) == port)
                    run = {**run, "n": row[c]["n"], "chunks": row[c].get("chunks", 1)}
                    per[c].append(per_connect_us(run, metric))
            ratios = {
                f"{x}/{y}": [ratio(per[x][i], per[y][i]) or 0.0 for i in range(len(rounds))]
                for x, y in (("b", "a"), ("c", "a"), ("d", "a"), ("c", "b"), ("c", "d"))
            }
            out[f"{target}.{'cpu' if metric == 'cpu_ns' else 'wall'}"] = {
                "us": {c: summarise(v) for c, v in per.items()},
                "ratios": {name: summarise(v) for name, v in ratios.items()},
            }
    out["unit_start_s"] = {
        c: summarise([row[c]["unit_wall_s"] - row[c]["loop_s"] for row in rounds]) for c in CONFIGS
    }
    return out


FLOOR_SRC = """
struct socket;
struct sockaddr;
LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	return 0;
}
"""


def d_programs_stats() -> tuple[int, int, list[str]]:
    """run time and count of the programs systemd attached to (d)'s unit."""
    cg = f"/sys/fs/cgroup/system.slice/{UNIT['d']}"
    attached = bpftool_json("cgroup", "show", cg, "effective") or []
    stats = prog_stats([p["id"] for p in attached])
    names = [p.get("name", "?") for p in attached]
    return sum(x[0] for x in stats.values()), sum(x[1] for x in stats.values()), names


def bpf_stats_pass(k: Knobs, lsm: Lsm) -> dict[str, Any]:
    """Per-call cost from kernel.bpf_stats_enabled: bouheki's socket_connect
    in (b) and (c); systemd's two cgroup_skb programs of the unit in (d); and
    an empty LSM program on socket_connect ("floor": what any BPF LSM hook
    costs here, trampoline and statistics included), run in (a)'s unit."""
    from bcc import BPF

    lsm.set(True)
    ids = lsm_prog_ids()
    before_floor = {p["id"] for p in bpftool_json("prog", "show") if p.get("type") == "lsm"}
    floor = BPF(text=FLOOR_SRC)
    floor.detach_lsm("socket_connect")
    floor_ids = [
        p["id"]
        for p in bpftool_json("prog", "show")
        if p.get("type") == "lsm" and p["id"] not in before_floor
    ]
    connects = 2 * (k.stats_n + 100)
    configs = "bcdf"
    per: dict[str, dict[str, Any]] = {
        c: {"ns_per_call": [], "ns_per_connect": [], "calls_per_connect": []} for c in configs
    }
    ports = [LISTEN_PORT, CLOSED_PORT]
    sh("sysctl", "-q", "-w", "kernel.bpf_stats_enabled=1")
    try:
        for rep in range(k.stats_repeats):
            for cfg in configs[rep % 4 :] + configs[: rep % 4]:
                lsm.set(cfg in "bc")
                if cfg in "bcf":
                    pid = floor_ids[0] if cfg == "f" else ids["socket_connect"]
                    if cfg == "f":
                        floor.attach_lsm("socket_connect")
                    before = prog_stats([pid])[pid]
                    data = run_loop(UNIT["a" if cfg == "f" else cfg], k.stats_n, ports)
                    after = prog_stats([pid])[pid]
                    if cfg == "f":
                        floor.detach_lsm("socket_connect")
                    rt, cnt = after[0] - before[0], after[1] - before[1]
                else:
                    data = run_loop(UNIT["d"], k.stats_n, ports, d_programs_stats)
                    rt, cnt, per["d"]["programs"] = data["held"]
                check_runs(cfg, data)
                per[cfg]["ns_per_call"].append(rt / cnt if cnt else 0.0)
                per[cfg]["ns_per_connect"].append(rt / connects)
                per[cfg]["calls_per_connect"].append(cnt / connects)
            costs = (f"{c} {per[c]['ns_per_connect'][-1] / 1e3:.1f}" for c in configs)
            log(f"bpf stats {rep + 1}/{k.stats_repeats}, us/connect: {', '.join(costs)}")
    finally:
        sh("sysctl", "-q", "-w", "kernel.bpf_stats_enabled=0")
        floor.cleanup()
    out: dict[str, Any] = {"n": k.stats_n, "connects_per_run": connects}
    for c, d in per.items():
        out[c] = {key: summarise(v) if key != "programs" else v for key, v in d.items()}
    return out


def host_policy_stats(
    k: Knobs, lsm: Lsm, enforcer: Any, previous: Any, blocked_addr: str
) -> dict[str, Any]:
    """(h): (c)'s prefixes and rules as the host policy, judging (a)'s unit
    (no policy of its own: the scope lookup misses, the walk up its cgroup's
    ancestors misses, the host's entry decides). bouheki's socket_connect
    per call in (h), against (b) in the same runs, by the kernel's accounting."""
    main = write_conf({"bench-b.service.toml": policies.small_policy(10)},
                      main=policies.host_policy(k.large))  # fmt: skip
    _, times = apply_conf(enforcer, main, previous.ids)
    log(f"(h) applied: {applied_times(times)}")
    lsm.set(True)
    outcome = try_connect(UNIT["a"], blocked_addr)  # dummy_hosts holds it
    if outcome != "EPERM":
        raise RuntimeError(f"(h) does not enforce the host policy: {blocked_addr} -> {outcome}")
    pid = lsm_prog_ids()["socket_connect"]
    ports = [LISTEN_PORT, CLOSED_PORT]
    per: dict[str, list[float]] = {"b": [], "h": []}
    sh("sysctl", "-q", "-w", "kernel.bpf_stats_enabled=1")
    try:
        for rep in range(k.stats_repeats):
            for cfg in ("b", "h") if rep % 2 == 0 else ("h", "b"):
                before = prog_stats([pid])[pid]
                data = run_loop(UNIT["a" if cfg == "h" else cfg], k.stats_n, ports)
                after = prog_stats([pid])[pid]
                check_runs(cfg, data)
                rt, cnt = after[0] - before[0], after[1] - before[1]
                per[cfg].append(rt / cnt if cnt else 0.0)
            log(f"(h) stats {rep + 1}/{k.stats_repeats}: ns per call b {per['b'][-1]:.0f},"
                f" h {per['h'][-1]:.0f}")  # fmt: skip
    finally:
        sh("sysctl", "-q", "-w", "kernel.bpf_stats_enabled=0")
    return {
        "apply_s": times,
        "blocked_check": {"addr": blocked_addr, "outcome": outcome},
        "ns_per_call": {c: summarise(v) for c, v in per.items()},
        "raw_ns_per_call": per,
    }


# -- phase: pieces ----------------------------------------------------------------


def phase_pieces(k: Knobs, res: Results, state: dict[str, Any]) -> None:
    """What each piece of a judging program costs alone (bench/pieces.py):
    one LSM program per piece, attached alone in turn, the connect loop to
    the closed port in (b)'s unit, the kernel's run_time_ns / run_cnt. The
    pieces are shuffled within each round; a piece's cost is its ns per call
    minus the floor's of the same round. bouheki's own socket_connect takes
    its turn among them (judging by (b)'s policy), so that the whole program
    and its pieces are priced by the same loop."""
    import random

    import pieces
    from bcc import BPF

    from bouheki.kernel import btf
    from bouheki.kernel.loader import MapSizes

    lsm = state.get("lsm")
    if lsm is None:  # the phase alone: bouheki's programs with (b)'s policy
        from bouheki.kernel import loader as kloader
        from bouheki.kernel.enforcer import Enforcer

        enforcer = Enforcer(kloader.load())
        state["programs"], state["enforcer"] = enforcer.programs, enforcer
        apply_conf(enforcer, write_conf({"bench-b.service.toml": policies.small_policy(10)}))
        lsm = state["lsm"] = Lsm(enforcer.programs)
    # Before the pieces load: their programs are called socket_connect too.
    bouheki_id = lsm_prog_ids()["socket_connect"]
    lsm.set(False)  # bouheki's own programs: only in their turn
    cflags = [f"-I{SRC / 'bpf'}", "-Wno-macro-redefined", *MapSizes().cflags(), *btf.cflags()]
    prefixes = policies.prefixes(k.large)
    loaded: dict[str, tuple[Any, int]] = {}
    for name, (_, body) in pieces.PIECES.items():
        before = {p["id"] for p in bpftool_json("prog", "show") if p.get("type") == "lsm"}
        b = BPF(text=pieces.source(name), cflags=cflags)
        b.detach_lsm("socket_connect")
        (pid,) = [
            p["id"]
            for p in bpftool_json("prog", "show")
            if p.get("type") == "lsm" and p["id"] not in before
        ]
        pieces.fill(b, prefixes if "dst4" in body else [])
        loaded[name] = (b, pid)
    log(f"pieces: {len(loaded)} programs loaded")
    what = {name: what for name, (what, _) in pieces.PIECES.items()}
    loaded["bouheki"] = (None, bouheki_id)
    what["bouheki"] = "bouheki's socket_connect, whole, judging by (b)'s policy"
    ns: dict[str, list[float]] = {name: [] for name in loaded}
    extra: dict[str, list[float]] = {name: [] for name in loaded}
    sh("sysctl", "-q", "-w", "kernel.bpf_stats_enabled=1")
    try:
        for rnd in range(k.stats_repeats):
            order = list(loaded)
            random.Random(rnd).shuffle(order)
            got = {}
            for name in order:
                b, pid = loaded[name]
                if b is None:
                    lsm.set(True)
                else:
                    b.attach_lsm("socket_connect")
                try:
                    before = prog_stats([pid])[pid]
                    data = run_loop(UNIT["b"], k.stats_n, [CLOSED_PORT])
                    after = prog_stats([pid])[pid]
                finally:
                    if b is None:
                        lsm.set(False)
                    else:
                        b.detach_lsm("socket_connect")
                check_runs("b", data)
                rt, cnt = after[0] - before[0], after[1] - before[1]
                if cnt < k.stats_n:
                    raise RuntimeError(f"piece {name}: {cnt} calls for {k.stats_n} connects")
                got[name] = rt / cnt
            for name, v in got.items():
                ns[name].append(v)
                extra[name].append(v - got["floor"])
            log("pieces round " + str(rnd + 1) + ": "
                + ", ".join(f"{n} {got[n]:.0f}" for n in loaded))  # fmt: skip
    finally:
        sh("sysctl", "-q", "-w", "kernel.bpf_stats_enabled=0")
        for b, _ in loaded.values():
            if b is not None:
                b.cleanup()
    res.put("pieces", {
        "n": k.stats_n,
        "what": what,
        "ns_per_call": {name: summarise(v) for name, v in ns.items()},
        "over_floor": {name: summarise(v) for name, v in extra.items()},
    })  # fmt: skip


# -- phase: reload ----------------------------------------------------------------


def phase_reload(k: Knobs, res: Results, state: dict[str, Any]) -> None:
    from bouheki.config import loader
    from bouheki.kernel import loader as kloader
    from bouheki.kernel.enforcer import Enforcer
    from bouheki.policy.assemble import compile_policy_set
    from bouheki.policy.env import Environment

    cg = own_cgroup()
    enforcer = state.get("enforcer")
    if enforcer is None:
        enforcer = Enforcer(kloader.load())
        state["programs"], state["enforcer"] = enforcer.programs, enforcer
    maps = {m["name"]: m for m in bpftool_json("map", "show") if m.get("name")}
    out: dict[str, Any] = {
        "repeats": k.reload_repeats,
        "memlock": {
            name: maps[name].get("bytes_memlock")
            for name in ("dst4", "dst6", "ports", "scopes", "policies", "counters", "events")
            if name in maps
        },
        "sizes": {},
    }
    previous = state["compiled"].ids if state.get("compiled") else None
    for size in k.reload_sizes:
        main = write_conf({"bench-r.service.toml": policies.prefix_policy(size)})
        times: dict[str, list[float]] = {"parse": [], "compile": [], "write": [], "total": []}
        compiled = None
        for rep in range(k.reload_repeats):
            ps, t_parse = timed(lambda main=main: loader.load(main, [CONF]))
            compiled, t_compile = timed(
                lambda ps=ps: compile_policy_set(ps, Environment(), previous)
            )
            if rep == 0:
                # Every timed write replaces a generation of the same size,
                # as a reload of an unchanged configuration does.
                enforcer.apply(compiled)
            _, t_write = timed(lambda c=compiled: enforcer.apply(c))
            for key, v in (("parse", t_parse), ("compile", t_compile), ("write", t_write)):
                times[key].append(v)
            times["total"].append(t_parse + t_compile + t_write)
            log(f"reload {size}: parse {t_parse:.2f} s, compile {t_compile:.2f} s, "
                f"write {t_write:.2f} s")  # fmt: skip
        assert compiled is not None
        # One generation's kernel memory: apply over an empty state.
        enforcer.clear()
        time.sleep(3)
        m0 = memstat(cg)
        enforcer.apply(compiled)
        time.sleep(3)
        mem = mem_delta(m0, memstat(cg))
        out["sizes"][str(size)] = {
            "times_s": {key: summarise(v) for key, v in times.items()},
            "generation_kernel_mem": mem,
            "bytes_per_prefix": mem["kernel"] / size,
        }
        log(f"reload {size}: one generation takes {mem['kernel'] / 1e6:.2f} MB of kernel memory")
        res.put("reload", out)
    enforcer.clear()


# -- phase: startup ---------------------------------------------------------------


def write_cflags() -> Path:
    """The flags kernel/loader.py's load() gives bcc, for the bare script."""
    from bouheki.kernel import btf
    from bouheki.kernel import loader as kloader

    src = kloader.bpf_dir()
    cflags = [f"-I{src}", "-Wno-macro-redefined", *kloader.MapSizes().cflags(), *btf.cflags()]
    path = WORK / "cflags.json"
    path.write_text(json.dumps({"src": str(src / kloader.BPF_SOURCE), "cflags": cflags}))
    return path


def start_and_measure(unit: str, start: list[str]) -> dict[str, Any]:
    _, wall = timed(lambda: sh(*start, timeout=900))
    p = unit_props(unit, "InactiveExitTimestampMonotonic", "ExecMainStartTimestampMonotonic",
                   "ActiveEnterTimestampMonotonic", "MainPID", "ActiveState")  # fmt: skip
    if p.get("ActiveState") != "active":
        raise RuntimeError(f"{unit} is {p.get('ActiveState')} after start")
    time.sleep(2)
    st = proc_status(int(p["MainPID"]))
    # The unit's memory peak: the daemon and the compiler child it ran
    # (memory.peak, Linux 5.19), against the daemon's own VmHWM.
    peak_file = Path("/sys/fs/cgroup/system.slice") / unit / "memory.peak"
    unit_peak = int(peak_file.read_text()) if peak_file.exists() else 0
    active, begin = (
        int(p["ActiveEnterTimestampMonotonic"]),
        int(p["InactiveExitTimestampMonotonic"]),
    )
    return {
        "ready_s": (active - begin) / 1e6,
        "exec_to_ready_s": (active - int(p["ExecMainStartTimestampMonotonic"])) / 1e6,
        "start_command_s": wall,
        "rss": st["VmRSS"],
        "peak_rss": st["VmHWM"],
        "unit_peak": unit_peak,
    }


BREAKDOWN = """
import json, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
t = {"rss_python": rss()}
t0 = time.monotonic()
import bouheki.service.main, bouheki.bus.server, bouheki.kernel.loader
t["imports"] = time.monotonic() - t0
t["rss_after_imports"] = rss()
from bouheki.kernel import btf, requirements
from bouheki.config import loader
t0 = time.monotonic(); requirements.check(); t["requirements"] = time.monotonic() - t0
t0 = time.monotonic(); btf.cflags(); t["btf_offsets"] = time.monotonic() - t0
t["rss_after_btf"] = rss()
t0 = time.monotonic(); loader.load(); t["configuration"] = time.monotonic() - t0
print(json.dumps(t))
"""


def startup_breakdown() -> dict[str, float]:
    """What bouheki does before its bcc compile that the bare script does not."""
    return json.loads(sh("python3", "-c", BREAKDOWN, timeout=300))


def phase_startup(k: Knobs, res: Results, state: dict[str, Any]) -> None:
    cflags = write_cflags()
    bare_cmd = [
        "systemd-run", "--quiet", "--collect", "--unit=bench-bare.service",
        "-p", "Type=notify", "-p", "NotifyAccess=main", "-p", "LimitMEMLOCK=infinity",
        "-p", "TimeoutStartSec=15min", "--",
        "/usr/bin/python3", str(SRC / "bench/bare_bcc.py"), str(cflags),
    ]  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"bouheki": [], "bare": []}
    for rep in range(k.startup_repeats):
        order = ("bare", "bouheki") if rep % 2 == 0 else ("bouheki", "bare")
        for who in order:
            if who == "bare":
                m = start_and_measure("bench-bare.service", bare_cmd)
                sh("systemctl", "stop", "bench-bare.service")
            else:
                m = start_and_measure("bouheki.service", ["systemctl", "start", "bouheki"])
                sh("systemctl", "stop", "bouheki")
            runs[who].append(m)
            log(f"startup {rep + 1}/{k.startup_repeats} {who}: READY after {m['ready_s']:.1f} s,"
                f" RSS {m['rss'] / 2**20:.0f} MiB")  # fmt: skip
    out: dict[str, Any] = {"repeats": k.startup_repeats, "raw": runs}
    parts = [startup_breakdown() for _ in range(3)]
    out["breakdown_s"] = {key: summarise([p[key] for p in parts]) for key in parts[0]}
    log(f"bouheki's own start-up work: {parts[-1]}")
    for who, ms in runs.items():
        out[who] = {key: summarise([m[key] for m in ms]) for key in ms[0]}
    out["ratios"] = {
        key: summarise([
            ratio(a[key], b[key]) or 0.0 for a, b in zip(runs["bouheki"], runs["bare"])
        ])
        for key in ("ready_s", "rss")
    }  # fmt: skip
    res.put("startup", out)


# -- phase: footprint -------------------------------------------------------------


def phase_footprint(k: Knobs, res: Results, state: dict[str, Any]) -> None:
    """The daemon's RSS with a large policy: after a reload that adds a
    unit policy of k.large prefixes, its peak (VmHWM) over that reload,
    after the same reload again (past generations must not stay), and after
    a reload back to the shipped configuration."""
    policy = UNITS_ETC / "bench-r.service.toml"
    sh("systemctl", "start", "bouheki", timeout=900)
    pid = int(unit_props("bouheki.service", "MainPID")["MainPID"])

    def reload() -> tuple[float, dict[str, int]]:
        _, t = timed(lambda: sh("bouhekictl", "--timeout", "900", "reload", timeout=900))
        time.sleep(2)
        return t, proc_status(pid)

    before = proc_status(pid)
    try:
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text(policies.prefix_policy(k.large))
        t_reload, loaded = reload()
        t_again, again = reload()
    finally:
        policy.unlink(missing_ok=True)
    _, back = reload()
    if int(unit_props("bouheki.service", "MainPID")["MainPID"]) != pid:
        raise RuntimeError("the daemon restarted during the large reloads")
    sh("systemctl", "stop", "bouheki")
    out = {
        "prefixes": k.large,
        "reload_s": t_reload,
        "reload_again_s": t_again,
        "rss_before": before["VmRSS"],
        "rss_after": loaded["VmRSS"],
        "peak_rss": loaded["VmHWM"],
        "rss_after_again": again["VmRSS"],
        "peak_rss_again": again["VmHWM"],
        "rss_after_back": back["VmRSS"],
    }
    log("footprint: " + ", ".join(f"{key} {v / 2**20 if 'rss' in key else v:.1f}"
                                  for key, v in out.items()))  # fmt: skip
    res.put("footprint", out)


# -- phase: flood -----------------------------------------------------------------


def daemon_stats() -> dict[str, int]:
    data = json.loads(sh("bouhekictl", "--json", "stats", timeout=120))
    return {k: int(data[k]) for k in ("events", "events_lost", "events_suppressed", "blocked")}


def journal_entries(*match: str) -> list[dict[str, Any]]:
    sh("journalctl", "--sync", check=False)
    out = sh("journalctl", "-o", "json", "--no-pager", *match, check=False)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def cpu_usec(unit: str) -> int:
    for line in Path(f"/sys/fs/cgroup/system.slice/{unit}/cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            self.stop.wait(0.5)


def phase_flood(k: Knobs, res: Results, state: dict[str, Any]) -> None:
    unit = "bench-flood.service"
    UNITS_ETC.mkdir(parents=True, exist_ok=True)
    (UNITS_ETC / f"{unit}.toml").write_text('[network]\ndeny = ["127.0.0.2"]\n')
    sh("systemctl", "start", "bouheki")
    sh("systemctl", "reload", "bouheki")
    from bouheki.config import loader

    settings = loader.load().settings
    pid = int(unit_props("bouheki.service", "MainPID")["MainPID"])
    runs = []
    for rep in range(k.flood_repeats):
        blocked_match = (f"MESSAGE_ID={MSG_BLOCKED}", f"BOUHEKI_UNIT={unit}")
        notice_match = (f"MESSAGE_ID={MSG_SUPPRESSED}", f"BOUHEKI_UNIT={unit}")
        j0 = len(journal_entries(*blocked_match)), len(journal_entries(*notice_match))
        s0, cpu0 = daemon_stats(), cpu_usec("bouheki.service")
        rss0 = proc_status(pid)["VmRSS"]
        sampler = RssSampler(pid)
        sampler.start()
        t0 = time.monotonic()
        flood = json.loads(sh(
            "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}",
            "-p", f"CPUAffinity={LOOP_CPU}", "--", LOOP, "flood", "127.0.0.2", "9",
            str(k.flood_seconds), timeout=600,
        ))  # fmt: skip
        t_flood = time.monotonic() - t0
        attempts = flood["attempts"]
        # Wait until the daemon has read what the ring buffer holds.
        s1, last, stable = daemon_stats(), None, 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            got = (s1["events"] - s0["events"]) + (s1["events_lost"] - s0["events_lost"])
            if got >= attempts:
                break
            stable = stable + 1 if (s1["events"], s1["events_lost"]) == last else 0
            if stable >= 3:
                break
            last = (s1["events"], s1["events_lost"])
            time.sleep(2)
            s1 = daemon_stats()
        t_drained = time.monotonic() - t0
        cpu1 = cpu_usec("bouheki.service")
        sampler.stop.set()
        sampler.join()
        received = s1["events"] - s0["events"]
        dropped = s1["events_lost"] - s0["events_lost"]
        logged = len(journal_entries(*blocked_match)) - j0[0]
        notices = len(journal_entries(*notice_match)) - j0[1]
        run = {
            "attempts": attempts,
            "eperm": flood["eperm"],
            "flood_s": flood["ns"] / 1e9,
            "received": received,
            "dropped": dropped,
            "unaccounted": attempts - received - dropped,
            "journal_entries": logged,
            "journal_suppressed_notices": notices,
            "suppressed": s1["events_suppressed"] - s0["events_suppressed"],
            "drained_after_s": t_drained - t_flood,
            "daemon_cpu_s": (cpu1 - cpu0) / 1e6,
            "daemon_cpu_pct": 100 * (cpu1 - cpu0) / 1e6 / t_drained,
            "rss_before": rss0,
            "rss_peak": max(sampler.peak, rss0),
            "attempts_per_s": attempts / (flood["ns"] / 1e9),
        }
        runs.append(run)
        log(f"flood {rep + 1}/{k.flood_repeats}: {json.dumps(run)}")
    out: dict[str, Any] = {
        "repeats": k.flood_repeats,
        "seconds": k.flood_seconds,
        "rate_limit": {"events": settings.event_rate_limit,
                       "interval_s": settings.event_rate_interval},
        "raw": runs,
    }  # fmt: skip
    for key in runs[0]:
        out[key] = summarise([r[key] for r in runs])
    res.put("flood", out)
    sh("systemctl", "stop", "bouheki")
    (UNITS_ETC / f"{unit}.toml").unlink()


# -- main ---------------------------------------------------------------------------


def meta(k: Knobs) -> dict[str, Any]:
    def first_line(*cmd: str) -> str:
        try:
            return sh(*cmd, check=False).splitlines()[0]
        except (IndexError, OSError):
            return "?"

    import bcc  # noqa: F401  (its version is what the programs were built with)

    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "guest_kernel": platform.release(),
        "guest_cpus": os.cpu_count(),
        "guest_mem_kb": int(Path("/proc/meminfo").read_text().split()[1]),
        "systemd": first_line("systemctl", "--version"),
        "python": platform.python_version(),
        "bcc": getattr(sys.modules["bcc"], "__version__", "?"),
        "quick": bool(os.environ.get("BENCH_QUICK")),
        "knobs": asdict(k),
    }


# The phases that run bouheki.service, whose programs must be the only ones.
DAEMON_PHASES = ("startup", "footprint", "flood")


def main() -> int:
    k = Knobs.from_env()
    default = "connect,pieces,reload,startup,footprint,flood"
    phases = os.environ.get("BENCH_PHASES", default).split(",")
    WORK.mkdir(parents=True, exist_ok=True)
    res = Results(RESULTS / "bench.json")
    sh(str(SRC / "tests/vm/guest-install"))
    for f in UNITS_ETC.glob("*"):
        sh("rm", "-rf", str(f))
    res.put("meta", meta(k))
    state: dict[str, Any] = {}
    failed: list[str] = []
    durations: dict[str, float] = {}
    funcs = {"connect": phase_connect, "pieces": phase_pieces, "reload": phase_reload,
             "footprint": phase_footprint,
             "startup": phase_startup, "flood": phase_flood}  # fmt: skip
    for name in phases:
        if name in DAEMON_PHASES and state.get("enforcer") is not None:
            state["enforcer"].close()  # one set of programs at a time
            state.clear()
        log(f"phase {name}")
        t = time.monotonic()
        try:
            funcs[name](k, res, state)
        except Exception:
            failed.append(name)
            log(f"phase {name} FAILED:\n{traceback.format_exc()}")
            res.put(f"{name}_error", traceback.format_exc())
        durations[name] = time.monotonic() - t
        res.data["meta"]["phase_s"] = durations
        res.put("meta", res.data["meta"])
    if state.get("enforcer") is not None:
        state["enforcer"].close()
    res.data["meta"]["failed"] = failed
    res.put("meta", res.data["meta"])
    log(f"done; failed phases: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
