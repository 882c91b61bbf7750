# Two commands on a fresh machine: `make run` (install + main job) and `make test` (install + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch first (an unpinned torch pulls CUDA wheels); DeepSpeed's setup imports torch,
# hence --no-build-isolation.
TORCH ?= torch==2.13.0

.PHONY: install run test bench
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

# The main job: the embedded default (tiny model, bundled corpus) on $(NPROC) ranks.
NPROC ?= 2
run: install
	$(VENV)/bin/deepspeed --num_gpus $(NPROC) launch/pretrain.py

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) tools/bench_model.py
	$(PY) tools/bench_train.py
	$(PY) tools/bench_contrastive.py
