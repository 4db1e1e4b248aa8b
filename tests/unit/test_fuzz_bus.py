"""Hostile callers against the D-Bus adapter: every call answered properly, nothing broken.

The real adapter runs on a private dbus-daemon configured like the system bus
(its message size and pending-reply limits, and bouheki's bus policy), with
the FakeEngine behind it. Messages are built by hand, so any signature can be
sent for any member. For every call the contract is:
- an answer within CALL_TIMEOUT: a method return, or an error whose name is
  org.freedesktop.DBus.Error.* or org.bouheki.Bouheki1.Error.* and whose text
  is readable (bounded, no traceback);
- the answer a model of the interface predicts (expect() below), so a wrong
  but well-formed answer fails too;
- no change of the engine's state unless the call was a valid one that may
  change it (a Reload, an Explain or CheckConfig the engine was asked);
- nothing logged at WARNING or above: a caller must not be able to write the
  daemon's journal;
- the service still connected and owning its name afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from bus_fuzz_model import (
    BASIC,
    CHARS,
    DBUS_ERROR,
    INT_RANGES,
    INTROSPECTABLE,
    METHOD_SIGNATURES,
    NAME,
    OBJECT_MANAGER,
    PEER,
    PROPERTY_NAMES,
    UNKNOWN_METHOD,
    Expect,
    error,
    expect,
    fuzz_settings,
    message,
    object_paths,
    wire,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_bus_support import FakeEngine, PrivateBus, as_engine

from bouheki.bus import dispatch, names
from bouheki.bus.server import BusService, serve
from bouheki.bus.wire import unwrap
from bouheki.common.api import BadRequest, ExplainQuery
from bouheki.common.units import check_unit_name
from bouheki.dbuslib import (
    LIBRARY,
    Message,
    MessageBus,
    MessageFlag,
    MessageType,
    SignatureTree,
    Variant,
)

CALL_TIMEOUT = 5.0  # seconds: "answered within a few seconds"
PROPERTIES_INTERVAL = 0.1  # the Coalescer's interval for this module's service
BLOCKED_RATE = 20  # the default: Blocked signals per second

# Explain's query keys and their kinds (the documented contract, restated).
QUERY_KEYS = {
    "address": "s",
    "port": "int",
    "protocol": "s",
    "unit": "s",
    "comm": "s",
    "exe": "s",
    "uid": "int",
    "gid": "int",
}
MAX_DEPTH = 3  # container nesting per signature, and variants in variants
# The bus refuses messages with more than 64 nested variants (it drops the sender).
BUS_MAX_VARIANT_DEPTH = 64

FUZZ = fuzz_settings(150)


# --- the service under test -------------------------------------------------------


class Records(logging.Handler):
    """What the process logs at WARNING and above (the daemon's journal, in the field)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        out = [f"{r.name}: {r.getMessage()}"[:500] for r in self.records]
        self.records.clear()
        return out


class Harness:
    """serve() and a client on one private loop; each example runs on it to completion.

    One loop for both ends, like test_bus_service: dbus-next's signature memo
    is shared by the process, and the adapter empties it from the loop it runs
    on (see dispatch.SIGNATURE_CACHE_LIMIT).
    """

    def __init__(self) -> None:
        self.private = PrivateBus(system_like=True)
        self.engine = FakeEngine()
        self.loop = asyncio.new_event_loop()
        self.records = Records()
        logging.getLogger().addHandler(self.records)
        self.service: Optional[BusService] = None
        self.server_bus: Optional[MessageBus] = None
        self.client: Optional[MessageBus] = None
        self.restarts = 0
        self.run(self.revive())

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def revive(self) -> None:
        """(Re)start what a failed example broke, so the next one starts clean."""
        if self.server_bus is None or not self.server_bus.connected:
            if self.service is not None:
                self.restarts += 1
                await self.service.close(release_name=False)
            self.server_bus = await MessageBus(bus_address=self.private.address).connect()
            self.service = await serve(
                as_engine(self.engine),
                self.server_bus,
                blocked_rate=BLOCKED_RATE,
                properties_interval=PROPERTIES_INTERVAL,
            )
        if self.client is None or not self.client.connected:
            self.client = await MessageBus(bus_address=self.private.address).connect()

    def close(self) -> None:
        async def stop() -> None:
            if self.service is not None:
                await self.service.close()
            for bus in (self.client, self.server_bus):
                if bus is not None and bus.connected:
                    bus.disconnect()

        try:
            self.run(stop())
        finally:
            logging.getLogger().removeHandler(self.records)
            self.loop.close()
            self.private.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


# --- what the interface should answer -------------------------------------------------


def expect_ours(member: str, body: list) -> Expect:
    """One of our methods with its signature: what it does with FakeEngine behind it."""
    if member == names.METHOD_EXPLAIN:
        return expect_explain(body[0])
    if member == names.METHOD_CHECK_CONFIG:
        return Expect("a{sv}", effect="check")  # a root caller; invalid is a normal answer
    if member in (names.METHOD_LEARNED, names.METHOD_FORGET_LEARNED):
        if check_unit_name(body[0]):
            return error(names.ERROR_BAD_REQUEST, effect="learned")
        return Expect(METHOD_SIGNATURES[member][1], effect="learned")
    out = METHOD_SIGNATURES[member][1]
    return Expect(out, effect="reload" if member == names.METHOD_RELOAD else "")


def expect_explain(query: dict[str, Variant]) -> Expect:
    """Explain: the adapter checks the types, then FakeEngine judges the values."""
    if set(query) - set(QUERY_KEYS):
        return error(names.ERROR_BAD_REQUEST)
    for key, variant in query.items():
        wanted = set(INT_RANGES) if QUERY_KEYS[key] == "int" else {"s"}
        if variant.signature not in wanted:
            return error(names.ERROR_BAD_REQUEST)
    if not query.get("address", Variant("s", "")).value:
        return error(names.ERROR_BAD_REQUEST)
    if len(query.get("unit", Variant("s", "")).value.encode()) > 255:
        return error(names.ERROR_BAD_REQUEST)  # systemd's limit, checked before the engine
    port = query["port"].value if "port" in query else None
    if port is not None and not 0 <= port <= 65535:
        return error(names.ERROR_BAD_REQUEST, effect="explain")
    if query["address"].value == "bogus":
        return error(names.ERROR_BAD_REQUEST, effect="explain")
    return Expect("a{sv}", effect="explain")


def explain_query(query: dict[str, Variant]) -> ExplainQuery:
    """The ExplainQuery the engine should be handed for a valid `query`."""
    values = {key: variant.value for key, variant in query.items()}
    for key in ("unit", "exe"):
        if values.get(key) == "":
            values[key] = None
    return ExplainQuery(**values)


# --- sending, and judging the answer -----------------------------------------------------


@dataclass(frozen=True)
class State:
    generation: int
    queries: int
    checked: int
    learned: int

    @classmethod
    def of(cls, engine: FakeEngine) -> State:
        return cls(
            engine.generation, len(engine.queries), len(engine.checked), len(engine.learned_units)
        )


def describe(path: str, interface: Optional[str], member: str, signature: str) -> str:
    return f"{interface}.{member}({signature}) on {path}"


async def send(
    h: Harness,
    path: str,
    interface: Optional[str],
    member: str,
    signature: str,
    body: list,
    flags: MessageFlag = MessageFlag.NONE,
) -> Optional[Message]:
    assert h.client is not None
    msg = message(path, interface, member, signature, body, flags)
    try:
        return await asyncio.wait_for(h.client.call(msg), CALL_TIMEOUT)
    except asyncio.TimeoutError:
        pytest.fail(
            f"no answer within {CALL_TIMEOUT} s to {describe(path, interface, member, signature)}"
        )
    except EOFError:
        # dbus-daemon drops a client that sends an invalid message: a bug of this test.
        pytest.fail(
            f"the bus dropped the client for {describe(path, interface, member, signature)}"
        )


def check_reply(reply: Optional[Message], want: Expect, what: str) -> None:
    assert reply is not None, what
    if reply.message_type == MessageType.ERROR:
        assert reply.error_name.startswith((DBUS_ERROR, names.ERROR_PREFIX + ".")), (
            what,
            reply.error_name,
        )
        assert reply.signature == "s", (what, reply.signature)
        text = reply.body[0]
        assert text.strip(), (what, reply.error_name)
        # Readable: bounded, and no traceback (those go to the journal, not to callers).
        assert len(text) <= dispatch.MAX_ERROR_TEXT + 100, (what, len(text))
        assert "Traceback" not in text and 'File "' not in text, (what, text[:300])
        assert reply.error_name in want.errors, (what, reply.error_name, text[:300], want)
    else:
        assert reply.message_type == MessageType.METHOD_RETURN, (what, reply.message_type)
        assert want.reply is not None, (what, "returned, but expected", want.errors)
        assert reply.signature == want.reply, (what, reply.signature, want.reply)


async def call_and_check(
    h: Harness,
    path: str,
    interface: Optional[str],
    member: str,
    signature: str,
    body: list,
    *,
    no_reply: bool = False,
) -> Optional[Message]:
    """One call under the whole contract (see the module's docstring)."""
    await h.revive()
    assert h.server_bus is not None
    h.records.take()
    what = describe(path, interface, member, signature)
    want = expect(path, interface, member, signature, body, expect_ours)
    before = State.of(h.engine)
    flags = MessageFlag.NO_REPLY_EXPECTED if no_reply else MessageFlag.NONE
    reply = await send(h, path, interface, member, signature, body, flags)
    if no_reply:
        # The service answers in order: once a Ping is answered, the call was
        # dispatched; an async method (Reload asks who the caller is first)
        # may still run, and its effect must be counted against this call.
        await send(h, names.OBJECT_PATH, PEER, "Ping", "", [])
        assert h.service is not None
        await h.service.dispatcher.settled()
    else:
        check_reply(reply, want, what)
    after = State.of(h.engine)
    # Only the change the call may make, and only by one.
    b = before
    allowed = {
        "reload": State(b.generation + 1, b.queries, b.checked, b.learned),
        "explain": State(b.generation, b.queries + 1, b.checked, b.learned),
        "check": State(b.generation, b.queries, b.checked + 1, b.learned),
        "learned": State(b.generation, b.queries, b.checked, b.learned + 1),
    }
    assert after in (before, allowed.get(want.effect, before)), (what, before, after)
    if not no_reply and want.effect and after == before:
        pytest.fail(f"{what} answered without asking the engine")
    if not no_reply and want.effect == "explain" and reply is not None:
        assert h.engine.queries[-1] == explain_query(body[0]), what
        if reply.message_type == MessageType.METHOD_RETURN:
            blocked = body[0]["address"].value.startswith("10.")
            assert unwrap(reply.body[0])["verdict"] == ("blocked" if blocked else "allowed")
    if not no_reply and want.effect == "check" and reply is not None:
        assert h.engine.checked[-1] == (body[0] or None), what
        assert unwrap(reply.body[0])["ok"] == ("bad" not in body[0]), what
    if not no_reply and want.effect == "learned":
        assert h.engine.learned_units[-1] == body[0], what
    assert h.server_bus.connected, f"the service was dropped from the bus by {what}"
    assert h.records.take() == [], f"{what} made the service log"
    return reply


# --- hostile values ----------------------------------------------------------------------


class Repeated(str):
    """`unit * count`, shown as that: Hypothesis prints the failing example, not 36 MB."""

    def __new__(cls, unit: str, count: int) -> Repeated:
        text = super().__new__(cls, unit * count)
        text.unit, text.count = unit, count
        return text

    def __repr__(self) -> str:
        return f"({self.unit!r} * {self.count})"

    __str__ = __repr__  # what Variant's repr shows; dbus-next marshals the characters


class Query(dict):  # type: ignore[type-arg]
    """Explain's a{sv} with `filler` keys k0, k1... added, shown by their number."""

    def __init__(self, keys: dict[str, Variant], filler: int = 0) -> None:
        super().__init__(keys)
        self.update({f"k{i}": Variant("s", "x") for i in range(filler)})
        self.shown, self.filler = keys, filler

    def __repr__(self) -> str:
        return f"Query({self.shown!r}, filler={self.filler})"


ODD = [
    " ",
    "\n",
    "\x01",
    "\x7f",
    "\u202e",  # right-to-left override
    "\ufeff",
    "\ufffe",  # a noncharacter: valid UTF-8, valid D-Bus
    "\U0010ffff",
    "\U000e0001",
    "é",
    "\U0001f642",
    "'",
    '"',
    "\\",
    "%s",
    "{}",
    "../",
]
# Nested values: small, so that a message stays far below the bus's 32 MiB.
TEXT = st.one_of(
    st.text(CHARS, max_size=24),
    st.sampled_from(["", *ODD]),
    st.builds(Repeated, st.sampled_from(ODD), st.sampled_from([64, 255, 256, 4096])),
)
# A top-level argument: up to a few MB (repr() of \x01 is 4 characters).
BIG_TEXT = st.one_of(
    TEXT,
    st.builds(Repeated, st.sampled_from(ODD), st.sampled_from([65_536, 1_000_000])),
)
OBJECT_PATHS = object_paths(5, names.DBUS_PATH)
INTERFACE_NAMES = st.lists(NAME, min_size=2, max_size=4).map(".".join)
MEMBER_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True)


