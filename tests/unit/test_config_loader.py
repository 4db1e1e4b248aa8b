"""Search directories, precedence, masking, drop-ins, the main file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bouheki.common.settings import DaemonSettings
from bouheki.config.errors import ConfigError
from bouheki.config.loader import check_config, load, load_policy_set
from bouheki.policy.model import PolicySpec
from bouheki.policy.policyset import HOST_POLICY_NAME, PolicySet


@pytest.fixture
def dirs(tmp_path: Path) -> list[Path]:
    out = [tmp_path / "usr-lib", tmp_path / "run", tmp_path / "etc"]
    for d in out:
        (d / "units").mkdir(parents=True)
    (tmp_path / "etc" / "bouheki.toml").write_text("")
    return out


def load_dirs(dirs: list[Path]) -> PolicySet:
    # An explicit main file keeps the host's /etc/bouheki out of the tests.
    return load_policy_set(main_file=dirs[2] / "bouheki.toml", search_dirs=dirs)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def units(ps: PolicySet) -> dict[str, PolicySpec]:
    return {p.name: p.spec for p in ps.units}


def deny_values(spec: PolicySpec) -> list[str]:
    return [str(v) for v in spec.network.deny.values()]


def test_later_directory_replaces_same_named_file(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", '[network]\ndeny = ["10.0.0.1"]\n')
    write(dirs[2] / "units/a.service.toml", '[network]\ndeny = ["10.0.0.2"]\n')
    write(dirs[0] / "units/b.service.toml", '[network]\ndeny = ["10.0.0.3"]\n')
    ps = load_dirs(dirs)
    assert deny_values(units(ps)["a.service"]) == ["10.0.0.2/32"]
    assert deny_values(units(ps)["b.service"]) == ["10.0.0.3/32"]
    files = {p.name: p.files for p in ps.units}
    assert files["a.service"] == (str(dirs[2] / "units/a.service.toml"),)


def test_dev_null_symlink_masks_unit_and_its_dropins(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", '[network]\ndeny = ["10.0.0.1"]\n')
    write(dirs[0] / "units/a.service.d/10-x.toml", '[network]\ndeny = ["10.0.0.9"]\n')
    os.symlink(os.devnull, dirs[1] / "units/a.service.toml")
    assert units(load_dirs(dirs)) == {}


def test_empty_file_masks(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", '[network]\ndeny = ["10.0.0.1"]\n')
    write(dirs[2] / "units/a.service.toml", "")
    assert units(load_dirs(dirs)) == {}


def test_dropins_extend_lists_and_override_scalars_in_lexical_order(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", 'mode = "block"\n[network]\ndeny = ["10.0.0.1"]\n')
    write(
        dirs[2] / "units/a.service.d/20-b.toml", 'mode = "block"\n[network]\ndeny = ["10.0.0.3"]\n'
    )
    write(
        dirs[0] / "units/a.service.d/10-a.toml",
        'mode = "monitor"\n[network]\ndeny = ["10.0.0.2"]\n',
    )
    write(
        dirs[1] / "units/a.service.d/30-c.toml",
        '[network]\nallow = ["10.0.0.0/8"]\n[[rule]]\naction = "allow"\n',
    )
    ps = load_dirs(dirs)
    spec = units(ps)["a.service"]
    assert deny_values(spec) == ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"]
    assert not spec.monitor  # 20-b overrides 10-a
    assert spec.mode is not None and spec.mode.origin.file.endswith("20-b.toml")
    assert [str(v) for v in spec.network.allow.values()] == ["10.0.0.0/8"]
    assert spec.network.allow.origin is not None
    assert spec.network.allow.origin.file.endswith("30-c.toml")
    assert spec.rules[0].origin.file.endswith("30-c.toml")
    assert [Path(f).name for f in ps.units[0].files] == [
        "a.service.toml",
        "10-a.toml",
        "20-b.toml",
        "30-c.toml",
    ]


def test_dropin_replaced_and_masked_by_name(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", '[network]\ndeny = ["10.0.0.1"]\n')
    write(dirs[0] / "units/a.service.d/10-x.toml", '[network]\ndeny = ["10.0.0.2"]\n')
    write(dirs[2] / "units/a.service.d/10-x.toml", '[network]\ndeny = ["10.0.0.3"]\n')
    write(dirs[0] / "units/a.service.d/20-y.toml", '[network]\ndeny = ["10.0.0.4"]\n')
    (dirs[1] / "units/a.service.d").mkdir()
    os.symlink(os.devnull, dirs[1] / "units/a.service.d/20-y.toml")
    spec = units(load_dirs(dirs))["a.service"]
    assert deny_values(spec) == ["10.0.0.1/32", "10.0.0.3/32"]


def test_dropins_without_unit_file(dirs: list[Path]) -> None:
    write(dirs[2] / "units/docker-*.scope.d/50-x.toml", '[network]\ndeny = ["10.0.0.1"]\n')
    ps = load_dirs(dirs)
    assert deny_values(units(ps)["docker-*.scope"]) == ["10.0.0.1/32"]
    assert ps.units[0].units == ("docker-*.scope",)


def test_other_files_are_ignored(dirs: list[Path]) -> None:
    write(dirs[0] / "units/README", "not a policy")
    write(dirs[0] / "units/a.service.toml~", "garbage = ")
    write(dirs[0] / "units/.hidden.service.toml", "garbage = ")
    write(dirs[0] / "units/a.service.d/notes.txt", "x")
    assert units(load_dirs(dirs)) == {}


def test_missing_directories_are_fine(tmp_path: Path) -> None:
    main = write(tmp_path / "bouheki.toml", "# nothing\n")
    ps = load_policy_set(main_file=main, search_dirs=[tmp_path / "nope"])
    assert ps.units == [] and ps.host is None and ps.settings == DaemonSettings()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("foo", "'foo' is not a unit name with a cgroup"),
        ("multi-user.target", "not a unit name with a cgroup"),
        ("a b.service", "characters systemd does not allow"),
    ],
)
def test_bad_unit_names(dirs: list[Path], name: str, message: str) -> None:
    path = write(dirs[0] / f"units/{name}.toml", 'mode = "block"\n')
    with pytest.raises(ConfigError) as info:
        load_dirs(dirs)
    (problem,) = info.value.problems
    assert problem.file == str(path) and problem.line == 0 and message in problem.message


@pytest.mark.parametrize(
    "name", ["nginx.service", "user.slice", "docker-*.scope", "getty@.service", "a\\x2db.mount"]
)
def test_good_unit_names(dirs: list[Path], name: str) -> None:
    write(dirs[0] / f"units/{name}.toml", 'mode = "monitor"\n')
    assert list(units(load_dirs(dirs))) == [name]


def test_errors_name_the_dropin_and_all_are_reported(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", '[network]\ndeny = ["10.0.0.1"]\n')
    bad1 = write(dirs[2] / "units/a.service.d/10-x.toml", '\n[network]\ndeny = ["10.0.0.300"]\n')
    bad2 = write(dirs[1] / "units/b.service.toml", 'mode = "enforce"\n')
    bad3 = write(dirs[1] / "units/c.service.toml", "mode = \n")
    main = write(dirs[2] / "bouheki.toml", "[daemon]\nlog_allowed = 1\n")
    with pytest.raises(ConfigError) as info:
        load_policy_set(main_file=main, search_dirs=dirs)
    problems = [str(p) for p in info.value.problems]
    assert problems == [
        f"{main}:2: daemon.log_allowed: expected true or false, got an integer",
        f"{bad1}:3: network.deny[0]: '10.0.0.300' is not an IP address, network or domain name",
        f"{bad2}:1: mode: 'enforce' is not a mode: use block or monitor",
        f"{bad3}:1: TOML syntax error: Invalid value (column 8)",
    ]
    assert str(info.value).count("\n") == 3


def test_too_many_rules_across_dropins_points_at_the_dropin(dirs: list[Path]) -> None:
    write(dirs[0] / "units/a.service.toml", '[[rule]]\naction = "allow"\n' * 60)
    dropin = write(dirs[0] / "units/a.service.d/x.toml", '[[rule]]\naction = "block"\n' * 5)
    with pytest.raises(ConfigError) as info:
        load_dirs(dirs)
    (problem,) = info.value.problems
    assert problem.file == str(dropin) and problem.line == 9
    assert "has 65 rules" in problem.message and "a.service" in problem.message


# -- the main file -------------------------------------------------------------


def test_main_file_settings_and_host_policy(tmp_path: Path) -> None:
    main = write(
        tmp_path / "bouheki.toml",
        """[daemon]
