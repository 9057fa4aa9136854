PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test test-fast bench

# torch first, pinned, so pip never pulls a multi-GB CUDA build.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"

demo: install
	$(PYTHON) -m medmm demo --out demo_out

test: install
	$(PYTHON) -m pytest -n 2 -q

test-fast: install
	$(PYTHON) -m pytest -n 2 -q -m "not slow"

bench: install
	$(PYTHON) benchmarks/io_load.py
	$(PYTHON) benchmarks/infer_scaling.py
