"""`bouhekictl suggest`: a unit policy that allows exactly what a learning
policy observed (the daemon's Learned answer), and blocks everything else.

One [[rule]] per protocol, port, executable and uid, listing the
destinations seen with them: a destination seen on one port is not allowed
on another. A destination that a domain name of the learning policy
resolves to is written as that name (it follows the name's addresses from
then on); --ipv4-prefix/--ipv6-prefix widen addresses to networks. A final
rule blocks the rest. Connections that were blocked while learning (a
policy in block mode) are not allowed: they are listed in a comment.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..policy.tables import MAX_RULES, PROTOCOL_NAMES, has_ports

Data = Mapping[str, Any]


@dataclass
class SuggestedRule:
    protocol: str
    port: int | None  # None: a protocol without ports
    exe: str  # "" when the executable's path was not found: no exe key
    uid: int
    to: set[str] = field(default_factory=set)
    seen: int = 0
    last_usec: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "to": sorted(self.to, key=_destination_order),
            "protocol": self.protocol,
            "ports": [] if self.port is None else [self.port],
            "exe": self.exe,
            "uid": self.uid,
            "seen": self.seen,
            "last_usec": self.last_usec,
        }


def _destination_order(d: str) -> tuple[int, Any]:
    try:
        net = ipaddress.ip_network(d, strict=False)
    except ValueError:
        return (2, d)  # a domain name
    return (0 if net.version == 4 else 1, (int(net.network_address), net.prefixlen))


def widen(address: str, v4: int, v6: int) -> str:
    """The address, or the network of that prefix length around it."""
    addr = ipaddress.ip_address(address)
    plen = v4 if addr.version == 4 else v6
    if plen >= addr.max_prefixlen:
        return str(addr)
    return str(ipaddress.ip_network(f"{addr}/{plen}", strict=False))


def rules_from(learned: Data, v4: int = 32, v6: int = 128) -> list[SuggestedRule]:
    """The rules that allow what went through while learning."""
    rules: dict[tuple[str, int | None, str, int], SuggestedRule] = {}
    for o in learned.get("observations", []):
        passed = int(o["allowed"]) + int(o["would_block"])
        if not passed:
            continue
        protocol = str(o["protocol"])
        if protocol not in PROTOCOL_NAMES:
            continue  # a protocol no rule can name; listed with the skipped ones
        port = int(o["port"]) if has_ports(protocol) else None
        key = (protocol, port, str(o["exe"]), int(o["uid"]))
        rule = rules.setdefault(key, SuggestedRule(*key))
        names = list(o.get("names", []))
        rule.to.update(names or [widen(str(o["address"]), v4, v6)])
        rule.seen += passed
        rule.last_usec = max(rule.last_usec, int(o["last_usec"]))
    if len(rules) > MAX_RULES - 1:  # the last one blocks the rest
        raise TooManyRules(
            f"what was seen needs {len(rules)} rules (one per protocol, port, executable "
            f"and uid), more than the {MAX_RULES - 1} a policy can hold besides the final "
            "block: split the unit's work, or write the policy by hand from `bouhekictl learned`"
        )
    return sorted(
        rules.values(), key=lambda r: (r.protocol, r.port or 0, r.exe, r.uid, sorted(r.to))
    )


class TooManyRules(ValueError):
    pass


def _toml_string(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in out) + '"'


def _toml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_string(i) for i in items) + "]"


def _when(usec: int) -> str:
    if not usec:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(usec / 1e6))


def _comment(text: str) -> str:
    """A comment line: nothing a process chose (an exe path) may end it early."""
    return "# " + "".join(c if c.isprintable() else "?" for c in text)


def render_toml(learned: Data, rules: Sequence[SuggestedRule]) -> str:
    unit = str(learned.get("unit", ""))
    observations = list(learned.get("observations", []))
    total = sum(int(o["allowed"]) + int(o["would_block"]) for o in observations)
    firsts = [int(o["first_usec"]) for o in observations if int(o["first_usec"])]
    lasts = [int(o["last_usec"]) for o in observations]
    lines = [
        _comment(f"bouhekictl suggest {unit}: what policy {learned.get('policy', '')} learned,"),
        _comment(
            f"{len(rules)} {'rule' if len(rules) == 1 else 'rules'} from {total} "
            f"{'connection' if total == 1 else 'connections'} seen between "
            f"{_when(min(firsts, default=0))} and {_when(max(lasts, default=0))}."
        ),
        _comment(f"Review it, install it as /etc/bouheki/units/{unit}.toml and run"),
        _comment("`systemctl reload bouheki`. Everything not listed is blocked."),
        'mode = "block"',
        "",
    ]
    for r in rules:
        times = "once" if r.seen == 1 else f"{r.seen} times"
        lines.append(_comment(f"seen {times}, last {_when(r.last_usec)}"))
        if not r.exe:
            lines.append(_comment("the executable's path was not found: any executable"))
        to = _toml_list(sorted(r.to, key=_destination_order))
        lines += ["[[rule]]", 'action = "allow"', f"to = {to}"]
        lines.append(f"protocol = {_toml_string(r.protocol)}")
        if r.port is not None:
            lines.append(f"ports = [{r.port}]")
        if r.exe:
            lines.append(f"exe = {_toml_list([r.exe])}")
        lines += [f"uid = [{r.uid}]", ""]
    blocked = [o for o in observations if int(o["blocked"])]
    if blocked:
        lines.append(_comment("Blocked while learning, so not allowed here:"))
        for o in blocked:
            exe = o["exe"] or "an executable not found"
            lines.append(
                _comment(
                    f"  {o['protocol']} {o['address']} port {o['port']}, {exe}, "
                    f"uid {o['uid']}: {o['blocked']} times"
                )
            )
        lines.append("")
    lines += [
        "[[rule]]",
        'action = "block"',
        'name = "not seen while learning"',
        "",
    ]
    return "\n".join(lines)
