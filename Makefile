# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and
# install everything pinned (pyproject.toml) on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: venv demo lint test test-fast soak bench bench-real gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRA),dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) train.py

# ruff: pyflakes, pycodestyle, import order, bugbear and the formatter, line length 120 (pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -n 2 --dist loadfile -m "not soak" tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow and not soak" tests

# The fault and fuzz figures at their goals (README, Tests): the soak-marked SIGKILL rounds
# and every fuzz test at 1,000 cases. About 20 minutes on 2 cores.
soak: $(STAMP)
	CLIBD_FUZZ_EXAMPLES=1000 $(PY) -m pytest -n 2 --dist load -m "soak or fuzz" --hypothesis-show-statistics -rP tests

bench: $(STAMP)
	$(PY) bench/run.py

bench-real: $(STAMP)
	$(PY) bench/real_barcodes.py

# One GPU, no download, <= 8 minutes on an H200: writes bench/gpu_results.json (EXTRA=cuda for faiss-gpu).
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(VENV) .cache runs data/demo
