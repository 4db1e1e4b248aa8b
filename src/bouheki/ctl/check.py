"""`bouhekictl check-config` without the daemon: a local call, like `nginx -t`.

Nothing here imports the D-Bus library, so checking works on a host (or in a
build container) where the daemon and even dbus-next are absent.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Optional

from ..common.api import CheckResult, ConfigInvalid, Problem
from . import render
from .errors import EXIT_CONFIG_INVALID, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CtlError
from .output import Output

# The loader is written separately and needed only here, so it is imported
# when check-config runs (tests put a stand-in into sys.modules).
LOADER_MODULE = "bouheki.config.loader"


def check_result_data(result: Any) -> dict[str, Any]:
    """A CheckResult as plain data keyed like the D-Bus reply: one --json shape both ways."""
    problems = []
    for problem in result.problems:
        if not isinstance(problem, Problem):  # tolerate (file, line, message) tuples
            problem = Problem(*problem)
        problems.append(dataclasses.asdict(problem))
    return {
        "ok": bool(result.ok),
        "problems": problems,
        "warnings": [str(w) for w in getattr(result, "warnings", [])],
        "policies": int(getattr(result, "policies", 0)),
    }


def tree(
    path: Optional[str], root: Optional[str], units_dirs: Optional[list[str]]
) -> tuple[Optional[str], Optional[list[str]]]:
    """The main file and the unit search directories a local command reads
    (check-config, explain --offline): PATH, --units-dir, the standard places
    below --root; None for each leaves the loader's own."""
    if root and not os.path.isdir(root):
        raise CtlError(f"--root {root}: not a directory", EXIT_USAGE)
    dirs = list(units_dirs) if units_dirs else None
    if root:
        loader = importlib.import_module(LOADER_MODULE)
        if dirs is None:
            dirs = [os.path.join(root, d.lstrip("/")) for d in loader.DEFAULT_SEARCH_DIRS]
        if path is None:
            main = os.path.join(root, loader.DEFAULT_MAIN_FILE.lstrip("/"))
            path = main if os.path.exists(main) else None
    return path, dirs


def check_config_local(
    path: Optional[str], root: Optional[str] = None, units_dirs: Optional[list[str]] = None
) -> dict[str, Any]:
    path, dirs = tree(path, root, units_dirs)
    try:
        checker = importlib.import_module(LOADER_MODULE).check_config
    except Exception as exc:
        raise CtlError(
            f"check-config needs the configuration loader ({LOADER_MODULE}.check_config), "
            f"which could not be loaded: {exc}",
            EXIT_FAILURE,
        ) from None
    try:
        result = checker(path) if dirs is None else checker(path, dirs)
    except ConfigInvalid as exc:
        result = CheckResult(ok=False, problems=exc.problems)
    except OSError as exc:
        where = exc.filename or path or "the configuration"
        raise CtlError(f"cannot read {where}: {exc.strerror or exc}", EXIT_CONFIG_INVALID) from None
    return check_result_data(result)


def print_check(out: Output, data: dict[str, Any]) -> int:
    out.result(data, render.check_result)
    return EXIT_OK if data["ok"] else EXIT_CONFIG_INVALID
