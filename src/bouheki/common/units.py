"""Unit names: which names have a cgroup a policy can cover, and which
patterns the kernel can match when a unit's cgroup is made (cgroup_mkdir)."""

from __future__ import annotations

import re
from typing import Optional, Union

# A unit's cgroup name as cgroup_mkdir reads it: systemd's 255 bytes and a NUL
# (BH_UNIT_NAME_LEN).
UNIT_NAME_LEN = 256
# Unit patterns the kernel matches at cgroup creation: PREFIX*SUFFIX, each
# side at most this long (BH_PATTERN_LEN).
PATTERN_LEN = 32
# The unit types that have a cgroup of their own.
UNIT_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap")
_UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\@*?\[\]!-]+$")


def is_unit_pattern(unit: str) -> bool:
    return any(c in unit for c in "*?[")


def unit_glob(unit: str) -> Optional[str]:
    """The shell pattern a policy name stands for, or None for one exact unit.

    A template name (foo@.service) covers all its instances, as systemd's
    drop-ins for templates do.
    """
    if is_unit_pattern(unit):
        return unit
    at = unit.find("@")
    if at >= 0 and unit[at + 1 :].startswith("."):
        return unit[: at + 1] + "*" + unit[at + 1 :]
    return None


def check_unit_name(unit: str) -> Union[str, None]:
    """None if `unit` is a usable unit name or pattern, else the problem."""
    if not unit or len(unit) > 255:
        return f"'{unit}' is not a unit name"
    if not _UNIT_CHARS.match(unit):
        return f"'{unit}' is not a unit name: it contains characters systemd does not allow"
    if not unit.endswith(UNIT_SUFFIXES):
        types = ", ".join(UNIT_SUFFIXES)
        return f"'{unit}' is not a unit name with a cgroup: policies apply to units of type {types}"
    stem = unit.rsplit(".", 1)[0]
    if not stem:
        return f"'{unit}' is not a unit name"
    glob = unit_glob(unit)
    if glob is not None:
        # The kernel gives a new cgroup its policy by name before anything
        # runs in it (cgroup_mkdir): only patterns it can match are taken.
        prefix, star, suffix = glob.partition("*")
        if not star or any(c in glob for c in "?[]!") or "*" in suffix:
            return (
                f"'{unit}' is a pattern the kernel cannot match when a unit starts: "
                "use one '*' (PREFIX*SUFFIX, e.g. docker-*.scope) and no ?, [ ] or !"
            )
        if max(len(prefix.encode()), len(suffix.encode())) > PATTERN_LEN:
            return (
                f"'{unit}': the text before and after '*' may be at most "
                f"{PATTERN_LEN} bytes each (the kernel matches it when a unit starts)"
            )
    return None
