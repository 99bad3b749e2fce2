# Set-up commands: `make test` and `make demo` create the virtual environment themselves.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DS_ACCELERATOR ?= cpu
export DS_BUILD_OPS ?= 0
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv test test-fast demo experiment bench clean

venv: $(STAMP)

# DeepSpeed's CPU backend JIT-compiles a small shm op (deepspeed/comm/torch.py) at every process group's start unless
# TORCH_EXTENSIONS_DIR already holds it: ~1 CPU-min, built here once with the environment instead of in the first
# training a test or the demo starts (the others wait on its lock meanwhile).
define PREBUILD_SHM_OP
from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
ShareMemCommBuilder().load(verbose=False)
endef
export PREBUILD_SHM_OP

# torch==2.13.0 first and alone (a CPU wheel; any other torch request pulls a CUDA build).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -c "$$PREBUILD_SHM_OP"
	touch $(STAMP)

# Two pytest-xdist workers (tests/conftest.py keeps each module, and each shared server's tests, on one worker);
# pytest-randomly shuffles the order on every run (its seed is printed: PYTEST_ARGS=--randomly-seed=N repeats an order).
# One intra-op thread per process: each worker, and each training it starts, is one of several CPU-bound processes
# on the machine (torchrun does the same for its ranks); OpenMP threads beyond that spin against each other
# (measured on 2 cores: the suite's CPU time 924 -> 847 s, its wall 629 -> 599 s).
WORKERS ?= 2
test test-fast: export OMP_NUM_THREADS ?= 1
# The project's own modules compiled once up front: with PYTHONDONTWRITEBYTECODE set (as on our machines) every
# process the suite starts compiled them again (~0.2 s of each start).
COMPILE := $(BIN)/python -m compileall -q pipeline data_prep demo benchmarks tests > /dev/null
test: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadscope --durations=15 $(PYTEST_ARGS)

# Unit and property tests only: no training, no multi-process launches, no servers.
test-fast: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadscope -m "not heavy and not slurm and not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m demo $(DEMO_ARGS)

experiment: $(STAMP)
	$(BIN)/python -m benchmarks.quality_experiment $(EXPERIMENT_ARGS)
	$(BIN)/python -m benchmarks.precision_quality $(EXPERIMENT_ARGS)

bench: $(STAMP)
	for b in benchmarks/render.py benchmarks/model.py benchmarks/grad_cache.py benchmarks/loader.py benchmarks/serving.py benchmarks/concurrency.py benchmarks/checkpoint_hash.py benchmarks/gc_setup.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_out .pytest_cache
