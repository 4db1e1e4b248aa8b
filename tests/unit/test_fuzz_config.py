"""Fuzz tests of the configuration parsers (TOML main file, unit files and
drop-ins, legacy YAML), from the loader down to compiled tables.

The contract under test: whatever the files hold, loading either returns a
PolicySet that compiles, or raises ConfigError whose every problem names a
file that was read and a line inside it (or 0) with a printable message.
No other exception escapes, and no load takes more than CALL_LIMIT seconds
of CPU.
A configuration that loads must also hold only values the parsers claim to
have validated (a name that DNS can see, a port in range, ...): that is how
"accepted but wrong" bugs show up.

Derandomized, so that CI always runs the same examples; the regressions for
every bug found are pinned with @example or as plain tests below.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import re
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from bouheki.common.settings import DaemonSettings
from bouheki.common.units import check_unit_name
from bouheki.config.errors import ConfigError, Problem
from bouheki.config.legacy_yaml import CONTAINER_POLICY_NAME
from bouheki.config.loader import load, load_policy_set
from bouheki.config.settings import MAX_SETTING
from bouheki.config.toml_file import tomllib
from bouheki.config.values import ADDRESS_SETS, MAX_COMM, MAX_ID
from bouheki.policy.assemble import compile_policy_set, policy_set_requirements
from bouheki.policy.env import Environment
from bouheki.policy.model import AddressSet, DomainName, Net, fold_mapped
from bouheki.policy.policyset import HOST_POLICY_NAME, PolicySet
from bouheki.policy.tables import MAX_POLICIES, MAX_RULES, Origin

ROOT = Path(__file__).resolve().parents[2]

# One load (and its compile), in CPU seconds: the largest inputs here take
# about one on a slow 2-core box. CPU time, because wall time on a shared CI
# box also counts the other jobs; the wall limit catches waits that burn no
# CPU (a FIFO), and the alarm turns a hang into a failure.
CALL_LIMIT = 5.0
WALL_LIMIT = 3 * CALL_LIMIT
ALARM = 4 * CALL_LIMIT

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hang(AssertionError):
    """An AssertionError: the parsers catch a few specific exceptions, never this."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"a load is still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# Files on disk, and what a load of them must produce


def line_bound(raw: bytes) -> int:
    """The highest line a problem may name in a file holding `raw`: TOML and
    the UTF-8 check count '\\n', YAML also breaks at \\r, \\x85, \\u2028 and
    \\u2029 (str.splitlines breaks at all of these and a few more). One past
    the last line break: errors at the end of the file."""
    text = raw.decode("utf-8", "replace")
    return max(raw.count(b"\n"), len(text.splitlines())) + 1


class Tree:
    """A main file and the three search directories in a temporary root.

    Directories are made when a file goes in them (the loader skips missing
    ones), and removed file by file: rmtree() of thousands of small trees
    was a good part of this module's run time.
    """

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.search_dirs = [self.root / d for d in ("usr-lib", "run", "etc")]
        self.main = self.root / "bouheki.toml"
        self.bounds: dict[str, int] = {}  # every file and directory -> line bound
        self.created: list[Path] = []
        self.write(self.main, b"")

    def add(self, path: Path, bound: int = 0) -> Path:
        """Registers a file or directory made outside write()."""
        if path not in self.created:
            self.created.append(path)
        self.bounds[str(path)] = bound
        return path

    def mkdirs(self, directory: Path) -> None:
        if directory == self.root or str(directory) in self.bounds:
            return
        self.mkdirs(directory.parent)
        directory.mkdir()
        self.add(directory)

    def write(self, path: Path, data: bytes | str) -> Path:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self.mkdirs(path.parent)
        path.write_bytes(raw)
        return self.add(path, line_bound(raw))

    def unit(self, name: str, data: bytes | str, directory: int = 2) -> Path:
        return self.write(self.search_dirs[directory] / "units" / name, data)

    def load(self) -> PolicySet:
        return load_policy_set(self.main, self.search_dirs)

    def remove(self) -> None:
        try:
            for path in reversed(self.created):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
            self.root.rmdir()
        except OSError:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def tree() -> Iterator[Tree]:
    # Not pytest's tmp_path: a function-scoped fixture would be shared by
    # every example of a @given test.
    t = Tree(tempfile.mkdtemp(prefix="bouheki-fuzz-"))
    try:
        yield t
    finally:
        t.remove()


def check_problem(p: Problem, bounds: Mapping[str, int]) -> None:
    assert isinstance(p, Problem), p
    assert isinstance(p.file, str) and isinstance(p.line, int) and isinstance(p.message, str)
    assert p.file in bounds, f"{p} names a file that was not read"
    assert 0 <= p.line <= bounds[p.file], f"{p}: line outside 0..{bounds[p.file]}"
    assert p.message, p
    # Messages go to the journal, terminals and D-Bus (no NUL, valid UTF-8).
    assert p.message.isprintable(), repr(p.message)
    p.message.encode("utf-8")