WIRE = wire(
    text=TEXT,
    paths=OBJECT_PATHS,
    max_depth=MAX_DEPTH,
    max_fields=4,
    max_bytes=64,
    max_signatures=3,
    max_args=4,
    variants_follow_depth=True,
)
variants, values_for, bodies = WIRE.variants, WIRE.values_for, WIRE.bodies
# Made once: a strategy made inside a draw costs Hypothesis a parse of this
# file for every lambda in it (it describes them by their source).
_UNKNOWN_KEYS = st.one_of(TEXT, NAME).filter(lambda k: k not in QUERY_KEYS)


@st.composite
def method_calls(draw: st.DrawFn) -> tuple[str, str, list[Any]]:
    """One of our methods with any arguments: wrong ones, missing ones, extra ones."""
    member = draw(st.sampled_from(sorted(METHOD_SIGNATURES)))
    right = METHOD_SIGNATURES[member][0]
    signature, values = draw(bodies())
    how = draw(st.sampled_from(["any", "extra", "none"]))
    if how == "none":
        return member, "", []
    if how == "extra" and right and len(right + signature) < 256:
        return member, right + signature, [draw(values_for(right)), *values]
    return member, signature, values


ADDRESSES = st.sampled_from(
    ["10.0.1.71", "10.0.0.1", "192.0.2.1", "2001:db8::1", "::", "bogus", "", "10.", "999.1.1.1"]
)


