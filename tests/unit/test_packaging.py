"""The .deb and the .rpm install the same files, each where its distribution
expects them (`make deb`, `make rpm`; packaging/).

Checks the packages in dist/ of the version in pyproject.toml. Skipped when
they have not been built, unless BOUHEKI_TEST_PACKAGES=1 (CI after
`make deb rpm`), which makes a missing package or tool a failure.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
REQUIRED = os.environ.get("BOUHEKI_TEST_PACKAGES") == "1"

SITE = "<site>"
# Where each distribution puts things that the other puts elsewhere.
DEB_PLACES = [
    (re.compile(r"^/usr/lib/python3/dist-packages/"), SITE + "/"),
    # bookworm's debhelper installs units in /lib (before the /usr merge).
    (re.compile(r"^/lib/systemd/system/"), "/usr/lib/systemd/system/"),
]
RPM_PLACES = [(re.compile(r"^/usr/lib/python3\.\d+/site-packages/"), SITE + "/")]
# Files one distribution adds for its own bookkeeping: Debian's copyright,
# changelog and lintian overrides; pip's and rpm's dist-info records; byte
# code, which Fedora's rpm compiles at build time and Debian's py3compile at
# install time.
DISTRIBUTION_ONLY = re.compile(
    r"^/usr/share/doc/bouheki/(copyright|changelog(\.Debian)?\.gz)$"
    r"|^/usr/share/lintian/overrides/bouheki$"
    r"|^<site>/bouheki-[^/]+\.dist-info/(RECORD|INSTALLER|REQUESTED|direct_url\.json)$"
    r"|/__pycache__(/|$)"
)
# What the packages must install (after the mapping above).
EXPECTED_FILES = [
    "/usr/sbin/bouheki",
    "/usr/bin/bouhekictl",
    f"{SITE}/bouheki/__init__.py",
    "/usr/share/bouheki/bpf/bouheki.bpf.c",
    "/usr/share/bouheki/bpf/bouheki.h",
    "/usr/lib/systemd/system/bouheki.service",
    "/usr/lib/systemd/system/bouheki-metrics.service",
    "/usr/lib/systemd/system/bouheki-metrics.timer",
    "/usr/lib/systemd/catalog/bouheki.catalog",
    "/usr/share/dbus-1/system.d/org.bouheki.Bouheki1.conf",
    "/usr/share/polkit-1/actions/org.bouheki.Bouheki1.policy",
    "/usr/share/dbus-1/interfaces/org.bouheki.Bouheki1.Manager.xml",
    "/etc/bouheki/bouheki.toml",
    "/usr/share/man/man8/bouheki.8.gz",
    "/usr/share/man/man8/bouhekictl.8.gz",
    "/usr/share/man/man5/bouheki.toml.5.gz",
    # The README is the first thing to read after an install (issue 16).
    "/usr/share/doc/bouheki/README.md",
    "/usr/share/doc/bouheki/THREATS.md",
    "/usr/share/doc/bouheki/EVENTS.md",
    "/usr/share/bash-completion/completions/bouhekictl",
]
EXPECTED_DIRS = ["/etc/bouheki/units"]
CONFFILE = "/etc/bouheki/bouheki.toml"
DEB_DEPENDS = [
    "python3-bpfcc",
    "python3-dbus-next",
    "python3-pyroute2",
    "python3-systemd",
    "python3-dnspython",
    "python3-yaml",
]
RPM_REQUIRES = [
    "python3-bcc",
    "python3-dbus-next",
    "python3-pyroute2",
    "python3-systemd",
    "python3-dns",
    "python3-pyyaml",
]


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (BOUHEKI_TEST_PACKAGES=1)")
    pytest.skip(f"{reason}; run `make deb rpm` (or set BOUHEKI_TEST_PACKAGES=1)")


@cache
def package_version() -> str:
    """The version as packaging/lib.sh writes it into the file names."""
    out = subprocess.run(
        ["bash", "-c", ". packaging/lib.sh && pkg_version"],
        cwd=ROOT,
        env={**os.environ, "PROG": "test_packaging"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def deb() -> Path:
    path = DIST / f"bouheki_{package_version()}_all.deb"
    if not path.is_file():
        _unavailable(f"{path.relative_to(ROOT)} is not built")
    if shutil.which("dpkg-deb") is None:
        _unavailable("dpkg-deb is not installed")
    return path


@pytest.fixture(scope="module")
def rpm() -> Path:
    path = DIST / f"bouheki-{package_version()}-1.noarch.rpm"
    if not path.is_file():
        _unavailable(f"{path.relative_to(ROOT)} is not built")
    if shutil.which("rpm") is None:
        _unavailable("rpm is not installed")
    return path


def _place(path: str, places: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, replacement in places:
        path = pattern.sub(replacement, path)
    return path


def deb_entries(deb: Path) -> tuple[set[str], set[str]]:
    """(files, directories) of the .deb, mapped to common places."""
    files, dirs = set(), set()
    for line in _run("dpkg-deb", "--contents", str(deb)).splitlines():
        # drwxr-xr-x root/root 0 2024-01-01 00:00 ./usr/share/
        mode, _owner, _size, _date, _time, name = line.split(None, 5)
        name = name.split(" -> ", 1)[0]
        path = _place("/" + name.removeprefix("./").rstrip("/"), DEB_PLACES)
        (dirs if mode.startswith("d") else files).add(path)
    return files, dirs


def rpm_entries(rpm: Path) -> tuple[set[str], set[str]]:
    """(files, directories) of the .rpm, mapped to common places."""
    files, dirs = set(), set()
    out = _run("rpm", "-qp", "--qf", r"[%{FILEMODES:perms} %{FILENAMES}\n]", str(rpm))
    for line in out.splitlines():
        mode, name = line.split(" ", 1)
        (dirs if mode.startswith("d") else files).add(_place(name, RPM_PLACES))
    return files, dirs


def _common(paths: set[str]) -> set[str]:
    return {p for p in paths if not DISTRIBUTION_ONLY.search(p)}


def test_same_files_in_both_packages(deb: Path, rpm: Path) -> None:
    deb_files, _ = deb_entries(deb)
    rpm_files, _ = rpm_entries(rpm)
    only_deb = sorted(_common(deb_files) - _common(rpm_files))
    only_rpm = sorted(_common(rpm_files) - _common(deb_files))
    assert not only_deb and not only_rpm, (
        f"only in the .deb: {only_deb}; only in the .rpm: {only_rpm}"
    )


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_expected_files_installed(kind: str, request: pytest.FixtureRequest) -> None:
    package = request.getfixturevalue(kind)
    files, dirs = deb_entries(package) if kind == "deb" else rpm_entries(package)
    missing = [f for f in EXPECTED_FILES if f not in files]
    missing += [d + "/" for d in EXPECTED_DIRS if d not in dirs]
    if not any(
        re.fullmatch(r"/usr/share/doc/bouheki/examples/[^/]+\.toml\.example", f) for f in files
    ):
        missing.append("/usr/share/doc/bouheki/examples/*.toml.example")
    assert not missing, f"the .{kind} lacks {missing}"


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_every_module_and_man_page_installed(kind: str, request: pytest.FixtureRequest) -> None:
    package = request.getfixturevalue(kind)
    src = ROOT / "src"
    sources = list(src.glob("bouheki/**/*.py"))
    manuals = [md for md in (ROOT / "doc").glob("*.md") if re.search(r"\.[1-9]\.md$", md.name)]
    built = package.stat().st_mtime
    if not REQUIRED and any(p.stat().st_mtime > built for p in sources + manuals):
        pytest.skip(f"{package.name} is older than the sources: rebuild it to compare")
    files = (deb_entries if kind == "deb" else rpm_entries)(package)[0]
    modules = {f"{SITE}/{p.relative_to(src).as_posix()}" for p in sources}
    pages = set()
    for md in manuals:
        name, section = md.name[: -len(".N.md")], md.name[-4]
        pages.add(f"/usr/share/man/man{section}/{name}.{section}.gz")
    missing = sorted((modules | pages) - files)
    assert not missing, f"the .{kind} lacks {missing}"


def test_deb_conffiles(deb: Path) -> None:
    conffiles = deb_control_file(deb, "conffiles").split()
    assert conffiles == [CONFFILE]


def test_rpm_config_noreplace(rpm: Path) -> None:
    out = _run("rpm", "-qp", "--qf", r"[%{FILENAMES} %{FILEFLAGS:fflags}\n]", str(rpm))
    flags = dict(line.rsplit(" ", 1) if " " in line else (line, "") for line in out.splitlines())
    assert {"c", "n"} <= set(flags[CONFFILE]), f"{CONFFILE} flags: {flags[CONFFILE]!r}"
    assert not [f for f, fl in flags.items() if "c" in fl and f != CONFFILE]


def test_deb_relations(deb: Path) -> None:
    depends = _run("dpkg-deb", "--field", str(deb), "Depends")
    names = {alt.split()[0] for rel in depends.split(",") for alt in rel.split("|") if alt.strip()}
    assert set(DEB_DEPENDS) <= names, depends
    assert "linux-headers" in _run("dpkg-deb", "--field", str(deb), "Recommends")


def test_rpm_requires(rpm: Path) -> None:
    requires = {line.split()[0] for line in _run("rpm", "-qpR", str(rpm)).splitlines()}
    assert set(RPM_REQUIRES) <= requires


def deb_control_file(deb: Path, name: str) -> str:
    """A file of the .deb's control archive (postinst, ...), "" if absent."""
    tar = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        try:
            member = archive.extractfile(f"./{name}")
        except KeyError:
            return ""
        return member.read().decode() if member else ""


