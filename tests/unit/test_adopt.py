"""Which pinned programs a starting daemon adopts, and how it takes them over
(kernel/adopt.py, kernel/pinning.py). The BPF file system is stood in for by
a directory: renames and removals behave the same; opening a pin is faked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bouheki.kernel import adopt
from bouheki.kernel.pinning import Pins

SOURCE = (Path(__file__).resolve().parents[2] / "bpf" / "bouheki.bpf.c").read_text()
PROGRAMS = {
    *("lsm__socket_connect", "lsm__socket_sendmsg", "lsm__socket_setsockopt"),
    *("lsm__socket_create", "lsm__sctp_bind_connect", "cgroup_mkdir", "cgroup_rmdir"),
}
TAG = "0123456789abcdef"


@pytest.fixture
def pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pins:
    opened: list[Path] = []

    def obj_get(path: Path) -> int:
        if not path.exists():
            raise OSError(2, f"cannot open pinned {path}")
        opened.append(path)
        return 1000 + len(opened)

    monkeypatch.setattr(adopt, "obj_get", obj_get)
    return Pins(root=tmp_path)


def links(pins: Pins, name: str, progs: set[str], age: int = 0) -> Path:
    d = pins.root / "links" / name
    d.mkdir(parents=True)
    for p in progs:
        (d / p).touch()
    os.utime(d, ns=(10**18 - age, 10**18 - age))
    return d


def maps(pins: Pins, tag: str = TAG, missing: str = "") -> None:
    for m in adopt.MAPS:
        if m != missing:
            (pins.maps_dir(tag) / m).touch()


def test_the_program_names_are_the_links_bcc_makes() -> None:
    assert adopt.program_names(SOURCE) == PROGRAMS


def test_takes_over_the_links_of_the_same_layout(pins: Pins) -> None:
    links(pins, f"{TAG}_111-aa", PROGRAMS)
    maps(pins)
    taken = adopt.adopt_links(pins, TAG, SOURCE)
    assert taken is not None
    predecessor, fds, link_fds = taken
    assert predecessor == "111-aa"
    assert set(fds) == set(adopt.MAPS)
    assert len(link_fds) == len(PROGRAMS)
    mine = pins.links_dir(TAG)
    assert "." not in mine.name  # the BPF file system refuses names with a dot
    assert {p.name for p in mine.iterdir()} == PROGRAMS
    assert [d.name for d in (pins.root / "links").iterdir()] == [mine.name]


def test_prefers_the_newest_complete_set_and_releases_the_rest(pins: Pins) -> None:
    links(pins, f"{TAG}_old", PROGRAMS, age=100)
    links(pins, f"{TAG}_new", PROGRAMS, age=1)
    links(pins, "fedcba9876543210_other", PROGRAMS)
    maps(pins)
    taken = adopt.adopt_links(pins, TAG, SOURCE)
    assert taken is not None and taken[0] == "new"
    assert sorted(pins.release_others()) == ["old", "other"]
    assert [d.name for d in (pins.root / "links").iterdir()] == [pins.links_dir(TAG).name]


@pytest.mark.parametrize(
    "name",
    ["fedcba9876543210_x", "111-aa"],  # another layout (an upgrade); a pre-layout name
)
def test_other_layouts_are_not_adopted(pins: Pins, name: str) -> None:
    d = links(pins, name, PROGRAMS)
    maps(pins)
    assert adopt.adopt_links(pins, TAG, SOURCE) is None
    assert d.is_dir()  # left for the compile path to replace


def test_an_incomplete_set_of_links_is_not_adopted(pins: Pins) -> None:
    d = links(pins, f"{TAG}_half", PROGRAMS - {"cgroup_rmdir"})
    maps(pins)
    assert adopt.adopt_links(pins, TAG, SOURCE) is None
    assert d.is_dir()


def test_a_missing_map_means_compiling(pins: Pins) -> None:
    d = links(pins, f"{TAG}_111-aa", PROGRAMS)
    maps(pins, missing="events")  # pinned by a version that did not pin its ring buffer
    assert adopt.adopt_links(pins, TAG, SOURCE) is None
    assert d.is_dir()