@st.composite
def explain_queries(draw: st.DrawFn) -> dict[str, Variant]:
    """Explain's a{sv}: known keys, mostly well typed, plus unknown keys and bulk."""
    query: dict[str, Variant] = {}
    for key in draw(st.sets(st.sampled_from(sorted(QUERY_KEYS)))):
        if draw(st.integers(0, 4)) == 0:
            query[key] = draw(variants())  # any type at all
        elif QUERY_KEYS[key] == "s":
            query[key] = Variant("s", draw(st.one_of(ADDRESSES, BIG_TEXT)))
        else:
            signature = draw(st.sampled_from(sorted(INT_RANGES)))
            query[key] = Variant(signature, draw(st.integers(*INT_RANGES[signature])))
    if draw(st.integers(0, 5)) == 0:
        query.update(draw(st.dictionaries(_UNKNOWN_KEYS, variants(), min_size=1, max_size=3)))
    return Query(query, filler=draw(st.sampled_from([0] * 12 + [1_000, 10_000])))


def deep_variant(depth: int) -> Variant:
    value = Variant("s", "deep")
    for _ in range(depth - 1):
        value = Variant("v", value)
    return value


# --- the fuzz tests ----------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(query=explain_queries())
@example(query={"address": Variant("s", "10.0.1.71"), "port": Variant("q", 443)})
@example(query={"address": Variant("s", "10.0.1.71"), "port": Variant("t", 2**64 - 1)})
@example(query={"address": Variant("v", Variant("s", "10.0.1.71"))})
@example(query={"address": Variant("s", Repeated("\x01", 9_000_000))})  # engines quote it
# A slice name whose parents the real engine took 18 s to walk.
@example(
    query={"address": Variant("s", "10.0.1.71"), "unit": Variant("s", "a-" * 2000 + "a.slice")}
)
@example(query={"address": Variant("s", "10.0.1.71"), "unit": Variant("s", "a-" * 124 + "a.slice")})
def test_explain_with_hostile_queries(harness: Harness, query: dict[str, Variant]) -> None:
    harness.run(
        call_and_check(
            harness, names.OBJECT_PATH, names.INTERFACE, names.METHOD_EXPLAIN, "a{sv}", [query]
        )
    )