def test_scripts_manage_the_unit(deb: Path, rpm: Path) -> None:
    scripts = "".join(deb_control_file(deb, s) for s in ("postinst", "prerm", "postrm"))
    assert "deb-systemd-helper enable 'bouheki.service'" in scripts
    assert "deb-systemd-invoke stop 'bouheki.service'" in scripts
    rpm_scripts = _run("rpm", "-qp", "--scripts", str(rpm))
    for section in ("postinstall", "preuninstall", "postuninstall"):
        body = rpm_scripts.split(f"{section} scriptlet", 1)[1].split("scriptlet", 1)[0]
        assert "bouheki.service" in body, f"%{section} does not handle bouheki.service"


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_commands_are_executable(kind: str, request: pytest.FixtureRequest) -> None:
    package = request.getfixturevalue(kind)
    if kind == "deb":
        out = _run("dpkg-deb", "--contents", str(package))
        modes = {line.split()[-1].removeprefix("."): line.split()[0] for line in out.splitlines()}
    else:
        out = _run("rpm", "-qp", "--qf", r"[%{FILENAMES} %{FILEMODES:perms}\n]", str(package))
        modes = dict(line.split(" ", 1) for line in out.splitlines())
    for command in ("/usr/sbin/bouheki", "/usr/bin/bouhekictl"):
        assert modes[command].endswith("x"), f"{command}: {modes[command]}"
