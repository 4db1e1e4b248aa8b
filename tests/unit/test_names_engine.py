"""The engine's side of issue 8, on the host with a fake kernel: a reload
resolves the names, a changed record recompiles the running policy set
through the same apply (a new generation, no file re-read), a failed apply
keeps the old one and is retried, and ListPolicies shows each name's
addresses with their expiry."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from test_names_resolver import DnsStub

from bouheki.common import api
from bouheki.kernel.enforcer import Applied
from bouheki.kernel.generation import ApplyError
from bouheki.names.manager import NamesManager
from bouheki.names.resolver import NameResolver
from bouheki.policy.assemble import CompiledPolicySet
from bouheki.service.engine import Engine
from bouheki.service.journal import Journal


class FakeCounters:
    def reset_policy(self, pid: int) -> None:
        pass


class FakeEnforcer:
    def __init__(self) -> None:
        self.generation = 0
        self.applied: list[CompiledPolicySet] = []
        self.fail = False
        self.counters = FakeCounters()

    def apply(self, compiled: CompiledPolicySet) -> Applied:
        if self.fail:
            raise ApplyError("map full (test)")
        self.generation += 1
        self.applied.append(compiled)
        return Applied(self.generation, {})


def quiet(message: str, **fields: Any) -> None:
    pass


def verdict(engine: Engine, address: str) -> str:
    q = api.ExplainQuery(address=address, port=80, unit="bh-names.service")
    return engine.explain(q).verdict


async def until(cond: Any, timeout: float = 6.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


def test_names_follow_the_record_through_the_engine(tmp_path: Path) -> None:
    stub = DnsStub()
    name = "app.bh.test"
    stub.set(name, "A", 1, "10.0.1.1")
    (tmp_path / "units").mkdir()
    main = tmp_path / "bouheki.toml"
    main.write_text("[daemon]\ndns_min_ttl = 0\ndns_grace = 0\n")
    unit = tmp_path / "units" / "bh-names.service.toml"
    unit.write_text(f'[network]\nallow = ["{name}"]\n')
    sent: list[str] = []
    engine = Engine(
        config=str(main),
        search_dirs=[str(tmp_path)],
        journal=Journal(send=lambda message, **fields: sent.append(message)),
    )
    engine.names = NamesManager(resolver=NameResolver(nameservers=[stub.host], port=stub.port))
    fake = FakeEnforcer()
    engine.enforcer = fake  # type: ignore[assignment]

    async def scenario() -> None:
        await engine.reload()
        engine.names.start(engine.refresh)
        assert verdict(engine, "10.0.1.1") == "allowed"
        assert verdict(engine, "10.0.1.71") == "blocked"
        (summary,) = engine.list_policies()
        (state,) = summary.names
        assert state.name == name
        (addr,) = state.addresses
        assert addr.address == "10.0.1.1"
        assert time.time() < addr.expires_usec / 1e6 <= time.time() + 1.5

        # The record changes: the new address is allowed at the next
        # resolution, the old one no longer once its TTL has run out.
        gen = fake.generation
        unit.write_text("# not re-read by a refresh\n")
        stub.set(name, "A", 1, "10.0.1.71")
        await until(lambda: verdict(engine, "10.0.1.71") == "allowed")
        await until(lambda: verdict(engine, "10.0.1.1") == "blocked")
        assert fake.generation > gen
        assert engine.status().generation == fake.generation
        assert any("applied" in m for m in sent)

        # An apply that fails keeps the running policy and is tried again.
        fake.fail = True
        stub.set(name, "A", 1, "10.0.1.1")
        gen = fake.generation
        await asyncio.sleep(1.5)
        assert fake.generation == gen and verdict(engine, "10.0.1.1") == "blocked"
        fake.fail = False
        await until(lambda: verdict(engine, "10.0.1.1") == "allowed", timeout=10)

    try:
        asyncio.run(scenario())
    finally:
        engine.names.stop()
        stub.close()


def test_reload_forgets_names_no_policy_uses(tmp_path: Path) -> None:
    stub = DnsStub()
    stub.set("one.bh.test", "A", 60, "10.0.1.1")
    stub.set("two.bh.test", "AAAA", 60, "2001:db8::1")
    (tmp_path / "units").mkdir()
    main = tmp_path / "bouheki.toml"
    main.write_text("")
    unit = tmp_path / "units" / "bh-names.service.toml"
    unit.write_text('[network]\nallow = ["one.bh.test", "@lan"]\n')
    engine = Engine(config=str(main), search_dirs=[str(tmp_path)], journal=Journal(send=quiet))
    engine.names = NamesManager(
        resolver=NameResolver(nameservers=[stub.host], port=stub.port),
        lan_source=lambda: [],
    )
    engine.enforcer = FakeEnforcer()  # type: ignore[assignment]

    async def scenario() -> None:
        await engine.reload()
        unit.write_text('[network]\ndeny = ["two.bh.test"]\n')
        await engine.reload()

    try:
        asyncio.run(scenario())
    finally:
        engine.names.stop()
        stub.close()
    assert engine.names.cache.names() == ["two.bh.test"]
    (summary,) = engine.list_policies()
    assert [a.address for n in summary.names for a in n.addresses] == ["2001:db8::1"]
    assert verdict(engine, "2001:db8::1") == "blocked"
    assert verdict(engine, "10.0.1.1") == "allowed"


def test_settings_reach_the_cache(tmp_path: Path) -> None:
    (tmp_path / "units").mkdir()
    main = tmp_path / "bouheki.toml"
    main.write_text(
        "[daemon]\ndns_min_ttl = 3\ndns_max_ttl = 9\ndns_grace = 0\nmax_addresses_per_name = 5\n"
    )
    engine = Engine(config=str(main), search_dirs=[str(tmp_path)], journal=Journal(send=quiet))
    engine.enforcer = FakeEnforcer()  # type: ignore[assignment]
    try:
        asyncio.run(engine.reload())
    finally:
        engine.names.stop()
    lim = engine.names.cache.limits
    assert (lim.min_ttl, lim.max_ttl, lim.grace, lim.max_addresses) == (3, 9, 0, 5)
