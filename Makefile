PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install test test-fast train bench lint

# torch 2.13.0 first: on a CPU machine that takes the CPU wheel, not several GB of CUDA wheels.
install:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,smax,sweep,trackers]"

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

train:
	wqmix train t_max=50000

bench:
	$(PYTHON) scripts/benchmark.py

lint:
	$(PYTHON) -m ruff check wqmix_cli tests scripts examples