def check_origin(o: Origin, bounds: Mapping[str, int]) -> None:
    assert o.file in bounds, o
    assert 0 <= o.line <= bounds[o.file], o
    # The origin text goes into events, explain and D-Bus replies.
    assert o.text.isprintable(), repr(o.text)


_LABEL_RE = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL_RE}(\.{_LABEL_RE})*")


def check_dest(d: object) -> None:
    if isinstance(d, DomainName):
        assert _NAME.fullmatch(d.name) and len(d.name) <= 253, d
        assert not d.name.rsplit(".", 1)[-1].isdigit(), d
    elif isinstance(d, AddressSet):
        assert d.name in ADDRESS_SETS, d
    else:
        # A Net holds no zone index (the kernel tables would drop it).
        assert isinstance(d, Net) and d.version in (4, 6), d
        assert 0 <= d.prefixlen <= d.max_prefixlen and 0 <= d.value < 1 << d.max_prefixlen, d
        assert d.value & ((1 << (d.max_prefixlen - d.prefixlen)) - 1) == 0, d  # no host bits
        assert fold_mapped(d) == d, d  # ::ffff:a.b.c.d is held as IPv4


def check_value(dimension: str, v: object) -> None:
    if dimension in ("network", "to"):
        check_dest(v)
    elif dimension == "command":
        assert isinstance(v, bytes) and 0 < len(v) <= MAX_COMM and b"\0" not in v, v
    elif dimension == "exe":
        assert isinstance(v, str) and v.startswith("/") and "\0" not in v, v
    else:
        assert type(v) is int and 0 <= v <= MAX_ID, v


def check_loaded(ps: PolicySet, bounds: Mapping[str, int]) -> None:
    """What a successful load promises about its values."""
    assert isinstance(ps, PolicySet)
    for w in ps.warnings:
        check_problem(w, bounds)
    s = ps.settings
    assert isinstance(s, DaemonSettings)
    assert isinstance(s.log_allowed, bool)
    for name in ("event_rate_limit", "dns_min_ttl", "dns_max_ttl", "dns_grace"):
        value = getattr(s, name)
        assert type(value) is int and 0 <= value <= MAX_SETTING, (name, value)
    assert type(s.max_addresses_per_name) is int and 1 <= s.max_addresses_per_name <= MAX_SETTING
    assert isinstance(s.event_rate_interval, float)
    assert math.isfinite(s.event_rate_interval) and 0 < s.event_rate_interval <= MAX_SETTING
    assert s.dns_min_ttl <= s.dns_max_ttl
    assert len(ps.policies()) <= MAX_POLICIES
    for policy in ps.policies():
        if policy.name not in (HOST_POLICY_NAME, CONTAINER_POLICY_NAME):
            assert check_unit_name(policy.name) is None, policy.name
        for f in policy.files:
            assert f in bounds, f
        spec = policy.spec
        for dimension in ("network", "command", "exe", "uid", "gid"):
            lists = getattr(spec, dimension)
            for item in lists.allow.items + lists.deny.items:
                check_value(dimension, item.value)
                check_origin(item.origin, bounds)
        for rule in spec.rules:
            check_origin(rule.origin, bounds)
            for lo, hi in rule.ports or ():
                assert 1 <= lo <= hi <= 65535, rule.ports
            for dimension in ("to", "command", "exe", "uid", "gid"):
                for item in getattr(rule, dimension) or ():
                    check_value(dimension, item.value)


def fake_environment(ps: PolicySet) -> Environment:
    """Every name, set and executable the policies need, resolved to
    something, as the daemon's resolver would."""
    req = policy_set_requirements(ps)
    names = {
        name: [ipaddress.ip_network(f"192.0.2.{i % 256}/32"), ipaddress.ip_network("2001:db8::1")]
        for i, name in enumerate(sorted(req.names))
    }
    sets = {name: [ipaddress.ip_network("10.0.0.0/8")] for name in req.sets}
    exes: dict[str, Optional[tuple[int, int]]] = {
        exe: (2049, i + 1) for i, exe in enumerate(sorted(req.exes))
    }
    return Environment(names=names, sets=sets, exes=exes)


def check_load(load_fn: Callable[[], PolicySet], bounds: Mapping[str, int]) -> Optional[PolicySet]:
    """Runs a load and, if it succeeds, the compile the daemon would run;
    checks the contract either way. Returns the PolicySet, or None if the
    configuration was refused."""
    start, start_cpu = time.monotonic(), time.process_time()
    with time_limit(ALARM):
        try:
            ps = load_fn()
        except ConfigError as e:
            ps = None
            error = e
        else:
            compiled = compile_policy_set(ps, fake_environment(ps))
    cpu, elapsed = time.process_time() - start_cpu, time.monotonic() - start
    assert cpu < CALL_LIMIT, f"a load took {cpu:.1f} s of CPU"
    assert elapsed < WALL_LIMIT, f"a load took {elapsed:.1f} s"
    if currently_in_test_context():
        # --hypothesis-show-statistics: how often a target reaches the compiler.
        event("refused" if ps is None else "loaded and compiled")
    if ps is None:
        assert error.problems, "a ConfigError with no problem"
        for p in [*error.problems, *error.warnings]:
            check_problem(p, bounds)
        return None
    check_loaded(ps, bounds)
    assert len(compiled.tables) == len(ps.policies())
    assert not compiled.warnings, compiled.warnings  # everything was resolved
    for table in compiled.tables:
        assert table.rule_count <= MAX_RULES
        for origin in table.origins:
            check_origin(origin, bounds)
    return ps


