# Two commands set up and run everything on a fresh machine:
#   make demo   the main job (creates .venv on first use)
#   make test   the whole test suite, slow tests included (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install

install: $(STAMP)

# Re-installs only when pyproject.toml changes, so the second run is quick.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m orchestration.ablate suite=paper scale=mini

# Two test processes, each taking whole files (module fixtures are built once): most slow tests
# wait on drivers, servers and Ray, so this halves the wall time on 2 cores.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/train_step.py --preset trm_mlp --batch 64 --device cpu
