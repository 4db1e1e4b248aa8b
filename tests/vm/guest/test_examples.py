"""The shipped example policies on the real services they are written for.

nginx.service.toml.example on Debian's nginx: it must not break nginx (the
first version blocked loopback and DNS, so an upstream on 127.0.0.1 and any
proxy_pass by name failed), and must still block what it says it blocks.
The resolver is outside every allowed network (192.0.2.53), so only the
example's DNS rule (@resolvers) lets nginx reach it.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import UNITS, sh

sys.path.insert(0, str(labkit.SRC / "tests" / "unit"))
from test_names_resolver import DnsStub  # the host tests' DNS responder

EXAMPLE = labkit.SRC / "etc" / "bouheki" / "units" / "nginx.service.toml.example"
RESOLV = Path("/etc/resolv.conf")
RESOLVER = "192.0.2.53"
SITE = Path("/etc/nginx/sites-enabled/bh-example")
LISTEN = "127.0.0.1:8080"
NGINX_SITE = f"""
server {{
    listen {LISTEN};
    location /loopback {{ proxy_pass http://127.0.0.1:80/; }}
    location /upstream {{ proxy_pass http://10.0.1.1:80/; }}
    location /by-name {{ proxy_pass http://up.bh.test:80/; }}
    location /resolver {{
        resolver {RESOLVER} valid=1s;
        set $up up.bh.test;
        proxy_pass http://$up:80/;
    }}
    location /denied {{ proxy_pass http://10.0.1.71:80/; }}
    location /denied-by-name {{ proxy_pass http://bad.bh.test:80/; }}
    location /outside {{ proxy_pass http://93.184.216.34:80/; }}
}}
"""


def status(path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{LISTEN}{path}", timeout=20) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def nginx(daemon: None, hosts: labkit.TestHosts) -> Iterator[None]:
    """nginx with a site of proxies, its names answered by a DNS server
    that /etc/resolv.conf names, and the example policy in force."""
    sh("ip", "addr", "add", f"{RESOLVER}/32", "dev", hosts.ifname)
    stub = DnsStub(RESOLVER, 53)
    stub.set("up.bh.test", "A", 60, "10.0.1.1")
    stub.set("bad.bh.test", "A", 60, "10.0.1.71")
    saved_resolv = RESOLV.read_bytes() if RESOLV.exists() else None
    if RESOLV.is_symlink() or RESOLV.exists():
        RESOLV.unlink()
    RESOLV.write_text(f"nameserver {RESOLVER}\n")
    default = Path("/etc/nginx/sites-enabled/default")
    default.unlink(missing_ok=True)  # it listens on port 80, the test servers' port
    SITE.write_text(NGINX_SITE)
    policy = UNITS / "nginx.service.toml"
    shutil.copy(EXAMPLE, policy)
    try:
        assert sh("systemctl", "reload", "bouheki", check=False, timeout=300).returncode == 0
        yield
    finally:
        sh("systemctl", "stop", "nginx", check=False)
        SITE.unlink(missing_ok=True)
        policy.unlink(missing_ok=True)
        if saved_resolv is not None:
            RESOLV.write_bytes(saved_resolv)
        sh("systemctl", "reload", "bouheki", check=False, timeout=300)
        stub.close()
        sh("ip", "addr", "del", f"{RESOLVER}/32", "dev", hosts.ifname, check=False)


def test_the_nginx_example_lets_nginx_work_and_blocks_what_it_says(nginx: None) -> None:
    # nginx resolves proxy_pass names when it starts: through the resolver.
    r = sh("systemctl", "start", "nginx", check=False, timeout=120)
    log = sh("journalctl", "-u", "nginx", "-n", "20", "--no-pager", check=False).stdout
    assert r.returncode == 0, f"nginx did not start under the example policy:\n{log}"
    assert status("/loopback") == 200  # an upstream on this host
    assert status("/upstream") == 200  # in 10.0.1.0/24
    assert status("/by-name") == 200  # resolved at start
    assert status("/resolver") == 200  # nginx's own resolver, at request time
    # What the example denies: 10.0.1.71 (by address or name) and the rest.
    assert status("/denied") == 502
    assert status("/denied-by-name") == 502
    assert status("/outside") == 502
    sh("journalctl", "--sync")
    out = sh("journalctl", "-o", "json", "--no-pager", "_SYSTEMD_UNIT=bouheki.service",
             "OBJECT_SYSTEMD_UNIT=nginx.service").stdout  # fmt: skip
    blocked = {json.loads(line).get("BOUHEKI_DADDR") for line in out.splitlines() if line}
    assert {"10.0.1.71", "93.184.216.34"} <= blocked, blocked
    assert not blocked & {"127.0.0.1", "10.0.1.1", RESOLVER}, blocked