# ---------------------------------------------------------------------------
# Strategies: random bytes and text


def _deep(open_: str, close: str, depth: int = 5000, middle: str = "") -> bytes:
    return ("a = " + open_ * depth + middle + close * depth + "\n").encode()


TOML_TOKENS = [
    "[", "]", "[[", "]]", "{", "}", "=", " = ", ",", ".", '"', "'", '"""', "'''", "\\",
    "\\u0000", "\\ud800", "\\U0010FFFF", "\\x", "\n", "\r\n", "\r", "#", " ", "\t",
    "network", "allow", "deny", "rule", "action", "mode", "ports", "to", "protocol", "name",
    "uid", "gid", "exe", "command", "host", "daemon", "log_allowed", "event_rate_interval",
    '"10.0.0.0/8"', '"example.com"', '"allow"', '"block"', '"monitor"', '"8000-8100"',
    "1", "-1", "0", "65536", "4294967295", "0x1F", "0o7", "0b1", "1_000", "1e999", "-0.0",
    "nan", "inf", "true", "false", "1979-05-27T07:32:00Z", "1979-02-30", "07:32:00",
    "9" * 5000, "\x00", "\ufeff", "\u2028", "\x7f", "é", "日本",
]  # fmt: skip

YAML_TOKENS = [
    "network:", "\n  ", "\n    ", "\n", "mode: ", "block", "monitor", "target: ", "host",
    "container", "cidr:", "domain:", "command:", "uid:", "gid:", "allow:", "deny:",
    "enable: ", "interval: ", "log:", "files:", "- ", "? ", ": ", "[", "]", "{", "}", ",",
    "&a ", "&b ", "*a", "*b", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ",
    "!!str ", "!!null ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ", "!!merge ",
    "!!python/object:os.system ", "!foo ", "<<: ", "|", ">", "'", '"', '"\\ud800"', '"\\0"',
    "~", ".nan", "-.inf", "yes", "0x1F", "0o17", "1:20:30", "2001-02-30", "2001-12-14t21:59",
    "9" * 5000, "10.0.0.0/8", "10.0.1.1/24", "curl", "---\n", "...\n", "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n", "#", "\t", "\r", "\x00", "\x85", "\u2028", "\ufeff", "é",
]  # fmt: skip


def token_text(tokens: list[str]) -> st.SearchStrategy[bytes]:
    parts = st.one_of(st.sampled_from(tokens), st.text(max_size=4))
    return st.lists(parts, max_size=40).map(lambda xs: "".join(xs).encode("utf-8"))


RANDOM_TOML = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    token_text(TOML_TOKENS),
)
RANDOM_YAML = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    token_text(YAML_TOKENS),
)


# ---------------------------------------------------------------------------
# Strategies: documents built from the schema, with valid and invalid values

SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 65535, 65536, MAX_ID, MAX_ID + 1, 2**63 - 1, -(2**63), 10**30]),
    st.floats(),
    st.text(max_size=20),
    st.datetimes(),
    st.dates(),
)
# Two levels of arrays and tables: deeper nesting is the random tests' job,
# and st.recursive() made generation the bulk of the run time.
_FLAT = st.one_of(
    st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=3)
)
ANY_VALUE = st.one_of(SCALARS, _FLAT, st.lists(_FLAT, max_size=2))

PRINTABLE = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), whitelist_characters=" "
)
_LABEL = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8),
    st.sampled_from(["a-b", "x--y", "_srv", "0", "xn--wgv71a"]),
)
DOMAIN = (
    st.lists(_LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not name.rsplit(".", 1)[-1].isdigit())
)
ADDRESS = st.ip_addresses().map(str)
NETWORK = st.builds(
    lambda addr, bits: str(ipaddress.ip_network((addr, bits % (addr.max_prefixlen + 1)), False)),
    st.ip_addresses(),
    st.integers(0, 128),
)
VALID_DEST = st.one_of(ADDRESS, NETWORK, DOMAIN, st.sampled_from(["@" + s for s in ADDRESS_SETS]))
BAD_DEST = st.one_of(
    st.sampled_from(
        [
            "10.0.1.300", "10.0.0.1/33", "10.0.1.1/24", "::ffff:10.0.1.1/120", "fe80::1%eth0",
            "fe80::1%eth0/128", "*.example.com", "@bogus", "@", "", " ", "exa mple.com", "a..b",
            "-a.com", "a.123", "1.2.3.4/-1", "::/129", "1.2.3", "0x7f.0.0.1", "\u212a.com",
            "a\n.com", "a.com\n", "example.com.", "EXAMPLE.COM", "a" * 64 + ".com",
            ".".join(["a"] * 200), "日本.jp", "xn--wgv71a.jp", "10.0.0.0/255.0.0.0",
            "10.0.0.0/0.0.0.255", " 10.0.0.1 ", "1" * 5000,
        ]
    ),
    st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(), st.integers(-5, 200)),
    st.text(max_size=20),
    ANY_VALUE,
)  # fmt: skip

