"""Random policies and connections over a small universe of values.

Used by the unit property tests (twin vs. the rule-by-rule reference) and by
the in-kernel differential test in the VM lab, which builds a Universe from
what it can really produce there (addresses on a dummy interface, comm names
it can set, uids it can switch to, executables it can stat) so that every
generated connection can be made for real and judged by both sides.

Everything is driven by a caller-seeded random.Random: a failure reproduces
from its seed.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bouheki.policy.env import Environment
from bouheki.policy.inline import INLINE_KEYS, INLINE_SPANS
from bouheki.policy.model import ExeId, PolicySpec
from bouheki.policy.tables import Connection, Proto


@dataclass(frozen=True)
class Universe:
    """The values policies and connections are drawn from.

    names: domain names the generated policies may use -> their addresses
    (handed to the compiler through environment()).
    exes: executable paths -> (kernel dev_t, inode); empty: no exe rules.
    """

    addrs: tuple[str, ...] = (
        "10.0.1.1",
        "10.0.1.71",
        "10.0.1.200",
        "10.0.2.5",
        "10.1.0.1",
        "192.0.2.10",
        "93.184.216.34",
        "1.1.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "2001:db8::1",
        "2001:db8::71",
        "2001:db8:1::1",
        "fe80::1",
        "::1",
    )
    comms: tuple[str, ...] = ("curl", "wget", "nc", "python3", "bash")
    uids: tuple[int, ...] = (0, 33, 1000, 1001)
    gids: tuple[int, ...] = (0, 33, 1000, 1001)
    ports: tuple[int, ...] = (22, 53, 80, 443, 8000, 8080, 8443, 65535)
    protos: tuple[int, ...] = (Proto.TCP, Proto.UDP, Proto.UDPLITE, Proto.ICMP, Proto.SCTP)
    exes: Mapping[str, ExeId] = field(
        default_factory=lambda: {
            "/usr/bin/curl": (0x800001, 1101),
            "/usr/bin/wget": (0x800001, 1102),
        }
    )
    names: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"example.test": ("93.184.216.34", "2001:db8::71")}
    )
    address_sets: tuple[str, ...] = ("@loopback", "@link-local", "@multicast")

    def environment(self) -> Environment:
        names = {n: [ipaddress.ip_network(a) for a in addrs] for n, addrs in self.names.items()}
        return Environment(names=names, exes=dict(self.exes))


# ---------------------------------------------------------------------------
# policies


def _chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def random_destination(rng: random.Random, u: Universe) -> str:
    r = rng.random()
    if r < 0.08 and u.names:
        return rng.choice(sorted(u.names))
    if r < 0.12 and u.address_sets:
        return rng.choice(u.address_sets)
    addr = ipaddress.ip_address(rng.choice(u.addrs))
    width = addr.max_prefixlen
    plen = rng.choice([width, width, width - rng.randint(1, 8), rng.randint(0, width)])
    net = ipaddress.ip_network((addr, plen), strict=False)
    if addr.version == 4 and _chance(rng, 0.1):
        return f"::ffff:{net.network_address}/{96 + plen}"  # must fold to IPv4
    if plen == width and _chance(rng, 0.5):
        return str(addr)
    return str(net)


def _port_item(rng: random.Random, u: Universe) -> int | str:
    port = rng.choice(u.ports)
    if _chance(rng, 0.6):
        return port
    lo = max(1, port - rng.choice([0, 1, 7, 100, 3000]))
    hi = min(65535, port + rng.choice([0, 1, 9, 100, 5000]))
    return f"{lo}-{hi}"


def _some(rng: random.Random, pool: list[Any], extra: Any) -> list[Any]:
    values = [rng.choice(pool) for _ in range(rng.randint(1, 3))] if pool else []
    if _chance(rng, 0.15) or not values:
        values.append(extra)  # a value no connection has
    return values


def _identity_values(rng: random.Random, u: Universe, dimension: str) -> list[Any]:
    if dimension == "command":
        return _some(rng, list(u.comms), "zsh")
    if dimension == "exe":
        return _some(rng, sorted(u.exes), "/nonexistent/bin")
    if dimension == "uid":
        return _some(rng, list(u.uids), 4242)
    return _some(rng, list(u.gids), 4242)


def random_rule(rng: random.Random, u: Universe) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": rng.choice(["allow", "block", "deny"])}
    if _chance(rng, 0.45):
        rule["to"] = [random_destination(rng, u) for _ in range(rng.randint(1, 3))]
    if _chance(rng, 0.3):
        rule["protocol"] = rng.choice(["tcp", "udp", "udplite", "icmp", "sctp", "any"])
    if _chance(rng, 0.3) and rule.get("protocol") not in ("icmp",):
        rule["ports"] = [_port_item(rng, u) for _ in range(rng.randint(1, 3))]
    for dimension in ("command", "exe", "uid", "gid"):
        if dimension == "exe" and not u.exes:
            continue
        if _chance(rng, 0.2):
            rule[dimension] = _identity_values(rng, u, dimension)
    return rule


def random_policy(
    rng: random.Random, u: Universe, *, max_rules: int = 6, simple_form: bool = True
) -> dict[str, Any]:
    """A policy as the dict a TOML file parses to."""
    doc: dict[str, Any] = {}
    if _chance(rng, 0.2):
        doc["mode"] = rng.choice(["block", "monitor"])
    if simple_form:
        network: dict[str, Any] = {}
        for which in ("allow", "deny"):
            if _chance(rng, 0.6):
                network[which] = [random_destination(rng, u) for _ in range(rng.randint(0, 4))]
        if network:
            doc["network"] = network
        for dimension in ("command", "exe", "uid", "gid"):
            if dimension == "exe" and not u.exes:
                continue
            lists = {
                w: _identity_values(rng, u, dimension)
                for w in ("allow", "deny")
                if _chance(rng, 0.2)
            }
            if lists:
                doc[dimension] = lists
    rules = [random_rule(rng, u) for _ in range(rng.randint(0, max_rules))]
    if rules:
        doc["rule"] = rules
    return doc


def _toml_value(value: Any, rng: random.Random | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string for these values
    if isinstance(value, list):
        parts = [_toml_value(v, rng) for v in value]
        if rng is not None and len(parts) > 1 and _chance(rng, 0.3):
            # Multi-line arrays exercise the line scanner.
            return "[\n" + "".join(f"    {p},  # item\n" for p in parts) + "]"
        return "[" + ", ".join(parts) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(doc: Mapping[str, Any], rng: random.Random | None = None) -> str:
    """A policy dict as TOML text (just what policies need: scalars, tables
    of scalars and arrays, arrays of such tables)."""
    out: list[str] = []
    tables = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables += [(f"[{key}]", v) for v in value]
        else:
            out.append(f"{key} = {_toml_value(value, rng)}")
    for header, table in tables:
        out += ["", f"[{header}]"]
        out += [f"{k} = {_toml_value(v, rng)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def random_policy_toml(rng: random.Random, u: Universe, **kwargs: Any) -> str:
    return to_toml(random_policy(rng, u, **kwargs), rng)


def random_spec(rng: random.Random, u: Universe, *, spill: str = "", **kwargs: Any) -> PolicySpec:
    """A random policy, parsed; spill: [[rule]] entries appended (spill_rules)."""
    # Imported here: config depends on policy, not the other way round.
    from bouheki.config.loader import parse_policy_text

    return parse_policy_text(random_policy_toml(rng, u, **kwargs) + spill, "<random>")


# A uid no connection of any universe has: a spill rule names it, so it
# never matches.
NOBODY = 59999
SPILLABLE = ("ports", "uid", "gid", "command", "exe")


def spill_rules(dimensions: Sequence[str], exes: Sequence[str] = ()) -> str:
    """[[rule]] entries, one per dimension named, each with more keys than a
    policy's kernel value holds inline (policy/inline.py), so that the
    policy's whole dimension stays in its map; none ever matches (each also
    asks for uid NOBODY). exe needs that many executables that exist (the
    environment's); ports are single and apart, one span each."""
    n = INLINE_KEYS + 1
    values: dict[str, list[Any]] = {
        "ports": [60001 + 2 * i for i in range(max(n, INLINE_SPANS + 1))],
        "uid": [50000 + i for i in range(n)],
        "gid": [50000 + i for i in range(n)],
        "command": [f"spill-{i}" for i in range(n)],
        "exe": list(exes[:n]),
    }
    out = []
    for dim in dimensions:
        if dim == "exe" and len(values["exe"]) < n:
            raise ValueError(f"spilling exe takes {n} executables, not {len(values['exe'])}")
        rule = {"action": "block", dim: values[dim]}
        if dim != "uid":
            rule["uid"] = [NOBODY]
        out.append("\n[[rule]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in rule.items()))
    return "".join(out)


# ---------------------------------------------------------------------------
# connections


def random_connection(rng: random.Random, u: Universe, *, port_zero: float = 0.02) -> Connection:
    addr = ipaddress.ip_address(rng.choice(u.addrs))
    family, daddr = (socket.AF_INET if addr.version == 4 else socket.AF_INET6), str(addr)
    if addr.version == 4 and _chance(rng, 0.2):
        family, daddr = socket.AF_INET6, f"::ffff:{addr}"
    if _chance(rng, port_zero):
        port = 0
    elif _chance(rng, 0.75):
        port = rng.choice(u.ports)
    else:
        port = rng.randint(1, 65535)
    exes: list[ExeId | None] = [*u.exes.values(), None]
    proto = rng.choice(u.protos)
    if proto == Proto.ICMP and family == socket.AF_INET6:
        proto = Proto.ICMPV6  # an AF_INET6 ping socket
    return Connection(
        family=family,
        daddr=daddr,
        dport=port,
        proto=proto,
        comm=rng.choice(u.comms).encode(),
        exe=rng.choice(exes) if u.exes else None,
        uid=rng.choice(u.uids),
        gid=rng.choice(u.gids),
    )
