"""`bouheki`: the daemon. Runs in the foreground under systemd (Type=notify).

Exit codes: 0 stopped cleanly; 1 the configuration is invalid at start;
2 usage; 3 BPF LSM enforcement is unavailable on this kernel; 4 the D-Bus
name cannot be owned (another instance runs, or the bus policy is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..common import api
from ..config import loader
from ..kernel.requirements import KernelUnsupported
from .engine import Engine

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_KERNEL, EXIT_BUS = 0, 1, 2, 3, 4
log = logging.getLogger("bouheki")


def notify(*states: str) -> None:
    """sd_notify through python3-systemd; a no-op outside systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        from systemd import daemon
    except ImportError:
        return
    daemon.notify("\n".join(states))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bouheki",
        description="Per-unit egress control with BPF LSM: blocks the outbound connections "
        "that each systemd unit's policy does not allow.",
        epilog="Policies: /etc/bouheki/bouheki.toml and units/<unit>.toml in /usr/lib/bouheki, "
        "/run/bouheki, /etc/bouheki. SIGHUP or `systemctl reload bouheki` reloads them. "
        "See bouheki(8) and bouheki.toml(5).",
    )
    ap.add_argument("--config", help="main TOML file, or a legacy bouheki .yaml file")
    ap.add_argument(
        "--units-dir",
        action="append",
        dest="search_dirs",
        help="search this directory for units/ instead of the standard ones (repeatable; "
        "later ones take precedence)",
    )
    ap.add_argument("--check", action="store_true", help="validate the configuration and exit")
    ap.add_argument("--no-bus", action="store_true", help="do not serve the D-Bus API")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--version", action="version", version=f"bouheki {__version__}")
    return ap.parse_args(argv)


class Daemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        dirs = args.search_dirs or list(loader.DEFAULT_SEARCH_DIRS)
        # systemd's RuntimeDirectory= (/run/bouheki), kept across restarts.
        runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        self.engine = Engine(config=args.config, search_dirs=dirs,
                             runtime_dir=Path(runtime) if runtime else None)  # fmt: skip
        self.stopping = asyncio.Event()
        self.bus_service: Any = None
        self.bus: Any = None
        self.bus_lost = False
        self.bus_failed = False

    def set_status(self) -> None:
        notify(f"STATUS={self.engine.status_line()}")

    async def reload(self) -> None:
        notify(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )
        try:
            result = await self.engine.reload()
            log.info("reloaded: generation %d, %d policies", result.generation, result.policies)
        except api.ConfigInvalid as e:
            for p in e.problems:
                log.error("%s", p)
            log.error("reload refused: the running policy stays in force")
        except api.EngineError as e:
            log.error("reload failed: %s", e)
        finally:
            notify("READY=1")
            self.set_status()

    async def watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
        if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
            return
        # The loop answering is what we vouch for: a wedged loop stops the pings.
        while not self.stopping.is_set():
            notify("WATCHDOG=1")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=usec / 2e6)

    async def serve_bus(self) -> None:
        from ..bus.connection import connect, resolve_bus
        from ..bus.server import serve

        bus = await connect(resolve_bus())
        self.bus_service = await serve(self.engine, bus)
        self.bus = bus
        watch = asyncio.get_running_loop().create_task(bus.wait_for_disconnect())
        watch.add_done_callback(self._on_bus_lost)

    async def serve_bus_when_up(self) -> None:
        """At boot bouheki starts before the system bus does: it must enforce
        before the units it guards start, and dbus.socket comes only after
        sysinit.target. Enforcement does not wait for the bus; the API is
        served as soon as the bus answers."""
        delay = 0.2
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            if self.stopping.is_set():
                return
            try:
                await self.serve_bus()
            except OSError:
                delay = min(delay * 2, 5.0)
                continue
            except Exception as e:  # reached, but the name cannot be ours
                log.error("D-Bus: %s: exiting", e)
                self.bus_failed = True
                self.stopping.set()
                return
            log.info("the system bus is up: serving the D-Bus API")
            return

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if not self.args.no_bus:
            warm_imports(("..bus.connection", "..bus.server", "..units.systemd"))
        try:
            result = await self.engine.start()
        except api.ConfigInvalid as e:
            for p in e.problems:
                print(f"bouheki: {p}", file=sys.stderr)
            notify(f"STATUS=configuration invalid: {e.problems[0] if e.problems else e}")
            return EXIT_CONFIG
        except KernelUnsupported as e:
            print(f"bouheki: {e}", file=sys.stderr)
            notify(f"STATUS=kernel unsupported: {e}")
            return EXIT_KERNEL
        for w in result.warnings:
            log.warning("%s", w)
        bus_later = None
        if not self.args.no_bus:
            try:
                await self.serve_bus()
            except OSError as e:
                log.warning("the system bus does not answer yet (%s): enforcing now; the D-Bus "
                            "API follows as soon as it does", e)  # fmt: skip
                bus_later = loop.create_task(self.serve_bus_when_up())
            except ImportError as e:  # no D-Bus library, or a broken one (dbuslib)
                print(f"bouheki: D-Bus library: {e}", file=sys.stderr)
                notify(f"STATUS=requirement missing: D-Bus library: {e}")
                self.engine.stop()
                return EXIT_KERNEL
            except Exception as e:
                print(f"bouheki: D-Bus: {e}", file=sys.stderr)
                self.engine.stop()
                return EXIT_BUS
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        self.engine.journal.started(self.engine.mode_summary())
        # Only now: programs attached, policy applied, SIGHUP handled.
        notify("READY=1")
        self.set_status()
        watchdog = loop.create_task(self.watchdog())
        status = loop.create_task(self._status_updates())
        await self.stopping.wait()
        notify("STOPPING=1")
        # A restart (an upgrade's, say) keeps the pinned programs enforcing
        # until the next instance has attached its own; a stop detaches.
        keep = self.bus_lost or await self._restarting()
        if keep:
            log.info("restarting: the pinned programs keep enforcing meanwhile")
        watchdog.cancel()
        status.cancel()
        if bus_later is not None:
            bus_later.cancel()
        if self.bus_service is not None and not self.bus_lost:
            await self.bus_service.close()
            self.bus.disconnect()
        self.engine.stop(keep_pinned=keep)
        return EXIT_BUS if self.bus_lost or self.bus_failed else EXIT_OK

    def _on_bus_lost(self, task: asyncio.Task[Any]) -> None:
        error = None if task.cancelled() else task.exception()
        if self.stopping.is_set():
            return
        if error is not None:
            log.error("D-Bus connection: %s", error)
        # Without its bus name the daemon cannot be managed: exit as a failure
        # (Restart=on-failure brings it back) and keep the programs enforcing.
        log.error("lost the D-Bus connection: exiting for systemd to restart bouheki; the "
                  "pinned programs keep enforcing meanwhile")  # fmt: skip
        self.bus_lost = True
        self.stopping.set()

    async def _restarting(self) -> bool:
        from ..units.systemd import is_restarting

        if self.bus is None:
            return False
        try:
            return await asyncio.wait_for(is_restarting(self.bus), timeout=5)
        except asyncio.TimeoutError:
            return False
        except Exception as e:  # the bus went away: a stop cannot be told from a restart
            log.warning(
                "cannot ask systemd whether this is a restart (%s): keeping the programs "
                "pinned and enforcing; the next start adopts them",
                e,
            )
            return True

    async def _status_updates(self) -> None:
        while True:
            await asyncio.sleep(5)
            self.set_status()


