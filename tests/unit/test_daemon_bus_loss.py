"""The daemon that loses its D-Bus connection exits with status 4 for
systemd to restart it, and keeps the pinned programs enforcing meanwhile;
a clean stop asks systemd, and detaches when it is not a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_bus_support import PrivateBus
from test_names_engine import FakeEnforcer

from bouheki.service import engine as engine_module
from bouheki.service import main
from bouheki.service.journal import Journal


class Reader:
    """Stands for the ring buffer reader: there are no programs here."""

    def __init__(self, programs: Any, callback: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Enforcer(FakeEnforcer):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.programs = None
        self.log = log

    def clear(self) -> None:
        self.log.append("clear")

    def close(self, keep_pinned: bool = False) -> None:
        self.log.append("close, keep pinned" if keep_pinned else "close, detach")


def daemon(tmp_path: Path, log: list[str]) -> main.Daemon:
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "bh-x.service.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    cfg = tmp_path / "bouheki.toml"
    cfg.write_text("")
    d = main.Daemon(main.parse_args(["--config", str(cfg), "--units-dir", str(tmp_path)]))
    d.engine.journal = Journal(send=lambda message, **fields: None)
    d.engine._enforcer_factory = lambda: Enforcer(log)
    return d


async def served(d: main.Daemon) -> None:
    for _ in range(200):
        if d.bus_service is not None and d.engine.running is not None:
            await asyncio.sleep(0.2)  # past READY=1 and the watch on the bus
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the daemon did not come up")


@pytest.fixture
def no_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "EventReader", Reader)


def run_until(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, event: Any, restarting: bool | None = None
) -> tuple[int, list[str]]:
    """Run the daemon on a private bus until it serves, then event(daemon, bus);
    returns its exit code and what it did with the programs. restarting: the
    answer systemd gives at stop (None: leave the question to the daemon)."""
    bus = PrivateBus()
    monkeypatch.setenv("BOUHEKI_BUS_ADDRESS", bus.address)
    log: list[str] = []
    d = daemon(tmp_path, log)
    if restarting is not None:

        async def answer() -> bool:
            return restarting

        monkeypatch.setattr(d, "_restarting", answer)

    async def scenario() -> int:
        run = asyncio.create_task(d.run())
        await served(d)
        event(d, bus)
        return await asyncio.wait_for(run, 15)

    try:
        return asyncio.run(scenario()), log
    finally:
        bus.close()


def test_losing_the_bus_exits_4_and_keeps_the_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_reader: None
) -> None:
    # The bus goes away under the daemon.
    rc, log = run_until(tmp_path, monkeypatch, lambda d, bus: bus.proc.kill())
    assert rc == main.EXIT_BUS
    assert log == ["close, keep pinned"]


def test_a_stop_that_is_no_restart_detaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_reader: None
) -> None:
    # What SIGTERM does, when systemd says it is no restart.
    rc, log = run_until(tmp_path, monkeypatch, lambda d, bus: d.stopping.set(), restarting=False)
    assert rc == main.EXIT_OK
    assert log == ["clear", "close, detach"]


def test_enforcement_does_not_wait_for_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_reader: None
) -> None:
    """At boot bouheki starts before dbus.socket (sysinit.target lies
    between them): it applies the policy and says READY=1 with no bus, and
    serves the API once the bus answers."""
    sock = tmp_path / "later" / "bus"
    monkeypatch.setenv("BOUHEKI_BUS_ADDRESS", f"unix:path={sock}")
    log: list[str] = []
    d = daemon(tmp_path, log)

    async def scenario() -> tuple[bool, bool, int]:
        run = asyncio.create_task(d.run())
        for _ in range(200):
            if d.engine.running is not None:
                break
            await asyncio.sleep(0.05)
        enforcing_without_bus = d.engine.running is not None and d.bus_service is None
        bus = PrivateBus(system_like=True)
        try:
            sock.parent.mkdir()
            sock.symlink_to(bus.address.partition("unix:path=")[2].split(",")[0])
            for _ in range(200):
                if d.bus_service is not None:
                    break
                await asyncio.sleep(0.05)
            served_later = d.bus_service is not None
            d.stopping.set()
            return enforcing_without_bus, served_later, await asyncio.wait_for(run, 15)
        finally:
            bus.close()

    enforcing_without_bus, served_later, rc = asyncio.run(scenario())
    assert enforcing_without_bus
    assert served_later
    assert rc == main.EXIT_OK


def test_log_lines_carry_their_priority_for_journald() -> None:
    import logging

    def line(level: int, to_journal: bool) -> str:
        record = logging.LogRecord("bouheki", level, __file__, 1, "a\nb", None, None)
        return main.JournalPrefix(to_journal).format(record)

    assert line(logging.WARNING, True) == "<4>a\n<4>b"
    assert line(logging.ERROR, True) == "<3>a\n<3>b"
    assert line(logging.INFO, True) == "<6>a\n<6>b"
    assert line(logging.WARNING, False) == "WARNING a\nb"


def test_an_event_read_while_the_loop_closes_is_no_traceback(tmp_path: Path) -> None:
    """A stop under a flow of blocked connects: the reader's thread may hand
    over an event after the loop closed; that must not raise."""
    log: list[str] = []
    d = daemon(tmp_path, log)
    loop = asyncio.new_event_loop()
    d.engine._loop = loop
    loop.close()
    d.engine._to_loop(lambda: log.append("ran"))  # raised RuntimeError before
    assert log == []
    d.engine.stop()
    assert d.engine._loop is None
