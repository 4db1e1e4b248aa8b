"""The TOML policy schema (doc/DESIGN.md section 2.1): a table -> PolicySpec.

Used for unit policy files, their drop-ins, and the [host] table of the main
file. Every problem is reported with its line; parsing goes on after an error
so that one run reports everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar

from bouheki.config.document import Doc, format_path
from bouheki.config.toml_lines import Path
from bouheki.config.values import (
    parse_action,
    parse_comm,
    parse_destination,
    parse_exe_path,
    parse_id,
    parse_mode,
    parse_port_range,
    parse_protocol,
    type_name,
)
from bouheki.policy.model import AllowDeny, Dest, Item, ListField, PolicySpec, RuleSpec
from bouheki.policy.tables import PORT_PROTOCOLS, Action, Origin, protocol_name

T = TypeVar("T")

POLICY_KEYS = ("mode", "learn", "network", "command", "exe", "uid", "gid", "rule")
RULE_KEYS = ("name", "action", "to", "ports", "protocol", "command", "exe", "uid", "gid")
LIST_KEYS = ("allow", "deny")


def _dest(value: object) -> tuple[Dest, str | None]:
    return parse_destination(value)


def _comm(value: object) -> tuple[bytes, None]:
    return parse_comm(value), None


def _exe(value: object) -> tuple[str, None]:
    return parse_exe_path(value), None


def _uid(value: object) -> tuple[int, None]:
    return parse_id(value, "uid"), None


def _gid(value: object) -> tuple[int, None]:
    return parse_id(value, "gid"), None


ItemParser = Callable[[object], "tuple[Any, str | None]"]

DIMENSION_PARSERS: dict[str, ItemParser] = {
    "network": _dest,
    "command": _comm,
    "exe": _exe,
    "uid": _uid,
    "gid": _gid,
}
_EXAMPLES = {
    "network": '["10.0.0.0/8", "example.com"]',
    "command": '["curl"]',
    "exe": '["/usr/bin/curl"]',
    "uid": "[1000]",
    "gid": "[1000]",
}


def parse_items(
    doc: Doc, path: Path, value: object, parse: ItemParser, example: str
) -> Optional[tuple[Item[Any], ...]]:
    """An array of values; None (after reporting) if it is not an array."""
    if not isinstance(value, list):
        hint = ""
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            hint = f" (write [{value!r}])".replace("'", '"')
        doc.error(path, f"expected an array like {example}, got {type_name(value)}{hint}")
        return None
    items: list[Item[Any]] = []
    # Once, not per element: a list may hold 100,000.
    base = format_path(path)
    lines = doc.lines.element_lines(path)
    for index, element in enumerate(value):
        try:
            parsed, warning = parse(element)
        except ValueError as e:
            doc.error((*path, index), str(e))
            continue
        if warning:
            doc.warn((*path, index), warning)
        line = lines[index] if index < len(lines) else doc.line((*path, index))
        items.append(Item(parsed, Origin(doc.file, line, f"{base}[{index}]")))
    return tuple(items)


def _allow_deny(doc: Doc, path: Path, value: object, dimension: str) -> AllowDeny[Any]:
    if not isinstance(value, dict):
        doc.error(
            path,
            f"expected a table with allow and/or deny lists ([{format_path(path)}]), "
            f"got {type_name(value)}",
        )
        return AllowDeny()
    lists: dict[str, ListField[Any]] = {}
    for key, element in value.items():
        where = (*path, key)
        if key not in LIST_KEYS:
            doc.unknown_key(where, LIST_KEYS)
            continue
        items = parse_items(doc, where, element, DIMENSION_PARSERS[dimension], _EXAMPLES[dimension])
        if items is not None:
            lists[key] = ListField(items, doc.origin(where))
    return AllowDeny(lists.get("allow", ListField()), lists.get("deny", ListField()))


def _constraint(
    doc: Doc, path: Path, value: object, parse: ItemParser, example: str
) -> Optional[tuple[Item[Any], ...]]:
    items = parse_items(doc, path, value, parse, example)
    if items is not None and not value:
        # An empty list would match nothing, a missing key matches anything:
        # too easy to confuse in a security policy, so neither is guessed.
        doc.error(path, "empty list: it would match nothing; remove the key to match any value")
    return items


def _ports(doc: Doc, path: Path, value: object) -> Optional[tuple[tuple[int, int], ...]]:
    items = _constraint(
        doc, path, value, lambda v: (parse_port_range(v), None), '[443, "8000-8100"]'
    )
    return None if items is None else tuple(item.value for item in items)


def parse_rule(doc: Doc, path: Path, table: object, index: int) -> Optional[RuleSpec]:
    if not isinstance(table, dict):
        doc.error(path, f"expected a table ([[rule]]), got {type_name(table)}")
        return None
    fields: dict[str, Any] = {}
    action: Optional[Action] = None
    name: Optional[str] = None
    for key, value in table.items():
        where = (*path, key)
        if key not in RULE_KEYS:
            doc.unknown_key(where, RULE_KEYS)
        elif key == "name":
            if not isinstance(value, str):
                doc.error(where, f"expected a string, got {type_name(value)}")
            elif not value.isprintable():
                # The name goes into the rule's origin, which events, explain
                # and D-Bus replies carry: a NUL makes the D-Bus message
                # invalid, a newline forges log lines.
                doc.error(where, "a rule name cannot contain control or invisible characters")
            else:
                name = value
        elif key == "action":
            try:
                action = parse_action(value)
            except ValueError as e:
                doc.error(where, str(e))
        elif key == "protocol":
            try:
                fields["protocol"] = parse_protocol(value)
            except ValueError as e:
                doc.error(where, str(e))
        elif key == "ports":
            fields["ports"] = _ports(doc, where, value)
        elif key == "to":
            fields["to"] = _constraint(doc, where, value, _dest, _EXAMPLES["network"])
        else:
            parser = DIMENSION_PARSERS[key]
            fields[key] = _constraint(doc, where, value, parser, _EXAMPLES[key])
    if "action" not in table:
        doc.error(path, "missing key 'action' (allow or block)")
    proto = fields.get("protocol")
    if proto is not None and proto not in PORT_PROTOCOLS and fields.get("ports") is not None:
        doc.error(
            (*path, "ports"),
            f"protocol '{protocol_name(proto)}' has no ports: remove 'ports' from this rule",
        )
    if action is None:
        return None
    label = format_path(path) + (f" ({name})" if name else "")
    return RuleSpec(action=action, origin=doc.origin(path, label), **fields)


def parse_policy(doc: Doc, table: Mapping[str, object], path: Path = ()) -> PolicySpec:
    """A policy table (a whole unit file, or the main file's [host])."""
    origin = doc.origin(path, format_path(path) or "policy")
    mode: Optional[Item[str]] = None
    learn: Optional[Item[bool]] = None
    lists: dict[str, AllowDeny[Any]] = {}
    rules: list[RuleSpec] = []
    for key, value in table.items():
        where = (*path, key)
        if key not in POLICY_KEYS:
            doc.unknown_key(where, POLICY_KEYS)
        elif key == "mode":
            try:
                mode = Item(parse_mode(value), doc.origin(where))
            except ValueError as e:
                doc.error(where, str(e))
        elif key == "learn":
            if isinstance(value, bool):
                learn = Item(value, doc.origin(where))
            else:
                doc.error(where, f"expected true or false, got {type_name(value)}")
        elif key == "rule":
            if not isinstance(value, list):
                doc.error(where, f"expected [[rule]] entries, got {type_name(value)}")
                continue
            for index, element in enumerate(value):
                rule = parse_rule(doc, (*where, index), element, index)
                if rule is not None:
                    rules.append(rule)
        else:
            lists[key] = _allow_deny(doc, where, value, key)
    return PolicySpec(origin=origin, mode=mode, learn=learn, rules=tuple(rules), **lists)