def warm_imports(modules: tuple[str, ...]) -> threading.Thread:
    """Import modules on a thread of their own while the programs compile:
    the compile runs in a child process (kernel/compiler.py) that the main
    thread waits for without the GIL, so on a second CPU the imports cost
    the start-up nothing."""

    def run() -> None:
        for m in modules:
            with contextlib.suppress(ImportError):  # the caller's own import says why
                importlib.import_module(m, __package__)

    t = threading.Thread(target=run, name="bouheki-imports", daemon=True)
    t.start()
    return t


# logging's levels as syslog priorities, for journald (sd-daemon(3)).
_PRIORITIES = {
    logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2
}  # fmt: skip


class JournalPrefix(logging.Formatter):
    """Under systemd, stderr goes to journald, which reads a "<N>" prefix as
    the line's priority: `journalctl -p warning -u bouheki` then shows the
    daemon's warnings and errors. Elsewhere, the level's name."""

    def __init__(self, to_journal: bool) -> None:
        super().__init__("%(message)s" if to_journal else "%(levelname)s %(message)s")
        self.to_journal = to_journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.to_journal:
            return text
        prio = _PRIORITIES.get(record.levelno, 6)
        # Every line of a multi-line message is a journal entry of its own.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def stderr_is_journal() -> bool:
    """$JOURNAL_STREAM names stderr's device and inode when systemd connected it."""
    dev_ino = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return dev_ino == f"{st.st_dev}:{st.st_ino}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalPrefix(stderr_is_journal()))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    if args.check:
        dirs = args.search_dirs or list(loader.DEFAULT_SEARCH_DIRS)
        rep = loader.check_config(args.config, dirs)
        for w in rep.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for p in rep.problems:
            print(str(p), file=sys.stderr)
        print(f"{rep.policies} policies; {'OK' if rep.ok else 'INVALID'}")
        return EXIT_OK if rep.ok else EXIT_CONFIG
    return asyncio.run(Daemon(args).run())


if __name__ == "__main__":
    sys.exit(main())
