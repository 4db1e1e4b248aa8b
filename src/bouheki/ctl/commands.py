"""bouhekictl's commands that talk to the daemon: fetch plain data, print JSON or text."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Callable

from ..bus import names
from ..bus.wire import unwrap
from ..dbuslib import Message, MessageType, Variant
from . import metrics, render, suggest
from .check import print_check
from .client import Client
from .errors import EXIT_FAILURE, EXIT_OK, CtlError
from .output import Output


async def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    props = await client.properties()
    data = {field: props.get(prop) for field, prop in names.STATUS_PROPERTIES.items()}
    data[names.SUPPRESSED_SIGNALS_FIELD] = props.get(names.PROPERTY_SUPPRESSED_SIGNALS, 0)
    out.result(data, render.status)
    return EXIT_OK


async def cmd_reload(client: Client, args: argparse.Namespace, out: Output) -> int:
    (data,) = await client.call(names.METHOD_RELOAD)
    if not out.json:
        for warning in data.get("warnings", []):
            out.warn(warning)
    out.result(data, render.reload)
    return EXIT_OK


async def cmd_policies(client: Client, args: argparse.Namespace, out: Output) -> int:
    (items,) = await client.call(names.METHOD_LIST_POLICIES)
    out.result(items, render.policies)
    return EXIT_OK


async def cmd_stats(client: Client, args: argparse.Namespace, out: Output) -> int:
    (data,) = await client.call(names.METHOD_GET_STATISTICS)
    if getattr(args, "format", "table") in metrics.FORMATS:
        status = {"version": (await client.properties()).get("Version", "")}
        metrics.emit(args.output, out.out, metrics.render(data, status, args.format))
        return EXIT_OK
    out.result(data, render.statistics)
    return EXIT_OK


def explain_query(args: argparse.Namespace) -> dict[str, Variant]:
    """Explain's a{sv} argument; absent keys mean "not given" to the daemon."""
    address, port = args.to
    query = {
        "address": Variant("s", address),
        "protocol": Variant("s", args.proto),
        "comm": Variant("s", args.comm),
        "uid": Variant("u", args.uid),
        "gid": Variant("u", args.gid),
    }
    if port is not None:
        query["port"] = Variant("q", port)
    if args.unit:
        query["unit"] = Variant("s", args.unit)
    if args.exe:
        query["exe"] = Variant("s", args.exe)
    return query


async def cmd_explain(client: Client, args: argparse.Namespace, out: Output) -> int:
    (data,) = await client.call(names.METHOD_EXPLAIN, "a{sv}", [explain_query(args)])
    out.result(data, render.explanation)
    return EXIT_OK


async def cmd_check_config(client: Client, args: argparse.Namespace, out: Output) -> int:
    """check-config --daemon: the daemon's view (the local check is in check.py)."""
    (data,) = await client.call(names.METHOD_CHECK_CONFIG, "s", [args.path or ""])
    return print_check(out, data)


async def cmd_learned(client: Client, args: argparse.Namespace, out: Output) -> int:
    (data,) = await client.call(names.METHOD_LEARNED, "s", [args.unit])
    _warn_learning(data, out)
    out.result(data, render.learned)
    return EXIT_OK


async def cmd_suggest(client: Client, args: argparse.Namespace, out: Output) -> int:
    (data,) = await client.call(names.METHOD_LEARNED, "s", [args.unit])
    _warn_learning(data, out)
    try:
        rules = suggest.rules_from(data, args.ipv4_prefix, args.ipv6_prefix)
    except suggest.TooManyRules as e:
        raise CtlError(str(e), EXIT_FAILURE) from None
    text = suggest.render_toml(data, rules)
    if out.json:
        out.result(
            {"unit": data["unit"], "policy": data["policy"], "toml": text,
             "rules": [r.as_json() for r in rules]},
            render.to_json,
        )  # fmt: skip
    elif args.output:
        metrics.write_atomically(args.output, text)
        out.note(f"wrote {args.output}: {len(rules)} rules")
    else:
        out.line(text.rstrip("\n"))
    return EXIT_OK


