"""Ways around the hooks, tried as an unprivileged attacker (uid 1000 inside
the judged unit) against denied addresses. Each test first shows the plain
attempt blocked, then every variant blocked too, and an AF_PACKET capture on
lo (where packets to the guest's own addresses cross) shows that nothing
reached a denied address. doc/THREATS.md lists each class and its check."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from attacker import cmsg, lsrr, rthdr2, sin, sin6

from bouheki.kernel.events import KernelEvent
from bouheki.policy.tables import Hook, Reason, Verdict

UNIT = "bouheki-lab.service"
V4, V6 = "10.0.1.71", "2001:db8::71"  # denied
OK4, OK6 = "10.0.1.1", "2001:db8::1"  # allowed neighbours
POLICY = f"""\
[network]
allow = ["10.0.1.0/24", "2001:db8::/64"]
deny = ["{V4}", "{V6}"]
"""
EPERM = labkit.EPERM
INET, INET6 = int(socket.AF_INET), int(socket.AF_INET6)
STREAM, DGRAM = int(socket.SOCK_STREAM), int(socket.SOCK_DGRAM)
UDPLITE, SCTP = 136, 132
SOL_IP, SOL_IPV6 = 0, 41


@pytest.fixture
def denied(enforce: labkit.Kernel, hosts: labkit.TestHosts) -> Iterator[labkit.Kernel]:
    enforce.apply_files({f"units/{UNIT}.toml": POLICY})
    yield enforce


@pytest.fixture
def capture() -> Iterator[labkit.Capture]:
    with labkit.Capture([V4, V6]) as cap:
        yield cap


def reasons(events: list[KernelEvent]) -> list[str]:
    return sorted(e.reason.name for e in events)


def test_address_forms_the_kernel_accepts_are_judged(
    denied: labkit.Kernel, capture: labkit.Capture
) -> None:
    plain = labkit.attack([
        ["connect", INET, STREAM, 0, sin(V4, 80).hex()],
        ["sendto", INET, DGRAM, 0, sin(V4, 9).hex()],
    ])  # fmt: skip
    assert plain == [EPERM, EPERM]
    variants = {
        # tcp_v6_connect takes SIN6_LEN_RFC2133 (24) bytes: no scope id.
        "v6 connect, 24-byte sockaddr": ["connect", INET6, STREAM, 0, sin6(V6, 80, 24).hex()],
        "v6 sendto, 24-byte sockaddr": ["sendto", INET6, DGRAM, 0, sin6(V6, 9, 24).hex()],
        "v4-mapped, 24-byte sockaddr": [
            "sendto", INET6, DGRAM, 0, sin6(f"::ffff:{V4}", 9, 24).hex()
        ],
        # udp_sendmsg reads an AF_UNSPEC name as a sockaddr_in.
        "v4 sendto, family AF_UNSPEC": ["sendto", INET, DGRAM, 0, sin(V4, 9, 0).hex()],
        "udplite sendto, AF_UNSPEC": ["sendto", INET, DGRAM, UDPLITE, sin(V4, 9, 0).hex()],
        # udpv6_sendmsg hands an AF_INET name to udp_sendmsg.
        "v6 socket, AF_INET name": ["sendto", INET6, DGRAM, 0, sin(V4, 9).hex()],
        "v6 socket, AF_INET connect": ["connect", INET6, DGRAM, 0, sin(V4, 9).hex()],
        # Forms the programs do not judge are refused, not passed.
        "family 0x29": ["connect", INET, STREAM, 0, sin(V4, 80, 0x29).hex()],
        "12-byte sockaddr_in": ["connect", INET, DGRAM, 0, sin(V4, 9)[:12].hex()],
        "1-byte name": ["sendto", INET, DGRAM, 0, "02"],
        "v6 name on a v4 socket": ["sendto", INET, DGRAM, 0, sin6(V6, 9).hex()],
        # This host, at an address the kernel picks from bindings and options.
        "0.0.0.0": ["connect", INET, STREAM, 0, sin("0.0.0.0", 80).hex()],
        "::": ["sendto", INET6, DGRAM, 0, sin6("::", 9).hex()],
    }  # fmt: skip
    got = dict(zip(variants, labkit.attack(list(variants.values()))))
    assert got == {name: EPERM for name in variants}
    # The same forms to an allowed neighbour still work: judged, not refused.
    assert labkit.attack([
        ["connect", INET6, STREAM, 0, sin6(OK6, 80, 24).hex()],
        ["sendto", INET, DGRAM, 0, sin(OK4, 9, 0).hex()],
        ["sendto", INET6, DGRAM, 0, sin(OK4, 9).hex()],
    ]) == [0, 0, 0]  # fmt: skip
    assert capture.packets() == []
    events = denied.take_events()
    assert all(e.verdict == Verdict.BLOCKED for e in events)
    assert reasons(events) == ["ADDRESS"] * 6 + ["POLICY"] * 9
    judged = [e for e in events if e.reason == Reason.POLICY]
    assert {e.daddr for e in judged} == {V4, V6}
    assert all(e.uid == 1000 for e in events)


def test_port_zero_is_a_destination(denied: labkit.Kernel, capture: labkit.Capture) -> None:
    assert labkit.attack([["connect_then_send", INET, DGRAM, 0, V4, 9, 40001]]) == [EPERM]
    got = labkit.attack([
        # A connected UDP socket sends to port 0.
        ["connect_then_send", INET, DGRAM, 0, V4, 0, 40002],
        ["connect_then_send", INET6, DGRAM, 0, V6, 0, 40003],
        ["connect_then_send", INET, DGRAM, UDPLITE, V4, 0, 40004],
        # A Fast Open SYN carries its data.
        ["sendto", INET, STREAM, 0, sin(V4, 0).hex(), 0, 0x20000000],
        ["connect", INET, STREAM, 0, sin(V4, 0).hex()],
    ])  # fmt: skip
    assert got == [EPERM] * 5
    # glibc's route probe (UDP connect to port 0) still works where allowed.
    assert labkit.attack([["connect_then_send", INET, DGRAM, 0, OK4, 0, 40005]]) == [0]
    assert capture.packets() == []
    events = denied.take_events()
    assert len(events) == 6 and {e.reason for e in events} == {Reason.POLICY}
    assert sorted(e.dport for e in events) == [0, 0, 0, 0, 0, 9]


def flowlabel_req(dst: str) -> bytes:
    """struct in6_flowlabel_req asking for a new exclusive label towards dst."""
    return (socket.inet_pton(socket.AF_INET6, dst) + struct.pack(">I", 0x12345)
            + struct.pack("=BBHHHI", 0, 1, 1, 0, 0, 0))  # GET, EXCL, CREATE  # fmt: skip


def test_options_that_route_elsewhere_are_refused(
    denied: labkit.Kernel, capture: labkit.Capture
) -> None:
    # The detour: packets addressed to an allowed host, routed through a denied one.
    assert labkit.attack([["sendto", INET6, DGRAM, 0, sin6(V6, 9).hex()]]) == [EPERM]
    rt = rthdr2(V6).hex()
    one = struct.pack("i", 1).hex()
    opts = cmsg(SOL_IPV6, 57, rthdr2(V6)).hex()  # IPV6_RTHDR inside IPV6_2292PKTOPTIONS
    name = sin6(OK6, 9).hex()
    got = labkit.attack([
        ["setsockopt_then_send", INET6, SOL_IPV6, 57, rt, OK6, 9, 40011],  # IPV6_RTHDR
        ["setsockopt_then_send", INET6, SOL_IPV6, 6, opts, OK6, 9, 40012],  # 2292PKTOPTIONS
        ["sendmsg_cmsg", INET6, SOL_IPV6, 57, rt, OK6, 9, 40013],  # ancillary IPV6_RTHDR
        ["sendmsg_cmsg", INET6, SOL_IPV6, 5, rt, OK6, 9, 40014],  # ancillary IPV6_2292RTHDR
        ["setsockopt_then_send", INET, SOL_IP, 4, lsrr(V4).hex(), OK4, 9, 40015],  # IP_OPTIONS
        ["sendmsg_cmsg", INET, SOL_IP, 7, lsrr(V4).hex(), OK4, 9, 40016],  # IP_RETOPTS
        # sendmmsg skips the hook for a name equal to the previous message's:
        # the routing header would ride on the second message unseen.
        ["sendmmsg_batch", INET6, [name, name], ["", cmsg(SOL_IPV6, 57, rthdr2(V6)).hex()],
         40017],
        # A flow label carries options of its own, a routing header among them.
        ["setsockopt_then_send", INET6, SOL_IPV6, 32, flowlabel_req(OK6).hex(), OK6, 9, 40020],
        # A denied source: the kernel's ICMP errors and echo replies go to it.
        ["setsockopt_then_send", INET, SOL_IP, 15, one, OK4, 9, 40021],  # IP_FREEBIND
        ["setsockopt_then_send", INET6, SOL_IPV6, 78, one, OK6, 9, 40022],  # IPV6_FREEBIND
        # A broadcast to an allowed network reaches its denied hosts too.
        ["setsockopt_then_send", INET, 1, 6, one, "10.0.1.255", 9, 40023],  # SO_BROADCAST
    ])  # fmt: skip
    assert got == [EPERM] * 11
    assert labkit.attack([
        ["sendmmsg_batch", INET6, [name], [""], 40018],  # one message: judged as usual
        # IPV6_2292RTHDR as an option only asks to receive routing headers.
        ["setsockopt_then_send", INET6, SOL_IPV6, 5, struct.pack("i", 1).hex(), OK6, 9, 40019],
    ]) == [0, 0]  # fmt: skip
    assert capture.packets() == []
    events = denied.take_events()
    assert reasons(events) == ["BATCH"] + ["POLICY"] + ["ROUTING"] * 10
    hooks = {e.hook for e in events if e.reason == Reason.ROUTING}
    assert hooks == {Hook.SETSOCKOPT, Hook.SENDMSG}
    assert denied.global_counts().refused >= 7


def test_socket_families_that_send_through_kernel_sockets_are_refused(
    denied: labkit.Kernel, capture: labkit.Capture
) -> None:
    """AF_SMC falls back to a kernel TCP socket, RDS opens TCP connections
    from a kworker, RxRPC resends from one: no hook sees those. Refused in
    judged scopes before their modules load."""
    assert labkit.attack([["connect", INET, STREAM, 0, sin(V4, 80).hex()]]) == [EPERM]
    families = {
        "AF_SMC": [43, STREAM, 0],
        "AF_RDS": [21, 5, 0],
        "AF_RXRPC": [33, DGRAM, INET],
        "AF_PPPOX": [24, STREAM, 0],
        "AF_VSOCK": [40, STREAM, 0],
        "AF_TIPC": [30, 4, 0],
    }
    got = labkit.attack([["socket_create", *args] for args in families.values()])
    assert dict(zip(families, got)) == {f: EPERM for f in families}
    allowed = [[1, STREAM, 0], [16, DGRAM, 0], [INET, STREAM, 0], [INET6, DGRAM, 0]]
    assert labkit.attack([["socket_create", *a] for a in allowed]) == [0] * 4
    assert capture.packets() == []
    events = denied.take_events()
    assert reasons(events) == ["FAMILY"] * 6 + ["POLICY"]
    assert {e.hook for e in events if e.reason == Reason.FAMILY} == {Hook.SOCKET}


SCTP_NAMED = f"""\
[[rule]]
name = "no sctp to .71"
action = "block"
protocol = "sctp"
to = ["{V4}"]

