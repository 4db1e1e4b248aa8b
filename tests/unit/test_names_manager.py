"""names/manager.py: what a reload gets, when the engine is asked to
re-apply, and (with a real DNS server) a record change followed in time."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterator

import pytest
from test_names_resolver import DnsStub

from bouheki.names.cache import Limits
from bouheki.names.manager import APPLY_RETRY, NamesManager
from bouheki.names.resolver import NameResolver, Resolution, ResolveError

A1, A2 = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
N = "api.example.com"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeResolver(NameResolver):
    def __init__(self) -> None:
        super().__init__(nameservers=["127.0.0.1"])
        self.answers: dict[str, Resolution | ResolveError] = {}
        self.calls: list[str] = []

    def resolve(self, name: str) -> Resolution:
        self.calls.append(name)
        got = self.answers.get(name, ResolveError("no such test name"))
        if isinstance(got, ResolveError):
            raise got
        return got


def answer(name: str, *pairs: tuple[ipaddress._BaseAddress, int]) -> Resolution:
    return Resolution(name, tuple(pairs))  # type: ignore[arg-type]


class Harness:
    def __init__(self, **limits: float) -> None:
        base = {"min_ttl": 10, "max_ttl": 100, "grace": 5, "max_addresses": 64}
        base.update(limits)
        self.clock = FakeClock()
        self.resolver = FakeResolver()
        self.lan = [ipaddress.ip_network("10.9.0.0/24")]
        self.m = NamesManager(
            Limits(**base),  # type: ignore[arg-type]
            resolver=self.resolver,
            lan_source=lambda: list(self.lan),
            clock=self.clock,
            wall_clock=lambda: self.clock.now + 5000,
        )
        self.applied = 0
        self.apply_ok = True
        self.m.on_change = self._on_change

    async def _on_change(self) -> bool:
        self.applied += 1
        return self.apply_ok

    def tick(self) -> bool:
        return asyncio.run(self.m.tick())

    def close(self) -> None:
        self.m.stop()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def test_prepare_resolves_new_names_once_then_serves_the_cache(h: Harness) -> None:
    h.resolver.answers[N] = answer(N, (A1, 30))
    names, sets = h.m.prepare([N], [])
    assert names == {N: [ipaddress.ip_network("192.0.2.1/32")]} and sets == {}
    names, _ = h.m.prepare([N], [])
    assert names[N] == [ipaddress.ip_network("192.0.2.1/32")]
    assert h.resolver.calls == [N]


def test_prepare_of_a_failing_name_gives_no_address_and_logs(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bouheki.names"):
        names, _ = h.m.prepare(["broken.example"], [])
    assert names == {"broken.example": []}
    assert "cannot resolve broken.example: no such test name" in caplog.text
    # A name with no address is asked again at the next reload.
    h.m.prepare(["broken.example"], [])
    assert h.resolver.calls == ["broken.example"] * 2


def test_prepare_reads_lan(h: Harness) -> None:
    _, sets = h.m.prepare([], ["lan", "loopback"])
    assert sets == {"lan": [ipaddress.ip_network("10.9.0.0/24")]}


def test_record_change_is_applied_at_the_ttl_and_the_old_address_after_grace(
    h: Harness,
) -> None:
    h.resolver.answers[N] = answer(N, (A1, 30))
    h.m.prepare([N], [])
    h.m.activate([N], [])
    assert not h.tick()  # nothing due
    h.resolver.answers[N] = answer(N, (A2, 30))
    h.clock.now += 29
    assert not h.tick() and h.resolver.calls == [N]
    h.clock.now += 1  # the TTL ran out: re-resolved, A2 added
    assert h.tick() and h.applied == 1
    assert h.m.prepare([N], [])[0][N] == [ipaddress.ip_network(f"{a}/32") for a in (A1, A2)]
    h.clock.now += 4.9
    assert not h.tick()
    h.clock.now += 0.1  # A1's TTL + grace: removed
    assert h.tick() and h.applied == 2
    assert h.m.prepare([N], [])[0][N] == [ipaddress.ip_network("192.0.2.2/32")]
    (state,) = h.m.states([N])
    assert [a.address for a in state.addresses] == ["192.0.2.2"]
    # Realtime usec of the monotonic expiry (wall = monotonic + 5000 here).
    assert state.addresses[0].expires_usec == (1030 + 30 + 5000) * 1_000_000


def test_names_not_in_force_do_not_trigger_an_apply(h: Harness) -> None:
    h.resolver.answers[N] = answer(N, (A1, 30))
    h.m.prepare([N], [])  # compiled, but that apply failed: never activated
    h.resolver.answers[N] = answer(N, (A2, 30))
    h.clock.now += 30
    assert not h.tick()
    assert h.resolver.calls == [N, N]
    h.m.activate([], [])
    assert h.m.cache.names() == []


def test_a_failed_apply_is_retried(h: Harness) -> None:
    h.resolver.answers[N] = answer(N, (A1, 30))
    h.m.prepare([N], [])
    h.m.activate([N], [])
    h.resolver.answers[N] = answer(N, (A1, 30), (A2, 30))
    h.apply_ok = False
    h.clock.now += 30
    assert h.tick() and h.applied == 1
    h.apply_ok = True
    h.clock.now += APPLY_RETRY - 0.1
    assert not h.tick()
    h.clock.now += 0.1
    assert h.tick() and h.applied == 2
    assert not h.tick()


def test_failures_keep_the_last_answer_until_it_expires(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.resolver.answers[N] = answer(N, (A1, 30))
    h.m.prepare([N], [])
    h.m.activate([N], [])
    h.resolver.answers[N] = ResolveError("timed out")
    with caplog.at_level(logging.WARNING, logger="bouheki.names"):
        h.clock.now += 30
        assert not h.tick()
        for _ in range(2):  # retries after 1 and 2 s: still within the grace
            h.clock.now = h.m.cache.next_deadline()  # type: ignore[assignment]
            assert not h.tick()
    assert caplog.text.count("cannot resolve") == 1
    assert "keeping its addresses (1) until they expire" in caplog.text
    assert h.m.prepare([N], [])[0][N] == [ipaddress.ip_network("192.0.2.1/32")]
    h.clock.now = 1000 + 30 + 5  # TTL + grace
    assert h.tick() and h.applied == 1
    assert h.m.prepare([N], [])[0][N] == []


def test_lan_is_compared_with_what_was_compiled(h: Harness) -> None:
    async def scenario() -> list[int]:
        seen = []
        h.m.prepare([], ["lan"])
        h.m.activate([], ["lan"])
        h.m._loop = asyncio.get_running_loop()  # as start() would, without a watcher
        h.m._watcher = object()  # type: ignore[assignment]
        h.m._lan_dirty = True
        await h.m.tick()  # first look after watching: same as compiled
        seen.append(h.applied)
        h.lan.append(ipaddress.ip_network("2001:db8:9::/64"))
        h.m._lan_dirty = True
        await h.m.tick()
        seen.append(h.applied)
        h.m._watcher = None
        return seen

    assert asyncio.run(scenario()) == [0, 1]
    assert h.m.prepare([], ["lan"])[1]["lan"][-1] == ipaddress.ip_network("2001:db8:9::/64")


def test_a_changed_record_is_followed_through_a_real_server() -> None:
    """The whole chain on the real clock: DNS server, resolver, cache, task."""
    stub = DnsStub()
    m = NamesManager(
        Limits(min_ttl=0, max_ttl=60, grace=0, max_addresses=8),
        resolver=NameResolver(nameservers=[stub.host], port=stub.port),
    )
    name = "short.bh.test"
    stub.set(name, "A", 1, "10.0.1.1")
    stub.set(name, "AAAA", 1, "2001:db8::1")

    async def scenario() -> tuple[float, list[str], list[str]]:
        changes = asyncio.Queue[float]()

        async def on_change() -> bool:
            changes.put_nowait(time.monotonic())
            return True

        loop = asyncio.get_running_loop()
        first, _ = await loop.run_in_executor(None, m.prepare, [name], [])
        m.activate([name], [])
        m.start(on_change)
        stub.set(name, "A", 1, "10.0.1.71")
        t0 = time.monotonic()
        # Added at the next resolution (<= 1 s), then 10.0.1.1 removed when
        # its TTL ran out: at most 2 applies, within ~2 s.
        while True:
            await asyncio.wait_for(changes.get(), 5)
            now, _ = await loop.run_in_executor(None, m.prepare, [name], [])
            if "10.0.1.1/32" not in [str(n) for n in now[name]]:
                break
        return time.monotonic() - t0, [str(n) for n in first[name]], [str(n) for n in now[name]]

    try:
        took, before, after = asyncio.run(scenario())
    finally:
        m.stop()
        stub.close()
    assert before == ["10.0.1.1/32", "2001:db8::1/128"]
    assert after == ["10.0.1.71/32", "2001:db8::1/128"]
    assert took < 3.5


def test_a_reload_waits_for_names_no_longer_than_its_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10,000 names behind a resolver that never answers in time: prepare()
    returns after the budget with what it has, and the names stay tracked
    (due) for the background task."""
    h = Harness()
    names = [f"n{i}.example.com" for i in range(10_000)]
    h.resolver.answers[names[0]] = answer(names[0], (A1, 60))
    slow = {names[1], names[2], names[3], names[4]}
    plain = h.resolver.resolve

    def resolve(name: str) -> Resolution:
        if name in slow:
            time.sleep(2.0)  # holds all four workers
        return plain(name)

    h.resolver.resolve = resolve  # type: ignore[method-assign]
    h.m.prepare_budget = 0.5
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bouheki.names"):
        got, _ = h.m.prepare(names, [])
    took = time.monotonic() - t0
    assert took < 1.5, took
    assert got[names[0]] == [ipaddress.ip_network("192.0.2.1/32")]
    assert all(got[n] == [] for n in names[1:])
    assert "not answered within" in caplog.text
    # Thousands of failures, a handful of lines.
    assert caplog.text.count("cannot resolve n") <= 5
    assert "more names cannot be resolved" in caplog.text
    assert all(n in h.m.cache for n in names)
    late = int(caplog.text.split(" of 10000 names not answered")[0].rsplit(" ", 1)[-1])
    assert late > 0 and len(h.m.cache.due(h.clock())) >= late  # due now, not forgotten
    h.m.stop()


def test_background_rounds_are_bounded_and_apply_once_at_the_end(h: Harness) -> None:
    """200 names due at once: 64 per round, and the policies recompile once,
    after the last round, not once per round."""
    from bouheki.names.manager import RESOLVE_BATCH

    names = [f"b{i:03}.example.com" for i in range(200)]
    for n in names:
        h.resolver.answers[n] = answer(n, (A1, 60))
        h.m.cache.add(n)
    h.m.activate(names, [])
    rounds = []
    while True:
        before = len(h.resolver.calls)
        applied = h.tick()
        rounds.append((len(h.resolver.calls) - before, applied))
        if not h.m._more_due:
            break
    assert [n for n, _ in rounds] == [RESOLVE_BATCH] * 3 + [200 - 3 * RESOLVE_BATCH]
    assert [a for _, a in rounds] == [False, False, False, True]
    assert h.applied == 1
