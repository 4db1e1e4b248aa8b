"""pytest plugin for lab runs: appends each test's outcome to
/results/progress.txt as it ends, so a guest killed at its timeout still
says how far it got and what failed (the JUnit file is written only at the end)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROGRESS = Path("/results/progress.txt")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and report.passed:
        return
    if report.when == "call" or report.failed:
        first = ""
        if report.failed:
            lines = str(report.longrepr).strip().splitlines()
            first = lines[-1][:200] if lines else ""
        with PROGRESS.open("a") as f:
            f.write(f"{report.outcome.upper()} {report.nodeid} [{report.when}] "
                    f"({report.duration:.0f} s) {first}\n")  # fmt: skip
