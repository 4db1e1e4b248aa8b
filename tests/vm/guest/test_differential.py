"""The kernel and the Python twin agree: random policies, random connections
made for real by processes of random identities; the kernel's verdict (EPERM
or not) must be the twin's, and counters and events must count every block."""

from __future__ import annotations

import os
import random
import socket
import struct
import sys

import attacker
import labkit
import pytest
import randgen
from workers import Worker

from bouheki.kernel import layout, pack
from bouheki.policy import inline, sockaddr, twin
from bouheki.policy.sockaddr import Sock
from bouheki.policy.tables import Connection, Proto, Verdict

SEED = int(os.environ.get("BOUHEKI_DIFF_SEED", "20261128"))
POLICIES = int(os.environ.get("BOUHEKI_DIFF_POLICIES", "100"))
PER_POLICY = int(os.environ.get("BOUHEKI_DIFF_CONNECTIONS", "50"))
UNIT = "bouheki-lab.service"  # the suite's own unit: the workers are in it

COMMS = ("curl", "wget", "python3", "nc")
IDS = ((0, 0), (1000, 1000), (1001, 33))


# Policies with more IPv4 prefixes than any random one, in units of their
# own: beside every other random policy, so that the filters in front of
# the destination trie (bouheki.h BH_FILTERS) all go to them and the random
# policy is judged by the trie alone; the others have a filter.
def _decoy(i: int) -> str:
    return "[network]\ndeny = [" + ", ".join(f'"198.18.{i}.{j}"' for j in range(1, 100)) + "]\n"


DECOYS = {f"units/bouheki-decoy{i}.service.toml": _decoy(i) for i in range(layout.FILTERS)}

# Which dimensions spill rules push into their maps, policy by policy.
SPILLS: tuple[tuple[str, ...], ...] = ((), ("ports", "uid", "command"), randgen.SPILLABLE)


def _other_executables(judged: dict[str, tuple[int, int]]) -> list[str]:
    """Executables of /usr/bin that are none of the judged ones, for the
    spill rules (never matched: they also ask for an unused uid)."""
    taken = set(judged.values())
    out = []
    for name in sorted(os.listdir("/usr/bin")):
        path = os.path.join("/usr/bin", name)
        if os.path.isfile(path) and not os.path.islink(path) and labkit.exe_id(path) not in taken:
            out.append(path)
    return out


@pytest.fixture(scope="module")
def workers():
    ws = {(c, u, g): Worker(c, u, g) for c in COMMS for u, g in IDS}
    yield ws
    for w in ws.values():
        w.close()


