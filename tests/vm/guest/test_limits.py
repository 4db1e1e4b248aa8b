"""Hostile input against the running daemon: a policy at the limits (64
rules, 100,000 prefixes, 10,000 names) loads and enforces; one beyond them
is refused with a message naming the reason, and the running policy stays in
force, unchanged; a process flooding blocked connects costs the daemon a
bounded amount of memory and journal, and every attempt is accounted for."""

from __future__ import annotations

import json
import os
import re
import time

import labkit
from labkit import UNITS, sh

LIMITS_UNIT = "bh-limits.service"
FLOOD_UNIT = "bh-flood.service"
MSG_BLOCKED = "970ffe9247c14e91a2dc0faca0c6ca78"
MSG_SUPPRESSED = "b0e725fb6ece42ff924bb17d1b58ed94"
PREFIXES = 100_000
NAMES = 10_000
RULES = 64  # MAX_RULES: 62 [[rule]] entries + the network.deny and network.allow rules


def prefixes(n: int, first_octet: int) -> list[str]:
    """n distinct /32s in first_octet.0.0.0/8 (never the test hosts)."""
    return [f"{first_octet}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]


def limits_policy(extra_rules: int = 0) -> str:
    """Rule 0 blocks 10.0.1.71; the rest allow 10,000 names (spread over the
    rules, with exe and uid keys so every identity map is used); the simple
    form allows 10.0.1.1 and denies 100,000 prefixes plus 93.184.216.34."""
    names = [f"n{i}.limits.bouheki.test" for i in range(NAMES)]
    lines = ['mode = "block"', ""]
    lines += ["[network]", 'allow = ["10.0.1.1"]']
    lines.append(
        "deny = [" + ", ".join(f'"{p}"' for p in ["93.184.216.34", *prefixes(PREFIXES, 11)]) + "]"
    )
    lines += ["", "[[rule]]", 'name = "no-71"', 'action = "block"', 'to = ["10.0.1.71"]']
    per = -(-NAMES // 61)
    for r in range(61 + extra_rules):
        chunk = names[r * per : (r + 1) * per] or [f"x{r}.limits.bouheki.test"]
        lines += ["", "[[rule]]", f'name = "names-{r}"', 'action = "allow"']
        lines.append("to = [" + ", ".join(f'"{n}"' for n in chunk) + "]")
        lines.append("ports = [443]")
        if r % 2:
            lines.append('exe = ["/usr/bin/curl"]')
        else:
            lines.append(f"uid = [{2000 + r}]")
    return "\n".join(lines) + "\n"


def reload(timeout: float = 900) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = sh("bouhekictl", "--timeout", str(timeout), "reload", check=False, timeout=timeout + 30)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def generation() -> int:
    return int(json.loads(sh("bouhekictl", "--json", "status").stdout)["generation"])


def curl_in(unit: str, addr: str) -> int:
    r = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}", "--",
           "curl", "-s", "-o", "/dev/null", "--max-time", "5", f"http://{addr}/",
           check=False)  # fmt: skip
    return r.returncode


def outcomes(unit: str) -> dict[str, int]:
    return {a: curl_in(unit, a) for a in ("10.0.1.1", "10.0.1.71", "93.184.216.34")}


EXPECTED = {"10.0.1.1": 0, "10.0.1.71": 7, "93.184.216.34": 7}


def test_a_policy_at_the_limits_loads_then_one_beyond_is_refused(daemon: None) -> None:
    """One reload of the policy at the limits (a minute or more under TCG:
    the host tests cover the map-capacity refusal, which needs another)."""
    policy = UNITS / f"{LIMITS_UNIT}.toml"
    policy.write_text(limits_policy())
    try:
        rc, out, took = reload()
        labkit.figure(f"limits: the policy at the limits reloaded in {took:.1f} s")
        assert rc == 0, out
        assert outcomes(LIMITS_UNIT) == EXPECTED
        pol = json.loads(sh("bouhekictl", "--json", "policies").stdout)
        mine = [p for p in pol if p.get("name") == LIMITS_UNIT]
        assert mine and mine[0]["rule_count"] == RULES, mine and mine[0]["rule_count"]
        # The names are tracked (they resolve to nothing here): none was dropped.
        assert json.dumps(mine).count(".limits.bouheki.test") >= NAMES

        # 65 rules: refused at the first rule beyond the limit, with file and line;
        # the policy at the limits stays in force.
        gen = generation()
        policy.write_text(small_policy(RULES + 1))
        rc, out, _ = reload()
        assert rc != 0
        assert re.search(rf"{re.escape(LIMITS_UNIT)}\.toml:\d+: .*at most 64", out), out
        assert generation() == gen
        assert outcomes(LIMITS_UNIT) == EXPECTED
    finally:
        policy.unlink(missing_ok=True)
        assert reload()[0] == 0