VALID_PORT = st.one_of(
    st.integers(1, 65535),
    st.integers(1, 65535).map(str),
    st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda t: f"{min(t)}-{max(t)}"),
)
BAD_PORT = st.one_of(
    st.integers(-(2**40), 2**40),
    st.sampled_from(
        ["0", "65536", "100-1", "1-", "-1", "²", "٤٤٣", " 1 - 2 ", "0x50", "9" * 30, "9" * 5000,
         "80,443", "http", "", "1-2-3", "0-10"]
    ),
    st.text(max_size=10),
    ANY_VALUE,
)  # fmt: skip

VALID_COMM = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_COMM
)
BAD_COMM = st.one_of(
    st.sampled_from(["", "a" * 16, "a\x00b", "é" * 8, "\x00"]),
    st.text(max_size=20),
    ANY_VALUE,
)
VALID_EXE = st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-", min_size=1, max_size=20).map(
    lambda path: "/" + path
)
BAD_EXE = st.one_of(st.sampled_from(["", "bin/sh", "/a\x00b", "~/x"]), st.text(max_size=20))
VALID_ID = st.integers(0, MAX_ID)
BAD_ID = st.one_of(
    st.sampled_from([-1, MAX_ID + 1, 2**32, 2**64, True, "1000", 1000.0]),
    st.integers(-(2**70), 2**70),
    ANY_VALUE,
)


