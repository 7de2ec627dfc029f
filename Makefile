# Two commands on a fresh machine: `make demo` (install + demo sweep + picture) and
# `make test` (install + test suite). Both build the local virtual environment .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= runs/demo

.PHONY: install demo test bench lint clean-demo

install: $(VENV)/.installed

# torch/torchvision are pinned to the release pair this project is tested with; the rest
# comes from setup.cfg. mpich is the MPI library wheel mpi4py runs on by default.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[mpich,test]"
	touch $@

demo: install
	$(BIN)/lsurf data synth --out $(DEMO)/data --train-size 5000 --test-size 1000
	$(BIN)/lsurf train configs/demo/train.yaml
	$(BIN)/lsurf sweep configs/demo/sweep.yaml
	$(BIN)/lsurf info $(DEMO)/surface.h5
	$(BIN)/lsurf plot $(DEMO)/surface.h5 --metric train_loss

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/mpi_scaling.py

lint: install
	$(BIN)/ruff check lsurf tests benchmarks

clean-demo:
	rm -rf $(DEMO)
