"""The adapter's pure parts: wire conversion, rate limits, bus selection (no bus needed)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from test_bus_support import PROBLEMS, FakeEngine, blocked_event

from bouheki.bus import names
from bouheki.bus.connection import resolve_bus
from bouheki.bus.throttle import Coalescer, SlidingWindowLimiter
from bouheki.bus.wire import (
    SPECS,
    check_specs,
    decode_explain_query,
    encode,
    format_problems,
    unwrap,
)
from bouheki.common import api
from bouheki.dbuslib import Variant


def test_every_contract_field_has_a_dbus_type() -> None:
    assert check_specs() == []


def test_every_record_in_the_contract_is_covered() -> None:
    # A new record type in api.py must get a wire spec before the bus can carry it.
    records = {
        obj
        for obj in vars(api).values()
        if dataclasses.is_dataclass(obj) and obj is not api.ExplainQuery
    }
    assert records <= set(SPECS)


def test_encode_then_unwrap_gives_the_dataclass_as_a_dict() -> None:
    engine = FakeEngine()
    for record in [engine.statistics(), *engine.list_policies(), blocked_event()]:
        assert unwrap(encode(record)) == dataclasses.asdict(record)


def test_encode_rejects_a_value_that_does_not_fit_its_type() -> None:
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type
        encode(api.ReloadResult(generation=-1, policies=1))


def test_problem_lines_use_the_compiler_convention() -> None:
    text = format_problems(PROBLEMS, "configuration invalid (2 problems):")
    assert text.splitlines() == [
        "configuration invalid (2 problems):",
        "/etc/bouheki/units/nginx.service.toml:3: unknown key 'alow'",
        "/etc/bouheki/units/db.service.toml: not valid TOML",
    ]
    assert str(api.Problem("", 0, "no file at all")) == "no file at all"


def test_explain_query_decodes_with_defaults_and_any_integer_type() -> None:
    query = decode_explain_query(
        {
            "address": Variant("s", "10.0.1.71"),
            "port": Variant("i", 443),
            "uid": Variant("t", 33),
            "unit": Variant("s", ""),
        }
    )
    assert query == api.ExplainQuery(address="10.0.1.71", port=443, uid=33, unit=None)


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ({}, "address is required"),
        ({"address": Variant("s", "1.2.3.4"), "prot": Variant("s", "tcp")}, "unknown key(s) prot"),
        ({"address": Variant("s", "1.2.3.4"), "port": Variant("s", "443")}, "port must be"),
        ({"address": Variant("u", 1)}, "address must be a string"),
    ],
)
def test_explain_query_type_errors_are_bad_requests(
    query: dict[str, Variant], complaint: str
) -> None:
    with pytest.raises(api.BadRequest, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        decode_explain_query(query)


def test_sliding_window_never_exceeds_the_limit_in_any_window() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(3, window=1.0, clock=lambda: now[0])
    allowed = []
    for step in range(40):  # 40 events over 2 s, every 50 ms
        now[0] = step * 0.05
        if limiter.allow():
            allowed.append(now[0])
    assert len(allowed) == 6
    # Any one-second window holds at most 3 of them.
    for start in allowed:
        assert sum(1 for t in allowed if start <= t < start + 1.0) <= 3


def test_sliding_window_refuses_a_zero_limit() -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0)


def test_coalescer_flushes_first_change_at_once_and_merges_the_rest() -> None:
    async def scenario() -> list[set[str]]:
        flushed: list[set[str]] = []
        coalescer = Coalescer(flushed.append, interval=0.05)
        coalescer.add(["generation"])
        await asyncio.sleep(0)  # next loop iteration: the leading flush
        coalescer.add(["blocked"])
        coalescer.add(["would_block", "blocked"])
        assert len(flushed) == 1
        await asyncio.sleep(0.1)
        return flushed

    assert asyncio.run(scenario()) == [{"generation"}, {"blocked", "would_block"}]


def test_bus_selection_precedence() -> None:
    env = {names.ENV_BUS_ADDRESS: "unix:path=/tmp/test-bus"}
    assert resolve_bus(environ={}).description == "the system bus"
    assert resolve_bus(environ=env).address == "unix:path=/tmp/test-bus"
    # An explicit choice beats the environment; an explicit address beats both.
    assert resolve_bus("session", environ=env).address is None
    assert resolve_bus("session", "unix:path=/x", environ=env).address == "unix:path=/x"
    with pytest.raises(ValueError):
        resolve_bus("user", environ={})


def test_names_are_consistent() -> None:
    assert "/" + names.BUS_NAME.replace(".", "/") == names.OBJECT_PATH
    assert names.INTERFACE.startswith(names.BUS_NAME + ".")
    assert names.ERROR_CONFIG_INVALID == "org.bouheki.Bouheki1.Error.ConfigInvalid"
    assert set(names.STATUS_PROPERTIES) == set(api.STATUS_FIELDS)
    assert [f.name for f in dataclasses.fields(api.Status)] == list(api.STATUS_FIELDS)
