# shellcheck shell=bash
# Shared by packaging/build-deb and packaging/build-rpm (sourced, not run).
#
# Both builds are out of tree: the sources are copied to build/<kind>/, the
# package is built there, and only the result is copied to dist/.
set -euo pipefail

# The distribution's tools only: a Python or pip earlier on PATH (pyenv, a
# virtualenv, /usr/local) must not build a distribution package.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-/usr/bin/python3}
BUILD_DIR=${BUILD_DIR:-$TOP/build}
DIST_DIR=${DIST_DIR:-$TOP/dist}
PROG=${PROG:-$(basename "$0")}

die() {
	echo "$PROG: error: $*" >&2
	exit 1
}
say() { echo "$PROG: $*" >&2; }

# Every source file the packages install, by its path in the tree. Others
# write some of these: a missing one fails the build here, with the list,
# rather than half-way through dpkg-buildpackage or rpmbuild.
REQUIRED_SOURCES=(
	pyproject.toml
	src/bouheki/__init__.py
	src/bouheki/service/main.py
	src/bouheki/ctl/main.py
	bpf/bouheki.bpf.c
	bpf/bouheki.h
	systemd/bouheki.service
	systemd/bouheki.catalog
	dbus/org.bouheki.Bouheki1.conf
	dbus/org.bouheki.Bouheki1.Manager.xml
	etc/bouheki/bouheki.toml
	vendor/units/bouheki.service.toml
	doc/bouheki.8.md
	doc/bouhekictl.8.md
	doc/bouheki.toml.5.md
)
# Installed as examples: at least one must exist.
EXAMPLE_GLOB='etc/bouheki/units/*.toml.example'
# Copied into the build tree when present, never required.
OPTIONAL_SOURCES=(README.md LICENSE LICENSE.txt COPYING setup.cfg setup.py MANIFEST.in)
# What the build tree holds (directories are copied whole).
STAGED_PATHS=(pyproject.toml src bpf systemd dbus etc vendor doc completion)

check_sources() {
	local missing=() f
	for f in "${REQUIRED_SOURCES[@]}"; do
		[[ -f $TOP/$f ]] || missing+=("$f")
	done
	# shellcheck disable=SC2086 # the glob is meant to expand
	if ! compgen -G "$TOP/"$EXAMPLE_GLOB >/dev/null; then
		missing+=("$EXAMPLE_GLOB (at least one example unit policy)")
	fi
	if ((${#missing[@]})); then
		{
			echo "$PROG: error: cannot build the package: these source files are missing:"
			printf '  %s\n' "${missing[@]}"
			echo "(the package must install every one of them; see packaging/lib.sh)"
		} >&2
		exit 1
	fi
}

# The version of pyproject.toml, written so that dpkg and rpm order it like
# PEP 440 does: a pre-release (1.0rc1, 1.0.dev2) sorts before the release.
pkg_version() {
	"$PY" - "$TOP/pyproject.toml" <<'PYEOF'
import re
import sys

with open(sys.argv[1], "rb") as f:
    data = f.read()
try:
    import tomllib

    version = tomllib.loads(data.decode())["project"]["version"]
except ImportError:  # Python < 3.11 without tomli: the key is on one line
    version = re.search(rb'^version\s*=\s*"([^"]+)"', data, re.M).group(1).decode()
if not re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version):
    sys.exit(f"pyproject.toml: version {version!r} is not a plain PEP 440 version")
public, plus, local = version.partition("+")
print(re.sub(r"[._-]?(a|b|rc|dev)(\d*)", r"~\1\2", public) + plus + local)
PYEOF
}

# A date for changelogs: the last commit's, so that a rebuild of the same
# commit gives the same package; now, outside a git checkout.
pkg_epoch() {
	git -C "$TOP" log -1 --format=%ct 2>/dev/null || date +%s
}

# Installs the Debian packages named, when some are missing. As root with
# apt-get only; anyone else is told what to install.
APT_UPDATED=
ensure_packages() {
	command -v dpkg-query >/dev/null || return 0 # not Debian: the tools are checked later
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		die "missing build dependencies: ${missing[*]} (as root: apt-get install ${missing[*]})"
	fi
	say "installing build dependencies: ${missing[*]}"
	apt_update
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

apt_update() {
	[[ -n $APT_UPDATED ]] && return 0
	DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
	APT_UPDATED=1
}

# Copies the sources a package is built from to $1 (emptied first).
stage_tree() {
	local dest=$1 paths=("${STAGED_PATHS[@]}") f
	for f in "${OPTIONAL_SOURCES[@]}"; do
		[[ -e $TOP/$f ]] && paths+=("$f")
	done
	rm -rf "$dest"
	mkdir -p "$dest"
	tar -C "$TOP" -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
		"${paths[@]}" | tar -C "$dest" -xf -
}
