"""Human-readable views of the plain data that --json prints as is.

Each function takes the decoded reply (dicts keyed like bouheki.common.api's
dataclass fields) and returns text; nothing here talks to the bus, so the
views are tested without one.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..policy.tables import has_ports
from .table import format_table

Data = dict[str, Any]


def to_json(data: Any) -> str:
    # sort_keys: the same reply always prints the same bytes (diffable, testable).
    return json.dumps(data, indent=2, sort_keys=True)


def to_json_line(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def format_usec(usec: int) -> str:
    """A CLOCK_REALTIME microsecond timestamp in local time; 0 means never."""
    if not usec:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(usec / 1_000_000))


def format_expiry(usec: int, now: float | None = None) -> str:
    """When a name's address expires. A past time is not an error: the
    daemon keeps an address dns_grace seconds after its TTL ran out. -1: the
    name has no address at all."""
    if usec < 0:
        return "-"
    text = format_usec(usec)
    if usec and usec / 1_000_000 < (time.time() if now is None else now):
        text += " (in grace)"
    return text


def format_destination(address: str, port: Any, protocol: str = "") -> str:
    """addr:port, [v6]:port, with /proto; port None or absent: the address alone."""
    text = f"[{address}]" if ":" in address and port is not None else address
    if port is not None:
        text += f":{port}"
    return f"{text}/{protocol}" if protocol else text


def format_origin(file: str, line: int) -> str:
    if not file:
        return ""
    return f"{file}:{line}" if line else file


def status(data: Data) -> str:
    rows = [
        ("Version", data["version"]),
        ("Policy generation", data["generation"]),
        ("Loaded at", format_usec(data["loaded_at_usec"])),
        ("Policies", data["mode_summary"] or "none"),
        ("Blocked", data["blocked"]),
        ("Would block", data["would_block"]),
        ("Signals dropped", data["suppressed_signals"]),
    ]
    width = max(len(key) for key, _ in rows) + 1
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in rows)


def reload(data: Data) -> str:
    noun = "policy" if data["policies"] == 1 else "policies"
    return (
        f"Reloaded: generation {data['generation']} with {data['policies']} {noun} "
        f"in {data['duration_ms']} ms"
    )


def policies(items: list[Data]) -> str:
    if not items:
        return "No policies loaded."
    text = format_table(
        ["POLICY", "MODE", "UNITS", "RULES", "CGROUPS", "FILES"],
        [
            (
                p["name"],
                p["mode"],
                ", ".join(p["units"]),
                p["rule_count"],
                p["cgroups"],
                ", ".join(p["files"]),
            )
            for p in items
        ],
    )
    name_rows = [
        (p["name"], n["name"], a["address"], format_expiry(a["expires_usec"]))
        for p in items
        for n in p.get("names", [])
        for a in (n["addresses"] or [{"address": "-", "expires_usec": -1}])
    ]
    if name_rows:
        text += "\n\n" + format_table(["POLICY", "NAME", "ADDRESS", "EXPIRES"], name_rows)
    return text


def statistics(data: Data) -> str:
    lines = [
        f"Checked {data['checks']}: allowed {data['allowed']}, blocked {data['blocked']}, "
        f"would block {data['would_block']}",
        f"Events: {data['events']} read, {data['events_lost']} lost, "
        f"{data['events_suppressed']} suppressed by the rate limit",
    ]
    pols = data.get("policies", [])
    if pols:
        lines += [
            "",
            format_table(
                ["POLICY", "HITS", "BLOCKED", "WOULD-BLOCK"],
                [(p["name"], p["hits"], p["blocked"], p["would_block"]) for p in pols],
            ),
        ]
    rules = [(p["name"], r) for p in pols for r in p.get("rules", [])]
    if rules:
        lines += [
            "",
            format_table(
                ["POLICY", "RULE", "ORIGIN", "HITS", "BLOCKED", "WOULD-BLOCK"],
                [
                    (
                        name,
                        r["index"],
                        r["origin"] or "-",
                        r["hits"],
                        r["blocked"],
                        r["would_block"],
                    )
                    for name, r in rules
                ],
            ),
        ]
    return "\n".join(lines)


def explanation(data: Data) -> str:
    if data["rule"] < 0:
        rule = "none (the policy default decided)" if data["policy"] else "none"
    else:
        rule = f"#{data['rule']}"
    origin = format_origin(data["origin_file"], data["origin_line"])
    if origin:
        rule += f" at {origin}"
    lines = [
        f"Verdict: {data['verdict']}",
        f"Policy:  {data['policy'] or 'none applies'}",
        f"Rule:    {rule}",
    ]
    lines += [f"         {text}" for text in data["origin_text"].splitlines() if text.strip()]
    lines.append(f"Reason:  {data['reason']}")
    return "\n".join(lines)


def check_result(data: Data) -> str:
    lines = [format_problem(p) for p in data["problems"]]
    lines += [f"warning: {w}" for w in data["warnings"]]
    if data["ok"]:
        noun = "policy" if data["policies"] == 1 else "policies"
        lines.append(f"configuration OK: {data['policies']} {noun}")
    else:
        count = len(data["problems"])
        lines.append(f"configuration invalid: {count} problem{'s' if count != 1 else ''}")
    return "\n".join(lines)


def format_problem(problem: Data) -> str:
    # The same `file:line: message` form as the daemon's ConfigInvalid error.
    origin = format_origin(problem["file"], problem["line"])
    return f"{origin}: {problem['message']}" if origin else problem["message"]


def blocked_event(data: Data) -> str:
    when = format_usec(data["timestamp_usec"])
    line = (
        f"{when} {data['verdict']} {data['unit'] or '-'}: {data['comm']}[{data['pid']}] "
        f"uid={data['uid']} gid={data['gid']} exe={data['exe'] or '-'} -> "
        f"{format_destination(data['daddr'], data['dport'], data['protocol'])} "
        f"policy={data['policy'] or '-'} rule={data['rule']}"
    )
    if data["origin"]:
        line += f" ({data['origin']})"
    if data.get("suppressed"):
        line += f" [{data['suppressed']} earlier events not shown: rate limit]"
    return line


def reloaded_event(generation: int, when_usec: int) -> str:
    return f"{format_usec(when_usec)} reloaded: generation {generation}"


def learned(data: Data) -> str:
    head = f"{data['unit']}: policy {data['policy'] or '(none)'}" + (
        ", learning" if data["learning"] else ", not learning"
    )
    rows = [
        [
            format_destination(
                o["address"], o["port"] if has_ports(o["protocol"]) else None, o["protocol"]
            ),
            ", ".join(o["names"]) or "-",
            o["exe"] or "?",
            o["uid"],
            o["allowed"],
            o["would_block"],
            o["blocked"],
            format_usec(o["last_usec"]),
        ]
        for o in data["observations"]
    ]
    if not rows:
        return head + "\nnothing seen yet"
    headers = ["DESTINATION", "NAMES", "EXE", "UID", "ALLOWED", "WOULD-BLOCK", "BLOCKED", "LAST"]
    return head + "\n" + format_table(headers, rows)
