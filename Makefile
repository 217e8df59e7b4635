# Every target bootstraps .venv first, so each works on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow sync lab bench clean-venv

install: $(STAMP)

# (Re)install when the project's requirements change. The CUDA-enabled torch wheel is used where it is found
# (it runs on the CPU too); the kernel is registered inside the venv so papermill and JupyterLab find it.
$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name python3 >/dev/null
	touch $(STAMP)

# The main job on the built-in default dataset and model; prints where the results are.
demo: $(STAMP)
	$(BIN)/wsss run demo --run-id default $(ARGS)

# Notebooks and wsss_lib/ in sync, library notebooks' tests, then pytest; closes with "N passed, N failed".
test: $(STAMP)
	$(BIN)/python tests/check_sync.py
	$(BIN)/python tests/run_suite.py $(ARGS)

# The same with the heavy cells (`#| slow`) and pytest's slow tests included.
test-slow: $(STAMP)
	$(BIN)/python tests/run_suite.py --slow $(ARGS)

# Clean and export the notebooks (what a developer runs before committing).
sync: $(STAMP)
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=nbs $(ARGS)

bench: $(STAMP)
	for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
