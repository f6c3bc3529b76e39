# The two commands of the README: `make results` and `make test`.
# TORCH_INDEX: a wheel index for torch, e.g. https://download.pytorch.org/whl/cpu for the CPU build.
# Each config writes under its own `workdir`: the default at the top, smoke under runs/smoke/,
# the rehearsal under runs/rehearsal/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: results test smoke rehearsal lint clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

results: $(STAMP)
	$(BIN)/snakemake --cores all

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

smoke: $(STAMP)
	$(BIN)/snakemake --cores all --configfile config/smoke.yaml

# config/paper.yaml at tiny scale, on offline data written first (runs/rehearsal/data).
rehearsal: $(STAMP)
	$(BIN)/python -m soft_tokens.rehearsal runs/rehearsal/data
	$(BIN)/snakemake --cores all --configfile config/rehearsal.yaml

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

clean:
	rm -rf results logs resources .snakemake runs
