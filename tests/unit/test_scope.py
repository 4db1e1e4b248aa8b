from __future__ import annotations

from pathlib import Path

import pytest

from bouheki.units.scope import Binding, ScopePlan, default_parent, simple_pattern, slice_path


class Rec:
    def __init__(self) -> None:
        self.scopes: dict[int, int] = {}
        self.slices: set[int] = set()

    def add(self, cgroup_id: int, policy_id: int) -> None:
        self.scopes[cgroup_id] = policy_id

    def add_slice(self, cgroup_id: int) -> None:
        self.slices.add(cgroup_id)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for d in (
        "system.slice/nginx.service/sub",
        "system.slice/docker-abc.scope",
        "system.slice/other.service",
        "web.slice/web-api.slice/api.service",
        "user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
        "user.slice/user-1000.slice/user@1000.service/app.slice/docker-x.scope",
    ):
        (tmp_path / d).mkdir(parents=True)
    return tmp_path


def ids(root: Path, rel: str) -> int:
    return (root / rel).stat().st_ino


def test_exact_units_patterns_slices_and_inheritance(tree: Path) -> None:
    plan = ScopePlan([Binding("nginx.service", 1), Binding("docker-*.scope", 2),
                      Binding("web.slice", 3)])  # fmt: skip
    rec = Rec()
    covered = plan.fill(tree, rec)
    assert rec.scopes[ids(tree, "system.slice/nginx.service")] == 1
    assert rec.scopes[ids(tree, "system.slice/docker-abc.scope")] == 2
    assert rec.scopes[ids(tree, "web.slice")] == 3
    # Below a unit with a policy: covered, found by the programs' walk up,
    # with no entry of its own (a delegated subtree cannot grow the map).
    for inherited, policy in (("system.slice/nginx.service/sub", 1),
                              ("web.slice/web-api.slice/api.service", 3)):  # fmt: skip
        assert ids(tree, inherited) not in rec.scopes
        assert covered[ids(tree, inherited)][1] == policy
    assert len(rec.scopes) == 3
    assert ids(tree, "system.slice/other.service") not in rec.scopes
    # Below a user manager the names are the user's to choose: no match.
    u = "user.slice/user-1000.slice/user@1000.service/app.slice"
    assert ids(tree, f"{u}/nginx.service") not in rec.scopes
    assert ids(tree, f"{u}/docker-x.scope") not in rec.scopes
    assert ids(tree, "user.slice/user-1000.slice") in rec.slices
    assert ids(tree, u) not in rec.slices
    assert covered[ids(tree, "system.slice/nginx.service")] == ("/system.slice/nginx.service", 1)


def test_deepest_unit_wins(tree: Path) -> None:
    plan = ScopePlan([Binding("system.slice", 5), Binding("nginx.service", 1)])
    rec = Rec()
    covered = plan.fill(tree, rec)
    assert rec.scopes == {ids(tree, "system.slice"): 5, ids(tree, "system.slice/nginx.service"): 1}
    assert covered[ids(tree, "system.slice/other.service")][1] == 5
    assert covered[ids(tree, "system.slice/nginx.service/sub")][1] == 1


def test_a_unit_is_matched_in_whichever_undelegated_slice_holds_it(tree: Path) -> None:
    (tree / "web.slice/nginx.service").mkdir()
    plan = ScopePlan([Binding("nginx.service", 1)])
    rec = Rec()
    plan.fill(tree, rec)
    assert rec.scopes[ids(tree, "web.slice/nginx.service")] == 1
    assert rec.scopes[ids(tree, "system.slice/nginx.service")] == 1
    u = "user.slice/user-1000.slice/user@1000.service/app.slice"
    assert ids(tree, f"{u}/nginx.service") not in rec.scopes


def test_names() -> None:
    assert slice_path("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert slice_path("-.slice") == "/"
    assert default_parent("a-b.slice") == "/a.slice"
    assert default_parent("system.slice") == "/"
    assert default_parent("x.service") == "/system.slice"
    assert simple_pattern("docker-*.scope") == ("docker-", ".scope")
    assert simple_pattern("a*b*c") is None
    assert simple_pattern("a?.scope") is None


def test_policy_at_is_the_rule_of_the_walk() -> None:
    plan = ScopePlan([Binding("nginx.service", 1), Binding("web.slice", 3),
                      Binding("web-api.service", 4), Binding("docker-*.scope", 2)])  # fmt: skip
    assert plan.policy_at(["system.slice", "nginx.service"]) == 1
    assert plan.policy_at(["system.slice", "nginx.service", "sub"]) == 1
    assert plan.policy_at(["web.slice", "other.service"]) == 3  # Slice=web.slice
    assert plan.policy_at(["web.slice", "web-api.service"]) == 4  # the deepest wins
    assert plan.policy_at(["system.slice", "docker-ab.scope"]) == 2
    # Below a service, names are the delegate's to choose: they say nothing.
    assert plan.policy_at(["system.slice", "x.service", "nginx.service"]) is None
    assert plan.policy_at(["system.slice", "other.service"]) is None
