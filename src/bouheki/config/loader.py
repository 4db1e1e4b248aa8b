"""Finding and loading the whole configuration (doc/DESIGN.md section 2).

The main file holds [daemon] settings and an optional [host] policy. Unit
policies are units/<unit>.toml plus drop-ins units/<unit>.d/*.toml, found in
the search directories with systemd's rules: a file in a later directory
replaces the same-named file of an earlier one; a file that is empty or a
symlink to /dev/null masks (for a unit file: the whole unit policy, its
drop-ins included); drop-ins apply in lexical order of their file names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional, Union

from bouheki.common.api import CheckResult
from bouheki.common.gcpause import without_gc
from bouheki.common.settings import DaemonSettings
from bouheki.common.units import check_unit_name
from bouheki.config.document import Doc
from bouheki.config.errors import ConfigError, Report
from bouheki.config.policy_toml import parse_policy
from bouheki.config.settings import parse_settings
from bouheki.config.toml_file import parse_toml, read_toml
from bouheki.policy.lower import rule_origins
from bouheki.policy.model import PolicySpec
from bouheki.policy.policyset import HOST_POLICY_NAME, NamedPolicy, PolicySet
from bouheki.policy.tables import MAX_POLICIES, MAX_RULES

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_MAIN_FILE = "/etc/bouheki/bouheki.toml"
DEFAULT_SEARCH_DIRS = ("/usr/lib/bouheki", "/run/bouheki", "/etc/bouheki")
UNITS_DIR = "units"
MAIN_KEYS = ("daemon", "host")
_SUFFIX = ".toml"
_DROPIN_DIR_SUFFIX = ".d"


def is_masked(path: str) -> bool:
    """systemd's masking: a symlink to /dev/null, or an empty file."""
    if os.path.realpath(path) == os.devnull:
        return True
    try:
        return os.path.isfile(path) and os.path.getsize(path) == 0
    except OSError:
        return False


