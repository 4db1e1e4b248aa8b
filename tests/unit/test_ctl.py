"""bouhekictl as a user runs it: a subprocess against a private bus served with a fake engine."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_bus_support import PROBLEMS, PYTHON, SRC, PrivateBus, ServerThread, run_ctl

from bouheki.bus import names
from bouheki.common.api import ConfigInvalid, EngineError


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    private = PrivateBus()
    yield private
    private.close()


@pytest.fixture(scope="module")
def module_server(bus: PrivateBus) -> Iterator[ServerThread]:
    server = ServerThread(bus.address, properties_interval=0.05)
    yield server
    server.close()


@pytest.fixture
def server(module_server: ServerThread) -> ServerThread:
    module_server.call(module_server.engine.reset)
    return module_server


def test_status_table_and_json(bus: PrivateBus, server: ServerThread) -> None:
    table = run_ctl(bus, "status")
    assert table.returncode == 0, table.stderr
    assert "Policy generation: 1" in table.stdout
    assert "Loaded at:         2023-11-14 22:13:20 UTC" in table.stdout
    as_json = run_ctl(bus, "status", "--json")
    assert json.loads(as_json.stdout) == {
        "version": "0.1.0-test",
        "generation": 1,
        "loaded_at_usec": 1_700_000_000_000_001,
        "mode_summary": "2 policies: 1 block, 1 monitor",
        "blocked": 5,
        "would_block": 2,
        "suppressed_signals": 0,
    }


def test_policies_table(bus: PrivateBus, server: ServerThread) -> None:
    result = run_ctl(bus, "policies")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["POLICY", "MODE", "UNITS", "RULES", "CGROUPS", "FILES"]
    assert lines[2].split()[:4] == ["containers", "monitor", "docker-*.scope,", "machine.slice"]
    assert "example.com  93.184.216.34" in result.stdout
    as_json = json.loads(run_ctl(bus, "--json", "policies").stdout)
    assert sorted(as_json[0]) == [
        "cgroups",
        "files",
        "mode",
        "name",
        "names",
        "rule_count",
        "units",
    ]


def test_stats_json_keys_are_stable(bus: PrivateBus, server: ServerThread) -> None:
    result = run_ctl(bus, "stats", "--json")
    data = json.loads(result.stdout)
    assert sorted(data) == [
        "allowed", "blocked", "checks", "events", "events_lost", "events_suppressed",
        "generation", "last_reload_ok", "last_reload_usec", "names_resolved",
        "names_unresolved", "policies", "reloads", "reloads_failed", "units", "would_block",
    ]  # fmt: skip
    assert sorted(data["policies"][0]["rules"][0]) == [
        "blocked", "hits", "index", "origin", "would_block",
    ]  # fmt: skip
    table = run_ctl(bus, "stats").stdout
    assert "nginx.service     1  /etc/bouheki/units/nginx.service.toml:7    10        5" in table


def test_explain_passes_the_query_and_shows_the_origin(
    bus: PrivateBus, server: ServerThread
) -> None:
    result = run_ctl(
        bus, "explain", "--unit", "nginx.service", "--comm", "curl", "--exe", "/usr/bin/curl",
        "--uid", "33", "--gid", "33", "--to", "10.0.1.71:443", "--proto", "udp",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Verdict: blocked",
        "Policy:  nginx.service",
        "Rule:    #1 at /etc/bouheki/units/nginx.service.toml:7",
        '         deny = ["10.0.1.71"]',
        "Reason:  10.0.1.71/32 matches network.deny (longest prefix)",
    ]
    (query,) = server.engine.queries
    assert (query.unit, query.comm, query.exe, query.uid, query.gid) == (
        "nginx.service", "curl", "/usr/bin/curl", 33, 33,
    )  # fmt: skip
    assert (query.address, query.port, query.protocol) == ("10.0.1.71", 443, "udp")


def test_explain_ipv6_without_a_port(bus: PrivateBus, server: ServerThread) -> None:
    result = run_ctl(bus, "--json", "explain", "--to", "2001:db8::1")
    assert json.loads(result.stdout)["verdict"] == "allowed"
    (query,) = server.engine.queries
    assert (query.address, query.port, query.unit, query.exe) == ("2001:db8::1", None, None, None)


def test_explain_bad_request_exits_2(bus: PrivateBus, server: ServerThread) -> None:
    result = run_ctl(bus, "--json", "explain", "--to", "bogus:80")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["dbus_error"] == names.ERROR_BAD_REQUEST
    assert "'bogus' is not an IPv4 or IPv6 address" in result.stderr


def test_reload_prints_result_and_warnings(bus: PrivateBus, server: ServerThread) -> None:
    result = run_ctl(bus, "reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Reloaded: generation 2 with 2 policies in 12 ms"
    assert result.stderr.strip() == "warning: units/old.toml: legacy key"


def test_reload_refused_lists_every_problem_and_exits_5(
    bus: PrivateBus, server: ServerThread
) -> None:
    server.engine.reload_error = ConfigInvalid(PROBLEMS)
    result = run_ctl(bus, "reload")
    assert result.returncode == 5
    assert "/etc/bouheki/units/nginx.service.toml:3: unknown key 'alow'" in result.stderr
    assert "/etc/bouheki/units/db.service.toml: not valid TOML" in result.stderr
    error = json.loads(run_ctl(bus, "--json", "reload").stdout)["error"]
    assert error["code"] == 5
    assert error["problems"] == [str(p) for p in PROBLEMS]


def test_reload_engine_failure_exits_1(bus: PrivateBus, server: ServerThread) -> None:
    server.engine.reload_error = EngineError("cannot attach programs: Operation not permitted")
    result = run_ctl(bus, "reload")
    assert result.returncode == 1
    assert "cannot attach programs: Operation not permitted" in result.stderr


def test_check_config_through_the_daemon(bus: PrivateBus, server: ServerThread) -> None:
    ok = run_ctl(bus, "check-config", "--daemon")
    assert ok.returncode == 0
    assert ok.stdout.splitlines() == ["warning: no [host] policy", "configuration OK: 2 policies"]
    bad = run_ctl(bus, "check-config", "--daemon", "/etc/bouheki/bad")
    assert bad.returncode == 5
    assert bad.stdout.splitlines()[-1] == "configuration invalid: 2 problems"


def test_not_running_exits_3() -> None:
    empty = PrivateBus()  # a bus on which nothing owns the name
    try:
        result = run_ctl(empty, "status")
        assert result.returncode == 3
        assert "bouheki is not running" in result.stderr
    finally:
        empty.close()
    unreachable = run_ctl(empty, "--address", "unix:path=/nonexistent/bus", "stats")
    assert unreachable.returncode == 3
    assert "cannot connect to the bus at unix:path=/nonexistent/bus" in unreachable.stderr


def test_monitor_prints_events_and_reloads(bus: PrivateBus, server: ServerThread) -> None:
    proc = subprocess.Popen(
        [PYTHON, "-m", "bouheki.ctl", "monitor", "--count", "2"],
        env=bus.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert proc.stderr is not None
        assert "Following org.bouheki.Bouheki1" in proc.stderr.readline()
        server.call(lambda: server.engine.fire_blocked(1))
        server.run(server.engine.reload())
        server.call(
            lambda: server.engine.fire_blocked(1, daddr="2001:db8::1", dport=53, protocol="udp")
        )
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert "blocked nginx.service: curl[1000] uid=33 gid=33" in lines[0]
    assert "-> 10.0.1.71:443/tcp policy=nginx.service rule=1" in lines[0]
    assert lines[1].endswith("reloaded: generation 2")
    assert "-> [2001:db8::1]:53/udp" in lines[2]


def test_help_teaches_with_examples() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "bouheki.ctl", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC)},  # no bus address: --help needs none
    )
    assert result.returncode == 0
    for text in ("examples:", "bouhekictl explain --unit", "exit status:", "BOUHEKI_BUS_ADDRESS"):
        assert text in result.stdout


def _families(text: str, fmt: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {labels: value}, as a Prometheus server parses the exposition."""
    if fmt == "openmetrics":
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.mark.parametrize("fmt", ["prometheus", "openmetrics"])
def test_stats_as_metrics(bus: PrivateBus, server: ServerThread, fmt: str) -> None:
    pytest.importorskip("prometheus_client")
    result = run_ctl(bus, "stats", f"--format={fmt}")
    assert result.returncode == 0, result.stderr
    m = _families(result.stdout, fmt)
    assert m["bouheki_up"] == {(): 1.0}
    assert m["bouheki_checks_total"] == {(): 100.0}
    assert m["bouheki_connections_total"][(("verdict", "blocked"),)] == 5.0
    assert (
        m["bouheki_policy_connections_total"][(("policy", "nginx.service"), ("verdict", "allowed"))]
        == 55.0
    )
    assert (
        m["bouheki_unit_connections_total"][
            (("unit", "docker-1.scope"), ("verdict", "would_block"))
        ]
        == 2.0
    )
    assert m["bouheki_policy_generation"] == {(): 3.0}
    assert m["bouheki_last_reload_success"] == {(): 0.0}
    assert m["bouheki_last_reload_timestamp_seconds"] == {(): 1_700_000_000.0}
    assert m["bouheki_reload_failures_total"] == {(): 1.0}
    assert m["bouheki_domain_names"][(("state", "unresolved"),)] == 1.0
    assert m["bouheki_events_suppressed_total"] == {(): 1.0}


def test_metrics_file_is_replaced_whole_and_says_when_the_daemon_is_down(
    bus: PrivateBus, server: ServerThread, tmp_path: Path
) -> None:
    pytest.importorskip("prometheus_client")
    out = tmp_path / "bouheki.prom"
    result = run_ctl(bus, "stats", "--format=prometheus", "--output", str(out))
    assert result.returncode == 0 and result.stdout == ""
    assert _families(out.read_text(), "prometheus")["bouheki_up"] == {(): 1.0}
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bouheki.prom"]  # no temporary left
    empty = PrivateBus()  # a bus where no bouheki runs
    try:
        down = run_ctl(empty, "stats", "--format=prometheus", "--output", str(out))
    finally:
        empty.close()
    assert down.returncode != 0
    assert _families(out.read_text(), "prometheus") == {"bouheki_up": {(): 0.0}}
