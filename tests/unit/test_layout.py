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


def python_mirror() -> dict[str, int]:
    """Every constant of bouheki.h as the Python side holds it: enums by
    their prefix, the G_ counter slots from layout, the rest by name."""
    from bouheki.common import units
    from bouheki.policy import inline, tables

    ours: dict[str, int] = {
        **{f"BH_VERDICT_{v.name}": int(v) for v in tables.Verdict},
        **{f"BH_HOOK_{h.name}": int(h) for h in tables.Hook},
        **{f"BH_REASON_{r.name}": int(r) for r in tables.Reason},
        **{f"BH_{k}": v for k, v in vars(layout).items() if k.startswith("G_")},
        **{f"BH_{k}": v for k, v in vars(tables).items() if k.startswith("POLICY_")},
    }
    for name in ("MAX_RULES", "DEFAULT_RULE", "MAX_POLICIES", "HOST_POLICY", "COMM_LEN"):
        ours[f"BH_{name}"] = getattr(tables, name)
    for name in ("UNIT_NAME_LEN", "PATTERN_LEN"):
        ours[f"BH_{name}"] = getattr(units, name)
    for name in ("MAX_PATTERNS", "MAX_LEARN", "FILTERS", "FILTER_BLOCK_BITS"):
        ours[f"BH_{name}"] = getattr(layout, name)
    for name in ("FILTER_PAGE_WORDS", "FILTER_PAGES"):
        ours[f"BH_{name}"] = getattr(layout, name)
    for name, value in vars(inline).items():
        if name.startswith(("INLINE_", "DIM_")):
            ours[f"BH_{name}"] = value
    return ours


def test_constants_match_header() -> None:
    """Every #define of the header has its Python mirror, with its value,
    and the mirror holds nothing the header does not define."""
    import re

    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    defines = {k: int(v) for k, v in re.findall(r"^#define (BH_\w+) (\d+)\s*$", text, re.M)}
    assert len(defines) == len(re.findall(r"^#define BH_", text, re.M)), "a non-numeric define"
    ours = python_mirror()
    assert defines == ours
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


def test_policy_slot_matches_the_header(tmp_path: Path) -> None:
    """layout.policy_slot is bh_policy_slot: the header's function, compiled
    and run, gives the same slot for generations of both parities."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler on this machine")
    cases = [(g, i) for g in (1, 2, 3, 0xFFFFFFFE, 0xFFFFFFFF) for i in (0, 1, 511, 1023)]
    calls = "".join(f'printf("%u\\n", bh_policy_slot({g}u, {i}u));\n' for g, i in cases)
    (tmp_path / "s.c").write_text(
        "#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n{calls}return 0; }}\n'
    )
    subprocess.run([cc, "-o", str(tmp_path / "s"), str(tmp_path / "s.c")], check=True)
    out = subprocess.run([str(tmp_path / "s")], check=True, capture_output=True, text=True)
    assert [int(x) for x in out.stdout.split()] == [layout.policy_slot(g, i) for g, i in cases]


def test_proto_bit_matches_the_header(tmp_path: Path) -> None:
    """inline.PROTO_BITS is bh_proto_bit, over every protocol number: one
    bit each for the protocols a rule can name, 0 for the others."""
    from bouheki.policy.inline import PROTO_BITS
    from bouheki.policy.tables import Proto

    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler on this machine")
    (tmp_path / "p.c").write_text(
        "#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n'
        'for (int p = 0; p < 256; p++) printf("%u\\n", bh_proto_bit(p));\nreturn 0; }\n'
    )
    subprocess.run([cc, "-o", str(tmp_path / "p"), str(tmp_path / "p.c")], check=True)
    out = subprocess.run([str(tmp_path / "p")], check=True, capture_output=True, text=True)
    assert [int(x) for x in out.stdout.split()] == [PROTO_BITS.get(p, 0) for p in range(256)]
    assert set(PROTO_BITS) == set(Proto)
    assert sorted(PROTO_BITS.values()) == [1 << i for i in range(8)]
