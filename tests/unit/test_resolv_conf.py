"""@resolvers: /etc/resolv.conf read as glibc's resolver reads it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from bouheki.config.values import parse_destination
from bouheki.names import resolv_conf
from bouheki.names.manager import NamesManager
from bouheki.policy.model import AddressSet


def nets(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(t) for t in texts]


def test_the_first_three_name_servers_as_glibc_asks_them() -> None:
    text = """# generated
search example.com
nameserver 10.0.1.53
nameserver   fe80::1%eth0
options edns0
nameserver not-an-address
nameserver 10.0.1.53
nameserver 192.0.2.1
nameserver 192.0.2.2
"""
    # The zone is dropped, a bad address and a repeat are skipped, the fourth is never asked.
    assert resolv_conf.parse(text) == nets("10.0.1.53/32", "fe80::1/128", "192.0.2.1/32")


def test_no_name_server_means_the_local_one() -> None:
    assert resolv_conf.parse("search example.com\n#nameserver 10.0.0.1\n") == nets("127.0.0.1/32")
    assert resolv_conf.name_servers("/nonexistent/resolv.conf") == nets("127.0.0.1/32")


def test_the_systemd_resolved_stub(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    assert resolv_conf.name_servers(str(conf)) == nets("127.0.0.53/32")


def test_a_policy_may_name_the_set_and_the_manager_fills_it() -> None:
    assert parse_destination("@resolvers") == (AddressSet("resolvers"), None)
    manager = NamesManager(resolvers_source=lambda: nets("10.0.1.53/32"))
    try:
        assert manager.prepare([], ["resolvers"]) == ({}, {"resolvers": nets("10.0.1.53/32")})
    finally:
        manager.stop()
