"""bouhekictl entry point: parse, run one command, map failures to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Optional

from . import metrics
from .check import check_config_local, print_check
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CtlError
from .output import Output
from .parser import PROG, build_parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json)
    try:
        if args.command == "check-config" and not args.daemon:
            return print_check(out, check_config_local(args.path, args.root, args.units_dir))
        if args.command == "explain" and args.offline:
            return run_offline_explain(args, out)
        return asyncio.run(run_bus_command(args, out))
    except CtlError as err:
        if args.command == "stats" and args.format in metrics.FORMATS:
            # The scraper learns that the daemon is down, not just nothing.
            metrics.emit(args.output, out.out, metrics.render(None, None, args.format))
        if out.json:
            print(render_json_error(err), file=out.out)
        print(f"{PROG}: {err.message}", file=out.err)
        return err.exit_code
    except KeyboardInterrupt:
        # Ctrl-C is how a monitor ends; elsewhere it interrupts (128 + SIGINT).
        return EXIT_OK if args.command == "monitor" else 130
    except BrokenPipeError:
        # The reader went away (`monitor | head`): not our failure. Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def run_offline_explain(args: argparse.Namespace, out: Output) -> int:
    from ..common.api import BadRequest, ExplainQuery
    from . import render
    from .offline import explain_offline

    address, port = args.to
    query = ExplainQuery(
        address=address, port=port, protocol=args.proto, unit=args.unit or None,
        comm=args.comm, exe=args.exe or None, uid=args.uid, gid=args.gid,
    )  # fmt: skip
    try:
        data = explain_offline(args, query)
    except BadRequest as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    out.result(data, render.explanation)
    return EXIT_OK


def render_json_error(err: CtlError) -> str:
    from .render import to_json

    return to_json(err.as_json())


async def run_bus_command(args: argparse.Namespace, out: Output) -> int:
    try:
        # Here rather than at the top: check-config must work without dbus-next.
        from ..bus.connection import resolve_bus
        from .client import Client, open_bus
        from .commands import BUS_COMMANDS
    except ImportError as exc:
        raise CtlError(
            f"this command needs python3-dbus-next (or dbus-fast): {exc}", EXIT_FAILURE
        ) from None
    try:
        target = resolve_bus(args.bus, args.address)
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    bus = await open_bus(target)
    try:
        return await BUS_COMMANDS[args.command](Client(bus, target, args.timeout), args, out)
    finally:
        bus.disconnect()