def _warn_learning(data: dict[str, Any], out: Output) -> None:
    unit = data["unit"]
    if not data["policy"]:
        out.warn(f"no policy judges {unit}: nothing to learn (give it one with learn = true)")
    elif not data["learning"]:
        out.warn(f"policy {data['policy']} (judging {unit}) does not have learn = true")
    if data.get("missed"):
        out.warn(
            f"the learned map was full for {data['missed']} connections of learning policies "
            f"(it holds {data['capacity']} entries): forget what other units learned"
        )


async def cmd_forget(client: Client, args: argparse.Namespace, out: Output) -> int:
    (count,) = await client.call(names.METHOD_FORGET_LEARNED, "s", [args.unit])
    out.result(
        {"unit": args.unit, "forgotten": count}, lambda d: f"forgot {d['forgotten']} entries"
    )
    return EXIT_OK


MATCH_RULES = (
    f"type='signal',sender='{names.BUS_NAME}',path='{names.OBJECT_PATH}',"
    f"interface='{names.INTERFACE}'",
    f"type='signal',sender='{names.DBUS_NAME}',interface='{names.DBUS_INTERFACE}',"
    f"member='NameOwnerChanged',arg0='{names.BUS_NAME}'",
)


async def cmd_monitor(client: Client, args: argparse.Namespace, out: Output) -> int:
    """Print Blocked and Reloaded signals until Ctrl-C (or --count Blocked events)."""
    queue: asyncio.Queue[Message] = asyncio.Queue()

    def on_message(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL:
            queue.put_nowait(msg)

    # The handler goes in before the match rules, so no signal slips between.
    client.bus.add_message_handler(on_message)
    for rule in MATCH_RULES:
        await client.bus_call("AddMatch", "s", [rule])
    owner = await client.owner()
    if owner is None:
        out.note(f"bouheki is not running on {client.target.description}; waiting for it.")
    # Also tells a script (or a test) that the subscription is in place.
    out.note(f"Following {names.BUS_NAME} on {client.target.description}; Ctrl-C to stop.")

    disconnected = asyncio.ensure_future(client.bus.wait_for_disconnect())
    seen = 0
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({disconnected, getter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                raise CtlError("lost the connection to the bus", EXIT_FAILURE)
            msg = getter.result()
            if msg.interface == names.DBUS_INTERFACE and msg.member == "NameOwnerChanged":
                owner = msg.body[2] or None
                out.note("bouheki started." if owner else "bouheki stopped; waiting for it.")
                continue
            # The match rule already admits only the name's owner; this also
            # drops anything still queued from a previous owner.
            if msg.sender != owner or msg.path != names.OBJECT_PATH:
                continue
            if msg.member == names.SIGNAL_BLOCKED:
                data = {**unwrap(msg.body[0]), "event": "blocked"}
                out.line(render.to_json_line(data) if out.json else render.blocked_event(data))
                seen += 1
                if args.count and seen >= args.count:
                    return EXIT_OK
            elif msg.member == names.SIGNAL_RELOADED:
                generation = int(msg.body[0])
                data = {"event": "reloaded", "generation": generation}
                now_usec = int(time.time() * 1_000_000)
                out.line(
                    render.to_json_line(data)
                    if out.json
                    else render.reloaded_event(generation, now_usec)
                )
    finally:
        disconnected.cancel()


Command = Callable[[Client, argparse.Namespace, Output], Coroutine[Any, Any, int]]

BUS_COMMANDS: dict[str, Command] = {
    "status": cmd_status,
    "reload": cmd_reload,
    "policies": cmd_policies,
    "stats": cmd_stats,
    "explain": cmd_explain,
    "check-config": cmd_check_config,
    "monitor": cmd_monitor,
    "learned": cmd_learned,
    "suggest": cmd_suggest,
    "forget": cmd_forget,
}