@settings(FUZZ, max_examples=100)
@given(path=st.one_of(BIG_TEXT, st.sampled_from(["/tmp/bad.toml", "bad", "/etc/bouheki"])))
def test_check_config_with_hostile_paths(harness: Harness, path: str) -> None:
    harness.run(
        call_and_check(
            harness, names.OBJECT_PATH, names.INTERFACE, names.METHOD_CHECK_CONFIG, "s", [path]
        )
    )


@settings(FUZZ, max_examples=200)
@given(
    path=st.one_of(st.just(names.OBJECT_PATH), OBJECT_PATHS),
    member=st.sampled_from(["Get", "GetAll", "Set"]),
    interface=st.one_of(
        st.just(names.INTERFACE),
        st.sampled_from([names.PROPERTIES_INTERFACE, PEER, "", names.BUS_NAME]),
        BIG_TEXT,
    ),
    name=st.one_of(st.sampled_from(sorted(PROPERTY_NAMES)), BIG_TEXT),
    value=variants(),
)
# Regression: repr() made a 36 MB error of a 9 MB name, over the bus's 32 MiB
# limit, and dbus-daemon dropped the service from the bus.
@example(
    path=names.OBJECT_PATH,
    member="Get",
    interface=names.INTERFACE,
    name=Repeated("\x01", 9_000_000),
    value=Variant("s", ""),
)
@example(
    path=names.OBJECT_PATH,
    member="Set",
    interface=names.INTERFACE,
    name="Version",
    value=deep_variant(BUS_MAX_VARIANT_DEPTH),
)
def test_properties_with_hostile_names(
    harness: Harness, path: str, member: str, interface: str, name: str, value: Variant
) -> None:
    signature, body = {
        "Get": ("ss", [interface, name]),
        "GetAll": ("s", [interface]),
        "Set": ("ssv", [interface, name, value]),
    }[member]
    harness.run(call_and_check(harness, path, names.PROPERTIES_INTERFACE, member, signature, body))


