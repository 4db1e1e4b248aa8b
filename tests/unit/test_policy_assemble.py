"""A whole PolicySet -> tables, ids and scopes; requirements; values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bouheki.common.units import check_unit_name, unit_glob
from bouheki.config.loader import load_policy_set
from bouheki.policy.assemble import (
    ScopeEntry,
    assign_ids,
    compile_policy_set,
    policy_set_requirements,
)
from bouheki.policy.env import Environment, Requirements
from bouheki.policy.policyset import HOST_POLICY_NAME
from bouheki.policy.tables import HOST_POLICY, MAX_POLICIES, POLICY_LOG_ALLOWED


def make_config(tmp_path: Path, units: dict[str, str], main: str = "") -> Path:
    (tmp_path / "units").mkdir(exist_ok=True)
    for name, text in units.items():
        (tmp_path / "units" / f"{name}.toml").write_text(text)
    (tmp_path / "bouheki.toml").write_text(main)
    return tmp_path


def test_ids_scopes_and_host(tmp_path: Path) -> None:
    d = make_config(
        tmp_path,
        {
            "nginx.service": '[network]\nallow = ["example.com", "@lan"]\n',
            "getty@.service": '[exe]\nallow = ["/sbin/agetty"]\n',
        },
        "[daemon]\nlog_allowed = true\n[host]\nmode = 'monitor'\n",
    )
    ps = load_policy_set(d / "bouheki.toml", [d])
    compiled = compile_policy_set(ps, Environment())
    assert compiled.ids == {HOST_POLICY_NAME: 0, "getty@.service": 1, "nginx.service": 2}
    assert compiled.host_policy_id == 0
    assert compiled.scopes == [
        ScopeEntry("getty@.service", "getty@*.service", 1),
        ScopeEntry("nginx.service", None, 2),
    ]
    assert [t.policy_id for t in compiled.tables] == [0, 1, 2]
    assert [t.name for t in compiled.tables] == [
        HOST_POLICY_NAME,
        "getty@.service",
        "nginx.service",
    ]
    assert all(t.flags & POLICY_LOG_ALLOWED for t in compiled.tables)
    # unresolved names, sets and executables are warnings, not errors
    assert len(compiled.warnings) == 3
    assert policy_set_requirements(ps) == Requirements(
        names=frozenset({"example.com"}),
        sets=frozenset({"lan"}),
        exes=frozenset({"/sbin/agetty"}),
    )


def test_ids_are_stable_across_reloads(tmp_path: Path) -> None:
    d = make_config(tmp_path, {"a.service": "mode = 'block'\n", "b.service": "mode = 'block'\n"})
    first = compile_policy_set(load_policy_set(d / "bouheki.toml", [d]), Environment())
    assert first.ids == {"a.service": 1, "b.service": 2}  # 0 is the host's
    (d / "units" / "a.service.toml").unlink()
    (d / "units" / "c.service.toml").write_text("mode = 'block'\n")
    second = compile_policy_set(load_policy_set(d / "bouheki.toml", [d]), Environment(), first.ids)
    # b keeps 2; c gets a never-used id rather than a's old counters
    assert second.ids == {"b.service": 2, "c.service": 3}


def test_assign_ids() -> None:
    assert assign_ids(["x", "y"]) == {"x": 1, "y": 2}
    assert assign_ids(["y", "z"], {"x": 1, "y": 2}) == {"y": 2, "z": 3}
    full = {f"p{i}": i for i in range(1, MAX_POLICIES)}
    names = [f"p{i}" for i in range(2, MAX_POLICIES)] + ["new"]
    assert assign_ids(names, full)["new"] == 1  # all ids used once: reuse
    with pytest.raises(ValueError, match="at most"):
        assign_ids(f"n{i}" for i in range(MAX_POLICIES))
    assert len(assign_ids([f"n{i}" for i in range(MAX_POLICIES)], host="n7")) == MAX_POLICIES


def test_the_host_policy_has_its_reserved_id() -> None:
    """HOST_POLICY is the host's (the hooks read its slot: bh_scope): a
    host policy takes it even from a unit that held it (as an older daemon
    may have assigned), and no other policy ever gets it."""
    assert assign_ids(["h", "a"], host="h") == {"h": HOST_POLICY, "a": 1}
    moved = assign_ids(["a", "h"], {"a": HOST_POLICY, "h": 5}, host="h")
    assert moved["h"] == HOST_POLICY and moved["a"] not in (HOST_POLICY, 5)
    assert HOST_POLICY not in assign_ids(["a", "b"], {"a": HOST_POLICY}).values()


@pytest.mark.parametrize(
    ("unit", "glob"),
    [
        ("nginx.service", None),
        ("docker-*.scope", "docker-*.scope"),
        ("getty@.service", "getty@*.service"),
        ("getty@tty1.service", None),
        ("a" * 247 + ".service", None),  # systemd's longest: 255 bytes
        ("x" * 32 + "*" + "y" * 26 + ".scope", "x" * 32 + "*" + "y" * 26 + ".scope"),
    ],
)
def test_unit_glob(unit: str, glob: str | None) -> None:
    assert check_unit_name(unit) is None
    assert unit_glob(unit) == glob


@pytest.mark.parametrize(
    "unit",
    [
        *("", ".service", "x.timer", "x.device", "a/b.service", "a" * 256 + ".service"),
        # Patterns the kernel cannot match at cgroup creation are refused.
        *("machine-[ab].slice", "a?.service", "a*b*.service", "x" * 33 + "*.service"),
        "a" * 248 + ".service",
    ],
)
def test_check_unit_name_rejects(unit: str) -> None:
    assert check_unit_name(unit) is not None