def mixed(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Mostly valid, so that whole documents load often enough to reach the
    # compiler; a bad value anywhere must still be reported cleanly.
    return st.one_of(valid, valid, valid, bad)


def allow_deny(item: st.SearchStrategy[Any], valid: bool) -> st.SearchStrategy[Any]:
    lists = st.lists(item, max_size=4)
    table = st.fixed_dictionaries(
        {}, optional={"allow": lists, "deny": lists} | ({} if valid else {"alow": ANY_VALUE})
    )
    return table if valid else st.one_of(table, table, table, ANY_VALUE)


def rule(valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    def pick(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return good if valid else mixed(good, bad)

    def constraint(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        lists = st.lists(pick(good, bad), min_size=1, max_size=3)
        return lists if valid else mixed(lists, ANY_VALUE)

    action = pick(st.sampled_from(["allow", "block", "deny"]), st.one_of(st.text(), ANY_VALUE))
    optional = {
        "name": pick(st.text(PRINTABLE, max_size=20), ANY_VALUE),
        "to": constraint(VALID_DEST, BAD_DEST),
        "ports": constraint(VALID_PORT, BAD_PORT),
        "protocol": pick(st.sampled_from(["tcp", "udp", "any"]), st.text(max_size=5)),
        "command": constraint(VALID_COMM, BAD_COMM),
        "exe": constraint(VALID_EXE, BAD_EXE),
        "uid": constraint(VALID_ID, BAD_ID),
        "gid": constraint(VALID_ID, BAD_ID),
    }
    if valid:
        return st.fixed_dictionaries({"action": action}, optional=optional)
    return st.fixed_dictionaries({}, optional={"action": action, "acton": ANY_VALUE, **optional})


def policy(valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    def pick(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return good if valid else mixed(good, bad)

    optional = {
        "mode": pick(
            st.sampled_from(["block", "monitor"]), st.sampled_from(["enforce", "BLOCK", ""])
        ),
        "network": allow_deny(pick(VALID_DEST, BAD_DEST), valid),
        "command": allow_deny(pick(VALID_COMM, BAD_COMM), valid),
        "exe": allow_deny(pick(VALID_EXE, BAD_EXE), valid),
        "uid": allow_deny(pick(VALID_ID, BAD_ID), valid),
        "gid": allow_deny(pick(VALID_ID, BAD_ID), valid),
        "rule": st.lists(rule(valid), max_size=4),
    }
    if not valid:
        optional |= {
            "rule": mixed(st.lists(rule(valid), max_size=4), ANY_VALUE),
            "netwrok": ANY_VALUE,
            "mödé": ANY_VALUE,
            "": ANY_VALUE,
        }
    return st.fixed_dictionaries({}, optional=optional)


DAEMON = st.fixed_dictionaries(
    {},
    optional={
        "log_allowed": mixed(st.booleans(), ANY_VALUE),
        "event_rate_limit": mixed(st.integers(0, 10**6), BAD_ID),
        "event_rate_interval": mixed(
            st.floats(0.001, 10**6) | st.integers(1, 10**6),
            st.sampled_from([0, 0.0, -1.0, math.nan, math.inf, -math.inf, 10**400, 2**31]),
        ),
        "dns_min_ttl": mixed(st.integers(0, 100), BAD_ID),
        "dns_max_ttl": mixed(st.integers(100, 10**6), BAD_ID),
        "dns_grace": mixed(st.integers(0, 10**6), BAD_ID),
        "max_addresses_per_name": mixed(st.integers(1, 1000), BAD_ID),
        "dns_grase": ANY_VALUE,
    },
)
MAIN = st.fixed_dictionaries(
    {}, optional={"daemon": mixed(DAEMON, ANY_VALUE), "host": mixed(policy(False), ANY_VALUE)}
)


# -- TOML emitter (nothing on the box writes TOML) --------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(s: str) -> str:
    # JSON's escapes are TOML's, but JSON leaves DEL raw and TOML forbids it.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_string(key)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    assert isinstance(v, dict), v
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_document(doc: Mapping[str, Any], inline: bool = False) -> str:
    """`doc` as TOML: subtables as [a.b] headers and arrays of tables as
    [[a]], or everything inline."""
    out: list[str] = []

    def table(prefix: tuple[str, ...], d: Mapping[str, Any]) -> None:
        subtables, arrays = [], []
        for k, v in d.items():
            if not inline and isinstance(v, dict):
                subtables.append((k, v))
            elif not inline and isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                arrays.append((k, v))
            else:
                out.append(f"{toml_key(k)} = {toml_value(v)}")
        for k, v in subtables:
            path = (*prefix, k)
            out.append(f"[{'.'.join(map(toml_key, path))}]")
            table(path, v)
        for k, v in arrays:
            path = (*prefix, k)
            for item in v:
                out.append(f"[[{'.'.join(map(toml_key, path))}]]")
                table(path, item)

    table((), doc)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Strategies: legacy YAML documents


def yaml_lists(item: st.SearchStrategy[Any], domain: bool = False) -> st.SearchStrategy[Any]:
    lists = st.one_of(st.none(), st.lists(item, max_size=4))
    optional = {"allow": lists, "deny": lists} | ({"interval": ANY_VALUE} if domain else {})
    return mixed(st.fixed_dictionaries({}, optional=optional), st.one_of(st.none(), ANY_VALUE))


YAML_KEY = st.one_of(st.text(max_size=6), st.integers(), st.booleans(), st.none())
YAML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.datetimes(),
    st.dates(),
    st.none(),
    st.binary(max_size=8),
)
_YAML_FLAT = st.one_of(
    st.lists(YAML_SCALARS, max_size=3), st.dictionaries(YAML_KEY, YAML_SCALARS, max_size=3)
)
YAML_ANY = st.one_of(YAML_SCALARS, _YAML_FLAT, st.lists(_YAML_FLAT, max_size=2))
LEGACY_NETWORK = st.fixed_dictionaries(
    {},
    optional={
        "enable": mixed(st.booleans(), YAML_ANY),
        "mode": mixed(st.sampled_from(["block", "monitor"]), YAML_ANY),
        "target": mixed(st.sampled_from(["host", "container"]), YAML_ANY),
        "cidr": yaml_lists(mixed(st.one_of(ADDRESS, NETWORK), BAD_DEST)),
        "domain": yaml_lists(mixed(DOMAIN, BAD_DEST), domain=True),
        "command": yaml_lists(mixed(VALID_COMM, BAD_COMM)),
        "uid": yaml_lists(mixed(VALID_ID, BAD_ID)),
        "gid": yaml_lists(mixed(VALID_ID, BAD_ID)),
        "targett": YAML_ANY,
    },
)
LEGACY = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "network": mixed(LEGACY_NETWORK, st.one_of(st.none(), YAML_ANY)),
            "log": YAML_ANY,
            "files": YAML_ANY,
            "mount": YAML_ANY,
            "dns_proxy": YAML_ANY,
            "netwrok": YAML_ANY,
        },
    ),
    YAML_ANY,
)


def billion_laughs(levels: int, width: int = 9) -> bytes:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append("network: {mode: block}")
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------------------
# Random bytes and text


@FUZZ
@given(data=RANDOM_TOML)
@example(data=_deep("[", "]"))  # tomllib: RecursionError
@example(data=_deep("{b = ", "}", middle="1"))  # tomllib: RecursionError
@example(data=_deep("[", "]", depth=480))  # tomllib parsed it, the line scanner recursed out
@example(data=b"[host.network]\ndeny = [" + b"9" * 5000 + b"]\n")  # int(): ValueError
@example(data=b"[daemon]\nevent_rate_interval = " + b"9" * 400 + b"\n")  # float(): OverflowError
@example(data=b"[daemon]\nevent_rate_interval = nan\n")  # nan slipped through every check
@example(data=b"[host]\nmode = 'block'\n[[host.rule]]\nname = 'x\\u0000y'\naction = 'allow'\n")
@example(data=b'["\\u0000\\u202e"]\n')  # NUL and a bidi override in a message
@example(data=b"\xff\xfe[host]\n")
def test_random_main_file(data: bytes) -> None:
    with tree() as t:
        t.write(t.main, data)
        check_load(t.load, t.bounds)


@FUZZ
@given(unit=RANDOM_TOML, dropin=RANDOM_TOML, masked=st.booleans())
@example(unit=b'mode = "block"\n', dropin=_deep("[", "]"), masked=False)
@example(unit=b"", dropin=b"[[rule]]\nports = ['\xc2\xb2']\naction = 'allow'\n", masked=False)
def test_random_unit_file_and_dropin(unit: bytes, dropin: bytes, masked: bool) -> None:
    with tree() as t:
        t.unit("a.service.toml", unit, directory=0)
        t.unit("a.service.d/10-x.toml", dropin, directory=1)
        if masked:  # an empty file in a later directory masks the unit
            t.unit("a.service.toml", b"", directory=2)
        check_load(t.load, t.bounds)


@FUZZ
@given(data=RANDOM_YAML)
@example(data=b"a: " + b"[" * 5000 + b"]" * 5000)  # composer: RecursionError
@example(data=b"a: " + b"{b: " * 5000 + b"1" + b"}" * 5000)
@example(data=b"".join(b"  " * i + b"- \n" for i in range(3000)))  # block sequences
@example(data=b"&a {*a : 1}\n")  # a key that is its own mapping: RecursionError
@example(data=b"network: {mode: 2001-02-30}\n")  # datetime(): ValueError
@example(data=b"network: {uid: {allow: [" + b"9" * 5000 + b"]}}\n")  # int(): ValueError
@example(data=b"network: {uid: {allow: [!!int abc]}}\n")  # ValueError
@example(data=b"network: {mode: !!timestamp abc}\n")  # AttributeError
@example(data=b"network: {mode: !!bool abc}\n")  # KeyError
@example(data=b'network: {command: {deny: ["\\ud800"]}}\n')  # lone surrogate
@example(data=b"network: 0\n")  # was taken for an empty network section
@example(data=billion_laughs(9))
def test_random_yaml(data: bytes) -> None:
    with tree() as t:
        path = t.write(t.root / "bouheki.yml", data)
        check_load(lambda: load(path), t.bounds)


# ---------------------------------------------------------------------------
# Structure-aware: the schema's keys with right and wrong values


@FUZZ
@given(doc=policy(valid=False), inline=st.booleans(), where=st.sampled_from(["unit", "dropin"]))
@example(doc={"network": {"deny": ["a\n.com"]}}, inline=False, where="unit")
@example(doc={"network": {"deny": ["\u212a.com"]}}, inline=False, where="unit")
@example(doc={"network": {"deny": ["fe80::1%eth0"]}}, inline=False, where="unit")
@example(doc={"rule": [{"action": "allow", "ports": ["٤٤٣"]}]}, inline=False, where="unit")
@example(doc={"rule": [{"action": "allow", "name": "a\nb"}]}, inline=True, where="dropin")
def test_structured_policy(doc: dict[str, Any], inline: bool, where: str) -> None:
    text = toml_document(doc, inline)
    with tree() as t:
        if where == "unit":
            t.unit("a.service.toml", text)
        else:
            t.unit("a.service.toml", 'mode = "monitor"\n', directory=0)
            t.unit("a.service.d/50-x.toml", text, directory=1)
        check_load(t.load, t.bounds)


@FUZZ
@given(doc=MAIN, inline=st.booleans())
@example(doc={"daemon": {"event_rate_interval": 10**400}}, inline=False)
@example(doc={"daemon": {"event_rate_interval": math.nan}}, inline=False)
@example(doc={"daemon": {"dns_grace": 2**31}}, inline=True)
def test_structured_main_file(doc: dict[str, Any], inline: bool) -> None:
    with tree() as t:
        t.write(t.main, toml_document(doc, inline))
        check_load(t.load, t.bounds)


@FUZZ
@given(
    unit=policy(valid=True),
    dropin=policy(valid=True),
    host=policy(valid=True),
    inline=st.booleans(),
)
def test_valid_documents_load_and_compile(
    unit: dict[str, Any], dropin: dict[str, Any], host: dict[str, Any], inline: bool
) -> None:
    # The emitter must produce what it was given, or this test proves nothing.
    assert tomllib.loads(toml_document(unit, inline)) == unit
    with tree() as t:
        t.write(t.main, toml_document({"host": host}, inline))
        t.unit("a.service.toml", toml_document(unit, inline))
        t.unit("a.service.d/10-x.toml", toml_document(dropin, inline), directory=0)
        ps = check_load(t.load, t.bounds)
        assert ps is not None, "a valid configuration was refused"
        (merged,) = ps.units
        assert len(merged.spec.rules) == len(unit.get("rule", [])) + len(dropin.get("rule", []))
        for name in ("network", "command", "exe", "uid", "gid"):
            written = [*unit.get(name, {}).get("deny", []), *dropin.get(name, {}).get("deny", [])]
            assert len(getattr(merged.spec, name).deny.items) == len(written)


@FUZZ
@given(doc=LEGACY, flow=st.sampled_from([None, False, True]), unicode=st.booleans())
@example(doc={"network": {"cidr": {"allow": ["fe80::1%eth0"]}}}, flow=None, unicode=True)
@example(doc={"network": {"domain": {"deny": ["a\n.com"]}}}, flow=False, unicode=True)
@example(doc={"network": []}, flow=None, unicode=False)
def test_structured_legacy_yaml(doc: Any, flow: Optional[bool], unicode: bool) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)
    with tree() as t:
        path = t.write(t.root / "bouheki.yaml", text)
        check_load(lambda: load(path), t.bounds)


# ---------------------------------------------------------------------------
# Mutations of valid files

POLICY_EXAMPLE = """\
mode = "block"
[network]
allow = ["10.0.1.0/24", "example.com", "@lan"]
deny  = ["10.0.1.71", "2001:db8::/32"]
[command]
allow = ["wget"]
deny  = ["curl"]
[exe]
allow = ["/usr/bin/wget"]
[uid]
allow = [0]
deny  = [1000]
[gid]
deny  = [1001]
[[rule]]
name = "web"
action = "allow"
to = ["192.0.2.0/24"]
ports = [443, "8000-8100"]
protocol = "tcp"
uid = [33]
[[rule]]
action = "block"
command = ["nc"]
"""
MAIN_EXAMPLE = """\
[daemon]
log_allowed = true
event_rate_limit = 50
event_rate_interval = 2.5
dns_min_ttl = 10
dns_max_ttl = 600
dns_grace = 60
max_addresses_per_name = 16
[host]
mode = "monitor"
[host.network]
deny = ["169.254.169.254", "@link-local"]
[[host.rule]]
action = "allow"
exe = ["/usr/sbin/chronyd"]
ports = [123]
protocol = "udp"
"""


def _corpus(kind: str) -> list[bytes]:
    paths = {
        "unit": ["etc/bouheki/units/nginx.service.toml.example", "vendor/units/*.toml"],
        "main": ["etc/bouheki/bouheki.toml"],
        "yaml": ["tests/vm/demo/*.y*ml", "tests/unit/data/policies/*.yml"],
    }[kind]
    out = [p.read_bytes() for pattern in paths for p in sorted(ROOT.glob(pattern))]
    out += {"unit": [POLICY_EXAMPLE.encode()], "main": [MAIN_EXAMPLE.encode()], "yaml": []}[kind]
    assert out, f"no {kind} file to mutate"
    return out


CORPUS = {kind: _corpus(kind) for kind in ("unit", "main", "yaml")}
INTERESTING = [
    b"[", b"]", b"{", b"}", b'"', b"'", b"=", b"\n", b"#", b".", b"-", b":", b" ", b"\t",
    b",", b"&a", b"*a", b"!", b"|", b"?", b"\x00", b"\xff", b"\xc3", b"\r", b"\\",
    "é".encode(), "\u2028".encode(), b"9" * 5000, b"0", b"/", b"@",
]  # fmt: skip
MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 1000)),
    st.tuples(st.just("duplicate"), st.integers(0, 1000)),
    st.tuples(st.just("swap"), st.integers(0, 1000), st.integers(0, 1000)),
    st.tuples(st.just("replace"), st.integers(0, 10**5), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, 10**5), st.sampled_from(INTERESTING)),
    st.tuples(st.just("truncate"), st.integers(0, 10**5)),
)


