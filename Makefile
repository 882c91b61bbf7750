# Two commands on a fresh machine: `make run` (install + main job) and `make test` (install + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first (DeepSpeed's setup imports it, hence --no-build-isolation). TORCH_INDEX picks the wheel
# index: empty = PyPI (the CUDA build on an ordinary machine), or e.g.
# https://download.pytorch.org/whl/cpu for the CPU build.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install run test bench
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	@# DeepSpeed's CPU all-reduce op, built once into this virtualenv (not at every launch).
	$(PY) -c "from growth.distributed.deepspeed_adapter import build_cpu_ops; print('deepspeed ops in', build_cpu_ops())"
	touch $@

# The main job: the embedded default (tiny model, bundled corpus) on $(NPROC) ranks.
NPROC ?= 2
run: install
	$(VENV)/bin/deepspeed --num_gpus $(NPROC) launch/pretrain.py

test: install
	$(PY) -m pytest -q --durations=25

bench: install
	$(PY) tools/bench_model.py
	$(PY) tools/bench_train.py
	$(PY) tools/bench_contrastive.py
	$(PY) tools/bench_growth.py
	$(PY) tools/bench_growth_schedule.py
	$(PY) tools/bench_save_memory.py
	$(PY) tools/bench_data.py
