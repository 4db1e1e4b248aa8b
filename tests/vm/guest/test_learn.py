"""Learning (issue 14): a unit's policy with learn = true records what the
unit connects to, `bouhekictl suggest` turns that into a policy, and the
policy, applied in block mode, lets exactly that through. The record is a
bounded kernel map: a flood neither grows it past its size nor loses a
count."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import UNITS, sh

UNIT = "bh-learn.service"
POLICY = UNITS / f"{UNIT}.toml"
LEARNING = 'mode = "monitor"\nlearn = true\n'
CAPACITY = 16384  # BH_MAX_LEARN

# Connects to each destination given as argv (ADDR PORT ...) and prints the
# errno of each (0: connected).
CONNECT = """
import json, socket, sys
out = []
args = sys.argv[1:]
for addr, port in zip(args[::2], args[1::2]):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.settimeout(5)
    try:
        s.connect((addr, int(port)))
        out.append(0)
    except OSError as e:
        out.append(e.errno)
    finally:
        s.close()
print(json.dumps(out))
"""

SEEN = [("10.0.1.1", 80), ("93.184.216.34", 80), ("2001:db8::1", 80)]


def in_unit(*cmd: str, timeout: float = 120) -> str:
    r = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={UNIT}",
           "--", *cmd, timeout=timeout)  # fmt: skip
    return r.stdout


def connect_in_unit(dests: list[tuple[str, int]]) -> list[int]:
    args = [str(x) for d in dests for x in d]
    return json.loads(in_unit("python3", "-c", CONNECT, *args).strip().splitlines()[-1])


def reload() -> None:
    r = sh("bouhekictl", "--timeout", "600", "reload", check=False, timeout=630)
    assert r.returncode == 0, r.stdout + r.stderr


def learned(timeout: float = 60) -> dict:
    r = sh("bouhekictl", "--json", "--timeout", str(timeout), "learned", UNIT, timeout=timeout + 30)
    return json.loads(r.stdout)


def daemon_identity() -> str:
    """The daemon's MainPID and restart count: unchanged if it was not restarted."""
    return sh("systemctl", "show", "-p", "MainPID", "-p", "NRestarts", "bouheki.service").stdout


@pytest.fixture
def learning(daemon: None, hosts: labkit.TestHosts) -> Iterator[None]:
    POLICY.write_text(LEARNING)
    reload()
    sh("bouhekictl", "forget", UNIT)
    yield
    sh("bouhekictl", "forget", UNIT, check=False)
    POLICY.unlink(missing_ok=True)
    reload()


def test_what_a_unit_was_seen_doing_becomes_its_policy(learning: None) -> None:
    assert connect_in_unit(SEEN) == [0, 0, 0]
    data = learned()
    assert data["policy"] == UNIT and data["learning"] is True
    seen = {(o["address"], o["port"]): o for o in data["observations"]}
    assert set(seen) == set(SEEN), data
    python = Path("/usr/bin/python3").resolve()
    for o in seen.values():
        assert (o["protocol"], o["uid"], o["exe"]) == ("tcp", 0, str(python)), o
        assert o["allowed"] == 1 and o["blocked"] == o["would_block"] == 0, o
    # What a unit connects to is not for everyone: uid 1000 is refused, by
    # the daemon (polkit grants it nothing here).
    for command in ("learned", "forget"):
        r = sh(*labkit.as_user(1000), "bouhekictl", "--json", command, UNIT, check=False)
        assert r.returncode == 4, r
        error = json.loads(r.stdout)["error"]
        assert error["dbus_error"] == "org.bouheki.Bouheki1.Error.AccessDenied", error
    assert len(learned()["observations"]) == 3  # and forgot nothing

    out = sh("bouhekictl", "suggest", UNIT, "--output", str(POLICY)).stderr
    assert "wrote" in out, out
    text = POLICY.read_text()
    labkit.figure("suggested policy:\n" + text)
    assert 'mode = "block"' in text and "learn = true" not in text
    reload()

    # The same three still work, a fourth is blocked, and so is a seen
    # destination on another port or from another program.
    assert connect_in_unit([*SEEN, ("10.0.1.71", 80), ("10.0.1.1", 8080)]) == [0, 0, 0, 1, 1]
    curl = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={UNIT}", "--",
              "curl", "-s", "-o", "/dev/null", "--max-time", "5", "http://10.0.1.1/",
              check=False)  # fmt: skip
    assert curl.returncode == 7  # couldn't connect: EPERM
    policies = json.loads(sh("bouhekictl", "--json", "policies").stdout)
    (ours,) = [p for p in policies if p["name"] == UNIT]
    assert ours["mode"] == "block"


