# Two entry points do all the set-up on a fresh machine: `make app` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(abspath $(VENV)/bin/uv)
LOCKS := requirements.txt requirements-dev.txt
STAMP := $(VENV)/.installed-$(shell cat $(LOCKS) pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install app test test-fast test-latest lint lock lock-check bench browser

# The venv holds exactly the dev lock: pip installs its pinned, hashed packages and nothing
# they would pull in (--no-deps: the lock already names every one), then the package itself
# builds with the locked setuptools, and `pip freeze` is compared with the lock.
$(STAMP): $(LOCKS) pyproject.toml
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps --find-links /opt/wheels -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m testkit.locks verify requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

app: install
	$(PY) app.py

# The locks, compiled by uv from the inputs. Each command is written once, for `lock` and
# `lock-check`. The runtime lock is what the Space installs: one version of every package
# for Python 3.11 and up (the Space runs 3.12, these machines 3.11), every platform's
# hashes. The dev lock adds the test tools on top of it, for these CPU machines.
LOCK_RUNTIME = $(UV) pip compile -q requirements.in --universal --fork-strategy fewest --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock"
LOCK_DEV = $(UV) pip compile -q requirements-dev.in -c requirements.txt --override requirements-dev.overrides \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
	--generate-hashes --custom-compile-command "make lock"

# Regenerates both locks: new inputs are resolved, every other pin is kept (uv prefers the
# versions already in the output file). `make lock UPGRADE=--upgrade` moves every pin.
lock: install
	$(LOCK_RUNTIME) $(UPGRADE) -o requirements.txt
	$(LOCK_DEV) $(UPGRADE) -o requirements-dev.txt

# CI fails when a lock is stale against its input: compiled again from copies of
# themselves, both must pin the same packages at the same versions (hashes may grow: a
# wheel uploaded later for a locked version is no staleness).
lock-check: install
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && cp requirements*.in requirements-dev.overrides $(LOCKS) $$tmp/ && \
	(cd $$tmp && $(LOCK_RUNTIME) -o requirements.txt && $(LOCK_DEV) -o requirements-dev.txt) || \
		{ echo "the locks could not be compiled again (PyPI unreachable, or the .in files no longer resolve): run 'make lock'" >&2; exit 1; } && \
	for f in $(LOCKS); do $(PY) -m testkit.locks same $$f $$tmp/$$f || { echo "$$f is stale against its .in file: run 'make lock' and commit both" >&2; exit 1; }; done && \
	echo "locks: up to date with requirements.in and requirements-dev.in"

# ruff, and vermin: the code must run on the Python the Space pins (README front matter,
# python_version 3.12.12, one ZeroGPU lists), while these machines have only 3.11.
lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/vermin --target=3.12- --violations --eval-annotations --no-tips app.py core merging inference arena evaluation ui testkit

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The tests whose numbers go through the C kernels (SLERP sums, decode steps, kept caches).
KERNEL_TESTS = tests/test_slerp.py tests/test_merge.py tests/test_decoder.py tests/test_inference.py \
	tests/test_kept_caches.py tests/test_native.py tests/test_preview.py

# Everything (CI): lint, the locks against their inputs, then every test, browser and slow
# ones included; then the kernels' tests again with every C kernel off, the path of a host
# without a compiler (40 s; the whole fast suite again took 2 min, and the other tests
# assert behaviour, not numbers).
test: install lint lock-check browser
	$(PY) -m pytest -q
	SLERP_ARENA_KERNELS=torch $(PY) -m pytest -q -m "not browser and not slow" $(KERNEL_TESTS)

# The inner loop: no browser, nothing slow (under 3 minutes on 2 cores).
test-fast: install
	$(PY) -m pytest -q -m "not browser and not slow"

# Drift, seen in a branch: the newest versions the .in files allow, in a venv of their own
# (torch stays the machine's CPU build), what moved against the lock, then the fast suite.
LATEST := .venv-latest
test-latest: install
	rm -rf $(LATEST) && python3 -m venv $(LATEST)
	$(UV) pip compile -q requirements-dev.in --override requirements-dev.overrides --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels -o $(LATEST)/requirements.txt
	$(UV) pip sync -q --python $(LATEST)/bin/python --find-links /opt/wheels $(LATEST)/requirements.txt
	$(LATEST)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m testkit.locks moved requirements-dev.txt $(LATEST)/requirements.txt
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider -m "not browser and not slow"

bench: install
	$(PY) benchmarks/merge_bench.py
