"""The adapter on a private dbus-daemon, with a fake engine behind it."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Optional

import pytest
from test_bus_support import PROBLEMS, FakeEngine, PrivateBus, as_engine

from bouheki.bus import names
from bouheki.bus.server import BusNameUnavailable, BusService, serve
from bouheki.bus.throttle import SlidingWindowLimiter
from bouheki.bus.wire import unwrap
from bouheki.common.api import BadRequest, ConfigInvalid, EngineError
from bouheki.dbuslib import Message, MessageBus, MessageType, Variant


@pytest.fixture(scope="module")
def private_bus() -> Iterator[PrivateBus]:
    bus = PrivateBus()
    yield bus
    bus.close()


class Peer:
    """A client connection that records the signals it receives."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.signals: asyncio.Queue[Message] = asyncio.Queue()
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.path == names.OBJECT_PATH:
            self.signals.put_nowait(msg)

    async def subscribe(self) -> None:
        await self.call(
            "AddMatch",
            "s",
            [f"type='signal',path='{names.OBJECT_PATH}'"],
            interface=names.DBUS_INTERFACE,
            destination=names.DBUS_NAME,
            path=names.DBUS_PATH,
        )

    async def call(
        self,
        member: str,
        signature: str = "",
        body: Optional[list[Any]] = None,
        *,
        interface: str = names.INTERFACE,
        destination: str = names.BUS_NAME,
        path: str = names.OBJECT_PATH,
    ) -> Message:
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        assert reply is not None
        return reply

    async def ok(self, member: str, signature: str = "", body: Optional[list[Any]] = None) -> Any:
        reply = await self.call(member, signature, body)
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        return unwrap(reply.body[0])

    async def error(
        self, member: str, signature: str = "", body: Optional[list[Any]] = None
    ) -> tuple[str, str]:
        reply = await self.call(member, signature, body)
        assert reply.message_type == MessageType.ERROR
        return reply.error_name, reply.body[0]

    async def next_signal(self, member: str, timeout: float = 2.0) -> Message:
        while True:
            msg = await asyncio.wait_for(self.signals.get(), timeout)
            if msg.member == member:
                return msg


@asynccontextmanager
async def served(
    address: str, engine: FakeEngine, **options: Any
) -> AsyncIterator[tuple[BusService, Peer]]:
    server_bus = await MessageBus(bus_address=address).connect()
    client_bus = await MessageBus(bus_address=address).connect()
    options.setdefault("properties_interval", 0.05)
    service = await serve(as_engine(engine), server_bus, **options)
    try:
        yield service, Peer(client_bus)
    finally:
        await service.close()
        client_bus.disconnect()
        server_bus.disconnect()


def run(
    private_bus: PrivateBus, scenario: Any, engine: Optional[FakeEngine] = None, **options: Any
) -> FakeEngine:
    engine = engine or FakeEngine()

    async def main() -> None:
        async with served(private_bus.address, engine, **options) as (service, peer):
            await scenario(service, peer, engine)

    asyncio.run(asyncio.wait_for(main(), 15))
    return engine


