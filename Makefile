# The README's commands. Each creates its virtualenv on first use.
#   make synth | make test               CDK for Terraform (the default engine)
#   make synth ENGINE=cdktn | make test ENGINE=cdktn   the same on CDK Terrain
PYTHON ?= python3
ENGINE ?= cdktf

ifeq ($(ENGINE),cdktf)
VENV ?= .venv
ENGINE_REQUIREMENTS := requirements.txt
else ifeq ($(ENGINE),cdktn)
VENV ?= .venv-cdktn
ENGINE_REQUIREMENTS := requirements-cdktn.txt
else
$(error ENGINE=$(ENGINE) is not an engine; use cdktf or cdktn)
endif

BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
export CDK_ENGINE := $(ENGINE)

.PHONY: synth test lint bench diagrams cost clean

## synth: synthesize every environment and the bootstrap stack into cdktf.out/
synth: $(VENV)/.installed-runtime
	$(BIN)/python main.py

## test: flake8, then the whole pytest suite (end-to-end tests included)
test: $(VENV)/.installed-dev
	$(BIN)/python -m flake8
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/python -m flake8

## diagrams: redraw docs/implementation.svg and docs/cloud.svg from the synthesized JSON
diagrams: synth
	$(BIN)/python scripts/diagrams.py

## cost: monthly estimate of every environment, and the README's tables
cost: synth
	$(BIN)/python scripts/cost.py
	$(BIN)/python scripts/cost.py production staging --update-doc README.md

## bench: synthesis on both engines, side by side
bench:
	$(MAKE) ENGINE=cdktf .venv/.installed-runtime
	$(MAKE) ENGINE=cdktn .venv-cdktn/.installed-runtime
	.venv/bin/python benchmarks/synth.py --python cdktf=.venv/bin/python \
		--python cdktn=.venv-cdktn/bin/python

$(VENV)/.installed-runtime: $(ENGINE_REQUIREMENTS) requirements-common.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r $(ENGINE_REQUIREMENTS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-runtime requirements-dev.txt
	$(PIP) -r $(ENGINE_REQUIREMENTS) -r requirements-dev.txt
	touch $@

clean:
	rm -rf .venv .venv-cdktn cdktf.out .pytest_cache