[network]
allow = ["10.0.1.0/24"]
"""


def test_sctp_sockets_need_a_policy_that_names_sctp(
    enforce: labkit.Kernel, hosts: labkit.TestHosts, capture: labkit.Capture
) -> None:
    enforce.apply_files({f"units/{UNIT}.toml": POLICY})
    got = labkit.attack([
        ["socket_create", INET, STREAM, SCTP],
        ["socket_create", INET6, 5, SCTP],  # SOCK_SEQPACKET
        ["socket_create", INET, 5, 0],  # SEQPACKET's default protocol is SCTP
        ["sctp_connectx", INET, sin(V4, 9).hex()],
    ])  # fmt: skip
    assert got == [EPERM, EPERM, EPERM, 1000 + EPERM]
    events = enforce.take_events()
    assert reasons(events) == ["SCTP"] * 4 and {e.hook for e in events} == {Hook.SOCKET}

    # Named: SCTP is judged like any protocol, connectx and primary paths too.
    enforce.apply_files({f"units/{UNIT}.toml": SCTP_NAMED})
    assert labkit.attack([["connect", INET, STREAM, SCTP, sin(V4, 9).hex()]]) == [EPERM]
    got = labkit.attack([
        ["sctp_connectx", INET, sin(V4, 9).hex()],
        ["sctp_connectx", INET, (sin(OK4, 9) + sin(V4, 9)).hex()],  # several: refused
        ["sctp_connectx", INET, sin(V4, 9, 0).hex()],
        ["sctp_connectx", INET, sin(OK4, 9).hex()],
        ["socket_create", INET, STREAM, SCTP],
    ])  # fmt: skip
    assert got == [EPERM, EPERM, EPERM, 0, 0]
    assert capture.packets() == []
    events = enforce.take_events()
    assert reasons(events) == ["ADDRESS", "ADDRESS", "POLICY", "POLICY"]
    assert {e.hook for e in events} == {Hook.CONNECT, Hook.SCTP}


def test_any_protocol_means_every_protocol(
    enforce: labkit.Kernel, hosts: labkit.TestHosts, capture: labkit.Capture
) -> None:
    enforce.apply_files({
        f"units/{UNIT}.toml": f"""\