def small_policy(rules: int) -> str:
    out = ['mode = "block"']
    for r in range(rules):
        out += ["", "[[rule]]", 'action = "block"', f'to = ["12.0.0.{r}"]']
    return "\n".join(out) + "\n"


# -- flood -----------------------------------------------------------------

FLOOD_SECONDS = 10.0
FLOOD_PROCS = 2


# Self-contained: runs in the flood unit with the guest's python3.
FLOOD_SCRIPT = f"""
import errno, json, multiprocessing, socket, time

def flood(q):
    n = other = 0
    end = time.monotonic() + {FLOOD_SECONDS}
    while time.monotonic() < end:
        s = socket.socket()
        try:
            s.connect(("10.0.1.71", 80))
            other += 1
        except OSError as e:
            other += e.errno != errno.EPERM
        finally:
            s.close()
        n += 1
    q.put((n, other))

q = multiprocessing.Queue()
ps = [multiprocessing.Process(target=flood, args=(q,)) for _ in range({FLOOD_PROCS})]
for p in ps:
    p.start()
got = [q.get() for _ in ps]
for p in ps:
    p.join()
print(json.dumps({{"attempts": sum(g[0] for g in got), "through": sum(g[1] for g in got)}}))
"""


def journal_count(since: str, *match: str) -> list[dict]:
    sh("journalctl", "--sync")
    out = sh("journalctl", "-o", "json", "--no-pager", "--since", since, *match).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_flood_of_blocked_connects_is_bounded_and_accounted(daemon: None) -> None:
    (UNITS / f"{FLOOD_UNIT}.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    try:
        assert reload()[0] == 0
        rss0 = labkit.daemon_rss_kib()
        s0 = labkit.stats()
        mark = time.strftime("%Y-%m-%d %H:%M:%S")
        time.sleep(1)  # --since has a resolution of one second
        r = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={FLOOD_UNIT}",
               "--", "python3", "-c", FLOOD_SCRIPT, timeout=300)  # fmt: skip
        flood = json.loads(r.stdout.strip().splitlines()[-1])
        attempts = flood["attempts"]
        assert flood["through"] == 0
        assert attempts > 1000, flood

        # Every attempt is either read by the daemon or counted lost by the kernel.
        def accounted() -> bool:
            s = labkit.stats()
            return (s["events"] - s0["events"]) + (s["events_lost"] - s0["events_lost"]) >= attempts

        assert labkit.wait_for(accounted, 60), (labkit.stats(), s0, flood)
        s1 = labkit.stats()
        read = s1["events"] - s0["events"]
        lost = s1["events_lost"] - s0["events_lost"]
        assert read + lost == attempts, (read, lost, attempts)
        assert s1["blocked"] - s0["blocked"] == attempts
        # The journal got at most the rate limit's share, and the rest is counted.
        burst = 100  # [daemon] event_rate_limit, per event_rate_interval (10 s) and unit
        windows = int(FLOOD_SECONDS // 10) + 2
        logged = journal_count(
            mark, f"MESSAGE_ID={MSG_BLOCKED}", f"OBJECT_SYSTEMD_UNIT={FLOOD_UNIT}"
        )
        assert 0 < len(logged) <= burst * windows, len(logged)
        suppressed = s1["events_suppressed"] - s0["events_suppressed"]
        assert suppressed == read - len(logged), (suppressed, read, len(logged))
        assert labkit.wait_for(lambda: journal_count(mark, f"MESSAGE_ID={MSG_SUPPRESSED}"), 30), (
            "no journal entry reports the suppressed events"
        )
        # Memory: the flood leaves nothing behind in the daemon.
        grown = labkit.daemon_rss_kib() - rss0
        labkit.figure(
            f"flood: {attempts} attempts, {read} read, {lost} lost, {len(logged)} logged, "
            f"{suppressed} suppressed; daemon RSS {grown:+d} KiB"
        )
        assert grown < 16 * 1024, f"the daemon grew by {grown} KiB"
        assert sh("systemctl", "is-active", "bouheki", check=False).stdout.strip() == "active"
    finally:
        (UNITS / f"{FLOOD_UNIT}.toml").unlink(missing_ok=True)
        reload()


if __name__ == "__main__":  # for a manual run: python3 test_limits.py > policy.toml
    print(limits_policy(int(os.environ.get("EXTRA_RULES", "0"))), end="")