@settings(FUZZ, max_examples=150)
@given(call=method_calls(), no_reply=st.integers(0, 9).map(lambda n: n == 0))
@example(call=(names.METHOD_RELOAD, "b", [True]), no_reply=False)
@example(call=(names.METHOD_EXPLAIN, "", []), no_reply=False)
@example(call=(names.METHOD_CHECK_CONFIG, "ss", ["", ""]), no_reply=False)
def test_our_methods_with_any_signature(
    harness: Harness, call: tuple[str, str, list[Any]], no_reply: bool
) -> None:
    member, signature, values = call
    harness.run(
        call_and_check(
            harness,
            names.OBJECT_PATH,
            names.INTERFACE,
            member,
            signature,
            values,
            no_reply=no_reply,
        )
    )


KNOWN_INTERFACES = [
    names.INTERFACE,
    names.PROPERTIES_INTERFACE,
    PEER,
    INTROSPECTABLE,
    OBJECT_MANAGER,
    names.DBUS_INTERFACE,
    names.BUS_NAME,
    names.INTERFACE + "2",
]
KNOWN_MEMBERS = [
    *METHOD_SIGNATURES,
    "Get",
    "GetAll",
    "Set",
    "Ping",
    "GetMachineId",
    "Introspect",
    "GetManagedObjects",
    names.SIGNAL_BLOCKED,
    names.SIGNAL_RELOADED,
    "Version",
    "PropertiesChanged",
]


