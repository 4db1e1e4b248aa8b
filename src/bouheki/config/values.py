"""Validation of single configuration values, shared by the TOML and YAML readers.

Each parser returns the model value or raises ValueError with a message meant
for the operator (the caller prefixes it with file, line and key path).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Optional

from bouheki.policy.model import AddressSet, Dest, DomainName, Net, fold_mapped
from bouheki.policy.tables import COMM_LEN, PROTOCOL_NAMES, Action

ADDRESS_SETS = ("lan", "resolvers", "loopback", "link-local", "multicast")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no id" to the kernel
MAX_COMM = COMM_LEN - 1

# Used with fullmatch: '$' would also match before a final newline, letting
# 'a\n.com' through as a name.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# ASCII only: \d and str.isdigit() also take '٤٤٣' or '²', which are no
# port numbers (and int() refuses the latter with a Python message).
_PORTS = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", re.ASCII)
_MAX_PORT_DIGITS = 5

# Unit types that own a cgroup: only these can hold processes to judge.


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def parse_domain_name(text: str) -> Optional[DomainName]:
    # Before lower(): it maps some non-ASCII letters to ASCII ('\u212a', the
    # Kelvin sign, to 'k'), which would accept a name DNS never sees.
    if not text.isascii():
        return None
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    # A numeric last label means a mistyped address (10.0.1.300), never a name.
    if labels[-1].isdigit():
        return None
    return DomainName(name)


def _plain_ipv4(text: str) -> Net | None:
    """a.b.c.d or a.b.c.d/n without host bits, or None (then ipaddress
    decides, and words the error). A policy may list 100,000 of these, and
    ipaddress parses its own strings at a fraction of this speed."""
    addr, slash, plen_text = text.partition("/")
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    except OSError:
        return None
    if not slash:
        return Net(4, value, 32)
    if not (plen_text.isascii() and plen_text.isdigit() and len(plen_text) <= 2):
        return None
    plen = int(plen_text)
    if plen > 32 or value & ((1 << (32 - plen)) - 1):
        return None
    return Net(4, value, plen)


def parse_destination(value: object, *, allow_host_bits: bool = False) -> tuple[Dest, str | None]:
    """A CIDR, an address, a domain name or an @set, plus an optional warning.

    allow_host_bits: accept '10.0.1.1/24' as 10.0.1.0/24 with a warning (the
    legacy YAML format did); the TOML format rejects it.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"expected a string (address, network, domain name or @set), got {type_name(value)}"
        )
    text = value.strip()
    if text.startswith("@"):
        if text[1:] in ADDRESS_SETS:
            return AddressSet(text[1:]), None
        known = ", ".join("@" + s for s in ADDRESS_SETS)
        raise ValueError(f"'{value}' is not a known address set (known: {known})")
    if "%" in text:
        # ipaddress accepts 'fe80::1%eth0', but the kernel tables hold the
        # bare address: the zone would be dropped without a word.
        raise ValueError(
            f"'{value}': a zone index (%...) cannot be matched; write the address without it"
        )
    fast = _plain_ipv4(text)
    if fast is not None:
        return fast, None
    try:
        return fold_mapped(ipaddress.ip_network(text)), None
    except ValueError:
        pass
    if "/" in text:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            pass
        else:
            host = ipaddress.ip_address(text.split("/", 1)[0])
            if allow_host_bits:
                return fold_mapped(loose), f"'{value}' has host bits set; using {loose}"
            raise ValueError(
                f"'{value}' has host bits set: write '{loose}' for the network "
                f"or '{host}' for the single address"
            )
    name = parse_domain_name(text)
    if name is None and text.startswith("*."):
        raise ValueError(f"'{value}': wildcard names are not supported; list each name")
    if name is None:
        raise ValueError(f"'{value}' is not an IP address, network or domain name")
    return name, None


def _port_number(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    if len(significant) > _MAX_PORT_DIGITS:
        # Before int(): it refuses more than 4300 digits with a Python
        # message, and no port has more than five anyway.
        raise ValueError(f"port {significant[:10]}... is out of range 0-65535")
    return int(significant)


def parse_port_range(value: object) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(
            f"expected a port number or a range like '8000-8100', got {type_name(value)}"
        )
    if isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str):
        match = _PORTS.fullmatch(value)
        if not match:
            raise ValueError(f"'{value}' is not a port number or a range like '8000-8100'")
        lo = _port_number(match.group(1))
        hi = lo if match.group(2) is None else _port_number(match.group(2))
    else:
        raise ValueError(
            f"expected a port number or a range like '8000-8100', got {type_name(value)}"
        )
    for port in (lo, hi):
        # Port 0 is a destination like any: a connected UDP socket sends to it.
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 0-65535")
    if lo > hi:
        raise ValueError(f"'{value}' is a reversed range: write '{hi}-{lo}'")
    return lo, hi


def parse_id(value: object, kind: str) -> int:
    """A uid or gid as the kernel sees it (initial user namespace)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"expected a numeric {kind}, got {type_name(value)} (names are not resolved)"
        )
    if value < 0 or value > MAX_ID:
        raise ValueError(f"{value} is not a valid {kind}: must be 0..{MAX_ID}")
    return value


def parse_comm(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a command name (string), got {type_name(value)}")
    raw = value.encode("utf-8")
    if not raw:
        raise ValueError("a command name cannot be empty")
    if b"\0" in raw:
        raise ValueError("a command name cannot contain a NUL character")
    if len(raw) > MAX_COMM:
        short = raw[:MAX_COMM].decode("utf-8", "replace")
        raise ValueError(
            f"'{value}' is {len(raw)} bytes long, but the kernel keeps only the first "
            f"{MAX_COMM} bytes of a command name (comm), so it could never match: "
            f"write '{short}', or match the executable with exe"
        )
    return raw


def parse_exe_path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an absolute path, got {type_name(value)}")
    if not value.startswith("/"):
        raise ValueError(f"'{value}' is not an absolute path")
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL character")
    return value


def parse_action(value: object) -> Action:
    # 'deny' is accepted because the simple form says deny for the same thing.
    actions = {"allow": Action.ALLOW, "block": Action.BLOCK, "deny": Action.BLOCK}
    if isinstance(value, str) and value in actions:
        return actions[value]
    shown = f"'{value}'" if isinstance(value, str) else type_name(value)
    raise ValueError(f"{shown} is not an action: use allow or block")


def parse_mode(value: object) -> str:
    if isinstance(value, str) and value in ("block", "monitor"):
        return value
    shown = f"'{value}'" if isinstance(value, str) else type_name(value)
    raise ValueError(f"{shown} is not a mode: use block or monitor")


def parse_protocol(value: object) -> Optional[int]:
    """A Proto value, or None for any protocol."""
    if value == "any":
        return None
    if isinstance(value, str) and value in PROTOCOL_NAMES:
        return int(PROTOCOL_NAMES[value])
    shown = f"'{value}'" if isinstance(value, str) else type_name(value)
    raise ValueError(f"{shown} is not a protocol: use {', '.join(PROTOCOL_NAMES)} or any")
