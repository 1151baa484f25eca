# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and
# install everything pinned (pyproject.toml) on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: venv demo lint test test-fast soak bench bench-real bench-rerank scale-5m gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRA),dev]"
	touch $(STAMP)

venv: $(STAMP)

# --overwrite: `make demo` again starts afresh over runs/demo (train.py alone refuses an earlier run).
demo: $(STAMP)
	$(PY) train.py --overwrite

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

# The re-rank by % identity beside k-mer-8 and alignment 1-NN, and their speed at 100k keys (docs/identify.md).
bench-rerank: $(STAMP)
	$(PY) bench/rerank.py

# BIOSCAN-5M's size on one CPU machine (docs/scale.md): 500 000 rows, then 5 000 000, into
# bench/scale_5m.json with each stage's growth exponent. About 2 hours on 2 cores; 5 M x 768 keys
# need ~20 GB of RAM while the library is built (--dim for less).
scale-5m: $(STAMP)
	$(PY) bench/scale_5m.py --rows 500000
	$(PY) bench/scale_5m.py --rows 5000000

# One GPU, no download, <= 8 minutes on an H200: writes bench/gpu_results.json (EXTRA=cuda for faiss-gpu).
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(VENV) .cache runs data/demo