@settings(FUZZ, max_examples=300)
@given(
    path=st.one_of(st.just(names.OBJECT_PATH), OBJECT_PATHS),
    interface=st.one_of(st.sampled_from(KNOWN_INTERFACES), st.none(), INTERFACE_NAMES),
    member=st.one_of(st.sampled_from(KNOWN_MEMBERS), MEMBER_NAMES),
    body=bodies(),
    no_reply=st.integers(0, 9).map(lambda n: n == 0),
)
# Regressions: dbus-next's Peer.GetMachineId asked the bus, which refuses the
# daemon, and never answered; its Properties handler logged a traceback for a
# wrong signature or another path.
@example(
    path=names.OBJECT_PATH, interface=PEER, member="GetMachineId", body=("", []), no_reply=False
)
@example(path="/", interface=PEER, member="GetMachineId", body=("", []), no_reply=False)
@example(
    path=names.OBJECT_PATH,
    interface=names.PROPERTIES_INTERFACE,
    member="Get",
    body=("s", [names.INTERFACE]),
    no_reply=False,
)
@example(
    path="/",
    interface=names.PROPERTIES_INTERFACE,
    member="GetAll",
    body=("s", [names.INTERFACE]),
    no_reply=False,
)
@example(
    path=names.OBJECT_PATH,
    interface=names.INTERFACE,
    member=names.METHOD_RELOAD,
    body=("s", ["now"]),
    no_reply=False,
)
@example(
    path=names.OBJECT_PATH,
    interface=names.INTERFACE,
    member=names.METHOD_EXPLAIN,
    body=("s", ["10.0.1.71"]),
    no_reply=True,
)
def test_any_message_gets_a_proper_answer(
    harness: Harness,
    path: str,
    interface: Optional[str],
    member: str,
    body: tuple[str, list[Any]],
    no_reply: bool,
) -> None:
    signature, values = body
    harness.run(
        call_and_check(harness, path, interface, member, signature, values, no_reply=no_reply)
    )


# --- targeted regressions ------------------------------------------------------------------


def test_a_huge_engine_error_text_keeps_the_service_on_the_bus(harness: Harness) -> None:
    """Regression: an error text over the bus's message limit took the service off the bus."""
    # The real engine quotes the address with repr(): 4 characters per \x01.
    address = "\x01" * 9_000_000
    harness.engine.explain_error = BadRequest(f"{address!r} is not an IP address")
    query = {"address": Variant("s", "192.0.2.1")}
    harness.run(harness.revive())
    try:
        reply = harness.run(
            send(
                harness, names.OBJECT_PATH, names.INTERFACE, names.METHOD_EXPLAIN, "a{sv}", [query]
            )
        )
    finally:
        harness.engine.explain_error = None
    check_reply(reply, error(names.ERROR_BAD_REQUEST), "Explain with a huge engine error")
    assert reply is not None and reply.body[0].endswith("more characters cut)")
    assert harness.server_bus is not None and harness.server_bus.connected
    assert harness.records.take() == []