[[rule]]
action = "block"
to = ["{V4}"]
ports = [9]

[[rule]]
action = "block"
to = ["{V6}"]
protocol = "any"
"""
    })  # fmt: skip
    assert labkit.attack([["sendto", INET, DGRAM, 0, sin(V4, 9).hex()]]) == [EPERM]
    got = labkit.attack([
        ["sendto", INET, DGRAM, UDPLITE, sin(V4, 9).hex()],
        ["connect_then_send", INET6, DGRAM, UDPLITE, V6, 9, 40021],
        ["ping", INET6, V6],
        ["sendto", INET6, DGRAM, UDPLITE, sin6(f"::ffff:{V4}", 9).hex()],
    ])  # fmt: skip
    assert got == [EPERM] * 4
    # Port 10 is not the rule's: allowed (and the capture is not looking there).
    assert labkit.attack([["ping", INET6, OK6], ["sendto", INET, DGRAM, UDPLITE,
                                                  sin(OK4, 10).hex()]]) == [0, 0]  # fmt: skip
    assert capture.packets() == []
    events = enforce.take_events()
    assert len(events) == 5 and {e.protocol for e in events} == {17, 136, 58}
    assert {e.protocol_name for e in events} == {"udp", "udplite", "icmpv6"}


FLOOD = 70_000  # more cgroups than the scopes map holds (65,536)
CONNECT_ONCE = f"""\
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("{V4}", 80))
    print(0)