def test_introspection_shows_the_interface(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        node = await peer.bus.introspect(names.BUS_NAME, names.OBJECT_PATH)
        (iface,) = [i for i in node.interfaces if i.name == names.INTERFACE]
        assert sorted(m.name for m in iface.methods) == [
            "CheckConfig",
            "Explain",
            "ForgetLearned",
            "GetStatistics",
            "Learned",
            "ListPolicies",
            "Reload",
        ]
        assert sorted(s.name for s in iface.signals) == ["Blocked", "Reloaded"]
        assert {p.name for p in iface.properties} >= set(names.STATUS_PROPERTIES.values())

    run(private_bus, scenario)


def test_methods_reply_with_the_engine_answers(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        policies = await peer.ok("ListPolicies")
        assert [p["name"] for p in policies] == ["nginx.service", "containers"]
        assert policies[0]["names"][0]["addresses"][0]["address"] == "93.184.216.34"
        stats = await peer.ok("GetStatistics")
        assert stats["checks"] == 100
        assert stats["policies"][0]["rules"][1]["origin"].endswith("nginx.service.toml:7")
        explanation = await peer.ok(
            "Explain",
            "a{sv}",
            [{"address": Variant("s", "10.0.1.71"), "port": Variant("q", 443)}],
        )
        assert explanation["verdict"] == "blocked"
        assert explanation["origin_line"] == 7
        assert engine.queries[-1].port == 443 and engine.queries[-1].protocol == "tcp"
        check = await peer.ok("CheckConfig", "s", [""])
        assert check == {
            "ok": True,
            "problems": [],
            "warnings": ["no [host] policy"],
            "policies": 2,
        }
        assert engine.checked == [None]
        # A root caller (the tests run as root) may check a path; invalid is a
        # normal answer, not an error.
        bad = await peer.ok("CheckConfig", "s", ["/tmp/bad.toml"])
        assert bad["ok"] is False
        assert bad["problems"][0] == {
            "file": PROBLEMS[0].file,
            "line": 3,
            "message": "unknown key 'alow'",
        }
        result = await peer.ok("Reload")
        assert result == {
            "generation": 2,
            "policies": 2,
            "warnings": ["units/old.toml: legacy key"],
            "duration_ms": 12,
        }
        learned = await peer.ok("Learned", "s", ["nginx.service"])
        assert learned["learning"] is True and learned["capacity"] == 16384
        assert learned["observations"][0]["port"] == 80
        assert learned["observations"][0]["exe"] == "/usr/bin/curl"
        assert await peer.ok("ForgetLearned", "s", ["nginx.service"]) == 1
        assert engine.learned_units == ["nginx.service", "nginx.service"]
        props = await peer.call(
            "GetAll", "s", [names.INTERFACE], interface=names.PROPERTIES_INTERFACE
        )
        values = unwrap(props.body[0])
        assert values["PolicyGeneration"] == 2
        assert values["Version"] == "0.1.0-test"
        assert values["SuppressedSignals"] == 0

    run(private_bus, scenario)


def test_config_invalid_carries_every_problem(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        engine.reload_error = ConfigInvalid(PROBLEMS)
        name, text = await peer.error("Reload")
        assert name == "org.bouheki.Bouheki1.Error.ConfigInvalid"
        lines = text.splitlines()
        assert "running policy was kept" in lines[0]
        assert lines[1:] == [
            "/etc/bouheki/units/nginx.service.toml:3: unknown key 'alow'",
            "/etc/bouheki/units/db.service.toml: not valid TOML",
        ]

    run(private_bus, scenario)


@pytest.mark.parametrize(
    ("error", "name", "text"),
    [
        (
            BadRequest("port 70000 is out of range"),
            names.ERROR_BAD_REQUEST,
            "port 70000 is out of range",
        ),
        (
            EngineError("the policy is being reloaded"),
            names.ERROR_FAILED,
            "the policy is being reloaded",
        ),
        (
            RuntimeError("secret internals"),
            names.ERROR_FAILED,
            "explain failed: internal error (RuntimeError)",
        ),
    ],
)
def test_engine_exceptions_become_dbus_errors(
    private_bus: PrivateBus,
    error: Exception,
    name: str,
    text: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        engine.explain_error = error
        got_name, got_text = await peer.error(
            "Explain", "a{sv}", [{"address": Variant("s", "192.0.2.1")}]
        )
        assert got_name == name
        assert got_text.startswith(text)
        assert "secret" not in got_text and "Traceback" not in got_text

    run(private_bus, scenario)
    # The details go to the daemon's log instead, and only for unexpected errors.
    assert ("secret internals" in caplog.text) == isinstance(error, RuntimeError)


def test_malformed_explain_queries_are_bad_requests(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        for query in (
            {"port": Variant("q", 443)},
            {"address": Variant("s", "10.0.0.1"), "color": Variant("s", "red")},
            {"address": Variant("s", "10.0.0.1"), "uid": Variant("s", "root")},
        ):
            name, _ = await peer.error("Explain", "a{sv}", [query])
            assert name == names.ERROR_BAD_REQUEST
        # Unknown members and wrong signatures stay the library's standard errors.
        name, _ = await peer.error("Explain", "s", ["10.0.0.1"])
        assert name == "org.freedesktop.DBus.Error.UnknownMethod"

    run(private_bus, scenario)


def test_bad_requests_are_answered_without_logging_errors(
    private_bus: PrivateBus, caplog: pytest.LogCaptureFixture
) -> None:
    # Anyone may send these on the system bus: none may fill the journal.
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        props = {"interface": names.PROPERTIES_INTERFACE}
        for member, signature, body, expected in (
            ("Get", "ss", [names.INTERFACE, "Nope"], "UnknownProperty"),
            ("Get", "ss", ["org.example.Other", "Version"], "UnknownInterface"),
            ("Set", "ssv", [names.INTERFACE, "Version", Variant("s", "2")], "PropertyReadOnly"),
        ):
            reply = await peer.call(member, signature, body, **props)
            assert reply.error_name == f"org.freedesktop.DBus.Error.{expected}"
        version = await peer.call("Get", "ss", [names.INTERFACE, "Version"], **props)
        assert version.body[0].value == "0.1.0-test"
        name, _ = await peer.error("Explain", "a{sv}", [{"address": Variant("s", "bogus")}])
        assert name == names.ERROR_BAD_REQUEST
        name, _ = await peer.error("NoSuchMethod")
        assert name == "org.freedesktop.DBus.Error.UnknownMethod"

    with caplog.at_level("WARNING"):
        run(private_bus, scenario)
    assert [r.getMessage() for r in caplog.records] == []


def test_reload_emits_reloaded_and_properties_changed(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        await peer.subscribe()
        await peer.ok("Reload")
        reloaded = await peer.next_signal("Reloaded")
        assert reloaded.body == [2]
        changed = await peer.next_signal("PropertiesChanged")
        interface, values, _invalidated = changed.body
        assert interface == names.INTERFACE
        assert unwrap(values)["PolicyGeneration"] == 2
        assert unwrap(values)["ModeSummary"] == "2 policies: 1 block, 1 monitor"

    run(private_bus, scenario)


def test_blocked_signals_are_rate_limited_and_count_what_they_drop(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        await peer.subscribe()
        engine.fire_blocked(10)  # a storm: 3 go out, 7 are dropped
        first = [unwrap((await peer.next_signal("Blocked")).body[0]) for _ in range(3)]
        assert [e["pid"] for e in first] == [1000, 1001, 1002]
        assert first[0]["daddr"] == "10.0.1.71" and first[0]["suppressed"] == 0
        changed = await peer.next_signal("PropertiesChanged")
        assert unwrap(changed.body[1]) == {"SuppressedSignals": 7}
        # A new window (simulated, rather than waited for): the next signal
        # carries the count of those dropped since the previous one.
        service.manager._limiter = SlidingWindowLimiter(3)
        engine.fire_blocked(
            1, verdict="would-block", daddr="2001:db8::1", hook="sendmsg", reason="routing-option"
        )
        event = unwrap((await peer.next_signal("Blocked")).body[0])
        assert event["suppressed"] == 7 and event["verdict"] == "would-block"
        # The journal's fields of the event travel too (doc/EVENTS.md).
        assert (event["hook"], event["reason"]) == ("sendmsg", "routing-option")
        assert {"exe_dev", "exe_ino", "cgroup_id"} <= set(event)
        with pytest.raises(asyncio.TimeoutError):
            await peer.next_signal("Blocked", timeout=0.1)

    run(private_bus, scenario, blocked_rate=3)


def test_a_second_instance_cannot_take_the_name(private_bus: PrivateBus) -> None:
    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        other = await MessageBus(bus_address=private_bus.address).connect()
        try:
            with pytest.raises(BusNameUnavailable, match=r"already owned by :1\.\d+ \(pid \d+\)"):
                await serve(as_engine(FakeEngine()), other)
            # The failed attempt left nothing behind: the first one still answers.
            assert (await peer.ok("GetStatistics"))["checks"] == 100
        finally:
            other.disconnect()

    engine = run(private_bus, scenario)
    assert engine.listeners == []  # close() unsubscribed


@pytest.mark.skipif(shutil.which("busctl") is None, reason="busctl is not installed")
def test_busctl_can_call_the_object(private_bus: PrivateBus) -> None:
    async def busctl(*args: str) -> Any:
        proc = await asyncio.create_subprocess_exec(
            "busctl",
            f"--address={private_bus.address}",
            "--json=short",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return json.loads(out)

    async def scenario(service: BusService, peer: Peer, engine: FakeEngine) -> None:
        target = [names.BUS_NAME, names.OBJECT_PATH, names.INTERFACE]
        stats = await busctl("call", *target, "GetStatistics")
        assert stats["type"] == "a{sv}"
        assert stats["data"][0]["blocked"] == {"type": "t", "data": 5}
        explained = await busctl(
            "call",
            *target,
            "Explain",
            "a{sv}",
            "2",
            "address",
            "s",
            "10.0.1.71",
            "port",
            "u",
            "443",
        )
        assert explained["data"][0]["verdict"]["data"] == "blocked"
        generation = await busctl("get-property", *target, "PolicyGeneration")
        assert generation == {"type": "t", "data": 1}

    run(private_bus, scenario)
