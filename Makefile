# The two commands of the README. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: synth test lint clean

## synth: synthesize every environment and the bootstrap stack into cdktf.out/
synth: $(VENV)/.installed-runtime
	$(BIN)/python main.py

## test: flake8, then the whole pytest suite (end-to-end tests included)
test: $(VENV)/.installed-dev
	$(BIN)/python -m flake8
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/python -m flake8

$(VENV)/.installed-runtime: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@ $(VENV)/.installed-runtime

clean:
	rm -rf $(VENV) cdktf.out .pytest_cache