except OSError as e:
    print(e.errno)
"""
FLOODER = (
    f"""\
import os
base = open("/proc/self/cgroup").read().strip().split("::")[1]
base = "/sys/fs/cgroup" + base
for i in range({FLOOD}):
    os.mkdir(f"{{base}}/c{{i}}")
deep = base
for i in range(40):  # deeper than the programs' walk goes
    deep += f"/n{{i}}"
    os.mkdir(deep)
with open(f"{{deep}}/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
"""
    + CONNECT_ONCE
)


def run_unit(unit: str, code: str, *props: str, timeout: float = 600) -> str:
    import sys

    r = labkit.sh(
        "systemd-run", "--quiet", "--wait", "--pipe", f"--unit={unit}",
        *(f"--property={p}" for p in props), "--", sys.executable, "-c", code,
        timeout=timeout,
    )  # fmt: skip
    return r.stdout.strip()


def test_a_delegated_subtree_cannot_exhaust_the_scopes(
    enforce: labkit.Kernel, hosts: labkit.TestHosts, capture: labkit.Capture
) -> None:
    """A uid 1000 service with Delegate=yes makes more cgroups than the map
    holds, hides 40 levels down and connects; a protected unit started after
    it connects too. Both are judged: cgroups below a unit take no entry."""
    deny = f'[network]\ndeny = ["{V4}"]\n'
    enforce.apply_files({"units/bh-flood.service.toml": deny,
                         "units/bh-protected.service.toml": deny})  # fmt: skip
    entries = sum(1 for _ in enforce.enforcer.maps.scope_keys())
    assert run_unit("bh-protected.service", CONNECT_ONCE) == str(EPERM)  # the plain attempt
    flooded = run_unit("bh-flood.service", FLOODER, "User=1000", "Delegate=yes")
    assert flooded == str(EPERM)
    assert run_unit("bh-protected.service", CONNECT_ONCE) == str(EPERM)
    assert capture.packets() == []
    # The map holds what it held (and the two units, while they ran).
    assert sum(1 for _ in enforce.enforcer.maps.scope_keys()) <= entries + 2
    assert enforce.global_counts().scope_full == 0
    events = enforce.take_events()
    assert len(events) == 3 and {e.reason for e in events} == {Reason.POLICY}
    assert {e.uid for e in events} == {0, 1000}


def test_units_are_judged_from_their_first_process_whatever_their_name(
    enforce: labkit.Kernel, hosts: labkit.TestHosts
) -> None:
    """Every name form the configuration takes is matched by cgroup_mkdir:
    a 250-byte unit name (its policy file's name is then 255 bytes, the
    most a file system takes), a template's instance, and a slice created
    after the policy was applied, with a unit below it that has its own."""
    deny4 = f'[network]\ndeny = ["{V4}"]\n'
    long = "bh-" + "l" * 239 + ".service"
    enforce.apply_files({
        f"units/{long}.toml": deny4,
        "units/bh-tmpl@.service.toml": deny4,
        "units/bh-tenant.slice.toml": deny4,
        "units/bh-tenant-web.service.toml": f'[network]\ndeny = ["{V6}"]\n',
    })  # fmt: skip
    # The slice is made after the apply (its parent bh.slice may be left by
    # another test's bh-* slice; it has no policy either way).
    labkit.sh("systemctl", "stop", "bh-tenant.slice", check=False)
    assert not Path("/sys/fs/cgroup/bh.slice/bh-tenant.slice").exists()
    with labkit.Capture([V4]) as cap:
        assert run_unit(long, CONNECT_ONCE) == str(EPERM)
        assert run_unit("bh-tmpl@one.service", CONNECT_ONCE) == str(EPERM)
        # A unit with no policy in the new slice has the slice's.
        assert run_unit("bh-tenant-x.service", CONNECT_ONCE, "Slice=bh-tenant.slice") == str(EPERM)
        assert cap.packets() == []
    # The unit's own policy wins over its slice's: V4 is not in it.
    assert run_unit("bh-tenant-web.service", CONNECT_ONCE, "Slice=bh-tenant.slice") == "0"
    events = enforce.take_events()
    assert len(events) == 3
    assert enforce.global_counts().scope_named >= 4  # the three units and the slice
