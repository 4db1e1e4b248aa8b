"""doc/DESIGN.md 2.1, step by step: TOML text -> lowering -> tables -> twin."""

from __future__ import annotations

import ipaddress
import socket
import textwrap

import pytest

from bouheki.config.loader import parse_policy_text
from bouheki.policy.compiler import compile_policy
from bouheki.policy.env import Environment
from bouheki.policy.lower import lower
from bouheki.policy.lpm import PrefixTable
from bouheki.policy.tables import (
    DEFAULT_RULE,
    POLICY_MONITOR,
    POLICY_SCTP,
    Action,
    Connection,
    Decision,
    PolicyTables,
    Proto,
    Reason,
    Verdict,
)
from bouheki.policy.twin import decide

FILE = "/etc/bouheki/units/t.service.toml"
CURL = (0x800001, 11)
WGET = (0x800001, 12)
ENV = Environment(
    names={"example.test": [ipaddress.ip_network("93.184.216.34/32")]},
    sets={"lan": [ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd00::/64")]},
    exes={"/usr/bin/curl": CURL, "/usr/bin/wget": WGET, "/usr/bin/gone": None},
)


def compile_text(text: str, env: Environment = ENV) -> PolicyTables:
    lowered, _ = lower(parse_policy_text(textwrap.dedent(text), FILE), env)
    return compile_policy(lowered, 7, "t.service")


def judge(
    t: PolicyTables,
    daddr: str,
    port: int = 80,
    comm: str = "curl",
    uid: int = 1000,
    gid: int = 1000,
    proto: int = Proto.TCP,
    exe: tuple[int, int] | None = None,
    family: int | None = None,
) -> Decision:
    if family is None:
        family = socket.AF_INET6 if ":" in daddr else socket.AF_INET
    c = Connection(family, daddr, port, proto, comm.encode(), exe, uid, gid)
    return decide(t, c)


def verdict(t: PolicyTables, daddr: str, **kw: object) -> Verdict:
    return judge(t, daddr, **kw).verdict  # type: ignore[arg-type]


B, A, W = Verdict.BLOCKED, Verdict.ALLOWED, Verdict.WOULD_BLOCK


# -- step 3: longest prefix wins, both ways ----------------------------------


def test_deny_host_inside_allowed_network_blocks() -> None:
    t = compile_text("""
        [network]
        allow = ["10.0.1.0/24"]
        deny = ["10.0.1.71"]
    """)
    assert verdict(t, "10.0.1.71") == B
    assert verdict(t, "10.0.1.70") == A
    assert verdict(t, "10.0.2.1") == B  # no match, network.allow is set
    assert judge(t, "10.0.2.1").rule == DEFAULT_RULE


def test_allow_host_inside_denied_network_allows() -> None:
    t = compile_text("""
        [network]
        deny = ["10.0.0.0/8"]
        allow = ["10.1.2.3/32"]
    """)
    assert verdict(t, "10.1.2.3") == A
    assert verdict(t, "10.1.2.4") == B
    assert verdict(t, "192.0.2.1") == B


def test_deny_only_allows_the_rest() -> None:
    t = compile_text("""
        [network]
        deny = ["10.0.0.0/8"]
    """)
    assert verdict(t, "10.9.9.9") == B
    assert verdict(t, "192.0.2.1") == A
    assert verdict(t, "2001:db8::1") == A


def test_nested_prefixes_alternate() -> None:
    t = compile_text("""
        [network]
        allow = ["10.0.0.0/8", "10.1.1.0/24"]
        deny = ["10.1.0.0/16", "10.1.1.128/25"]
    """)
    assert verdict(t, "10.2.0.1") == A
    assert verdict(t, "10.1.2.1") == B
    assert verdict(t, "10.1.1.1") == A
    assert verdict(t, "10.1.1.200") == B


@pytest.mark.parametrize(
    ("net", "addr"),
    [("10.0.0.0/8", "10.2.3.4"), ("10.1.2.3/32", "10.1.2.3"), ("2001:db8::/32", "2001:db8::9")],
)
def test_equal_prefix_deny_wins(net: str, addr: str) -> None:
    t = compile_text(f"""
        [network]
        allow = ["{net}", "0.0.0.0/0", "::/0"]
        deny = ["{net}"]
    """)
    assert verdict(t, addr) == B
    assert verdict(t, "192.0.2.1") == A


def test_ipv6_longest_prefix() -> None:
    t = compile_text("""
        [network]
        deny = ["2001:db8::/32"]
        allow = ["2001:db8:1::/48", "::/0"]
    """)
    assert verdict(t, "2001:db8:1::5") == A
    assert verdict(t, "2001:db8:2::5") == B
    assert verdict(t, "2001:db9::1") == A
    assert verdict(t, "10.0.0.1") == B  # IPv4: no allow entry, allow is set


# -- IPv4-mapped IPv6 -------------------------------------------------------------


def test_mapped_destination_is_judged_as_ipv4() -> None:
    t = compile_text("""
        [network]
        deny = ["10.0.1.71"]
    """)
    assert verdict(t, "::ffff:10.0.1.71") == B
    assert verdict(t, "::ffff:10.0.1.72") == A


def test_mapped_network_in_config_folds_to_ipv4() -> None:
    t = compile_text("""
        [network]
        deny = ["::ffff:10.0.1.0/120", "::ffff:192.0.2.7"]
    """)
    assert t.dst6 == {}
    assert set(t.dst4) == {(0x0A000100, 24), (0xC0000207, 32)}
    # What the daemon keeps is the packed form (policy/lpm.py).
    assert isinstance(t.dst4, PrefixTable) and isinstance(t.dst6, PrefixTable)
    assert verdict(t, "10.0.1.9") == B
    assert verdict(t, "::ffff:192.0.2.7") == B
    assert verdict(t, "192.0.2.8") == A


# -- port 0, families -----------------------------------------------------------


def test_port_zero_is_a_destination() -> None:
    # A connected UDP socket sends to port 0; a Fast Open SYN carries data.
    t = compile_text("""
        [network]
        deny = ["0.0.0.0/0"]
    """)
    for proto in (Proto.TCP, Proto.UDP, Proto.UDPLITE):
        d = judge(t, "10.0.0.1", port=0, proto=proto)
        assert not d.ignored and d.verdict == B and d.rule == 0
    assert verdict(t, "10.0.0.1", port=1) == B


def test_any_protocol_means_every_protocol() -> None:
    t = compile_text("""
        [[rule]]
        action = "block"
        to = ["10.0.0.1"]
        ports = [53]
        [[rule]]
        action = "block"
        to = ["10.0.0.2"]
        protocol = "any"
        ports = [53]
        [[rule]]
        action = "block"
        to = ["10.0.0.3"]
        protocol = "any"
    """)
    for proto in (Proto.TCP, Proto.UDP, Proto.UDPLITE, Proto.DCCP):
        assert verdict(t, "10.0.0.1", port=53, proto=proto) == B, proto
        assert verdict(t, "10.0.0.2", port=53, proto=proto) == B, proto
        assert verdict(t, "10.0.0.1", port=54, proto=proto) == A, proto
    # Protocols without ports are judged with port 0: a ports rule is not theirs.
    for proto in (Proto.ICMP, Proto.RAW):
        assert verdict(t, "10.0.0.2", port=53, proto=proto) == A, proto
        assert verdict(t, "10.0.0.3", port=53, proto=proto) == B, proto
    assert verdict(t, "10.0.0.3", port=9, proto=Proto.ICMP) == B


def test_ports_of_a_portless_protocol_are_port_0() -> None:
    t = compile_text("""
        [[rule]]
        action = "allow"
        protocol = "icmp"
        to = ["10.0.0.1"]
        [network]
        allow = ["192.0.2.0/24"]
    """)
    # ping's sockaddr port is not on the wire: any value is the same ping.
    assert verdict(t, "10.0.0.1", port=4242, proto=Proto.ICMP) == A
    assert verdict(t, "10.0.0.1", port=80, proto=Proto.TCP) == B


def test_sctp_is_refused_unless_named() -> None:
    t = compile_text('[network]\nallow = ["10.0.0.0/8"]\n')
    d = judge(t, "10.0.0.1", port=80, proto=Proto.SCTP)
    assert d.verdict == B and d.reason == Reason.SCTP and d.origin is None
    named = compile_text("""
        [[rule]]
        action = "block"
        protocol = "sctp"
        to = ["10.0.0.71"]
        [network]
        allow = ["10.0.0.0/8"]
    """)
    assert named.flags & POLICY_SCTP
    assert verdict(named, "10.0.0.1", port=80, proto=Proto.SCTP) == A
    assert verdict(named, "10.0.0.71", port=80, proto=Proto.SCTP) == B
    monitor = compile_text('mode = "monitor"\n[network]\nallow = ["10.0.0.0/8"]\n')
    assert verdict(monitor, "10.0.0.1", proto=Proto.SCTP) == W


def test_the_unspecified_address_is_refused() -> None:
    # It means this host, at whichever address the kernel picks from the
    # socket's binding and options: an SSRF classic, refused not guessed.
    t = compile_text("""
        [network]
        deny = ["127.0.0.0/8", "::1"]
    """)
    for addr in ("0.0.0.0", "::ffff:0.0.0.0", "::"):
        d = judge(t, addr, port=8080)
        assert d.verdict == B and d.reason == Reason.ADDRESS, addr
    assert verdict(t, "10.0.0.1", port=8080) == A


def test_other_families_are_ignored() -> None:
    t = compile_text('mode = "block"\n[network]\nallow = ["10.0.0.0/8"]\n')
    d = decide(t, Connection(socket.AF_UNIX, "/run/x", 80, 0))
    assert d.ignored and d.verdict == A


# -- empty lists, monitor ---------------------------------------------------


def test_empty_lists_allow_everything() -> None:
    t = compile_text("""
        [network]
        allow = []
        deny = []
        [command]
        allow = []
        deny = []
    """)
    assert t.rule_count == 0 and t.default_action == Action.ALLOW
    assert verdict(t, "10.0.0.1") == A
    assert judge(t, "10.0.0.1").origin.text == "default: allow"  # type: ignore[union-attr]


def test_empty_file_allows_everything() -> None:
    t = compile_text("")
    assert t.rule_count == 0
    assert verdict(t, "2001:db8::1", comm="nc") == A


def test_monitor_mode_would_block() -> None:
    t = compile_text("""
        mode = "monitor"
        [network]
        allow = ["10.0.1.0/24"]
        deny = ["10.0.1.71"]
    """)
    assert t.flags & POLICY_MONITOR
    d = judge(t, "10.0.1.71")
    assert d.verdict == W and d.action == Action.BLOCK
    assert verdict(t, "10.0.1.5") == A
    assert verdict(t, "10.9.9.9") == W


# -- step 1: identity deny lists ---------------------------------------------


def test_command_deny_blocks_everywhere() -> None:
    t = compile_text("""
        [command]
        deny = ["curl"]
        [network]
        allow = ["0.0.0.0/0"]
    """)
    assert verdict(t, "1.1.1.1", comm="curl") == B
    assert verdict(t, "1.1.1.1", comm="wget") == A


def test_uid_gid_exe_deny() -> None:
    t = compile_text("""
        [uid]
        deny = [1000]
        [gid]
        deny = [1001]
        [exe]
        deny = ["/usr/bin/curl"]
    """)
    assert verdict(t, "1.1.1.1", uid=1000) == B
    assert verdict(t, "1.1.1.1", uid=0, gid=1001) == B
    assert verdict(t, "1.1.1.1", uid=0, gid=0, exe=CURL) == B
    assert verdict(t, "1.1.1.1", uid=0, gid=0, exe=WGET) == A
    assert verdict(t, "1.1.1.1", uid=0, gid=0, exe=None) == A


def test_deny_beats_allow_list_for_the_same_identity() -> None:
    t = compile_text("""
        [uid]
        allow = [0, 1000]
        deny = [1000]
    """)
    assert verdict(t, "1.1.1.1", uid=1000) == B
    assert verdict(t, "1.1.1.1", uid=0) == A


# -- step 2: identity allow lists ------------------------------------------


def test_command_allow_admits_only_listed() -> None:
    t = compile_text("""
        [command]
        allow = ["wget"]
    """)
    assert verdict(t, "1.1.1.1", comm="wget") == A
    assert verdict(t, "1.1.1.1", comm="nc") == B
    assert judge(t, "1.1.1.1", comm="nc").origin.text == "command.allow"  # type: ignore[union-attr]


def test_several_allow_lists_all_apply() -> None:
    t = compile_text("""
        [uid]
        allow = [0]
        [exe]
        allow = ["/usr/bin/wget"]
    """)
    assert verdict(t, "1.1.1.1", uid=0, exe=WGET) == A
    assert verdict(t, "1.1.1.1", uid=0, exe=CURL) == B
    assert verdict(t, "1.1.1.1", uid=0, exe=None) == B  # unknown executable: not on it
    assert verdict(t, "1.1.1.1", uid=1, exe=WGET) == B


# -- step 4: the exemption --------------------------------------------------


def test_deny_match_exempt_for_processes_on_an_allow_list() -> None:
    t = compile_text("""
        [network]
        allow = ["0.0.0.0/0"]
        deny = ["93.184.216.34/32"]
        [command]
        allow = ["wget"]
    """)
    d = judge(t, "93.184.216.34", comm="wget")
    assert d.verdict == A
    assert d.origin is not None and d.origin.text.startswith("network.deny")
    assert verdict(t, "93.184.216.34", comm="curl") == B  # not on the list: step 2
    assert verdict(t, "2001:db8::1", comm="wget") == B  # no match, allow is set


def test_deny_match_blocks_without_allow_lists() -> None:
    t = compile_text("""
        [network]
        allow = ["0.0.0.0/0"]
        deny = ["93.184.216.34/32"]
        [command]
        deny = ["nc"]
    """)
    assert verdict(t, "93.184.216.34", comm="wget") == B
    assert verdict(t, "93.184.216.35", comm="wget") == A


# -- [[rule]] entries ---------------------------------------------------------


def test_rules_come_first_first_match_wins() -> None:
    t = compile_text("""
        [network]
        deny = ["10.0.1.71"]

        [[rule]]
        name = "https to the proxy"
        action = "allow"
        to = ["10.0.1.71"]
        ports = [443]
        protocol = "tcp"

        [[rule]]
        action = "block"
        to = ["10.0.1.0/24"]

        [[rule]]
        action = "allow"
        to = ["10.0.1.5"]
    """)
    d = judge(t, "10.0.1.71", port=443)
    assert d.verdict == A and d.rule == 0
    assert d.origin is not None and d.origin.line == 5 and "https to the proxy" in d.origin.text
    assert judge(t, "10.0.1.71", port=80).rule == 1
    assert judge(t, "10.0.1.71", port=443, proto=Proto.UDP).rule == 1
    assert verdict(t, "10.0.1.5") == B  # rule 1 before rule 2
    assert verdict(t, "10.0.2.5") == A


def test_empty_rule_matches_everything() -> None:
    t = compile_text("""
        [[rule]]
        action = "deny"
    """)
    assert t.rule_count == 1 and t.dst_default == 1
    assert judge(t, "2001:db8::1", port=1, proto=Proto.UDP).rule == 0
    assert verdict(t, "10.0.0.1") == B


def test_ports_ranges_and_protocol() -> None:
    t = compile_text("""
        [[rule]]
        action = "allow"
        ports = [443, "8000-8100"]
        protocol = "tcp"

        [[rule]]
        action = "allow"
        ports = ["53"]

        [[rule]]
        action = "allow"
        protocol = "udp"
        uid = [33]

        [[rule]]
        action = "block"
    """)
    tcp, udp = Proto.TCP, Proto.UDP
    assert judge(t, "10.0.0.1", port=443).rule == 0
    assert judge(t, "10.0.0.1", port=8000).rule == 0
    assert judge(t, "10.0.0.1", port=8050).rule == 0
    assert judge(t, "10.0.0.1", port=8100).rule == 0
    assert judge(t, "10.0.0.1", port=8101).rule == 3
    assert judge(t, "10.0.0.1", port=7999).rule == 3
    assert judge(t, "10.0.0.1", port=8050, proto=udp).rule == 3
    assert judge(t, "10.0.0.1", port=53, proto=udp).rule == 1  # no protocol: both
    assert judge(t, "10.0.0.1", port=53, proto=tcp).rule == 1
    assert judge(t, "10.0.0.1", port=9999, proto=udp, uid=33).rule == 2
    assert judge(t, "10.0.0.1", port=9999, proto=tcp, uid=33).rule == 3
    # (proto, 0, 0) is "this protocol, any port"
    assert t.ports[(udp, 0, 0)] & 0b100


def test_ports_full_range_and_single_extremes() -> None:
    t = compile_text("""
        [[rule]]
        action = "block"
        ports = ["1-65535"]
        protocol = "udp"
        [[rule]]
        action = "block"
        ports = [65535, 1]
        protocol = "tcp"
    """)
    assert judge(t, "10.0.0.1", port=1, proto=Proto.UDP).rule == 0
    assert judge(t, "10.0.0.1", port=65535, proto=Proto.UDP).rule == 0
    assert judge(t, "10.0.0.1", port=1).rule == 1
    assert judge(t, "10.0.0.1", port=65535).rule == 1
    assert judge(t, "10.0.0.1", port=2).rule == DEFAULT_RULE


def test_rule_identity_dimensions() -> None:
    t = compile_text("""
        [[rule]]
        action = "allow"
        command = ["wget"]
        exe = ["/usr/bin/wget"]
        uid = [0, 33]
        gid = [0]
        [[rule]]
        action = "block"
    """)
    assert judge(t, "10.0.0.1", comm="wget", exe=WGET, uid=33, gid=0).rule == 0
    assert judge(t, "10.0.0.1", comm="wget", exe=CURL, uid=33, gid=0).rule == 1
    assert judge(t, "10.0.0.1", comm="wget", exe=WGET, uid=34, gid=0).rule == 1
    assert judge(t, "10.0.0.1", comm="wget", exe=WGET, uid=0, gid=1).rule == 1
    assert judge(t, "10.0.0.1", comm="curl", exe=WGET, uid=0, gid=0).rule == 1


def test_long_comm_is_truncated_like_the_kernel() -> None:
    t = compile_text("""
        [command]
        deny = ["python3.11-help"]
    """)
    assert verdict(t, "10.0.0.1", comm="python3.11-helper-daemon") == B
    assert verdict(t, "10.0.0.1", comm="python3.11-hel") == A


# -- names, sets, executables from the environment ----------------------------


def test_domain_names_and_sets_resolve_from_the_environment() -> None:
    text = """
        [network]
        deny = ["example.test", "@lan", "@loopback", "unknown.test"]
    """
    t = compile_text(text)
    assert verdict(t, "93.184.216.34") == B
    assert verdict(t, "192.168.1.20") == B
    assert verdict(t, "fd00::7") == B
    assert verdict(t, "127.0.0.53") == B
    assert verdict(t, "::1") == B
    assert verdict(t, "93.184.216.35") == A
    _, warnings = lower(parse_policy_text(textwrap.dedent(text), FILE), ENV)
    assert [str(w) for w in warnings] == [
        f"{FILE}:3: network.deny[3]: 'unknown.test' has no resolved address; it matches nothing"
    ]


def test_missing_lan_set_warns() -> None:
    spec = parse_policy_text('[network]\nallow = ["@lan"]\n', FILE)
    lowered, warnings = lower(spec, Environment())
    assert len(warnings) == 1 and "@lan is not known yet" in warnings[0].message
    t = compile_policy(lowered, 0, "x")
    assert verdict(t, "192.168.1.1") == B  # allow is set but empty: default block


def test_missing_executable_on_allow_list_fails_closed() -> None:
    spec = parse_policy_text('[exe]\nallow = ["/usr/bin/gone"]\n', FILE)
    lowered, warnings = lower(spec, ENV)
    assert "'/usr/bin/gone' does not exist" in warnings[0].message
    t = compile_policy(lowered, 0, "x")
    assert verdict(t, "10.0.0.1", exe=CURL) == B
    assert verdict(t, "10.0.0.1", exe=None) == B


def test_environment_changes_do_not_change_rule_count() -> None:
    spec = parse_policy_text('[network]\ndeny = ["example.test"]\nallow = ["x.test"]\n', FILE)
    assert len(lower(spec, ENV)[0].rules) == len(lower(spec, Environment())[0].rules) == 2


# -- origins and table shape ---------------------------------------------------


def test_origins_point_at_the_keys() -> None:
    t = compile_text("""
        mode = "block"
        [command]
        deny = ["nc"]
        allow = ["wget"]
        [network]
        allow = ["0.0.0.0/0"]
        deny = ["10.0.0.0/8"]
    """)
    texts = [(o.line, o.text) for o in t.origins]
    assert texts == [
        (4, "command.deny"),
        (5, "command.allow"),
        (8, "network.deny (exempt: on an allow list)"),
        (7, "network.allow"),
        (7, "default: block (network.allow is set)"),
    ]
    assert all(o.file == FILE for o in t.origins)
    assert t.allow_bits == 0b1100
    assert t.valid_bits == 0b1111


def test_folded_masks() -> None:
    t = compile_text("""
        [network]
        allow = ["10.0.0.0/8"]
        deny = ["10.1.0.0/16"]
        [[rule]]
        action = "allow"
        to = ["10.1.2.0/24"]
    """)
    # rule 0: [[rule]]; rule 1: DENYSET; rule 2: ALLOWSET
    assert t.dst4 == {
        (0x0A000000, 8): 0b100,
        (0x0A010000, 16): 0b010,
        (0x0A010200, 24): 0b011,
    }
    assert t.dst_default == 0
    assert t.port_default == t.comm_default == t.uid_default == 0b111


def test_duplicate_entries_are_not_ties() -> None:
    t = compile_text("""
        [network]
        allow = ["example.test", "93.184.216.34", "10.0.0.0/8", "10.0.0.0/8"]
        deny = ["0.0.0.0/0", "0.0.0.0/0"]
    """)
    assert verdict(t, "93.184.216.34") == A
    assert verdict(t, "10.1.1.1") == A
    assert verdict(t, "192.0.2.1") == B
