# The two commands of the README: `make demo` and `make test`.
PY ?= /usr/bin/python3

.PHONY: demo test unit lab lint bench deb rpm clean
demo:
	tests/vm/setup-host
	tests/vm/run --script tests/vm/demo/run-demo --results .lab/demo

test:
	tests/run-all

unit:
	tests/vm/setup-host
	$(PY) -m pytest tests/unit -q

lab:
	tests/vm/run --suite tests/vm/guest

# Boots the lab and measures (bench/README.md): bench/RESULTS.md, bench/results.json.
bench:
	tests/vm/setup-host
	$(PY) bench/run

lint:
	python3 -m ruff --version >/dev/null 2>&1 || python3 -m pip install -q ruff
	python3 -m ruff check src tests bench
	python3 -m ruff format --check src tests bench

# Packages, built out of tree in build/ (packaging/build-deb, build-rpm):
# dist/bouheki_<version>_all.deb and dist/bouheki-<version>-1.noarch.rpm.
# As root on Debian, missing build dependencies are installed with apt-get.
# make deb DEB_VERSION_SUFFIX=+lab1: the same tree as version <version>+lab1,
# in dist/upgrade/bouheki_<version>+lab1_all.deb (the lab's upgrade test).
DEB_VERSION_SUFFIX ?=
deb:
	PY=$(PY) DEB_VERSION_SUFFIX='$(DEB_VERSION_SUFFIX)' packaging/build-deb

rpm:
	PY=$(PY) packaging/build-rpm

clean:
	rm -rf .lab build dist
