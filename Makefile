# Two entry points: `make run` (executes every notebook headlessly: figures + MLflow runs)
# and `make test` (lint, unit/property tests, notebooks under nbval). Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline dataset mirror: used when present (CI and this machine), else official downloads.
export MLW_DATA_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test venv data lint format clean-runs mlflow-ui benchmark benchmark-cnn benchmark-transformer paper what-pays regression stable bad-inputs mlflow-screenshot

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

data: $(STAMP)
	$(PY) -c "import mlw_lib.data as d; [print(d.load_dataset(n).info.describe()) for n in d.IMAGES]"
	$(PY) -c "import mlw_lib.data as d; print(d.imdb.fetch_archive())"

run: data
	$(PY) -m mlw_lib run-all

paper: data
	MLW_FIGURES_DIR=$(CURDIR)/figures/paper $(PY) -m mlw_lib run-all --params paper

# Does multilevel pay? Notebook 06 on each task (params/paper/06_what_pays*.yaml), figures and
# results.md into figures/paper/06_what_pays/<task>/ (part of `make paper` too).
what-pays: data
	for params in params/paper/06_what_pays*.yaml; do \
		MLW_FIGURES_DIR=$(CURDIR)/figures/paper $(PY) -m mlw_lib run 06 -f $$params || exit 1; \
	done

# Regression on PDE data: notebook 07 on Darcy (FC, CNN) and Poisson (params/paper/07_*.yaml),
# figures and results.md into figures/paper/07_regression_pde/<problem>_<net>/.
regression: $(STAMP)
	for params in params/paper/07_regression_pde*.yaml; do \
		MLW_FIGURES_DIR=$(CURDIR)/figures/paper $(PY) -m mlw_lib run 07 -f $$params || exit 1; \
	done

# Stable nets, depth coarse-to-fine and layer-parallel training: notebook 08 at full size
# (params/paper/08_stable_parallel.yaml), figures and results.md into figures/paper/08_stable_parallel/.
stable: data
	MLW_FIGURES_DIR=$(CURDIR)/figures/paper $(PY) -m mlw_lib run 08 -f params/paper/08_stable_parallel.yaml

# The table of bad inputs and faults (results/bad_inputs.md), written by the tests that try them.
bad-inputs: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest -q -p no:cacheprovider tests --bad-inputs-table results/bad_inputs.md

lint: $(STAMP)
	$(VENV)/bin/ruff check mlw_lib tests benchmarks notebooks
	$(VENV)/bin/ruff format --check mlw_lib tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format mlw_lib tests benchmarks
	$(VENV)/bin/ruff check --fix mlw_lib tests benchmarks

# CI notebooks write their figures and MLflow runs under runs/ci/, never over figures/.
# Two pytest processes side by side on the 2 cores, each with its own MLflow store: the tests
# that drive whole CLI runs and kernels with the notebooks under nbval, and all other tests
# with notebook 08 (the longer of the two sets the time: move tests between them to balance). One torch thread each: two OpenMP threads per process on
# cores the other process also uses made small conv tests ~100x slower (spinning threads).
PROCESS_TESTS := tests/test_executions.py
UNIT_NOTEBOOKS := runs/ci/08_stable_parallel.ipynb
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=600
test: lint data
	$(PY) -m mlw_lib prepare-ci
	export TQDM_DISABLE=1 MLW_FIGURES_DIR=$(CURDIR)/runs/ci/figures; \
	MLW_MLFLOW_DIR=$(CURDIR)/runs/ci/mlflow OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
		$(PROCESS_TESTS) runs/ci $(addprefix --ignore=,$(UNIT_NOTEBOOKS)) $(NBVAL) --durations=15 \
		> runs/ci/processes.log 2>&1 & processes=$$!; \
	MLW_MLFLOW_DIR=$(CURDIR)/runs/ci/mlflow-unit OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests --durations=12 \
		$(addprefix --ignore=,$(PROCESS_TESTS)) $(UNIT_NOTEBOOKS) $(NBVAL); unit=$$?; \
	wait $$processes; processes=$$?; echo "--- $(PROCESS_TESTS) and the notebooks:"; \
	cat runs/ci/processes.log; test $$unit -eq 0 && test $$processes -eq 0

benchmark: data
	$(PY) benchmarks/bench_mlp.py

benchmark-cnn: data
	$(PY) benchmarks/bench_cnn.py

benchmark-transformer: data
	$(PY) benchmarks/bench_transformer.py

mlflow-ui: $(STAMP)
	$(PY) -c "import mlw_lib.mlflow_ui as u; print(u.mlflow_ui_command())" | bash

# figures/paper/mlflow_ui.png: the UI on experiment $(EXPERIMENT)'s runs (needs chromium installed)
EXPERIMENT ?= 01-mlp-mnist
mlflow-screenshot: $(STAMP)
	$(PY) -c "import mlw_lib.mlflow_ui as u; print(u.ui_screenshot('figures/paper/mlflow_ui.png', '$(EXPERIMENT)'))"
