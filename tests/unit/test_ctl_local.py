"""bouhekictl without a bus: local check-config, argument parsing, rendering."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from typing import Any, Optional

import pytest
from test_bus_support import PROBLEMS, PYTHON, SRC

from bouheki.common.api import CheckResult, ConfigInvalid
from bouheki.ctl import render
from bouheki.ctl.check import LOADER_MODULE
from bouheki.ctl.main import main
from bouheki.ctl.parser import build_parser, parse_destination
from bouheki.ctl.table import format_table


def install_loader(monkeypatch: pytest.MonkeyPatch, check_config: Any) -> list[Optional[str]]:
    """A stand-in bouheki.config.loader whose check_config is `check_config`."""
    calls: list[Optional[str]] = []

    def recording(path: Optional[str]) -> Any:
        calls.append(path)
        return check_config(path)

    module = types.ModuleType(LOADER_MODULE)
    module.check_config = recording  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, LOADER_MODULE, module)
    return calls


def test_check_config_valid_runs_locally(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOUHEKI_BUS_ADDRESS", "unix:path=/nonexistent")  # no bus is touched
    calls = install_loader(
        monkeypatch, lambda path: CheckResult(ok=True, warnings=["unused drop-in"], policies=1)
    )
    assert main(["check-config", "/etc/bouheki"]) == 0
    assert calls == ["/etc/bouheki"]
    assert capsys.readouterr().out.splitlines() == [
        "warning: unused drop-in",
        "configuration OK: 1 policy",
    ]


def test_check_config_default_path_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_loader(monkeypatch, lambda path: CheckResult(ok=True))
    assert main(["check-config"]) == 0
    assert calls == [None]


def test_check_config_problems_exit_5_with_file_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_loader(monkeypatch, lambda path: CheckResult(ok=False, problems=PROBLEMS))
    assert main(["check-config", "x.toml"]) == 5
    assert capsys.readouterr().out.splitlines() == [
        "/etc/bouheki/units/nginx.service.toml:3: unknown key 'alow'",
        "/etc/bouheki/units/db.service.toml: not valid TOML",
        "configuration invalid: 2 problems",
    ]


def test_check_config_json_matches_the_daemon_shape(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def raises(path: Optional[str]) -> CheckResult:
        raise ConfigInvalid(PROBLEMS[:1])

    install_loader(monkeypatch, raises)
    assert main(["check-config", "--json", "x.toml"]) == 5
    assert json.loads(capsys.readouterr().out) == {
        "ok": False,
        "problems": [
            {"file": PROBLEMS[0].file, "line": 3, "message": "unknown key 'alow'"},
        ],
        "warnings": [],
        "policies": 0,
    }


def test_check_config_unreadable_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def raises(path: Optional[str]) -> CheckResult:
        raise FileNotFoundError(2, "No such file or directory", path)

    install_loader(monkeypatch, raises)
    assert main(["check-config", "/nope.toml"]) == 5
    assert "cannot read /nope.toml: No such file or directory" in capsys.readouterr().err


def test_check_config_without_a_loader_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, LOADER_MODULE, None)  # import fails
    assert main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert "check-config needs the configuration loader (bouheki.config.loader" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.1.71:443", ("10.0.1.71", 443)),
        ("10.0.1.71", ("10.0.1.71", None)),
        ("[2001:db8::1]:53", ("2001:db8::1", 53)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("::ffff:10.0.0.1", ("::ffff:10.0.0.1", None)),
    ],
)
def test_destinations(text: str, expected: tuple[str, Optional[int]]) -> None:
    assert parse_destination(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.1:http", "10.0.0.1:65536", ":443", "[::1", "[::1]x"])
def test_bad_destinations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_destination(text)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--to", "10.0.0.1:99999"])
    assert exit_info.value.code == 2
    assert "bad port" in capsys.readouterr().err


def test_common_options_work_before_and_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["--json", "--bus", "session", "stats"]).json is True
    after = parser.parse_args(["stats", "--json", "--timeout", "5"])
    assert (after.json, after.timeout, after.bus) == (True, 5.0, None)


def test_table_aligns_numbers_right() -> None:
    assert format_table(["NAME", "HITS"], [("a", 5), ("long-name", 1234)]).splitlines() == [
        "NAME       HITS",
        "a             5",
        "long-name  1234",
    ]


def test_explanation_without_a_policy() -> None:
    text = render.explanation(
        {
            "verdict": "allowed",
            "policy": "",
            "rule": -1,
            "origin_file": "",
            "origin_line": 0,
            "origin_text": "",
            "reason": "no policy covers the process",
        }
    )
    assert text.splitlines()[1:3] == ["Policy:  none applies", "Rule:    none"]


def test_never_loaded() -> None:
    assert render.format_usec(0) == "never"


def test_check_config_works_without_the_dbus_library() -> None:
    # As the man page promises: a build host without dbus-next can still check.
    script = (
        "import sys, types\n"
        "sys.modules['dbus_next'] = sys.modules['dbus_fast'] = None\n"
        "from bouheki.common.api import CheckResult\n"
        f"loader = types.ModuleType({LOADER_MODULE!r})\n"
        "loader.check_config = lambda path: CheckResult(ok=True, policies=3)\n"
        f"sys.modules[{LOADER_MODULE!r}] = loader\n"
        "from bouheki.ctl.main import main\n"
        "code = main(['check-config'])\n"
        "assert 'bouheki.dbuslib' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "configuration OK: 3 policies\n"


def test_check_config_of_a_tree_as_ci_would(tmp_path: Any) -> None:
    """--root: a checkout's etc/bouheki and usr/lib/bouheki, with the real
    loader, no daemon, no D-Bus library and no PyYAML."""
    units = tmp_path / "etc" / "bouheki" / "units"
    units.mkdir(parents=True)
    (tmp_path / "etc" / "bouheki" / "bouheki.toml").write_text("[daemon]\n")
    (units / "nginx.service.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    vendor = tmp_path / "usr" / "lib" / "bouheki" / "units"
    vendor.mkdir(parents=True)
    (vendor / "bouheki.service.toml").write_text('[[rule]]\naction = "allow"\nports = [53]\n')

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        script = (
            "import sys\n"
            "sys.modules['dbus_next'] = sys.modules['dbus_fast'] = sys.modules['yaml'] = None\n"
            "from bouheki.ctl.main import main\n"
            f"sys.exit(main({list(args)!r}))\n"
        )
        return subprocess.run(
            [PYTHON, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}
        )

    ok = check("check-config", "--root", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "configuration OK: 2 policies\n"
    (units / "web.service.toml").write_text("[network]\ndeny = [\n")
    bad = check("--json", "check-config", "--root", str(tmp_path))
    assert bad.returncode == 5
    (problem,) = json.loads(bad.stdout)["problems"]
    assert problem["file"] == str(units / "web.service.toml") and problem["line"] == 3  # at its end
    # --units-dir: the directory that holds units/, as bouheki --units-dir takes it.
    only = check("check-config", "--units-dir", str(tmp_path / "usr" / "lib" / "bouheki"))
    assert only.returncode == 0 and only.stdout == "configuration OK: 1 policy\n", only.stderr
    missing = check("check-config", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_explain_offline_answers_from_the_files(tmp_path: Any) -> None:
    """The same shape and answer as the daemon's explain, from a tree."""
    units = tmp_path / "etc" / "bouheki" / "units"
    units.mkdir(parents=True)
    (units / "nginx.service.toml").write_text(
        '[network]\nallow = ["10.0.1.0/24"]\ndeny = ["10.0.1.71"]\n'
    )

    def explain(*args: str) -> dict[str, Any]:
        r = subprocess.run(
            [PYTHON, "-m", "bouheki.ctl", "--json", "explain", "--offline", "--root",
             str(tmp_path), *args],
            capture_output=True, text=True, env={"PYTHONPATH": str(SRC)},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout))

    blocked = explain("--unit", "nginx.service", "--to", "10.0.1.71:80")
    assert blocked["verdict"] == "blocked" and blocked["policy"] == "nginx.service"
    assert blocked["origin_file"] == str(units / "nginx.service.toml")
    assert blocked["origin_line"] == 3
    assert explain("--unit", "nginx.service", "--to", "10.0.1.1:443")["verdict"] == "allowed"
    assert explain("--unit", "other.service", "--to", "10.0.1.71:80")["policy"] == ""
    assert sorted(blocked) == [
        "origin_file", "origin_line", "origin_text", "policy", "reason", "rule", "verdict",
    ]  # fmt: skip
