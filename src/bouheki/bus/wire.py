"""Conversion between the engine contract (bouheki.common.api) and D-Bus values.

Records travel as `a{sv}` dictionaries whose keys are the dataclass field
names: self-describing on the wire (busctl shows the keys), extensible without
changing a method signature, and the same keys bouhekictl prints with --json.
The D-Bus type of every field is declared here, once; a nested record list
becomes `aa{sv}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

from ..common.api import (
    BadRequest,
    CheckResult,
    ConnectionEvent,
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
)
from ..dbuslib import Variant

FieldType = Union[str, type]  # a D-Bus signature, or a record type for a list of records
RECORD = "a{sv}"
RECORD_LIST = "aa{sv}"

SPECS: dict[type, dict[str, FieldType]] = {
    Problem: {"file": "s", "line": "u", "message": "s"},
    ReloadResult: {"generation": "t", "policies": "u", "warnings": "as", "duration_ms": "t"},
    NameAddress: {"address": "s", "expires_usec": "t"},
    NameState: {"name": "s", "addresses": NameAddress},
    PolicySummary: {
        "name": "s",
        "units": "as",
        "mode": "s",
        "rule_count": "u",
        "files": "as",
        "cgroups": "u",
        "names": NameState,
    },
    RuleCounters: {"index": "i", "origin": "s", "hits": "t", "blocked": "t", "would_block": "t"},
    PolicyCounters: {
        "name": "s",
        "hits": "t",
        "blocked": "t",
        "would_block": "t",
        "rules": RuleCounters,
    },
    Statistics: {
        "checks": "t",
        "allowed": "t",
        "blocked": "t",
        "would_block": "t",
        "events": "t",
        "events_lost": "t",
        "events_suppressed": "t",
        "policies": PolicyCounters,
        "units": UnitCounters,
        "generation": "t",
        "reloads": "t",
        "reloads_failed": "t",
        "last_reload_usec": "t",
        "last_reload_ok": "b",
        "names_resolved": "u",
        "names_unresolved": "u",
    },
    UnitCounters: {"unit": "s", "blocked": "t", "would_block": "t"},
    Explanation: {
        "verdict": "s",
        "policy": "s",
        "rule": "i",
        "origin_file": "s",
        "origin_line": "u",
        "origin_text": "s",
        "reason": "s",
    },
    Observation: {
        "address": "s",
        "port": "q",
        "protocol": "s",
        "uid": "u",
        "exe": "s",
        "names": "as",
        "allowed": "t",
        "would_block": "t",
        "blocked": "t",
        "first_usec": "t",
        "last_usec": "t",
    },
    Learned: {
        "unit": "s",
        "policy": "s",
        "learning": "b",
        "observations": Observation,
        "missed": "t",
        "capacity": "u",
    },
    CheckResult: {"ok": "b", "problems": Problem, "warnings": "as", "policies": "u"},
    # The properties (names in bouheki.bus.names.STATUS_PROPERTIES), not a record.
    Status: {
        "version": "s",
        "generation": "t",
        "loaded_at_usec": "t",
        "mode_summary": "s",
        "blocked": "t",
        "would_block": "t",
    },
    ConnectionEvent: {
        "unit": "s",
        "policy": "s",
        "verdict": "s",
        "daddr": "s",
        "dport": "q",
        "protocol": "s",
        "comm": "s",
        "exe": "s",
        "pid": "u",
        "uid": "u",
        "gid": "u",
        "rule": "i",
        "origin": "s",
        "timestamp_usec": "t",
        "exe_dev": "u",
        "exe_ino": "t",
        "cgroup_id": "t",
        "hook": "s",
        "reason": "s",
    },
}

# Key added to the Blocked signal by the adapter: signals dropped since the previous one.
BLOCKED_SUPPRESSED_KEY = "suppressed"


def encode(record: Any) -> dict[str, Variant]:
    """A contract dataclass as an `a{sv}` dictionary (raises on a value of the wrong type)."""
    spec = SPECS[type(record)]
    out: dict[str, Variant] = {}
    for name, ftype in spec.items():
        value = getattr(record, name)
        if isinstance(ftype, type):
            out[name] = Variant(RECORD_LIST, [encode(item) for item in value])
        else:
            out[name] = Variant(ftype, value)
    return out


def encode_list(records: list[Any]) -> list[dict[str, Variant]]:
    return [encode(record) for record in records]


def unwrap(value: Any) -> Any:
    """Plain Python (dicts, lists, scalars) from a D-Bus value: what --json prints."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [unwrap(item) for item in value]
    return value


def format_problems(problems: list[Problem], header: str) -> str:
    """The ConfigInvalid error text: a header, then one `file:line: message` per problem."""
    return "\n".join([header, *(str(problem) for problem in problems)])


# Explain's query dictionary: key -> (kind, required). Integers may come as any
# D-Bus integer type, since busctl and other clients pick different ones.
_INT_SIGNATURES = frozenset("ynqiuxt")
_QUERY_KEYS: dict[str, str] = {
    "address": "s",
    "port": "int",
    "protocol": "s",
    "unit": "s",
    "comm": "s",
    "exe": "s",
    "uid": "int",
    "gid": "int",
}


# systemd's limit on a unit name (UNIT_NAME_MAX, in bytes). Checked here because
# the engine walks the slices above a unit at a cost that grows far faster than
# the name: one 4 KB "a-a-...-a.slice" from any caller kept the daemon's loop
# busy for 18 s, and a few more bytes would outlast its 30 s watchdog.
UNIT_NAME_MAX = 255


def decode_explain_query(query: dict[str, Variant]) -> ExplainQuery:
    """ExplainQuery from Explain's `a{sv}`; types only, the engine judges the values.

    An empty `unit` or `exe` means "not given", like an absent key.
    """
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        # Only the first few, each cut short: the caller chooses how many keys
        # and how long, and the message is for reading.
        shown = [key if len(key) <= 40 else f"{key[:40]}..." for key in unknown[:5]]
        if len(unknown) > len(shown):
            shown.append(f"and {len(unknown) - len(shown)} more")
        raise BadRequest(
            f"unknown key(s) {', '.join(shown)}; expected {', '.join(sorted(_QUERY_KEYS))}"
        )
    values: dict[str, Any] = {}
    for key, variant in query.items():
        kind = _QUERY_KEYS[key]
        signature = variant.signature
        if kind == "int" and signature not in _INT_SIGNATURES:
            raise BadRequest(f"{key} must be an integer, not D-Bus type '{signature}'")
        if kind == "s" and signature != "s":
            raise BadRequest(f"{key} must be a string, not D-Bus type '{signature}'")
        values[key] = variant.value
    if not values.get("address"):
        raise BadRequest("address is required (the destination IPv4 or IPv6 address)")
    unit_bytes = len(values.get("unit", "").encode())
    if unit_bytes > UNIT_NAME_MAX:
        raise BadRequest(f"unit names have at most {UNIT_NAME_MAX} bytes, not {unit_bytes}")
    for key in ("unit", "exe"):
        if values.get(key) == "":
            values[key] = None
    return ExplainQuery(**values)


def check_specs() -> list[str]:
    """Mismatches between SPECS and the dataclasses (a test keeps this empty)."""
    errors = []
    for cls, spec in SPECS.items():
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(names) != sorted(spec):
            errors.append(f"{cls.__name__}: fields {names} != spec {list(spec)}")
    return errors
