"""Atomic apply under load, and monitor mode's exact accounting."""

from __future__ import annotations

import os
import signal
import time

import labkit

from bouheki.policy.tables import Verdict

UNIT = "bouheki-lab.service"
# Both allow 10.0.1.1; they differ on .71 and .72. A connect that saw a mix of
# the two generations (or a half-deleted one) would fall through to the
# default, which blocks (network.allow is non-empty).
POLICY_A = '[network]\nallow = ["10.0.1.1"]\ndeny = ["10.0.1.71"]\n'
POLICY_B = '[network]\nallow = ["10.0.1.1", "10.0.1.71"]\ndeny = ["10.0.1.72"]\n'


def test_flips_under_load_never_mix_generations(
    enforce: labkit.Kernel, hosts: labkit.TestHosts
) -> None:
    enforce.apply_files({f"units/{UNIT}.toml": POLICY_A})
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        bad = tries = 0
        stop = False

        def on_term(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_term)
        while not stop:
            tries += 1
            # Port 9 has no listener: allowed means ECONNREFUSED at once,
            # with no server whose backlog could fail us.
            if labkit.connect_errno("10.0.1.1", 9) == labkit.EPERM:
                bad += 1
        os.write(w, f"{tries} {bad}".encode())
        os._exit(0)
    os.close(w)
    gens = []
    for i in range(100):
        applied = enforce.apply_files({f"units/{UNIT}.toml": POLICY_B if i % 2 == 0 else POLICY_A})
        gens.append(applied.generation)
    time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    tries, bad = map(int, os.read(r, 100).split())
    os.waitpid(pid, 0)
    assert len(set(gens)) == 100
    assert tries > 100
    assert bad == 0, f"{bad} of {tries} connects to an address both policies allow got EPERM"
    assert enforce.take_events() == []
    assert enforce.blocked_total() == 0


def test_monitor_mode_blocks_nothing_and_counts_everything(
    enforce: labkit.Kernel, hosts: labkit.TestHosts
) -> None:
    enforce.apply_files({f"units/{UNIT}.toml": 'mode = "monitor"\n' + POLICY_A})
    attempts = 25
    results = [labkit.connect_errno("10.0.1.71") for _ in range(attempts)]
    assert results == [0] * attempts
    assert labkit.connect_errno("10.0.1.1") == 0
    events = enforce.take_events()
    assert len(events) == attempts
    assert {e.verdict for e in events} == {Verdict.WOULD_BLOCK}
    assert enforce.compiled is not None
    t = next(t for t in enforce.compiled.tables if t.name == UNIT)
    counts = enforce.enforcer.counters.policy(t.policy_id, t.rule_count)
    assert sum(c.would_block for c in counts) == attempts
    assert sum(c.blocked for c in counts) == 0
    assert sum(c.hits for c in counts) == attempts + 1
