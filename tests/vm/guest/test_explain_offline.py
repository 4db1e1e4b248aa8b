"""`bouhekictl explain --offline` (from the files) against the daemon's
explain (from the running policy) over random questions: the same answers,
for units that are not running (both place them where systemd would)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest
from labkit import UNITS, sh

POLICIES = {
    "bh-xo-web.service": """
[network]
allow = ["10.0.1.0/24", "2001:db8::/64"]
deny = ["10.0.1.71", "2001:db8::71"]
[[rule]]
name = "dns"
action = "allow"
ports = [53]
""",
    "bh-xo-cli.service": """
[command]
deny = ["curl"]
[uid]
allow = [0, 1000]
[[rule]]
action = "block"
to = ["93.184.216.0/24"]
ports = ["8000-8100"]
protocol = "tcp"
""",
    "bh-xo.slice": 'mode = "monitor"\n[network]\ndeny = ["10.0.0.0/8"]\n',
}
UNIT_CHOICES = [*POLICIES, "bh-xo-other.service", "bh-xo-x.service", None]
ADDRESSES = ["10.0.1.71", "10.0.1.1", "10.9.9.9", "93.184.216.34", "2001:db8::71",
             "2001:db8::1", "192.0.2.1"]  # fmt: skip
CASES = 15  # 2 bouhekictl runs each, ~2.4 s apiece under TCG: make test's time


@pytest.fixture
def policies(daemon: None) -> Iterator[None]:
    for unit, text in POLICIES.items():
        (UNITS / f"{unit}.toml").write_text(text)
    assert sh("bouhekictl", "reload", check=False, timeout=300).returncode == 0
    yield
    for unit in POLICIES:
        (UNITS / f"{unit}.toml").unlink()
    sh("bouhekictl", "reload", check=False, timeout=300)


def ask(args: list[str], offline: bool) -> dict:
    extra = ["--offline"] if offline else []
    r = sh("bouhekictl", "--json", "explain", *extra, *args, check=False, timeout=120)
    assert r.returncode == 0, (args, offline, r.stdout, r.stderr)
    return dict(json.loads(r.stdout))


def test_offline_and_live_explain_agree(policies: None) -> None:
    rng = random.Random(20261201)
    for _ in range(CASES):
        unit = rng.choice(UNIT_CHOICES)
        addr = rng.choice(ADDRESSES)
        port = rng.choice([53, 80, 443, 8050, 9000])
        to = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        args = ["--to", to, "--proto", rng.choice(["tcp", "udp"]),
                "--comm", rng.choice(["curl", "wget", "python3"]),
                "--uid", str(rng.choice([0, 1000, 1001]))]  # fmt: skip
        if unit:
            args += ["--unit", unit]
        live, offline = ask(args, False), ask(args, True)
        assert offline == live, args
