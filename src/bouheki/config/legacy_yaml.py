"""The original bouheki YAML format (`bouheki --config FILE.yaml`).

    network: {mode, target, cidr: {allow, deny}, domain: {allow, deny},
              command: {allow, deny}, uid: {allow, deny}, gid: {allow, deny}}
    log: {...}   files: {...}   mount: {...}   dns_proxy: {...}

Its semantics are those of the simple form (doc/DESIGN.md 2.1), with the
original defaults: mode monitor, target host, cidr.allow 0.0.0.0/0 and ::/0.
`target: container` becomes one policy for the container scopes and slices,
flagged so that processes in the host's mount namespace are not judged by it.
Sections for features this bouheki does not have are ignored with a warning;
anything that would change what the network policy enforces is validated.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml

from bouheki.config.document import Doc
from bouheki.config.errors import Report
from bouheki.config.policy_toml import parse_items
from bouheki.config.toml_file import read_text
from bouheki.config.toml_lines import LineMap, Path
from bouheki.config.values import (
    parse_comm,
    parse_destination,
    parse_id,
    parse_mode,
    type_name,
)
from bouheki.policy.model import AllowDeny, Dest, DomainName, Item, ListField, PolicySpec
from bouheki.policy.policyset import HOST_POLICY_NAME, NamedPolicy, PolicySet
from bouheki.policy.tables import POLICY_FOREIGN_MNTNS_ONLY, Origin

CONTAINER_POLICY_NAME = "@container"
CONTAINER_UNITS = ("docker-*.scope", "libpod-*.scope", "machine.slice")
DEFAULT_CIDR_ALLOW = ("0.0.0.0/0", "::/0")

NETWORK_KEYS = ("enable", "mode", "target", "cidr", "domain", "command", "uid", "gid")
TOP_KEYS = ("network", "files", "mount", "dns_proxy", "log")
_IGNORED = {
    "files": "file access restriction is not part of this bouheki",
    "mount": "mount restriction is not part of this bouheki",
    "dns_proxy": "the DNS proxy is not part of this bouheki (the daemon resolves names)",
    "log": "events go to the journal",
}


class _Unusable(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# Aliases can make a small file expand enormously ("billion laughs") or
# refer to itself; a configuration never needs anything near these.
_MAX_NODES = 100_000
_MAX_DEPTH = 32
# Nodes as written (before aliases expand): PyYAML composes ~50k a second,
# and composes the whole document before the walker's count starts, so a
# large file alone could hold a (re)load for minutes.
_MAX_COMPOSED = 50_000
_TOO_BIG = "the document is too large or too deeply nested"
# Tags whose constructors raise plain Python errors on a value that does not
# fit, named as the operator writes them.
_TAG_PREFIX = "tag:yaml.org,2002:"


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose composer gives up past _MAX_DEPTH or _MAX_COMPOSED.

    PyYAML composes recursively, a few frames per level: a few hundred
    nested '[' or '- ' raise RecursionError before the walker below sees a
    node. Stopping here also stops the scanner early, which is quadratic in
    the nesting of flow collections.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Optional[yaml.Node], index: object) -> yaml.Node:
        # One more level than the walker allows: a mapping's keys sit one
        # level below it, and the walker reports too-deep nodes itself.
        self._composed += 1
        if self._depth > _MAX_DEPTH + 1 or self._composed > _MAX_COMPOSED:
            raise _Unusable(_TOO_BIG, self.peek_event().start_mark.line + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _scalar_problem(node: yaml.Node) -> str:
    tag = str(node.tag)
    tag = "!!" + tag[len(_TAG_PREFIX) :] if tag.startswith(_TAG_PREFIX) else tag
    text = str(node.value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"'{text}' is not a valid {tag} value"


class _Walker:
    """Nodes -> plain values, recording the line of every key and item."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines = LineMap()
        self.nodes = 0

    def walk(self, node: yaml.Node, path: Path, record: bool = True, depth: int = 0) -> Any:
        self.nodes += 1
        line = node.start_mark.line + 1
        # depth, not len(path): a key is walked with its mapping's path, so a
        # key that is an alias of its own mapping ('&a {*a: 1}') would
        # otherwise recurse without the path ever growing.
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise _Unusable(_TOO_BIG, line)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.walk(key_node, path, False, depth + 1)
                key_line = key_node.start_mark.line + 1
                if not isinstance(key, (str, int)):
                    raise _Unusable("keys must be plain names", key_line)
                if key in out:
                    raise _Unusable(f"duplicate key '{key}'", key_line)
                if record:
                    self.lines.record((*path, key), key_line)
                out[key] = self.walk(value_node, (*path, key), record, depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                if record:
                    self.lines.record((*path, index), item.start_mark.line + 1)
                items.append(self.walk(item, (*path, index), record, depth + 1))
            return items
        try:
            value = self.loader.construct_object(node)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            # SafeConstructor trusts the resolver and the tags: a date that
            # does not exist (2001-02-30), an integer of thousands of digits,
            # '!!int abc', '!!bool x' or '!!timestamp x' raise plain Python
            # errors, not YAMLError.
            raise _Unusable(_scalar_problem(node), line) from e
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # "\ud800" escapes a lone surrogate: no text, and it could
                # not be encoded for the kernel, the journal or D-Bus.
                raise _Unusable("a string holds a lone surrogate (\\ud800-\\udfff)", line) from None
        return value


def compose_yaml(path: str, text: str, report: Report) -> Optional[tuple[Any, LineMap]]:
    """The document as plain values plus the line of every key and item
    (PyYAML's nodes know their lines; the constructed values do not)."""
    try:
        # Inside the try: given a str, PyYAML's Reader refuses characters
        # such as NUL in its constructor already.
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        report.error(path, line, f"YAML error: character U+{e.character:04X} is not allowed")
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, LineMap()
        walker = _Walker(loader)
        return walker.walk(node, ()), walker.lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        report.error(path, line, f"YAML syntax error: {e.problem or e.context}")
    except yaml.YAMLError as e:
        report.error(path, 0, f"YAML error: {e}")
    except _Unusable as e:
        report.error(path, e.line, e.message)
    finally:
        loader.dispose()
    return None


def _legacy_dest(value: object) -> tuple[Dest, str | None]:
    dest, warning = parse_destination(value, allow_host_bits=True)
    if isinstance(dest, DomainName):
        raise ValueError(f"'{value}' is not a CIDR or address (domain names go in network.domain)")
    return dest, warning


def _legacy_domain(value: object) -> tuple[Dest, None]:
    dest, _ = parse_destination(value)
    if not isinstance(dest, DomainName):
        raise ValueError(f"'{value}' is not a domain name (addresses go in network.cidr)")
    return dest, None


_PARSERS = {
    "cidr": _legacy_dest,
    "domain": _legacy_domain,
    "command": lambda v: (parse_comm(v), None),
    "uid": lambda v: (parse_id(v, "uid"), None),
    "gid": lambda v: (parse_id(v, "gid"), None),
}
_EXAMPLES = {
    "cidr": "[10.0.0.0/8]",
    "domain": "[example.com]",
    "command": "[curl]",
    "uid": "[1000]",
    "gid": "[1000]",
}


def _lists(doc: Doc, path: Path, value: object, kind: str) -> AllowDeny[Any]:
    if value is None:
        return AllowDeny()
    if not isinstance(value, dict):
        doc.error(path, f"expected a mapping with allow and/or deny lists, got {type_name(value)}")
        return AllowDeny()
    known = ("allow", "deny", "interval") if kind == "domain" else ("allow", "deny")
    lists: dict[str, ListField[Any]] = {}
    for key, element in value.items():
        where = (*path, key)
        if key not in known:
            doc.unknown_key(where, known)
        elif key == "interval":
            doc.warn(where, "ignored (deprecated): names are re-resolved when their TTL expires")
        elif element is not None:  # 'allow:' with every item commented out
            items = parse_items(doc, where, element, _PARSERS[kind], _EXAMPLES[kind])
            if items is not None:
                lists[key] = ListField(items, doc.origin(where))
    return AllowDeny(lists.get("allow", ListField()), lists.get("deny", ListField()))


def _default_allow(doc: Doc) -> ListField[Dest]:
    origin = doc.origin(("network",), "network.cidr.allow (default)")
    items = tuple(Item(parse_destination(t)[0], origin) for t in DEFAULT_CIDR_ALLOW)
    return ListField(items, origin)


def parse_legacy(doc: Doc, data: object) -> Optional[NamedPolicy]:
    if not isinstance(data, dict):
        doc.error((), f"expected a mapping with a network section, got {type_name(data)}")
        return None
    for key in data:
        if key not in TOP_KEYS:
            doc.unknown_key((key,), TOP_KEYS)
        elif key in _IGNORED:
            doc.warn((key,), f"ignored: {_IGNORED[key]}")
    network = data.get("network")
    if network is None:  # 'network:' with its whole body commented out
        network = {}
    # Not `or {}`: 'network: 0', 'network: ""' or 'network: []' is a mistake
    # to report, not an empty section.
    if not isinstance(network, dict):
        doc.error(("network",), f"expected a mapping, got {type_name(network)}")
        return None

    sections: dict[str, AllowDeny[Any]] = {}
    mode: Optional[Item[str]] = None
    target = "host"
    enabled = True
    for key, value in network.items():
        where: Path = ("network", key)
        if key not in NETWORK_KEYS:
            doc.unknown_key(where, NETWORK_KEYS)
        elif key == "enable":
            if isinstance(value, bool):
                enabled = value
            else:
                doc.error(where, f"expected true or false, got {type_name(value)}")
        elif key == "mode":
            try:
                mode = Item(parse_mode(value), doc.origin(where))
            except ValueError as e:
                doc.error(where, str(e))
        elif key == "target":
            if value in ("host", "container"):
                target = value
            else:
                shown = f"'{value}'" if isinstance(value, str) else type_name(value)
                doc.error(where, f"{shown} is not a target: use host or container")
        else:
            sections[key] = _lists(doc, where, value, key)
    if not enabled:
        doc.warn(("network", "enable"), "network restriction is disabled: no policy is loaded")
        return None
    if "mode" not in network:
        doc.warn(("network",), "mode is not set: the legacy default is monitor (never blocks)")
    if mode is None:  # the original default (or an invalid mode, already reported)
        mode = Item("monitor", doc.origin(("network",), "network.mode (default monitor)"))

    cidr = sections.get("cidr", AllowDeny())
    domain = sections.get("domain", AllowDeny())
    cidr_given = isinstance(network.get("cidr"), dict) and "allow" in network["cidr"]
    allow = cidr.allow if cidr_given else _default_allow(doc)
    spec = PolicySpec(
        origin=Origin(doc.file, 1, "policy"),
        mode=mode,
        network=AllowDeny(allow.extended(domain.allow), cidr.deny.extended(domain.deny)),
        command=sections.get("command", AllowDeny()),
        uid=sections.get("uid", AllowDeny()),
        gid=sections.get("gid", AllowDeny()),
    )
    if target == "container":
        return NamedPolicy(
            CONTAINER_POLICY_NAME, CONTAINER_UNITS, spec, (doc.file,), POLICY_FOREIGN_MNTNS_ONLY
        )
    return NamedPolicy(HOST_POLICY_NAME, (), spec, (doc.file,))


def load_legacy_yaml(path: str) -> PolicySet:
    """A legacy YAML file as a PolicySet: a host policy (target: host) or one
    unit policy for the container scopes (target: container). Raises
    ConfigError listing every problem."""
    report = Report()
    text = read_text(path, report)
    composed = compose_yaml(path, text, report) if text is not None else None
    policy: Optional[NamedPolicy] = None
    if composed is not None:
        data, lines = composed
        policy = parse_legacy(Doc(path, lines, report), data)
    report.raise_if_errors()
    host = policy if policy is not None and policy.name == HOST_POLICY_NAME else None
    units = [policy] if policy is not None and host is None else []
    return PolicySet(host, units, warnings=report.warnings, files=[path])
