"""The package's layers (doc/DESIGN.md, section 1), checked on its imports.

From the bottom: the vocabulary every layer shares; the pure policy core;
reading the configuration and systemd's units; the kernel and the domain
names; the engine, with the D-Bus adapter beside it; the programs. A module
imports only from its own package or from a lower floor: never up, never
sideways into another package of its floor (a cycle needs one of those)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "bouheki"

FLOORS: list[set[str]] = [
    {"bouheki", "bouheki.common", "bouheki.dbuslib"},
    {"bouheki.policy"},
    {"bouheki.config", "bouheki.units"},
    {"bouheki.kernel", "bouheki.names"},
    {"bouheki.service", "bouheki.bus"},
    # The daemon's main wires the engine to the bus; bouhekictl uses both.
    {"bouheki.service.main", "bouheki.ctl"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """The most specific entry of FLOORS that holds module."""
    best = ""
    for floor in FLOORS:
        for r in floor:
            if (module == r or module.startswith(r + ".")) and len(r) > len(best):
                best = r
    assert best, f"{module} is on no floor: add it to FLOORS"
    return best


def floor_of(module: str) -> int:
    r = room(module)
    return next(i for i, floor in enumerate(FLOORS) if r in floor)


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import of bouheki, lazy ones too."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # `from . import x` names a module; `from .m import f` names m.
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                out.append((sub if is_module else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return [(m, line) for m, line in out if m == "bouheki" or m.startswith("bouheki.")]


def allowed(me: str, target: str) -> bool:
    mine, theirs = room(me), room(target)
    return mine == theirs or theirs == "bouheki" or floor_of(target) < floor_of(me)


def test_no_import_runs_up_or_sideways() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {module_name(path)} imports {target}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for target, line in imports(path)
        if not allowed(module_name(path), target)
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_rule_refuses_up_and_sideways_and_the_walk_sees_every_form() -> None:
    assert allowed("bouheki.service.engine", "bouheki.policy.twin")
    assert allowed("bouheki.service.main", "bouheki.bus.server")
    assert not allowed("bouheki.policy.twin", "bouheki.service.engine")  # up
    assert not allowed("bouheki.bus.manager", "bouheki.service.engine")  # sideways
    assert not allowed("bouheki.names.cache", "bouheki.kernel.maps")  # sideways
    assert not allowed("bouheki.common.api", "bouheki.policy.tables")  # the floor imports nothing
    # Relative, absolute, `from . import module` and lazy imports are all seen.
    seen = {t for t, _ in imports(PACKAGE / "service" / "engine.py")}
    assert {"bouheki.common.api", "bouheki.service.policy_ids", "bouheki.kernel.enforcer"} <= seen
    assert "bouheki.kernel.loader" in seen  # imported inside _default_enforcer
