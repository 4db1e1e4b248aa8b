"""bouhekictl stats --format=openmetrics|prometheus: the daemon's counters as
Prometheus metrics, through prometheus_client (python3-prometheus-client).

For node_exporter's textfile collector (--output into its directory, the
file replaced by a rename, by bouheki-metrics.service every 15 s) or any
scraper that reads a command's output. No port of our own: a fleet already
scrapes node_exporter. When the daemon does not answer, the output still
says so: bouheki_up 0.

Every series and label is listed in doc/bouhekictl.8.md (METRICS).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from .errors import EXIT_FAILURE, CtlError

FORMATS = ("openmetrics", "prometheus")


def _library() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError as exc:
        raise CtlError(
            f"metrics need python3-prometheus-client (prometheus_client): {exc}", EXIT_FAILURE
        ) from None
    return core


class _Snapshot:
    """A collector over one answer of the daemon (None: it did not answer)."""

    def __init__(self, stats: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> None:
        self.stats = stats
        self.status = status or {}

    def collect(self) -> Iterator[Any]:
        core = _library()
        gauge, counter = core.GaugeMetricFamily, core.CounterMetricFamily
        yield gauge("bouheki_up", "1 if the daemon answered", value=0 if self.stats is None else 1)
        s = self.stats
        if s is None:
            return
        info = core.InfoMetricFamily("bouheki_build", "the daemon's version")
        info.add_metric([], {"version": str(self.status.get("version", ""))})
        yield info
        yield gauge("bouheki_policy_generation", "the policy generation in force",
                    value=s["generation"])  # fmt: skip
        yield gauge("bouheki_last_reload_timestamp_seconds",
                    "when the last reload (or the start) was attempted",
                    value=s["last_reload_usec"] / 1e6)  # fmt: skip
        yield gauge("bouheki_last_reload_success", "1 if it applied, 0 if it was refused",
                    value=1 if s["last_reload_ok"] else 0)  # fmt: skip
        yield counter("bouheki_reloads", "configurations applied (the start's included)",
                      value=s["reloads"])  # fmt: skip
        yield counter("bouheki_reload_failures", "reloads refused (the running policy stayed)",
                      value=s["reloads_failed"])  # fmt: skip
        yield counter("bouheki_checks", "connects and sends the programs judged",
                      value=s["checks"])  # fmt: skip
        verdicts = counter("bouheki_connections", "judged calls by verdict", labels=["verdict"])
        for verdict in ("allowed", "blocked", "would_block"):
            verdicts.add_metric([verdict], s[verdict])
        yield verdicts
        per_policy = counter("bouheki_policy_connections",
                             "judged calls by policy and verdict (since its rules last changed)",
                             labels=["policy", "verdict"])  # fmt: skip
        for p in s["policies"]:
            allowed = p["hits"] - p["blocked"] - p["would_block"]
            for verdict, n in (("allowed", allowed), ("blocked", p["blocked"]),
                               ("would_block", p["would_block"])):  # fmt: skip
                per_policy.add_metric([p["name"], verdict], n)
        yield per_policy
        per_unit = counter("bouheki_unit_connections",
                           "blocked and would-be-blocked calls by unit, from the events read "
                           '(unit "": no unit, or past the daemon\'s limit of units)',
                           labels=["unit", "verdict"])  # fmt: skip
        for u in s["units"]:
            per_unit.add_metric([u["unit"], "blocked"], u["blocked"])
            per_unit.add_metric([u["unit"], "would_block"], u["would_block"])
        yield per_unit
        for name, help_ in (
            ("events", "events read from the kernel"),
            ("events_lost", "events the kernel could not queue (ring buffer full)"),
            ("events_suppressed", "events kept out of the journal by its rate limit"),
        ):
            yield counter(f"bouheki_{name}", help_, value=s[name])
        names = gauge("bouheki_domain_names", "domain names of the running policies",
                      labels=["state"])  # fmt: skip
        names.add_metric(["resolved"], s["names_resolved"])
        names.add_metric(["unresolved"], s["names_unresolved"])
        yield names


def render(stats: Mapping[str, Any] | None, status: Mapping[str, Any] | None, fmt: str) -> str:
    """The exposition of one snapshot in `fmt` (one of FORMATS)."""
    core = _library()
    registry = core.CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats, status))
    if fmt == "openmetrics":
        from prometheus_client.openmetrics.exposition import generate_latest
    else:
        from prometheus_client.exposition import generate_latest
    return str(generate_latest(registry).decode())


def emit(output: str | None, stdout: TextIO, text: str) -> None:
    """To `output` (replaced atomically) if given, else to stdout."""
    if output:
        write_atomically(output, text)
    else:
        stdout.write(text)


def write_atomically(path: str, text: str) -> None:
    """Replace path in one rename, so a scraper never reads half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bouheki-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
