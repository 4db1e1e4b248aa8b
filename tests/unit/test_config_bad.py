"""Every file in data/policies/bad/ must be rejected with the problems its
.expect sidecar lists (one `file:line: message` substring a line).

Files named main_*.toml are read as the main bouheki.toml, *.yml as the
legacy format, the other *.toml as a unit policy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bouheki.config.errors import ConfigError
from bouheki.config.legacy_yaml import load_legacy_yaml
from bouheki.config.loader import load_policy_file, load_policy_set

BAD = Path(__file__).parent / "data" / "policies" / "bad"
CASES = sorted(p for p in BAD.iterdir() if p.suffix in (".toml", ".yml"))


def _load(path: Path) -> None:
    if path.suffix == ".yml":
        load_legacy_yaml(str(path))
    elif path.name.startswith("main_"):
        load_policy_set(main_file=path, search_dirs=[])
    else:
        load_policy_file(path)


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    for path in CASES:
        assert path.with_suffix(".expect").is_file(), f"{path.name} has no .expect"


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_bad_policy_is_rejected(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(path)
    problems = [str(p) for p in info.value.problems]
    for path_problem in info.value.problems:
        assert path_problem.file == str(path)
    expected = path.with_suffix(".expect").read_text().splitlines()
    for line in filter(None, expected):
        assert any(line in p for p in problems), f"{line!r} not in {problems}"