def _listdir(path: str, report: Report) -> list[str]:
    try:
        return sorted(e for e in os.listdir(path) if not e.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as e:
        report.error(path, 0, f"cannot list directory: {e.strerror or e}")
        return []


def find_unit_files(
    search_dirs: Sequence[PathLike], report: Report
) -> dict[str, tuple[Optional[str], list[str]]]:
    """unit -> (its unit file or None, its drop-ins in the order they apply).

    Masked files are left out; a masked unit file leaves the unit out.
    """
    mains: dict[str, str] = {}
    dropins: dict[str, dict[str, str]] = {}
    for directory in search_dirs:
        units = os.path.join(os.fspath(directory), UNITS_DIR)
        if not os.path.isdir(units):
            continue
        for entry in _listdir(units, report):
            full = os.path.join(units, entry)
            if os.path.isdir(full):
                if entry.endswith(_DROPIN_DIR_SUFFIX):
                    found = dropins.setdefault(entry[: -len(_DROPIN_DIR_SUFFIX)], {})
                    for name in _listdir(full, report):
                        if name.endswith(_SUFFIX) and not os.path.isdir(os.path.join(full, name)):
                            found[name] = os.path.join(full, name)
            elif entry.endswith(_SUFFIX):
                mains[entry[: -len(_SUFFIX)]] = full
    out: dict[str, tuple[Optional[str], list[str]]] = {}
    for unit in sorted(set(mains) | set(dropins)):
        main = mains.get(unit)
        if main is not None and is_masked(main):
            continue
        files = [p for _, p in sorted(dropins.get(unit, {}).items()) if not is_masked(p)]
        if main is None and not files:
            continue
        out[unit] = (main, files)
    return out


def _read_policy_file(path: str, report: Report) -> Optional[PolicySpec]:
    parsed = read_toml(path, report)
    if parsed is None:
        return None
    data, lines = parsed
    return parse_policy(Doc(path, lines, report), data)


def parse_policy_text(text: str, file: str = "<policy>") -> PolicySpec:
    """One policy from TOML text (tests, tools, `check-config` of a snippet).
    Raises ConfigError listing every problem."""
    report = Report()
    parsed = parse_toml(file, text, report)
    spec = parse_policy(Doc(file, parsed[1], report), parsed[0]) if parsed else None
    if spec is not None:
        check_rule_count(NamedPolicy(file, (), spec, (file,)), report)
    report.raise_if_errors()
    assert spec is not None
    return spec


def load_policy_file(path: PathLike) -> PolicySpec:
    """One unit policy file (or drop-in) on its own. Raises ConfigError."""
    report = Report()
    name = os.fspath(path)
    spec = _read_policy_file(name, report)
    if spec is not None:
        check_rule_count(NamedPolicy(name, (), spec, (name,)), report)
    report.raise_if_errors()
    assert spec is not None
    return spec


def check_rule_count(policy: NamedPolicy, report: Report) -> None:
    """Reports a policy lowering to more rules than the kernel holds, at the
    first rule over the limit."""
    origins = rule_origins(policy.spec)
    if len(origins) <= MAX_RULES:
        return
    first = origins[MAX_RULES]
    report.error(
        first.file,
        first.line,
        f"too many rules: the policy for {policy.name} has {len(origins)} rules "
        f"([[rule]] entries plus those of the simple form), at most {MAX_RULES} are "
        f"allowed; {first.text} is rule {MAX_RULES + 1}",
    )


def check_policy_count(
    host: Optional[NamedPolicy], units: list[NamedPolicy], report: Report
) -> None:
    """Reports more policies than the kernel holds. Checked while loading
    because compile_policy_set() would otherwise refuse a configuration that
    loaded, with a plain ValueError the daemon does not expect."""
    # Id HOST_POLICY is the host's, whether there is a host policy or not.
    most = MAX_POLICIES - 1
    if len(units) <= most:
        return
    first = units[most]
    report.error(
        first.files[0],
        0,
        f"too many unit policies: {len(units)}, at most {most} are supported (and the "
        f"host's); {first.name} is unit policy {most + 1}",
    )


def load_unit_policies(search_dirs: Sequence[PathLike], report: Report) -> list[NamedPolicy]:
    policies: list[NamedPolicy] = []
    for unit, (main, dropins) in find_unit_files(search_dirs, report).items():
        files = ([main] if main else []) + dropins
        problem = check_unit_name(unit)
        if problem:
            report.error(files[0], 0, problem)
            continue
        spec: Optional[PolicySpec] = None
        complete = True
        for path in files:
            part = _read_policy_file(path, report)
            if part is None:
                complete = False
            elif spec is None:
                spec = part
            else:
                spec = spec.merged(part)
        if spec is None or not complete:
            continue
        policy = NamedPolicy(unit, (unit,), spec, tuple(files))
        check_rule_count(policy, report)
        policies.append(policy)
    return policies


def load_main_file(
    path: str, report: Report, required: bool
) -> tuple[DaemonSettings, Optional[NamedPolicy]]:
    if not required and not os.path.exists(path):
        return DaemonSettings(), None
    parsed = read_toml(path, report)
    if parsed is None:
        return DaemonSettings(), None
    data, lines = parsed
    doc = Doc(path, lines, report)
    settings = DaemonSettings()
    host: Optional[NamedPolicy] = None
    for key, value in data.items():
        if key not in MAIN_KEYS:
            doc.unknown_key((key,), MAIN_KEYS)
        elif key == "daemon":
            settings = parse_settings(doc, value)
        elif not isinstance(value, dict):
            doc.error((key,), "expected a table ([host]) holding a policy")
        else:
            host = NamedPolicy(HOST_POLICY_NAME, (), parse_policy(doc, value, ("host",)), (path,))
            check_rule_count(host, report)
    return settings, host


def load_policy_set(
    main_file: Optional[PathLike] = None,
    search_dirs: Sequence[PathLike] = DEFAULT_SEARCH_DIRS,
) -> PolicySet:
    """The main file (default /etc/bouheki/bouheki.toml, which may be absent;
    a file named explicitly must exist) and every unit policy.

    Raises ConfigError listing every problem found; nothing is partially
    loaded.
    """
    report = Report()
    path = DEFAULT_MAIN_FILE if main_file is None else os.fspath(main_file)
    settings, host = load_main_file(path, report, required=main_file is not None)
    units = load_unit_policies(search_dirs, report)
    check_policy_count(host, units, report)
    report.raise_if_errors()
    files = [path] if os.path.exists(path) else []
    for policy in units:
        files += policy.files
    return PolicySet(host, units, settings, report.warnings, files)


@without_gc
def load(
    config: Optional[PathLike] = None, search_dirs: Sequence[PathLike] = DEFAULT_SEARCH_DIRS
) -> PolicySet:
    """`bouheki --config FILE`: a .yaml/.yml file is the legacy format (and
    the only file read); anything else is the main TOML file."""
    if config is not None and os.fspath(config).endswith((".yaml", ".yml")):
        # Only here: PyYAML is needed for the legacy format alone (a CI
        # check of TOML files runs without it).
        from bouheki.config.legacy_yaml import load_legacy_yaml

        return load_legacy_yaml(os.fspath(config))
    return load_policy_set(config, search_dirs)


def check_config(
    config: Optional[PathLike] = None, search_dirs: Sequence[PathLike] = DEFAULT_SEARCH_DIRS
) -> CheckResult:
    """Loads like the daemon would and reports instead of raising. Names,
    address sets and executables are not resolved: the daemon does that."""
    try:
        policy_set = load(config, search_dirs)
    except ConfigError as e:
        return CheckResult(False, list(e.problems), [str(w) for w in e.warnings])
    warnings = [str(w) for w in policy_set.warnings]
    return CheckResult(True, [], warnings, len(policy_set.policies()))