def test_kernel_agrees_with_twin(enforce: labkit.Kernel, workers: dict) -> None:
    py = os.path.realpath(sys.executable)
    universe = randgen.Universe(
        comms=COMMS,
        uids=tuple(u for u, _ in IDS),
        gids=tuple(g for _, g in IDS),
        exes={py: labkit.exe_id(py), "/usr/bin/curl": labkit.exe_id("/usr/bin/curl")},
        # SCTP has its own tests (test_bypass_paths): a refused socket is one
        # event at socket() and, in monitor mode, another at connect().
        protos=(Proto.TCP, Proto.UDP, Proto.UDPLITE, Proto.ICMP),
    )
    rng = random.Random(SEED)
    py_exe = labkit.exe_id(py)
    cases = mismatches = blocked = would_block = 0
    failures: list[str] = []
    base = enforce.global_counts()
    enforce.take_events()
    spill_exes = _other_executables(universe.exes)
    kinds = {0: 0, 1: 0, 2: 0}
    filtered = {True: 0, False: 0}  # policies with IPv4 prefixes, by filter
    for n in range(POLICIES):
        # A third of the policies keep every dimension inline in the
        # policy's value, a third some in their maps, a third all of them:
        # the kernel's scans and its lookups are both judged.
        spilled = SPILLS[n % len(SPILLS)]
        text = randgen.random_policy_toml(rng, universe, max_rules=8)
        text += randgen.spill_rules(spilled, exes=spill_exes)
        decoys = DECOYS if n % 2 else {}
        enforce.apply_files({f"units/{UNIT}.toml": text, **decoys})
        assert enforce.compiled is not None
        tables = next(t for t in enforce.compiled.tables if t.name == UNIT)
        if tables.dst4:
            has_filter = tables.policy_id in pack.filter_slots(enforce.compiled.tables)
            assert has_filter == (not decoys)
            filtered[has_filter] += 1
        in_maps = inline.inline_sets(tables).in_maps
        assert bool(in_maps) == bool(spilled), (spilled, in_maps)
        kinds[n % len(SPILLS)] += 1
        # Draw every case of this policy, then make them worker by worker:
        # one round trip each instead of one per connection.
        cases_here: list[tuple[tuple[str, int, int], Connection, str]] = []
        for _ in range(PER_POLICY):
            c = randgen.random_connection(rng, universe, port_zero=0.05)
            comm, (uid, gid) = rng.choice(COMMS), rng.choice(IDS)
            via = "connect" if c.proto == socket.IPPROTO_TCP or rng.random() < 0.5 else "sendto"
            conn = Connection(c.family, c.daddr, c.dport, c.proto, comm.encode(), py_exe, uid, gid)
            cases_here.append(((comm, uid, gid), conn, via))
        results: dict[int, int] = {}
        for ident in sorted({k for k, _, _ in cases_here}):
            idx = [i for i, (k, _, _) in enumerate(cases_here) if k == ident]
            reqs = [(cases_here[i][1].family, cases_here[i][1].daddr, cases_here[i][1].dport,
                     cases_here[i][1].proto, cases_here[i][2]) for i in idx]  # fmt: skip
            for i, got in zip(idx, workers[ident].attempt_many(reqs)):
                results[i] = got
        for i, (_, conn, via) in enumerate(cases_here):
            want = twin.decide(tables, conn)
            got = results[i]
            cases += 1
            kernel_blocked = got == labkit.EPERM
            twin_blocked = want.verdict == Verdict.BLOCKED and not want.ignored
            if twin_blocked:
                blocked += 1
            if want.verdict == Verdict.WOULD_BLOCK and not want.ignored:
                would_block += 1
            if kernel_blocked != twin_blocked:
                mismatches += 1
                if len(failures) < 10:
                    failures.append(
                        f"policy #{n} (seed {SEED}):\n{text}\nconnection {conn} via {via}: "
                        f"kernel errno {got}, twin {want}"
                    )
    events = enforce.take_events()
    counts = enforce.global_counts()
    labkit.figure(f"differential: {cases} cases, {POLICIES} policies, {blocked} blocked, "
          f"{would_block} would-block, {mismatches} mismatches; policies with IPv4 "
          f"prefixes: {filtered[True]} with a filter, {filtered[False]} without")  # fmt: skip
    assert not failures, "\n\n".join(failures)
    assert cases == POLICIES * PER_POLICY
    assert min(kinds.values()) >= POLICIES // len(SPILLS)
    assert min(filtered.values()) >= POLICIES // 4
    assert counts.events_lost == base.events_lost
    assert len(events) == blocked + would_block
    assert sum(1 for e in events if e.verdict == Verdict.BLOCKED) == blocked
    assert sum(1 for e in events if e.verdict == Verdict.WOULD_BLOCK) == would_block
    assert enforce.blocked_total() == blocked + would_block


