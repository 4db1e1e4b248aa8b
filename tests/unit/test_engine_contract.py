"""The engine contract (common/api.py), run against both engines the D-Bus
tests use: the real one (on the host, with a stand-in for the kernel's
maps) and FakeEngine, the canned one the bus tests put behind the adapter.
What the bus tests learn from FakeEngine holds for the daemon only as far
as the two answer alike; this is where that is checked."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_bus_support import FakeEngine

from bouheki.common import api
from bouheki.kernel.counters import GlobalCounts, RuleCount
from bouheki.kernel.enforcer import Applied
from bouheki.policy.assemble import CompiledPolicySet
from bouheki.service.engine import Engine
from bouheki.service.journal import Journal


class StandInCounters:
    def reset_policy(self, pid: int) -> None:
        pass

    def global_counts(self) -> GlobalCounts:
        return GlobalCounts()

    def policy(self, pid: int, rule_count: int) -> list[RuleCount]:
        return [RuleCount() for _ in range(rule_count + 1)]


class StandInMaps:
    """One learned entry, for whichever policy is asked about."""

    policy = -1

    def learned(self) -> list[Any]:
        from bouheki.kernel.layout import LearnKey, LearnVal

        key = LearnKey(policy=self.policy, uid=33, dport=443, family=2, proto=6)
        key.daddr[:4] = bytes([10, 0, 1, 1])
        return [(key, LearnVal(allowed=2, first_ns=1, last_ns=2))]

    def forget_learned(self, policy: int) -> int:
        return 0


class StandInEnforcer:
    """The kernel's side of an apply, which the host's kernel refuses."""

    cgroup_root = None

    def __init__(self) -> None:
        self.generation = 0
        self.counters = StandInCounters()
        self.maps = StandInMaps()

    def apply(self, compiled: CompiledPolicySet) -> Applied:
        self.generation += 1
        return Applied(self.generation, {})


class Listener:
    def __init__(self) -> None:
        self.reloaded: list[int] = []
        self.changed: list[str] = []

    def on_reloaded(self, generation: int) -> None:
        self.reloaded.append(generation)

    def on_blocked(self, event: api.ConnectionEvent) -> None:
        pass

    def on_properties_changed(self, names: Sequence[str]) -> None:
        self.changed += list(names)


@pytest.fixture(params=["real", "fake"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[api.Engine]:
    if request.param == "fake":
        yield FakeEngine()
        return
    yield real_engine(tmp_path)


def real_engine(tmp_path: Path) -> Engine:
    """The daemon's engine on a host policy and one unit policy, its kernel stood in for."""
    (tmp_path / "units").mkdir()
    main = tmp_path / "bouheki.toml"
    main.write_text('[host.network]\ndeny = ["192.0.2.1"]\n')
    (tmp_path / "units" / "nginx.service.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    real = Engine(config=str(main), search_dirs=[str(tmp_path)], journal=Journal(send=_quiet))
    real.enforcer = StandInEnforcer()  # type: ignore[assignment]
    return real


def _quiet(message: str, **fields: Any) -> None:
    pass


def _fields_are_plain(record: Any) -> None:
    """Records cross the bus: plain values, lists of them, nested records."""
    assert dataclasses.is_dataclass(record)
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if dataclasses.is_dataclass(item):
                _fields_are_plain(item)
            else:
                assert isinstance(item, (str, int, bool, type(None))), (f.name, item)


def test_reload_reports_and_notifies(engine: api.Engine) -> None:
    listener = Listener()
    unsubscribe = engine.subscribe(listener)
    first = asyncio.run(engine.reload())
    second = asyncio.run(engine.reload())
    assert isinstance(first, api.ReloadResult) and second.generation > first.generation
    assert listener.reloaded == [first.generation, second.generation]
    assert "generation" in listener.changed and "loaded_at_usec" in listener.changed
    assert engine.status().generation == second.generation
    unsubscribe()
    asyncio.run(engine.reload())
    assert len(listener.reloaded) == 2


def test_reads_answer_with_plain_records(engine: api.Engine) -> None:
    asyncio.run(engine.reload())
    status, stats, policies = engine.status(), engine.statistics(), engine.list_policies()
    assert isinstance(status, api.Status) and isinstance(stats, api.Statistics)
    assert policies and all(isinstance(p, api.PolicySummary) for p in policies)
    assert any(p.name == "nginx.service" for p in policies)
    for record in (status, stats, *policies):
        _fields_are_plain(record)


@pytest.mark.parametrize(
    "query",
    [
        api.ExplainQuery(address="bogus", port=80),
        api.ExplainQuery(address="10.0.1.71", port=70000),
    ],
)
def test_explain_refuses_bad_queries(engine: api.Engine, query: api.ExplainQuery) -> None:
    asyncio.run(engine.reload())
    with pytest.raises(api.BadRequest):
        engine.explain(query)


def test_explain_names_the_policy_and_the_verdict(engine: api.Engine) -> None:
    asyncio.run(engine.reload())
    blocked = engine.explain(api.ExplainQuery("10.0.1.71", 443, unit="nginx.service"))
    assert (blocked.verdict, blocked.policy) == ("blocked", "nginx.service")
    assert blocked.origin_line > 0 and blocked.origin_file.endswith("nginx.service.toml")
    allowed = engine.explain(api.ExplainQuery("198.51.100.7", 443, unit="nginx.service"))
    assert allowed.verdict == "allowed"


def test_an_invalid_configuration_is_a_result_or_config_invalid(
    engine: api.Engine, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[host]\nmode = 'sometimes'\n")
    try:
        result = asyncio.run(engine.check_config(str(bad)))
    except api.ConfigInvalid as e:
        assert e.problems and all(isinstance(p, api.Problem) for p in e.problems)
    else:
        assert not result.ok and result.problems
    assert asyncio.run(engine.check_config(None)).ok


def test_learning_refuses_what_is_not_a_unit(engine: api.Engine) -> None:
    asyncio.run(engine.reload())
    for name in ("", "no-suffix", "x" * 300 + ".service"):
        with pytest.raises(api.BadRequest):
            asyncio.run(engine.learned(name))
        with pytest.raises(api.BadRequest):
            asyncio.run(engine.forget_learned(name))
    if isinstance(engine, Engine):  # the stand-in's entry is the unit's policy's
        assert engine.running is not None and engine.enforcer is not None
        maps: Any = engine.enforcer.maps
        maps.policy = engine.running.compiled.ids["nginx.service"]
    learned = asyncio.run(engine.learned("nginx.service"))
    assert learned.unit == "nginx.service" and learned.policy == "nginx.service"
    (seen,) = learned.observations
    assert (seen.address, seen.protocol) == ("10.0.1.1", "tcp") and seen.allowed > 0
    _fields_are_plain(learned)
    assert asyncio.run(engine.forget_learned("nginx.service")) >= 0


def test_the_engine_keeps_no_past_configuration(tmp_path: Path) -> None:
    """After reloads, the parsed and compiled configurations of past
    generations are gone: events of a past generation are named from a few
    names kept apart (a 100,000-prefix configuration is ~100 MB in Python,
    and the pipeline keeps 8 generations)."""
    import gc
    import weakref

    real = real_engine(tmp_path)
    parsed = _parsed_sets(real)
    asyncio.run(real.reload())
    assert real.running is not None
    first = [parsed[-1], weakref.ref(real.running.compiled)]
    for _ in range(3):
        asyncio.run(real.reload())
    gc.collect()
    assert [r() for r in first] == [None, None]


def _parsed_sets(real: Engine) -> list[Any]:
    """Weak references to every policy set the engine parses from now on."""
    import weakref

    refs: list[Any] = []
    load = real._load

    def watched() -> Any:
        ps = load()
        refs.append(weakref.ref(ps))
        return ps

    real._load = watched  # type: ignore[method-assign]
    return refs


def test_the_engine_keeps_the_parsed_configuration_only_for_a_refresh(tmp_path: Path) -> None:
    """A policy set of plain addresses is freed once applied (a parsed
    prefix costs several times its compiled entry); the bus still reports
    each policy's units and files. One that names a domain is kept, for the
    refresh that recompiles it when the name's addresses change."""
    import gc

    real = real_engine(tmp_path)
    parsed = _parsed_sets(real)
    asyncio.run(real.reload())
    gc.collect()
    assert real.running is not None and real.running.policy_set is None
    assert parsed[-1]() is None
    listed = {p.name: (p.units, p.files) for p in real.list_policies()}
    assert listed["nginx.service"] == (
        ["nginx.service"],
        [str(tmp_path / "units" / "nginx.service.toml")],
    )
    assert asyncio.run(real.refresh()) is True  # nothing to recompile

    (tmp_path / "units" / "nginx.service.toml").write_text('[network]\ndeny = ["example.test"]\n')
    asyncio.run(real.reload())
    gc.collect()
    assert real.running.policy_set is not None and parsed[-1]() is real.running.policy_set
    (nginx,) = [p for p in real.list_policies() if p.name == "nginx.service"]
    assert [n.name for n in nginx.names] == ["example.test"]
