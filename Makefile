# Two commands on a fresh machine: `make demo` (install + demo sweep + picture) and
# `make test` (install + test suite). Both build the local virtual environment .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= runs/demo

.PHONY: install demo test docs-check cluster-deps bench lint clean-demo gpu-check

install: $(VENV)/.installed

# torch/torchvision are pinned to the release pair this project is tested with; the rest
# comes from setup.cfg. mpich is the MPI library wheel mpi4py runs on by default.
# Every optional extra too, so the tests of the callbacks, trackers, notebooks and language
# models run (a bare `pip install lsurf` needs none of them).
EXTRAS = mpich,test,lightning,transformers,peft,wandb,tensorboard,notebook

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(BIN)/lsurf data synth --out $(DEMO)/data --train-size 5000 --test-size 1000
	$(BIN)/lsurf train configs/demo/train.yaml
	$(BIN)/lsurf sweep configs/demo/sweep.yaml
	$(BIN)/lsurf info $(DEMO)/surface.h5
	$(BIN)/lsurf plot $(DEMO)/surface.h5 --metric train_loss --log

# The Slurm tests run a real one-node cluster: Debian's slurm-wlm and munge, installed here
# when this is root on Debian/Ubuntu (as CI is); elsewhere those tests skip with a note.
# Two pytest workers (pytest-xdist), each with cores/2 threads (tests/conftest.py): the MPI jobs
# run one at a time on one of them (their own xdist group, as the Slurm tests have theirs),
# everything else spreads over both. Three measured the same (10:57 against 10:44, Dec 2026).
TEST_WORKERS ?= 2
test: install cluster-deps
	LSURF_REQUIRE_SLURM=$$(command -v slurmctld >/dev/null && echo 1 || echo 0) \
	  $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 tests

# The commands README.md and docs/ show that are cheap on CPU, run exactly as written on small
# synthetic stand-ins for what `make demo` leaves (tests/doc_commands.py lists them; about a
# minute). `make test` runs the same through tests/test_docs.py.
docs-check: install
	$(BIN)/python tests/doc_commands.py

# The container (docker/Dockerfile, docs/container.md): built with podman on a local Debian
# bookworm base (made once with debootstrap, then reused) and run: lsurf --version, a sweep
# under mpiexec -n 3, and the demo, whose surface must equal this host's demo bit for bit.
# As root on Debian/Ubuntu it first installs podman, runc and debootstrap; docker/test.py
# prints each step's time. Not part of `make test`: CI runs it as a step of its own after it.
.PHONY: docker-test
docker-test: install
	$(BIN)/python docker/test.py

cluster-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing slurm-wlm and munge for the Slurm tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    slurm-wlm munge >/dev/null; \
	else echo "note: no Slurm here and no root apt-get to install it: Slurm tests will skip"; fi

bench: install
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/mpi_scaling.py
	$(BIN)/python benchmarks/hessian_cost.py
	$(BIN)/python benchmarks/evaluation_speed.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/connect_cost.py
	$(BIN)/python benchmarks/alignment.py
	$(BIN)/python benchmarks/topology.py
	$(BIN)/python benchmarks/causal_lm.py
	$(BIN)/python benchmarks/capture.py

# mypy checks lsurf/ (pyproject.toml's [tool.mypy]).
lint: install
	$(BIN)/ruff check lsurf tests benchmarks
	$(BIN)/mypy

clean-demo:
	rm -rf $(DEMO)

# The GPU check for a lent device (benchmarks/gpu_check.sh, at most 8 minutes): the device, the
# CUDA tests, a sweep under mpiexec -n 2 on the GPU, the 51x51 ResNet-56 timings; its report
# goes to $(GPU_CHECK_OUT)/gpu-check-report.md.
GPU_CHECK_OUT ?= runs/gpu-check
gpu-check:
	benchmarks/gpu_check.sh --out $(GPU_CHECK_OUT)