# Self-contained, run in the unit: connects for SECONDS to one closed port
# (the same key every time), then once to each of DISTINCT other ports.
FLOOD_SECONDS = 10.0
DISTINCT = CAPACITY + 600
FLOOD = f"""
import json, multiprocessing, socket, time

def flood(q):
    n = 0
    end = time.monotonic() + {FLOOD_SECONDS}
    while time.monotonic() < end:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", 9))
        except OSError:
            pass
        finally:
            s.close()
        n += 1
    q.put(n)

q = multiprocessing.Queue()
procs = [multiprocessing.Process(target=flood, args=(q,)) for _ in range(2)]
for p in procs:
    p.start()
same = sum(q.get() for _ in procs)
for p in procs:
    p.join()
for port in range(20000, 20000 + {DISTINCT}):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        pass
    finally:
        s.close()
print(json.dumps({{"same": same, "distinct": {DISTINCT}}}))
"""


def test_a_flood_is_counted_exactly_in_bounded_memory(learning: None) -> None:
    rss0, s0 = labkit.daemon_rss_kib(), labkit.stats()
    missed0 = learned()["missed"]
    t0 = time.monotonic()
    flood = json.loads(in_unit("python3", "-c", FLOOD, timeout=600).strip().splitlines()[-1])
    elapsed = time.monotonic() - t0
    # Reading a full map takes seconds: the daemon does it off its loop, so
    # it keeps answering meanwhile, and its watchdog (30 s) never fires.
    daemon0 = daemon_identity()
    t1 = time.monotonic()
    got = labkit.probe_while(
        ["bouhekictl", "--json", "--timeout", "300", "learned", UNIT], ["bouhekictl", "status"]
    )
    read_s, waits = time.monotonic() - t1, got.waits
    assert got.returncode == 0, got.stdout + got.stderr
    assert daemon_identity() == daemon0, "the daemon was restarted while answering"
    assert waits and max(waits) < 20, waits
    data = json.loads(got.stdout)
    obs = {(o["address"], o["port"]): o for o in data["observations"]}
    # One key, hammered from two processes: every connect is in its count.
    assert obs[("127.0.0.1", 9)]["allowed"] == flood["same"], (obs[("127.0.0.1", 9)], flood)
    # Distinct keys: the map fills up to its size and no further; each
    # connect that found it full is counted as missed, none vanishes.
    distinct = [o for k, o in obs.items() if k[1] != 9]
    missed = data["missed"] - missed0
    assert all(o["allowed"] == 1 for o in distinct)
    assert len(distinct) + missed == flood["distinct"], (len(distinct), missed, flood)
    assert len(obs) <= CAPACITY and missed > 0
    # Nothing was blocked, so the flood wrote no events (monitor mode, allowed).
    s1 = labkit.stats()
    assert s1["events"] - s0["events"] == 0 and s1["events_lost"] == s0["events_lost"]
    grown = labkit.daemon_rss_kib() - rss0
    labkit.figure(
        f"learning flood: {flood['same']} connects to one destination in {FLOOD_SECONDS:g} s, "
        f"all counted; {flood['distinct']} distinct destinations: {len(distinct)} recorded, "
        f"{missed} missed (map of {CAPACITY} entries, full); run {elapsed:.1f} s; "
        f"`bouhekictl learned` of {len(obs)} entries {read_s:.1f} s, meanwhile {len(waits)} "
        f"`bouhekictl status` answered in at most {max(waits):.1f} s; daemon RSS {grown:+d} KiB"
    )
    # The daemon holds nothing of it between calls; answering builds the
    # reply (at most CAPACITY entries) and Python keeps some of that heap.
    assert grown < 64 * 1024, f"the daemon grew by {grown} KiB"
    # Forgetting frees the map for the next learner.
    forgotten = json.loads(sh("bouhekictl", "--json", "forget", UNIT, timeout=300).stdout)
    assert forgotten["forgotten"] == len(obs)
    assert learned()["observations"] == []
