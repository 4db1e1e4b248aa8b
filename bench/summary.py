"""Medians and spreads, shared by the guest (which summarises) and the host
(which renders)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Optional


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """median, min, max, interquartile range and the values themselves."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": len(vals),
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }
    if len(vals) >= 4:
        q = statistics.quantiles(vals, n=4, method="inclusive")
        out["q1"], out["q3"] = q[0], q[2]
    return out


def ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    if num is None or not den:
        return None
    return num / den
