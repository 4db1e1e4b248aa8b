"""What bouheki says when the host lacks something it needs (exit status 3)."""

from __future__ import annotations

import pytest

from bouheki.kernel.requirements import Host, problems

GOOD = dict(lsm="lockdown,capability,yama,apparmor,bpf", btf=True, headers=True, euid=0)


def test_a_good_host_has_no_problem() -> None:
    assert problems(Host(release="6.1.0-57-amd64", **GOOD)) == []


@pytest.mark.parametrize(
    ("release", "packages"),
    [
        # A cloud kernel's headers are not linux-headers-amd64's: name its own.
        (
            "6.1.0-57-cloud-amd64",
            "linux-headers-6.1.0-57-cloud-amd64, and linux-headers-cloud-amd64",
        ),
        ("6.1.0-57-rt-amd64", "linux-headers-6.1.0-57-rt-amd64, and linux-headers-rt-amd64"),
        ("6.12.9+bpo-amd64", "linux-headers-6.12.9+bpo-amd64; Fedora"),
        ("6.5.6-300.fc39.x86_64", "Fedora: kernel-devel-6.5.6-300.fc39.x86_64"),
    ],
)
def test_missing_headers_name_the_package_of_the_running_flavour(
    release: str, packages: str
) -> None:
    host = Host(release=release, **{**GOOD, "headers": False})
    (problem,) = problems(host)
    assert f"/lib/modules/{release}/build" in problem
    assert packages in problem, problem
