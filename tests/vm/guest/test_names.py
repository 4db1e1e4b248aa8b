"""Domain names and @lan in the running daemon (issue 8), against the
guest's kernel: a DNS server in this test process (127.0.0.1:53, the
guest's only resolver while the module runs) gives names short TTLs; when a
record changes, the old address stops being allowed (or denied) once its
TTL has passed and the new one takes its place; a name with several A and
AAAA records covers all of them; @lan follows an address added to and
removed from a dummy interface."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import UNITS, sh

# The same DNS responder the host tests use (exact TTLs, CNAMEs).
sys.path.insert(0, str(labkit.SRC / "tests" / "unit"))
from test_names_resolver import DnsStub

MAIN = Path("/etc/bouheki/bouheki.toml")
RESOLV = Path("/etc/resolv.conf")
MSG_RELOADED = "63bc0c4997484b858c8ba97ae043341a"
TTL = 2
# Test settings: honour 2 s TTLs, remove an address as soon as its TTL has
# passed (the grace period is tested on the host, with a fake clock).
SETTINGS = "[daemon]\ndns_min_ttl = 1\ndns_grace = 0\n"


def curl_in(unit: str, url: str) -> int:
    r = sh("systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}", "--",
           "curl", "-s", "-o", "/dev/null", "--max-time", "5", url, check=False)  # fmt: skip
    return r.returncode


def url(address: str) -> str:
    return f"http://[{address}]/" if ":" in address else f"http://{address}/"


def reload() -> None:
    r = sh("systemctl", "reload", "bouheki", check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def policy(unit: str, text: str) -> Path:
    path = UNITS / f"{unit}.toml"
    path.write_text(text)
    return path


def reloaded_since(t0: float) -> list[float]:
    """Realtime seconds of each policy generation applied after t0."""
    sh("journalctl", "--sync")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0 - 1))
    out = sh("journalctl", "-o", "json", "--no-pager", f"MESSAGE_ID={MSG_RELOADED}",
             "--since", since).stdout  # fmt: skip
    stamps = [int(json.loads(line)["__REALTIME_TIMESTAMP"]) / 1e6 for line in out.splitlines()]
    return [t for t in stamps if t > t0]


def names_of(policy_name: str) -> dict[str, list[dict]]:
    r = sh("bouhekictl", "--json", "policies")
    (p,) = [p for p in json.loads(r.stdout) if p["name"] == policy_name]
    return {n["name"]: n["addresses"] for n in p["names"]}


@pytest.fixture(scope="module")
def dns(daemon: None) -> Iterator[DnsStub]:
    try:
        stub = DnsStub("127.0.0.1", 53)
    except OSError as e:
        pytest.fail(f"cannot serve DNS on 127.0.0.1:53: {e}")
    saved_main = MAIN.read_text()
    saved_resolv = RESOLV.read_bytes() if RESOLV.exists() else None
    if RESOLV.is_symlink():
        RESOLV.unlink()
    RESOLV.write_text("nameserver 127.0.0.1\n")
    MAIN.write_text(SETTINGS)
    try:
        reload()
        yield stub
    finally:
        for f in UNITS.glob("bh-nm-*"):
            sh("rm", "-rf", str(f))
        MAIN.write_text(saved_main)
        if saved_resolv is None:
            RESOLV.unlink()
        else:
            RESOLV.write_bytes(saved_resolv)
        reload()
        stub.close()


def wait_until(pred: object, timeout: float) -> float:
    """Seconds until pred() held; fails after timeout."""
    t0 = time.monotonic()
    assert labkit.wait_for(pred, timeout), f"not within {timeout} s"
    return time.monotonic() - t0


def test_allowed_name_follows_its_record(dns: DnsStub) -> None:
    unit = "bh-nm-allow.service"
    dns.set("app.bh.test", "A", TTL, "10.0.1.1")
    policy(unit, '[network]\nallow = ["app.bh.test"]\n')
    reload()
    assert curl_in(unit, url("10.0.1.1")) == 0
    assert curl_in(unit, url("10.0.1.71")) == 7
    (addr,) = names_of(unit)["app.bh.test"]
    assert addr["address"] == "10.0.1.1"
    assert time.time() - 1 < addr["expires_usec"] / 1e6 <= time.time() + TTL + 1

    dns.set("app.bh.test", "A", TTL, "10.0.1.71")
    took = wait_until(
        lambda: curl_in(unit, url("10.0.1.1")) == 7 and curl_in(unit, url("10.0.1.71")) == 0, 30
    )
    print(f"allow: the changed record was in force after {took:.1f} s (TTL {TTL} s)")
    assert [a["address"] for a in names_of(unit)["app.bh.test"]] == ["10.0.1.71"]


def test_denied_name_follows_its_record(dns: DnsStub) -> None:
    unit = "bh-nm-deny.service"
    dns.set("bad.bh.test", "A", TTL, "10.0.1.71")
    policy(unit, '[network]\ndeny = ["bad.bh.test"]\n')
    reload()
    assert curl_in(unit, url("10.0.1.71")) == 7
    assert curl_in(unit, url("10.0.1.1")) == 0

    dns.set("bad.bh.test", "A", TTL, "10.0.1.1")
    took = wait_until(
        lambda: curl_in(unit, url("10.0.1.71")) == 0 and curl_in(unit, url("10.0.1.1")) == 7, 30
    )
    print(f"deny: the changed record was in force after {took:.1f} s (TTL {TTL} s)")


def test_every_a_and_aaaa_record_is_covered(dns: DnsStub) -> None:
    unit = "bh-nm-multi.service"
    v4, v6 = ["10.0.1.1", "10.0.1.71"], ["2001:db8::1", "2001:db8::71"]
    dns.set("multi.bh.test", "A", 60, *v4)
    dns.set("multi.bh.test", "AAAA", 90, *v6)
    # Through a CNAME too: the addresses are the target's.
    dns.set("www.bh.test", "CNAME", 60, "multi.bh.test")
    policy(unit, '[network]\nallow = ["www.bh.test"]\n')
    reload()
    for address in v4 + v6:
        assert curl_in(unit, url(address)) == 0, address
    assert curl_in(unit, url("93.184.216.34")) == 7

    # bouhekictl shows each address and when it expires.
    addrs = names_of(unit)["www.bh.test"]
    assert sorted(a["address"] for a in addrs) == sorted(v4 + v6)
    now = time.time()
    for a in addrs:
        # The CNAME's 60 s bounds the AAAA records' 90 s.
        assert now + 50 < a["expires_usec"] / 1e6 <= now + 61, a
    table = sh("bouhekictl", "policies").stdout
    rows = [line.split() for line in table.splitlines() if "www.bh.test" in line]
    assert sorted(r[2] for r in rows) == sorted(v4 + v6), table
    assert all(r[0] == unit for r in rows)


@pytest.fixture
def lan_net() -> Iterator[str]:
    """10.9.0.0/24 delivered locally (AnyIP, a route: not an interface
    address, so not in @lan) and an empty dummy interface to put it on."""
    sh("ip", "route", "add", "local", "10.9.0.0/24", "dev", "lo")
    sh("ip", "link", "add", "bhlan0", "type", "dummy")
    sh("ip", "link", "set", "bhlan0", "up")
    try:
        yield "10.9.0.1"
    finally:
        sh("ip", "link", "del", "bhlan0", check=False)
        sh("ip", "route", "del", "local", "10.9.0.0/24", "dev", "lo", check=False)


def test_lan_follows_interface_addresses(dns: DnsStub, lan_net: str) -> None:
    unit = "bh-nm-lan.service"
    policy(unit, '[network]\nallow = ["@lan"]\n')
    reload()
    assert labkit.curl(url(lan_net)) == 0  # reachable: only the policy decides
    assert curl_in(unit, url(lan_net)) == 7

    t0 = time.time()
    sh("ip", "addr", "add", f"{lan_net}/24", "dev", "bhlan0")
    wait_until(lambda: reloaded_since(t0), 10)
    latency = reloaded_since(t0)[0] - t0
    print(f"@lan: address added, new generation applied after {latency:.3f} s")
    assert latency < 1.0
    assert curl_in(unit, url(lan_net)) == 0

    t0 = time.time()
    sh("ip", "addr", "del", f"{lan_net}/24", "dev", "bhlan0")
    wait_until(lambda: reloaded_since(t0), 10)
    latency = reloaded_since(t0)[0] - t0
    print(f"@lan: address removed, new generation applied after {latency:.3f} s")
    assert latency < 1.0
    assert labkit.curl(url(lan_net)) == 0
    assert curl_in(unit, url(lan_net)) == 7
