"""The [daemon] table of bouheki.toml."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bouheki.common.settings import DaemonSettings
from bouheki.config.document import Doc
from bouheki.config.toml_lines import Path
from bouheki.config.values import type_name

# Every setting is a count or a number of seconds; RFC 2181 caps a DNS TTL at
# 2**31 - 1 seconds, and nothing here needs more. The bound also keeps
# values convertible to float (tomllib takes integers of thousands of
# digits, float() of those raises OverflowError) and to C integers.
MAX_SETTING = 2**31 - 1


def _check(name: str, value: Any, expected: type) -> str | None:
    if expected is bool:
        if not isinstance(value, bool):
            return f"expected true or false, got {type_name(value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if expected is float else int):
        kind = "a number" if expected is float else "an integer"
        return f"expected {kind}, got {type_name(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        # nan compares false with everything: it would pass every check
        # below and stop the rate limiter's window from ever ending.
        return f"{value} is not a finite number"
    if value < 0:
        return f"{value} is negative"
    if value > MAX_SETTING:
        shown = str(value)
        shown = shown if len(shown) <= 20 else shown[:12] + "..."
        return f"{shown} is too large: at most {MAX_SETTING}"
    if name == "max_addresses_per_name" and value == 0:
        return "must be at least 1"
    if name == "event_rate_interval" and value == 0:
        return "must be more than 0"
    return None


def parse_settings(doc: Doc, table: object, path: Path = ("daemon",)) -> DaemonSettings:
    if not isinstance(table, Mapping):
        doc.error(path, f"expected a table ([daemon]), got {type_name(table)}")
        return DaemonSettings()
    fields = {f.name: f for f in dataclasses.fields(DaemonSettings)}
    types = {"log_allowed": bool, "event_rate_interval": float}
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = (*path, key)
        if key not in fields:
            doc.unknown_key(where, fields)
            continue
        problem = _check(key, value, types.get(key, int))
        if problem:
            doc.error(where, problem)
        else:
            values[key] = float(value) if key == "event_rate_interval" else value
    settings = DaemonSettings(**values)
    if settings.dns_min_ttl > settings.dns_max_ttl:
        doc.error(
            (*path, "dns_min_ttl"),
            f"dns_min_ttl ({settings.dns_min_ttl}) is greater than dns_max_ttl "
            f"({settings.dns_max_ttl})",
        )
    return settings
