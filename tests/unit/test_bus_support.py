"""Shared helpers for the bus and ctl tests: a fake engine and private dbus-daemons.

Like firewalld's test suite, the adapter runs for real against a private
dbus-daemon and only the engine behind it is replaced. The helpers are plain
classes (imported by test_bus_*.py and test_ctl*.py), so each test module
decides the fixture scope it needs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pytest

from bouheki.common.api import (
    BadRequest,
    CheckResult,
    ConfigInvalid,
    ConnectionEvent,
    Engine,
    EngineListener,
    ExplainQuery,
    Explanation,
    Learned,
    NameAddress,
    NameState,
    Observation,
    PolicyCounters,
    PolicySummary,
    Problem,
    ReloadResult,
    RuleCounters,
    Statistics,
    Status,
    UnitCounters,
    Unsubscribe,
)
from bouheki.common.units import check_unit_name

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
DBUS_DIR = REPO / "dbus"
POLICY_FILE = DBUS_DIR / "org.bouheki.Bouheki1.conf"
INTERFACE_FILE = DBUS_DIR / "org.bouheki.Bouheki1.Manager.xml"
PYTHON = "/usr/bin/python3"
DBUS_DAEMON = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"

T = TypeVar("T")

PROBLEMS = [
    Problem("/etc/bouheki/units/nginx.service.toml", 3, "unknown key 'alow'"),
    Problem("/etc/bouheki/units/db.service.toml", 0, "not valid TOML"),
]


class FakeEngine:
    """An api.Engine with canned answers; tests flip its knobs and fire its events."""

    def __init__(self) -> None:
        self.listeners: list[EngineListener] = []
        self.reset()

    def reset(self) -> None:
        """Canned state back to the start; subscribed listeners stay."""
        self.generation = 1
        self.reload_error: Optional[Exception] = None
        self.explain_error: Optional[Exception] = None
        self.queries: list[ExplainQuery] = []
        self.checked: list[Optional[str]] = []
        self.learned_units: list[str] = []
        self.blocked = 5
        self.would_block = 2

    async def reload(self) -> ReloadResult:
        await asyncio.sleep(0)  # a real reload yields to the loop
        if self.reload_error is not None:
            raise self.reload_error
        self.generation += 1
        for listener in list(self.listeners):
            listener.on_reloaded(self.generation)
            listener.on_properties_changed(["generation", "loaded_at_usec"])
        return ReloadResult(self.generation, 2, ["units/old.toml: legacy key"], 12)

    def list_policies(self) -> list[PolicySummary]:
        return [
            PolicySummary(
                name="nginx.service",
                units=["nginx.service"],
                mode="block",
                rule_count=4,
                files=["/etc/bouheki/units/nginx.service.toml"],
                cgroups=1,
                names=[
                    NameState("example.com", [NameAddress("93.184.216.34", 1_700_000_300_000_000)])
                ],
            ),
            PolicySummary(
                name="containers",
                units=["docker-*.scope", "machine.slice"],
                mode="monitor",
                rule_count=2,
                files=["/etc/bouheki/units/docker-.scope.toml"],
                cgroups=7,
            ),
        ]

    def statistics(self) -> Statistics:
        return Statistics(
            checks=100,
            allowed=93,
            blocked=self.blocked,
            would_block=self.would_block,
            events=7,
            events_lost=0,
            events_suppressed=1,
            policies=[
                PolicyCounters(
                    "nginx.service",
                    hits=60,
                    blocked=5,
                    would_block=0,
                    rules=[
                        RuleCounters(0, "/etc/bouheki/units/nginx.service.toml:5", 50, 0, 0),
                        RuleCounters(1, "/etc/bouheki/units/nginx.service.toml:7", 10, 5, 0),
                    ],
                ),
                PolicyCounters("containers", hits=40, blocked=0, would_block=2),
            ],
            units=[UnitCounters("nginx.service", 5, 0), UnitCounters("docker-1.scope", 0, 2)],
            generation=3,
            reloads=3,
            reloads_failed=1,
            last_reload_usec=1_700_000_000_000_000,
            last_reload_ok=False,
            names_resolved=2,
            names_unresolved=1,
        )

    def explain(self, query: ExplainQuery) -> Explanation:
        self.queries.append(query)
        if self.explain_error is not None:
            raise self.explain_error
        if query.port is not None and not 0 <= query.port <= 65535:
            raise BadRequest(f"port {query.port} is out of range 0-65535")
        if query.address == "bogus":
            raise BadRequest("'bogus' is not an IPv4 or IPv6 address")
        if query.address.startswith("10."):
            return Explanation(
                verdict="blocked",
                policy="nginx.service",
                rule=1,
                origin_file="/etc/bouheki/units/nginx.service.toml",
                origin_line=7,
                origin_text='deny = ["10.0.1.71"]',
                reason="10.0.1.71/32 matches network.deny (longest prefix)",
            )
        return Explanation("allowed", "", -1, "", 0, "", "no policy covers the process")

    async def check_config(self, path: Optional[str]) -> CheckResult:
        self.checked.append(path)
        if path and "bad" in path:
            raise ConfigInvalid(PROBLEMS)
        return CheckResult(ok=True, warnings=["no [host] policy"], policies=2)

    async def learned(self, unit: str) -> Learned:
        self.learned_units.append(unit)
        if problem := check_unit_name(unit):
            raise BadRequest(problem)
        observation = Observation(
            address="10.0.1.1", port=80, protocol="tcp", uid=0, exe="/usr/bin/curl",
            names=[], allowed=3, would_block=0, blocked=0,
            first_usec=1_700_000_000_000_000, last_usec=1_700_000_001_000_000,
        )  # fmt: skip
        return Learned(unit, "nginx.service", True, [observation], 0, 16384)

    async def forget_learned(self, unit: str) -> int:
        self.learned_units.append(unit)
        if problem := check_unit_name(unit):
            raise BadRequest(problem)
        return 1

    def status(self) -> Status:
        return Status(
            version="0.1.0-test",
            generation=self.generation,
            loaded_at_usec=1_700_000_000_000_000 + self.generation,
            mode_summary="2 policies: 1 block, 1 monitor",
            blocked=self.blocked,
            would_block=self.would_block,
        )

    def subscribe(self, listener: EngineListener) -> Unsubscribe:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    # --- test drivers ---------------------------------------------------------

    def fire_blocked(self, count: int = 1, **overrides: Any) -> None:
        for i in range(count):
            event = blocked_event(pid=1000 + i, **overrides)
            for listener in list(self.listeners):
                listener.on_blocked(event)


def blocked_event(**overrides: Any) -> ConnectionEvent:
    values: dict[str, Any] = {
        "unit": "nginx.service",
        "policy": "nginx.service",
        "verdict": "blocked",
        "daddr": "10.0.1.71",
        "dport": 443,
        "protocol": "tcp",
        "comm": "curl",
        "exe": "/usr/bin/curl",
        "pid": 1234,
        "uid": 33,
        "gid": 33,
        "rule": 1,
        "origin": "/etc/bouheki/units/nginx.service.toml:7",
        "timestamp_usec": 1_700_000_000_000_000,
    }
    values.update(overrides)
    return ConnectionEvent(**values)


def as_engine(engine: FakeEngine) -> Engine:
    """Typed as the Protocol, so a type checker verifies that FakeEngine implements it."""
    return engine


# --- private dbus-daemons ---------------------------------------------------------

SYSTEM_LIKE_CONFIG = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- The default policy of /usr/share/dbus-1/system.conf, on a private socket -->
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


class PrivateBus:
    """A dbus-daemon of our own; `address` is what clients connect to."""

    def __init__(self, system_like: bool = False, policy: Path = POLICY_FILE) -> None:
        if not os.path.exists(DBUS_DAEMON):
            pytest.skip("dbus-daemon is not installed")
        # Under /tmp with mode 0755 (pytest's tmp_path is 0700) so that a
        # client running as uid 1000 can reach the socket.
        self.dir = Path(tempfile.mkdtemp(prefix="bouheki-bus-"))
        self.dir.chmod(0o755)
        if system_like:
            config = self.dir / "system-like.conf"
            config.write_text(SYSTEM_LIKE_CONFIG.format(socket=self.dir / "bus", policy=policy))
            args = [f"--config-file={config}"]
        else:
            args = ["--session"]
        self.proc = subprocess.Popen(
            [DBUS_DAEMON, *args, "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            umask=0,  # a socket other uids can connect to
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.close()
            raise RuntimeError(f"dbus-daemon did not start: {err.strip()}")
        self.address = line

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "BOUHEKI_BUS_ADDRESS": self.address,
                "PYTHONPATH": str(SRC),
                "PYTHONDONTWRITEBYTECODE": "1",
                "TZ": "UTC",
                "LC_ALL": "C.UTF-8",
            }
        )
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        env.update(extra)
        return env

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ServerThread:
    """serve() with a FakeEngine on its own loop thread, for subprocess clients."""

    def __init__(self, address: str, engine: Optional[FakeEngine] = None, **options: Any) -> None:
        self.address = address
        self.engine = engine or FakeEngine()
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.service: Any = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        from bouheki.bus import serve
        from bouheki.dbuslib import MessageBus

        self.bus = await MessageBus(bus_address=self.address).connect()
        self.service = await serve(self.engine, self.bus, **self.options)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (where engine listeners must be called)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        async def stop() -> None:
            await self.service.close()
            self.bus.disconnect()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def run_ctl(
    bus: PrivateBus,
    *args: str,
    timeout: float = 20,
    prefix: Sequence[str] = (),
    env: Optional[dict[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """`bouhekictl ARGS` as a subprocess against `bus`, like a user would run it."""
    return subprocess.run(
        [*prefix, PYTHON, "-m", "bouheki.ctl", *args],
        env=env or bus.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )
