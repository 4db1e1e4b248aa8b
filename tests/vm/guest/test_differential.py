"""The kernel and the Python twin agree: random policies, random connections
made for real by processes of random identities; the kernel's verdict (EPERM
or not) must be the twin's, and counters and events must count every block."""

from __future__ import annotations

import os
import random
import socket
import sys

import labkit
import pytest
from workers import Worker

from bouheki.policy import randgen, twin
from bouheki.policy.tables import Connection, Proto, Verdict

SEED = int(os.environ.get("BOUHEKI_DIFF_SEED", "20261128"))
POLICIES = int(os.environ.get("BOUHEKI_DIFF_POLICIES", "100"))
PER_POLICY = int(os.environ.get("BOUHEKI_DIFF_CONNECTIONS", "50"))
UNIT = "bouheki-lab.service"  # the suite's own unit: the workers are in it

COMMS = ("curl", "wget", "python3", "nc")
IDS = ((0, 0), (1000, 1000), (1001, 33))


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
    for n in range(POLICIES):
        text = randgen.random_policy_toml(rng, universe, max_rules=8)
        enforce.apply_files({f"units/{UNIT}.toml": text})
        assert enforce.compiled is not None
        tables = next(t for t in enforce.compiled.tables if t.name == UNIT)
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
    print(f"differential: {cases} cases, {POLICIES} policies, {blocked} blocked, "
          f"{would_block} would-block, {mismatches} mismatches")  # fmt: skip
    assert not failures, "\n\n".join(failures)
    assert cases == POLICIES * PER_POLICY
    assert counts.events_lost == base.events_lost
    assert len(events) == blocked + would_block
    assert sum(1 for e in events if e.verdict == Verdict.BLOCKED) == blocked
    assert sum(1 for e in events if e.verdict == Verdict.WOULD_BLOCK) == would_block
    assert enforce.blocked_total() == blocked + would_block