def mutate(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    for op in ops:
        lines = data.split(b"\n")
        if op[0] == "delete":
            del lines[op[1] % len(lines)]
        elif op[0] == "duplicate":
            i = op[1] % len(lines)
            lines.insert(i, lines[i])
        elif op[0] == "swap":
            i, j = op[1] % len(lines), op[2] % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        else:
            pos = op[1] % (len(data) + 1)
            if op[0] == "replace":
                data = data[:pos] + op[2] + data[pos + 1 :]
            elif op[0] == "insert":
                data = data[:pos] + op[2] + data[pos:]
            else:
                data = data[:pos]
            continue
        data = b"\n".join(lines)
    return data


def place(t: Tree, kind: str, data: bytes) -> Callable[[], PolicySet]:
    """Writes `data` where a file of `kind` goes; returns how to load it."""
    if kind == "yaml":
        path = t.write(t.root / "bouheki.yml", data)
        return lambda: load(path)
    if kind == "main":
        t.write(t.main, data)
    elif kind == "unit":
        t.unit("nginx.service.toml", data)
    else:
        t.unit("nginx.service.toml", POLICY_EXAMPLE)
        t.unit("nginx.service.d/override.toml", data, directory=1)
    return t.load


@FUZZ
@given(
    kind=st.sampled_from(["unit", "dropin", "main", "yaml"]),
    pick=st.integers(0, 100),
    ops=st.lists(MUTATION, min_size=1, max_size=6),
)
def test_mutated_valid_files(kind: str, pick: int, ops: list[tuple[Any, ...]]) -> None:
    corpus = CORPUS["unit" if kind == "dropin" else kind]
    data = mutate(corpus[pick % len(corpus)], ops)
    with tree() as t:
        check_load(place(t, kind, data), t.bounds)


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_corpus_loads_unmutated(kind: str) -> None:
    # Mutations only mean something if the files they start from are valid.
    for data in CORPUS[kind]:
        with tree() as t:
            assert check_load(place(t, kind, data), t.bounds) is not None, data[:200]


# ---------------------------------------------------------------------------
# Bounded time and odd files


@pytest.mark.parametrize(
    "name, data",
    [
        ("billion laughs", billion_laughs(9)),
        ("wide laughs", billion_laughs(4, width=400)),
        ("self reference", b"a: &a [*a, *a, *a]\nnetwork: {mode: block}\n"),
        ("unclosed flow", b"a: " + b"[" * 100_000),
        ("block nesting", b"".join(b" " * i + b"- \n" for i in range(2000))),
        ("many keys", b"".join(b"k%d: 1\n" % i for i in range(26_000))),
        ("long list", b"a: [" + b"x, " * 1_000_000 + b"]\n"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_yaml_bombs_are_refused_quickly(name: str, data: bytes) -> None:
    with tree() as t:
        path = t.write(t.root / "bouheki.yml", data)
        assert check_load(lambda: load(path), t.bounds) is None, name


@pytest.mark.parametrize(
    "name, data, loads",
    [
        ("dotted key", ".".join(["a"] * 20_000) + " = 1\n", False),  # was ~6 s: quadratic
        ("dotted header", "[" + ".".join(["a"] * 20_000) + "]\n", False),
        ("inline dotted key", "a = {" + ".".join(['"a"'] * 20_000) + " = 1}\n", False),
        ("nested tables", "".join(f"[{'.'.join(['a'] * i)}]\n" for i in range(1, 300)), False),
        ("deep arrays", "a = " + "[" * 100_000 + "]" * 100_000 + "\n", False),
        ("long array", "[network]\ndeny = [" + '"10.0.0.1", ' * 20_000 + "]\n", True),
        ("many rules", '[[rule]]\naction = "allow"\n' * 10_000, False),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_large_toml_is_handled_quickly(name: str, data: str, loads: bool) -> None:
    with tree() as t:
        t.unit("a.service.toml", data)
        assert (check_load(t.load, t.bounds) is not None) == loads, name


def test_valid_deep_dotted_key_within_limit_loads() -> None:
    # The quadratic-key guard must not refuse what a policy does write.
    with tree() as t:
        t.unit("a.service.toml", 'network . deny = ["10.0.0.1"]\n"uid".allow = [1]\n')
        assert check_load(t.load, t.bounds) is not None


def test_fifo_unit_file_does_not_hang() -> None:
    # open() of a FIFO without a writer blocks: a reload would never end.
    with tree() as t:
        fifo = t.search_dirs[1] / "units" / "a.service.toml"
        t.mkdirs(fifo.parent)
        os.mkfifo(fifo)
        t.add(fifo)
        assert check_load(t.load, t.bounds) is None


@contextmanager
def address_space_limit(extra: int) -> Iterator[None]:
    """At most `extra` more bytes of address space: a regression below must
    end in MemoryError, not in the OOM killer picking a process on the box."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def test_endless_device_unit_file_is_refused() -> None:
    # A symlink to /dev/zero used to be read until memory ran out (the
    # signal-based time limit cannot stop a read() that never returns).
    with tree() as t:
        link = t.search_dirs[2] / "units" / "a.service.toml"
        t.mkdirs(link.parent)
        link.symlink_to("/dev/zero")
        t.add(link)
        with address_space_limit(1 << 30):
            assert check_load(t.load, t.bounds) is None


def test_dev_null_main_file_is_empty() -> None:
    ps = check_load(lambda: load_policy_set(os.devnull, []), {os.devnull: 0})
    assert ps is not None and ps.host is None


def test_odd_unit_file_names() -> None:
    with tree() as t:
        units = t.search_dirs[2] / "units"
        for name in ["\n.service", "a\x1b[31m.service", "é.service", "a b.service", "x.scope~"]:
            t.write(units / f"{name}.toml", 'mode = "block"\n')
        t.write(units / ("\udcff.service.toml"), 'mode = "block"\n')  # not UTF-8 on disk
        assert check_load(t.load, t.bounds) is None


def test_too_many_policies_is_a_config_error() -> None:
    # compile_policy_set() refused these with a plain ValueError.
    with tree() as t:
        t.write(t.main, '[host]\nmode = "block"\n')
        for i in range(MAX_POLICIES):
            t.unit(f"u{i:04}.service.toml", 'mode = "block"\n')
        assert check_load(t.load, t.bounds) is None
        (t.search_dirs[2] / "units" / "u0000.service.toml").unlink()
        assert check_load(t.load, t.bounds) is not None