FORMS = int(os.environ.get("BOUHEKI_DIFF_FORMS", "600"))
FORM_POLICY = """\
[network]
allow = ["10.0.1.0/24", "2001:db8::/64"]
deny = ["10.0.1.71", "2001:db8::71"]
"""
FORM_SOCKS = [
    Sock(f, k, p)
    for f, k, p in (
        (socket.AF_INET, socket.SOCK_STREAM, Proto.TCP),
        (socket.AF_INET6, socket.SOCK_STREAM, Proto.TCP),
        (socket.AF_INET, socket.SOCK_DGRAM, Proto.UDP),
        (socket.AF_INET6, socket.SOCK_DGRAM, Proto.UDP),
        (socket.AF_INET, socket.SOCK_DGRAM, Proto.UDPLITE),
        (socket.AF_INET6, socket.SOCK_DGRAM, Proto.UDPLITE),
        (socket.AF_INET, socket.SOCK_DGRAM, Proto.ICMP),
        (socket.AF_INET6, socket.SOCK_DGRAM, Proto.ICMPV6),
    )
]
FORM_ADDRS4 = ("10.0.1.71", "10.0.1.1", "0.0.0.0", "127.0.0.1", "93.184.216.34")
FORM_ADDRS6 = ("2001:db8::71", "2001:db8::1", "::", "::1", "::ffff:10.0.1.71",
               "::ffff:10.0.1.1", "::ffff:0.0.0.0")  # fmt: skip


def random_sockaddr(rng: random.Random) -> bytes:
    """A sockaddr as an attacker would hand it over: any family value, any
    length, with an address the policy allows, denies or does not list."""
    port = rng.choice([0, 9, 80])
    if rng.random() < 0.5:
        name = attacker.sin(rng.choice(FORM_ADDRS4), port)
    else:
        name = attacker.sin6(rng.choice(FORM_ADDRS6), port)
    if rng.random() < 0.4:  # a family and a length chosen to be odd
        family = rng.choice([0, 2, 10, 1, 0x29, rng.randrange(65536)])
        name = struct.pack("<H", family) + name[2:]
        return name[: rng.choice([0, 1, 2, 8, 15, 16, 20, 23, 24, 27, 28])]
    return name[: rng.choice([16, 24, 28])]  # forms the kernel takes


def test_address_forms_kernel_agrees_with_twin(
    enforce: labkit.Kernel, hosts: labkit.TestHosts
) -> None:
    """Random sockaddrs (families, lengths, addresses), from every kind of
    socket uid 1000 may make, through connect and sendto: the kernel's
    EPERM is the twin's (policy/sockaddr.py, then policy/twin.py)."""
    enforce.apply_files({f"units/{UNIT}.toml": FORM_POLICY})
    assert enforce.compiled is not None
    tables = next(t for t in enforce.compiled.tables if t.name == UNIT)
    rng = random.Random(SEED)
    cases = []
    for _ in range(FORMS):
        sock, name, connect = rng.choice(FORM_SOCKS), random_sockaddr(rng), rng.random() < 0.5
        cases.append((sock, name, connect))
    got = labkit.attack([
        ["connect" if c else "sendto", s.family, s.type, s.protocol, n.hex()] for s, n, c in cases
    ])  # fmt: skip
    mismatches = []
    outcomes: dict[str, int] = {}
    for (sock, name, connect), errno_ in zip(cases, got):
        parsed = sockaddr.parse(sock, name, connect)
        outcomes[parsed.outcome.value] = outcomes.get(parsed.outcome.value, 0) + 1
        if parsed.outcome == sockaddr.Outcome.JUDGE:
            assert parsed.conn is not None
            want = twin.decide(tables, parsed.conn).verdict == Verdict.BLOCKED
        else:
            want = parsed.outcome == sockaddr.Outcome.REFUSE
        if (errno_ == labkit.EPERM) != want:
            mismatches.append(f"{sock} {'connect' if connect else 'sendto'} {name.hex()}: "
                              f"kernel errno {errno_}, twin {parsed}")  # fmt: skip
    labkit.figure(f"differential, address forms: {FORMS} cases {outcomes}, "
                  f"{len(mismatches)} mismatches")  # fmt: skip
    assert not mismatches, "\n".join(mismatches[:10])
    assert all(outcomes.get(o.value, 0) > 0 for o in sockaddr.Outcome)
