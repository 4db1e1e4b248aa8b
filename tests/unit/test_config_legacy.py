"""The seed article's YAML configurations, unchanged, end to end:
load -> compile -> twin, with the outcomes the article shows."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from bouheki.config.legacy_yaml import CONTAINER_UNITS, load_legacy_yaml
from bouheki.policy.assemble import ScopeEntry, compile_policy_set, policy_set_requirements
from bouheki.policy.env import Environment, Requirements
from bouheki.policy.policyset import PolicySet
from bouheki.policy.tables import (
    POLICY_FOREIGN_MNTNS_ONLY,
    POLICY_MONITOR,
    Connection,
    PolicyTables,
    Proto,
    Verdict,
)
from bouheki.policy.twin import decide

DATA = Path(__file__).parent / "data" / "policies"


def only_table(ps: PolicySet, env: Environment | None = None) -> PolicyTables:
    compiled = compile_policy_set(ps, env or Environment())
    (table,) = compiled.tables
    return table


def judge(t: PolicyTables, daddr: str, comm: str, uid: int = 1000, port: int = 80) -> Verdict:
    family = socket.AF_INET6 if ":" in daddr else socket.AF_INET
    return decide(
        t, Connection(family, daddr, port, Proto.TCP, comm.encode(), None, uid, uid)
    ).verdict


def test_seed_container() -> None:
    path = DATA / "seed_container.yml"
    ps = load_legacy_yaml(str(path))
    assert ps.host is None
    (policy,) = ps.units
    assert policy.units == CONTAINER_UNITS
    assert policy.flags == POLICY_FOREIGN_MNTNS_ONLY
    # '10.0.1.1/24' has host bits: the original accepted it as 10.0.1.0/24
    assert [str(w) for w in ps.warnings] == [
        f"{path}:11: network.cidr.allow[0]: '10.0.1.1/24' has host bits set; using 10.0.1.0/24"
    ]
    compiled = compile_policy_set(ps, Environment())
    assert compiled.host_policy_id is None
    assert compiled.scopes == [
        ScopeEntry("docker-*.scope", "docker-*.scope", 1),
        ScopeEntry("libpod-*.scope", "libpod-*.scope", 1),
        ScopeEntry("machine.slice", None, 1),
    ]
    (t,) = compiled.tables
    assert t.flags & POLICY_FOREIGN_MNTNS_ONLY and not t.flags & POLICY_MONITOR
    assert judge(t, "10.0.1.1", "curl") == Verdict.ALLOWED  # HTTP/1.1 301
    assert judge(t, "10.0.1.71", "curl") == Verdict.BLOCKED  # Couldn't connect
    assert judge(t, "192.0.2.1", "curl") == Verdict.BLOCKED  # outside the allow list


def test_seed_command_deny() -> None:
    ps = load_legacy_yaml(str(DATA / "seed_command_deny.yml"))
    assert ps.units == [] and ps.host is not None
    assert [w.message for w in ps.warnings] == ["log: ignored: events go to the journal"]
    t = only_table(ps)
    assert judge(t, "93.184.216.34", "curl") == Verdict.BLOCKED
    assert judge(t, "93.184.216.34", "wget") == Verdict.ALLOWED  # exempt: on command.allow
    assert judge(t, "1.1.1.1", "curl") == Verdict.BLOCKED  # command.deny
    assert judge(t, "1.1.1.1", "nc") == Verdict.BLOCKED  # not on command.allow
    assert judge(t, "1.1.1.1", "wget") == Verdict.ALLOWED
    d = decide(t, Connection(socket.AF_INET, "1.1.1.1", 80, Proto.TCP, b"nc", None, 0, 0))
    assert d.origin is not None and d.origin.text == "network.command.allow"
    assert d.origin.line == 10


def test_seed_uid() -> None:
    t = only_table(load_legacy_yaml(str(DATA / "seed_uid.yml")))
    assert judge(t, "93.184.216.34", "curl", uid=1000) == Verdict.BLOCKED
    assert judge(t, "93.184.216.34", "curl", uid=0) == Verdict.ALLOWED  # sudo curl
    assert judge(t, "93.184.216.34", "curl", uid=1001) == Verdict.BLOCKED  # not on uid.allow
    assert judge(t, "2001:db8::1", "curl", uid=0) == Verdict.BLOCKED  # allow lists only IPv4


def test_legacy_full_file() -> None:
    path = DATA / "legacy_full.yml"
    ps = load_legacy_yaml(str(path))
    warnings = [str(w) for w in ps.warnings]
    interval = f"{path}:17: network.domain.interval: ignored (deprecated): names are re-resolved"
    assert any(w.startswith(interval) for w in warnings)
    assert any(w.startswith(f"{path}:28: files: ignored") for w in warnings)
    assert any(w.startswith(f"{path}:33: dns_proxy: ignored") for w in warnings)
    assert policy_set_requirements(ps) == Requirements(names=frozenset({"example.test"}))
    env = Environment(names={"example.test": [ipaddress.ip_network("192.0.2.80/32")]})
    t = only_table(ps, env)
    assert t.flags & POLICY_MONITOR
    assert judge(t, "10.0.1.71", "curl") == Verdict.WOULD_BLOCK
    assert judge(t, "2001:db8::5", "curl") == Verdict.WOULD_BLOCK
    assert judge(t, "192.0.2.80", "curl") == Verdict.WOULD_BLOCK
    assert judge(t, "192.0.2.81", "curl") == Verdict.ALLOWED  # cidr.allow given but empty
    assert judge(t, "192.0.2.81", "nc") == Verdict.WOULD_BLOCK
    assert judge(t, "192.0.2.81", "curl", uid=1001) == Verdict.WOULD_BLOCK  # gid 1001


def test_legacy_defaults(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text("network:\n  cidr:\n    deny:\n      - 10.0.0.1/32\n")
    ps = load_legacy_yaml(str(path))
    assert [w.message for w in ps.warnings] == [
        "network: mode is not set: the legacy default is monitor (never blocks)"
    ]
    assert ps.host is not None
    t = only_table(ps)
    # default cidr.allow is 0.0.0.0/0 and ::/0: everything but the deny list
    assert judge(t, "10.0.0.1", "curl") == Verdict.WOULD_BLOCK
    assert judge(t, "10.0.0.2", "curl") == Verdict.ALLOWED
    assert judge(t, "2001:db8::1", "curl") == Verdict.ALLOWED


def test_legacy_disabled_and_empty(tmp_path: Path) -> None:
    off = tmp_path / "off.yml"
    off.write_text("network:\n  enable: false\n  mode: block\n")
    ps = load_legacy_yaml(str(off))
    assert ps.host is None and ps.units == []
    assert "disabled" in ps.warnings[0].message
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    ps = load_legacy_yaml(str(empty))
    assert ps.host is not None and ps.host.spec.monitor
