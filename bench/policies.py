"""The benchmark's policies, generated: deterministic IPv4 prefix lists and
the TOML (bouheki) and unit-file (systemd) texts that carry them.

Nothing here covers 127.0.0.0/8: the connect loops go to loopback and must
be allowed, so that every configuration pays for a full decision and no
configuration takes a shortcut by blocking.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

SEED = 7  # issue 7
RULES_TOTAL = 60  # [[rule]] entries + the network.deny pseudo-rule
EXTRA_RULES = RULES_TOTAL - 1
# A rule kind per index: which of the rule's fields are set. Kinds with "to"
# take one prefix each from the budget.
_KINDS = ("to+ports", "ports+proto", "uid", "command", "to+uid", "gid+range")

# First octets never drawn: 0, 10 (the lab's test hosts), 127 (loopback),
# and multicast/reserved (224 and up).
_FIRST_OCTETS = [o for o in range(1, 224) if o not in (10, 127)]


def prefixes(count: int, seed: int = SEED) -> list[str]:
    """count distinct IPv4 prefixes, mostly /32 and /24 like real block
    lists, some shorter; nested prefixes happen and are fine."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        r = rng.random()
        plen = 32 if r < 0.6 else 24 if r < 0.9 else rng.choice((16, 18, 20, 22))
        addr = (rng.choice(_FIRST_OCTETS) << 24) | rng.getrandbits(24)
        net = ipaddress.IPv4Network((addr & ~((1 << (32 - plen)) - 1), plen))
        out.setdefault(str(net) if plen < 32 else str(net.network_address), None)
    return list(out)


def _toml_list(items: Sequence[str], indent: str = "  ") -> str:
    body = "".join(f'{indent}"{x}",\n' for x in items)
    return "[\n" + body + "]"


def small_policy(count: int = 10) -> str:
    """(b): a network.deny list of `count` prefixes; everything else allowed."""
    return f"[network]\ndeny = {_toml_list(prefixes(count))}\n"


def rules_to_count(extra_rules: int = EXTRA_RULES) -> int:
    """How many prefixes the [[rule]] entries of large_policy() use."""
    return sum(1 for i in range(extra_rules) if _KINDS[i % len(_KINDS)].startswith("to"))


def large_policy(total: int, extra_rules: int = EXTRA_RULES) -> tuple[str, list[str]]:
    """(c): `extra_rules` [[rule]] entries plus a network.deny list, with
    `total` distinct prefixes in all; returns (TOML, every prefix).

    The loops' connects (uid 0, comm connect-loop, 127.0.0.1, TCP) match no
    [[rule]] and miss the deny list, so the default (allow) decides, after
    every dimension's lookup: the most work a decision can take."""
    all_prefixes = prefixes(total)
    in_rules = rules_to_count(extra_rules)
    rule_prefixes, deny = all_prefixes[:in_rules], all_prefixes[in_rules:]
    parts = []
    taken = 0
    for i in range(extra_rules):
        kind = _KINDS[i % len(_KINDS)]
        action = "allow" if i % 2 else "block"
        lines = ["[[rule]]", f'action = "{action}"']
        if kind.startswith("to"):
            lines.append(f'to = ["{rule_prefixes[taken]}"]')
            taken += 1
        if kind == "to+ports":
            lines.append(f"ports = [{1000 + i}]")
        elif kind == "ports+proto":
            lines += [f"ports = [{20000 + i}, {21000 + i}]", 'protocol = "tcp"']
        elif kind in ("uid", "to+uid"):
            lines.append(f"uid = [{5000 + i}]")
        elif kind == "command":
            lines.append(f'command = ["bench-x{i}"]')
        elif kind == "gid+range":
            lines += [f"gid = [{7000 + i}]", f'ports = ["{30000 + 10 * i}-{30009 + 10 * i}"]']
        parts.append("\n".join(lines))
    text = "\n\n".join(parts) + f"\n\n[network]\ndeny = {_toml_list(deny)}\n"
    return text, all_prefixes


def host_policy(total: int, extra_rules: int = EXTRA_RULES) -> str:
    """large_policy() as the host policy of bouheki.toml: the [host] table."""
    text, _ = large_policy(total, extra_rules)
    text = text.replace("[[rule]]\n", "[[host.rule]]\n").replace("[network]\n", "[host.network]\n")
    return "[host]\n\n" + text


def prefix_policy(count: int) -> str:
    """The reload benchmark's policy: `count` prefixes in network.deny."""
    return f"[network]\ndeny = {_toml_list(prefixes(count))}\n"


def systemd_deny(prefix_list: Sequence[str]) -> str:
    """IPAddressDeny= lines for a [Slice] (or [Service]) section."""
    return "".join(f"IPAddressDeny={p}\n" for p in prefix_list)
