"""The seed article's three demos, with its YAML configs verbatim, enforced by
the real guest kernel."""

from __future__ import annotations

import labkit
from labkit import SEED_ADDRS, as_user, container_prefix, curl

CONTAINER_YML = """\
network:
  # Block or monitor the network.
  # If block is specified, communication that matches the policy will be blocked.
  mode: block
  # Restriction to the whole host or to a container
  # If a container is specified, only the container's communication will be restricted.
  # This is determined by the value of namespace
  target: container
  cidr:
    allow:
      - 10.0.1.1/24
    deny:
      - 10.0.1.71/32
"""

COMMAND_YML = """\
network:
  mode: block
  target: host
  cidr:
    allow:
      - 0.0.0.0/0
    deny:
      - 93.184.216.34/32
  command:
    allow:
      - 'wget'
    deny:
      - 'curl'
log:
  format: json
"""

UID_YML = """\
network:
  mode: block
  target: host
  cidr:
    allow:
      - 0.0.0.0/0
    deny: []
  uid:
    allow:
      - 0
    deny:
      - 1000
log:
  format: json
"""


def test_container_target(enforce: labkit.Kernel, hosts: labkit.TestHosts) -> None:
    enforce.apply_yaml(CONTAINER_YML)
    assert curl("http://10.0.1.1/", container_prefix()) == 0
    assert curl("http://10.0.1.71/", container_prefix()) == 7
    # The host reaches both.
    assert curl("http://10.0.1.71/") == 0
    assert curl("http://10.0.1.1/") == 0
    # A docker-*.scope process that shares the host's mount namespace is not a container.
    assert curl("http://10.0.1.71/", container_prefix(own_mount_ns=False)) == 0
    events = enforce.take_events()
    assert [(e.daddr, e.dport, e.comm, e.verdict.name) for e in events] == [
        ("10.0.1.71", 80, "curl", "BLOCKED")
    ]
    assert enforce.blocked_total() == 1


def test_command_target(enforce: labkit.Kernel, hosts: labkit.TestHosts) -> None:
    enforce.apply_yaml(COMMAND_YML)
    assert curl("http://93.184.216.34/") == 7
    r = labkit.run(["wget", "-q", "-O", "/dev/null", "-T", "5", "-t", "1", "http://93.184.216.34/"])
    assert r.returncode == 0, r.stderr
    # curl is denied everywhere, not only to the denied address.
    assert curl("http://10.0.1.1/") == 7
    events = enforce.take_events()
    assert sorted((e.daddr, e.comm) for e in events) == [
        ("10.0.1.1", "curl"),
        ("93.184.216.34", "curl"),
    ]
    assert enforce.blocked_total() == 2


def test_uid_target(enforce: labkit.Kernel, hosts: labkit.TestHosts) -> None:
    enforce.apply_yaml(UID_YML)
    assert curl("http://93.184.216.34/", as_user(1000)) == 7
    assert curl("http://93.184.216.34/") == 0
    # uid 1001 is on neither list: the allow list admits only uid 0.
    assert curl("http://10.0.1.1/", as_user(1001)) == 7
    events = enforce.take_events()
    assert sorted((e.uid, e.daddr) for e in events) == [(1000, "93.184.216.34"), (1001, "10.0.1.1")]
    assert enforce.blocked_total() == 2


def test_hosts_are_reachable_without_policy(hosts: labkit.TestHosts) -> None:
    for a in SEED_ADDRS:
        assert curl(f"http://{a}/") == 0, a
