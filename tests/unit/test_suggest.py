"""`bouhekictl suggest`: the policy it writes parses, and the Python twin
says it allows exactly what was observed and blocks the rest."""

from __future__ import annotations

import ipaddress
import random
import socket
from typing import Any

import pytest

from bouheki.config.loader import parse_policy_text
from bouheki.ctl.suggest import TooManyRules, render_toml, rules_from, widen
from bouheki.policy.compiler import compile_policy
from bouheki.policy.env import Environment
from bouheki.policy.lower import lower
from bouheki.policy.tables import PROTOCOL_NAMES, Connection, PolicyTables, Verdict
from bouheki.policy.twin import decide

CURL = "/usr/bin/curl"
WEIRD = '/opt/app/bin/we"ird\nname'  # a path a process chose: quoted, never a new line
EXES = {CURL: (8, 100), "/usr/sbin/nginx": (8, 200), WEIRD: (8, 300)}
ENV = Environment(names={"example.com": [ipaddress.ip_network("93.184.216.34/32")]}, exes=EXES)


def observation(address: str, port: int, protocol: str = "tcp", **kw: Any) -> dict[str, Any]:
    o = {
        "address": address, "port": port, "protocol": protocol, "uid": 0, "exe": CURL,
        "names": [], "allowed": 1, "would_block": 0, "blocked": 0,
        "first_usec": 1_764_000_000_000_000, "last_usec": 1_764_000_060_000_000,
    }  # fmt: skip
    o.update(kw)
    return o


def learned(*observations: dict[str, Any]) -> dict[str, Any]:
    return {
        "unit": "app.service", "policy": "app.service", "learning": True,
        "observations": list(observations), "missed": 0, "capacity": 16384,
    }  # fmt: skip


def compiled(text: str) -> PolicyTables:
    spec = parse_policy_text(text, "suggested.toml")
    lowered, _ = lower(spec, ENV)
    return compile_policy(lowered, 1, "app.service")


def verdict(t: PolicyTables, o: dict[str, Any]) -> Verdict:
    addr = ipaddress.ip_address(o["address"])
    c = Connection(
        family=socket.AF_INET if addr.version == 4 else socket.AF_INET6,
        daddr=o["address"],
        dport=o["port"],
        proto=int(PROTOCOL_NAMES[o["protocol"]]),
        exe=EXES.get(o["exe"]),
        uid=o["uid"],
    )
    return decide(t, c).verdict


SEEN = [
    observation("10.0.1.1", 80),
    observation("10.0.1.2", 443, allowed=0, would_block=7),  # monitor mode: it went out
    observation("2001:db8::5", 53, "udp", exe="/usr/sbin/nginx", uid=33),
    observation("10.0.1.9", 0, "icmp"),
    observation("93.184.216.34", 443, names=["example.com"]),
    observation("10.0.1.3", 8080, exe=WEIRD, uid=1000),
]


def test_the_suggestion_allows_what_was_seen_and_nothing_else() -> None:
    data = learned(*SEEN, observation("10.0.1.71", 80, allowed=0, blocked=4))
    text = render_toml(data, rules_from(data))
    t = compiled(text)
    for o in SEEN:
        assert verdict(t, o) == Verdict.ALLOWED, o
    others = [
        observation("10.0.1.71", 80),  # blocked while learning: not allowed now
        observation("10.0.1.4", 80),  # never seen
        observation("10.0.1.1", 443),  # a seen address on a port it was not seen on
        observation("10.0.1.1", 80, "udp"),  # ... with another protocol
        observation("10.0.1.1", 80, uid=1000),  # ... by another user
        observation("10.0.1.1", 80, exe="/usr/sbin/nginx"),  # ... by another program
        observation("2001:db8::6", 53, "udp", exe="/usr/sbin/nginx", uid=33),
    ]
    for o in others:
        assert verdict(t, o) == Verdict.BLOCKED, o
    assert '"example.com"' in text and "93.184.216.34" not in text
    assert "# seen 8 times" in text  # 10.0.1.2 (7, monitor) and example.com (1) on 443
    assert "10.0.1.71 port 80, /usr/bin/curl, uid 0: 4 times" in text


def test_widening_allows_the_network_around_each_address() -> None:
    data = learned(observation("10.0.1.1", 80), observation("10.0.1.200", 80))
    rules = rules_from(data, v4=24)
    assert [r.to for r in rules] == [{"10.0.1.0/24"}]
    t = compiled(render_toml(data, rules))
    assert verdict(t, observation("10.0.1.77", 80)) == Verdict.ALLOWED
    assert verdict(t, observation("10.0.2.1", 80)) == Verdict.BLOCKED
    assert widen("2001:db8::5", 32, 64) == "2001:db8::/64"
    assert widen("10.0.1.1", 32, 128) == "10.0.1.1"


def test_nothing_seen_blocks_everything() -> None:
    t = compiled(render_toml(learned(), []))
    assert verdict(t, observation("10.0.1.1", 80)) == Verdict.BLOCKED


@pytest.mark.parametrize("seed", range(5))
def test_random_observations_are_allowed_and_their_neighbours_blocked(seed: int) -> None:
    rng = random.Random(seed)
    addrs = [f"10.0.{rng.randrange(4)}.{rng.randrange(1, 250)}" for _ in range(12)]
    seen = [
        observation(a, rng.choice([22, 80, 443]), rng.choice(["tcp", "udp"]),
                    uid=rng.choice([0, 33]), exe=rng.choice([CURL, "/usr/sbin/nginx", ""]))
        for a in addrs
    ]  # fmt: skip
    data = learned(*seen)
    t = compiled(render_toml(data, rules_from(data)))
    for o in seen:
        assert verdict(t, o) == Verdict.ALLOWED, o
    for o in seen:
        moved = dict(o, port=o["port"] + 1)
        assert verdict(t, moved) == Verdict.BLOCKED, moved


def test_more_rules_than_a_policy_holds_is_an_error_that_says_so() -> None:
    data = learned(*(observation("10.0.1.1", port) for port in range(1, 65)))
    with pytest.raises(TooManyRules, match="needs 64 rules"):
        rules_from(data)
    assert len(rules_from(learned(*(observation("10.0.1.1", p) for p in range(1, 64))))) == 63
