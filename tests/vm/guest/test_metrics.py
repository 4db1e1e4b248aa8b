"""The daemon's counters in Prometheus, through the tools a fleet runs:
bouheki-metrics.service writes node_exporter's textfile collector directory
and node_exporter (Debian's prometheus-node-exporter) serves them."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import labkit
import pytest
from labkit import UNITS, sh
from prometheus_client.parser import text_string_to_metric_families

TEXTFILE = Path("/var/lib/prometheus/node-exporter/bouheki.prom")
UNIT = "bh-metrics.service"


def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("bouheki_"):
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def exporter(daemon: None) -> Iterator[None]:
    sh("systemctl", "start", "prometheus-node-exporter")
    assert labkit.wait_for(
        lambda: sh("curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:9100/metrics",
                   check=False).returncode == 0, 60)  # fmt: skip
    (UNITS / f"{UNIT}.toml").write_text('[network]\ndeny = ["10.0.1.71"]\n')
    assert sh("systemctl", "reload", "bouheki", check=False, timeout=300).returncode == 0
    yield
    (UNITS / f"{UNIT}.toml").unlink()
    sh("systemctl", "reload", "bouheki", check=False, timeout=300)
    sh("systemctl", "stop", "prometheus-node-exporter", check=False)
    TEXTFILE.unlink(missing_ok=True)


def curl_in_unit(url: str) -> int:
    r = sh("systemd-run", "--quiet", "--wait", "--collect", f"--unit={UNIT}", "--",
           "curl", "-s", "-o", "/dev/null", "--max-time", "5", url, check=False)  # fmt: skip
    return r.returncode


def lost_events() -> float:
    return float(json.loads(sh("bouhekictl", "stats", "--json").stdout)["events_lost"])


def test_node_exporter_serves_the_counters(exporter: None, hosts: labkit.TestHosts) -> None:
    # The daemon lives across the suite: earlier floods may have lost events.
    lost_before = lost_events()
    assert [curl_in_unit("http://10.0.1.71/") for _ in range(3)] == [7, 7, 7]  # blocked
    assert curl_in_unit("http://10.0.1.1/") == 0
    time.sleep(1)  # the events reach the daemon
    sh("systemctl", "start", "bouheki-metrics.service")
    m = scrape()
    for name, series in m.items():
        for labels, value in series.items():
            labkit.figure(f"scrape: {name}{dict(labels) or ''} {value:g}")
    assert m["bouheki_up"] == {(): 1.0}
    policy = dict(m["bouheki_policy_connections_total"])
    assert policy[(("policy", UNIT), ("verdict", "blocked"))] == 3.0
    assert policy[(("policy", UNIT), ("verdict", "allowed"))] == 1.0
    assert m["bouheki_unit_connections_total"][(("unit", UNIT), ("verdict", "blocked"))] == 3.0
    assert m["bouheki_last_reload_success"] == {(): 1.0}
    # The same count the daemon gives over D-Bus, and none of ours lost.
    assert m["bouheki_events_lost_total"] == {(): lost_before} == {(): lost_events()}
    # The daemon stopped: the next run says so.
    sh("systemctl", "stop", "bouheki")
    try:
        r = sh("systemctl", "start", "bouheki-metrics.service", check=False)
        assert r.returncode != 0
        assert scrape() == {"bouheki_up": {(): 0.0}}
    finally:
        sh("systemctl", "reset-failed", "bouheki-metrics.service", check=False)
        sh("systemctl", "start", "bouheki", timeout=300)