def test_distinct_signatures_do_not_grow_the_service(harness: Harness) -> None:
    """Regression: dbus-next kept the parse of every signature received, forever."""
    count = dispatch.SIGNATURE_CACHE_LIMIT + 300
    defaults = {"b": False, "d": 0.0, "s": "", "o": "/", "g": ""}

    def nth(i: int) -> tuple[str, list[Any]]:
        digits = [BASIC[(i // 12**k) % 12] for k in range(4)]
        return f"({''.join(digits)})", [[defaults.get(d, 0) for d in digits]]

    async def flood() -> None:
        for start in range(0, count, 100):
            batch = [nth(i) for i in range(start, min(start + 100, count))]
            replies = await asyncio.gather(
                *(
                    send(harness, names.OBJECT_PATH, names.PROPERTIES_INTERFACE, "Get", sig, body)
                    for sig, body in batch
                )
            )
            assert {r.error_name for r in replies if r is not None} == {UNKNOWN_METHOD}
        await send(harness, names.OBJECT_PATH, PEER, "Ping", "", [])

    harness.run(harness.revive())
    harness.run(flood())
    if LIBRARY == "dbus-fast":  # it bounds its memo itself, with an lru_cache
        from dbus_fast.signature import get_signature_tree

        info = get_signature_tree.cache_info()
        assert info.maxsize is not None and info.currsize <= info.maxsize
        return
    # The client's own messages share the memo: a few entries past the bound at most.
    assert len(SignatureTree._cache) <= dispatch.SIGNATURE_CACHE_LIMIT + 2


def test_a_flood_from_one_peer_is_answered_and_signals_stay_throttled(harness: Harness) -> None:
    """2000 quick calls: none refused, none lost; what the service broadcasts stays bounded.

    The adapter limits what it broadcasts, not what it answers (throttle.py):
    Blocked signals to BLOCKED_RATE per second, with the dropped ones counted
    in SuppressedSignals and in the next signal's `suppressed`; and
    PropertiesChanged coalesced to one per PROPERTIES_INTERVAL.
    """
    engine = harness.engine
    rng = random.Random(2000)
    explain_ok = [{"address": Variant("s", "10.0.1.71"), "port": Variant("q", 443)}]
    explain_bad = [{"address": Variant("s", "bogus"), "port": Variant("q", 443)}]
    version = [names.INTERFACE, "Version"]
    kinds: list[tuple[str, str, str, list[Any], Expect]] = [
        *[(names.INTERFACE, "GetStatistics", "", [], Expect("a{sv}"))] * 600,
        *[(names.PROPERTIES_INTERFACE, "Get", "ss", version, Expect("v"))] * 400,
        *[(names.INTERFACE, "Explain", "a{sv}", explain_ok, Expect("a{sv}"))] * 300,
        *[(PEER, "Ping", "", [], Expect(""))] * 300,
        *[(names.INTERFACE, "Explain", "a{sv}", explain_bad, error(names.ERROR_BAD_REQUEST))] * 200,
        *[(names.INTERFACE, "Reload", "", [], Expect("a{sv}"))] * 100,
        *[(names.INTERFACE, "Nope", "", [], error(UNKNOWN_METHOD))] * 100,
    ]
    rng.shuffle(kinds)
    in_flight = 100  # the system bus allows 128 pending calls per connection
    fired = 500
    signals: list[Message] = []

    def on_message(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.path == names.OBJECT_PATH:
            signals.append(msg)

    async def get(name: str) -> Any:
        reply = await send(
            harness,
            names.OBJECT_PATH,
            names.PROPERTIES_INTERFACE,
            "Get",
            "ss",
            [names.INTERFACE, name],
        )
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
        return reply.body[0].value

    async def flood() -> float:
        await harness.revive()
        assert harness.client is not None
        match = f"type='signal',path='{names.OBJECT_PATH}'"
        await harness.client.call(
            Message(
                destination=names.DBUS_NAME,
                path=names.DBUS_PATH,
                interface=names.DBUS_INTERFACE,
                member="AddMatch",
                signature="s",
                body=[match],
            )
        )
        harness.client.add_message_handler(on_message)
        suppressed_before = await get(names.PROPERTY_SUPPRESSED_SIGNALS)
        generation_before = engine.generation
        await asyncio.sleep(1.05)  # a fresh window for the Blocked limiter
        limit = asyncio.Semaphore(in_flight)
        started = time.monotonic()

        async def one(kind: tuple[str, str, str, list[Any], Expect]) -> None:
            interface, member, signature, body, want = kind
            async with limit:
                reply = await send(harness, names.OBJECT_PATH, interface, member, signature, body)
            check_reply(reply, want, f"{interface}.{member} in the flood")

        engine.fire_blocked(fired)  # an event storm at the same time, in one window
        await asyncio.gather(*(one(kind) for kind in kinds))
        elapsed = time.monotonic() - started
        await asyncio.sleep(2 * PROPERTIES_INTERVAL)  # the trailing PropertiesChanged

        reloads = sum(1 for kind in kinds if kind[1] == "Reload")
        assert engine.generation == generation_before + reloads
        by_member: dict[str, list[Message]] = {}
        for msg in signals:
            by_member.setdefault(msg.member, []).append(msg)
        blocked = by_member.get(names.SIGNAL_BLOCKED, [])
        assert len(blocked) == BLOCKED_RATE
        assert (
            await get(names.PROPERTY_SUPPRESSED_SIGNALS) == suppressed_before + fired - BLOCKED_RATE
        )
        # Reloaded is not throttled: one per generation, in order.
        reloaded = [msg.body[0] for msg in by_member.get(names.SIGNAL_RELOADED, [])]
        assert reloaded == list(range(generation_before + 1, engine.generation + 1))
        changed = by_member.get("PropertiesChanged", [])
        assert 1 <= len(changed) <= elapsed / PROPERTIES_INTERVAL + 3, (len(changed), elapsed)

        # The next window: the next Blocked signal says how many were dropped.
        signals.clear()
        await asyncio.sleep(1.05)
        engine.fire_blocked(1)
        await asyncio.sleep(0.2)
        (event,) = [m for m in signals if m.member == names.SIGNAL_BLOCKED]
        assert unwrap(event.body[0])["suppressed"] == fired - BLOCKED_RATE
        harness.client.remove_message_handler(on_message)
        return elapsed

    elapsed = harness.run(flood())
    assert elapsed < 20, f"2000 calls took {elapsed:.1f} s"
    assert harness.server_bus is not None and harness.server_bus.connected
    assert harness.records.take() == []


def test_still_serving_normally_after_the_fuzz(harness: Harness) -> None:
    async def normal_use() -> None:
        await harness.revive()
        assert harness.client is not None and harness.server_bus is not None
        reply = await harness.client.call(
            Message(
                destination=names.DBUS_NAME,
                path=names.DBUS_PATH,
                interface=names.DBUS_INTERFACE,
                member="GetNameOwner",
                signature="s",
                body=[names.BUS_NAME],
            )
        )
        assert reply is not None and reply.body == [harness.server_bus.unique_name]
        generation = harness.engine.generation
        result = await call_and_check(
            harness, names.OBJECT_PATH, names.INTERFACE, names.METHOD_RELOAD, "", []
        )
        assert result is not None and unwrap(result.body[0])["generation"] == generation + 1
        stats = await call_and_check(
            harness, names.OBJECT_PATH, names.INTERFACE, names.METHOD_GET_STATISTICS, "", []
        )
        assert stats is not None and unwrap(stats.body[0])["checks"] == 100

    harness.run(normal_use())
    assert harness.restarts == 0, "a fuzz example took the service off the bus"
    assert harness.records.take() == []
