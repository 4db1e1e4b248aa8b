"""The ctypes mirrors match bpf/bouheki.h, as the C compiler lays it out."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bouheki.kernel import layout

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "bouheki.h"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine")
    lines = []
    for cname, py in layout.C_NAMES.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in py._fields_:
            lines.append(f'printf("{cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    src = (
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n' + "\n".join(lines) + "\nreturn 0; }\n"
    )
    d = tmp_path_factory.mktemp("layout")
    (d / "l.c").write_text(src)
    subprocess.run([cc, "-o", str(d / "l"), str(d / "l.c")], check=True)
    out = subprocess.run([str(d / "l")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


@pytest.mark.parametrize("cname", sorted(layout.C_NAMES))
def test_struct_matches_header(c_layout: dict[str, int], cname: str) -> None:
    py = layout.C_NAMES[cname]
    import ctypes as ct

    assert ct.sizeof(py) == c_layout[f"{cname} size"]
    for fname, *_ in py._fields_:
        assert getattr(py, fname).offset == c_layout[f"{cname}.{fname}"], fname


def test_constants_match_header() -> None:
    import re

    from bouheki.policy import tables

    defines = dict(re.findall(r"^#define (BH_\w+) (\d+)", HEADER.read_text(), re.M))
    ours = {
        "BH_POLICY_MONITOR": tables.POLICY_MONITOR,
        "BH_POLICY_FOREIGN_MNTNS_ONLY": tables.POLICY_FOREIGN_MNTNS_ONLY,
        "BH_POLICY_LOG_ALLOWED": tables.POLICY_LOG_ALLOWED,
        "BH_G_EVENTS": layout.G_EVENTS,
        "BH_G_EVENTS_LOST": layout.G_EVENTS_LOST,
        "BH_G_NO_STATE": layout.G_NO_STATE,
        "BH_G_SCOPE_NAMED": layout.G_SCOPE_NAMED,
        "BH_G_REFUSED": layout.G_REFUSED,
        "BH_G_SCOPE_FULL": layout.G_SCOPE_FULL,
        "BH_G_MAX": layout.G_MAX,
        "BH_POLICY_SCTP": tables.POLICY_SCTP,
        "BH_UNIT_NAME_LEN": tables.UNIT_NAME_LEN,
        "BH_PATTERN_LEN": tables.PATTERN_LEN,
        "BH_MAX_PATTERNS": layout.MAX_PATTERNS,
        "BH_COMM_LEN": tables.COMM_LEN,
        "BH_MAX_RULES": tables.MAX_RULES,
        "BH_MAX_POLICIES": tables.MAX_POLICIES,
        "BH_DEFAULT_RULE": tables.DEFAULT_RULE,
    }
    assert {k: int(defines[k]) for k in ours} == ours
    flags = [v for k, v in ours.items() if k.startswith("BH_POLICY_")]
    assert sum(flags) == sum(set(flags)), "two flags share a bit"


def test_enums_match_header() -> None:
    """Every BH_HOOK_*, BH_REASON_* and BH_VERDICT_* of the header is its
    Python enum's member of the same name and value, and no member is extra."""
    import re

    from bouheki.policy.tables import Hook, Reason, Verdict

    defines = re.findall(r"^#define BH_(HOOK|REASON|VERDICT)_(\w+) (\d+)", HEADER.read_text(), re.M)
    enums = {"HOOK": Hook, "REASON": Reason, "VERDICT": Verdict}
    for group, enum in enums.items():
        c = {name: int(v) for g, name, v in defines if g == group}
        assert c == {m.name: m.value for m in enum}, group