log_allowed = true
event_rate_limit = 10
event_rate_interval = 2
dns_min_ttl = 5

[host]
mode = "monitor"
[host.network]
deny = ["10.0.1.71"]
[[host.rule]]
action = "allow"
uid = [0]
""",
    )
    ps = load_policy_set(main_file=main, search_dirs=[])
    assert ps.settings == DaemonSettings(
        log_allowed=True, event_rate_limit=10, event_rate_interval=2.0, dns_min_ttl=5
    )
    assert ps.host is not None and ps.host.name == HOST_POLICY_NAME
    spec = ps.host.spec
    assert spec.monitor and deny_values(spec) == ["10.0.1.71/32"]
    assert spec.rules[0].origin.line == 11 and spec.rules[0].origin.text == "host.rule[0]"
    assert spec.network.deny.origin is not None and spec.network.deny.origin.line == 10
    assert ps.files == [str(main)]


def test_default_main_file_may_be_absent_but_a_named_one_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_set(main_file=tmp_path / "missing.toml", search_dirs=[])
    assert "cannot read" in str(info.value)


def test_load_dispatches_on_suffix(tmp_path: Path) -> None:
    legacy = write(tmp_path / "x.yaml", "network:\n  mode: block\n  target: host\n")
    ps = load(legacy)
    assert ps.host is not None and ps.units == []
    main = write(tmp_path / "x.toml", "[host]\nmode = 'block'\n")
    ps = load(main, search_dirs=[])
    assert ps.host is not None and not ps.host.spec.monitor


def test_check_config_reports_instead_of_raising(tmp_path: Path) -> None:
    main = write(tmp_path / "bouheki.toml", "[host]\nmode = 'block'\n")
    bad = write(tmp_path / "units/a.service.toml", "mode = 'x'\n")
    report = check_config(main, search_dirs=[tmp_path])
    assert not report.ok and report.policies == 0
    (problem,) = report.problems
    file, line, message = problem  # takes apart like a tuple
    assert (file, line) == (str(bad), 1) and "not a mode" in message
    bad.unlink()
    report = check_config(main, search_dirs=[tmp_path])
    assert report.ok and report.policies == 1 and report.problems == []
