#!/usr/bin/env bash
# The GPU check for the first device lent to the project (issue 24, part 3): in one run of at
# most 8 minutes on one GPU, the CUDA tests, a sweep under `mpiexec -n 2` on the GPU against the
# serial one, and the headline timing (ResNet-56, a 51x51 plane over the 50,000-image train
# split, fp32, tf32 and bf16), into OUT/gpu-check-report.md. benchmarks/gpu_check.py runs the
# steps and says what each does; this script is the install step.
#
#   benchmarks/gpu_check.sh [--out DIR] [--work DIR] [--cpu] [--steps A,B] [--mpiexec PATH|none]
#                           [--plan]
#
# Install: a Python that already imports torch wins, and lsurf runs from this checkout through
# PYTHONPATH, nothing installed (a lent device machine reaches no package index, and a venv with
# torch is over what travels to it): .venv/bin/python where `make install` made one, else
# python3. Only where neither imports torch is `make install` run (a fresh machine with network).
#
# MPI on a lent device: whether it has an mpiexec is unknown. The mpi step takes the first of
# .venv/bin/mpiexec, one beside the Python, `mpiexec` on PATH, or the mpich wheel carried in
# .whl/ (installed under the work folder; it holds mpiexec and libmpi and fits any Python),
# and with none it is skipped, the report saying why. To carry the wheel, once, here, from the
# repository's root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
#     -d .whl mpich==5.0.2
# then the device tool's run with carry [".whl"] and the command
#   benchmarks/gpu_check.sh --out $OUT --work /tmp/gpu-check
# (the work folder outside $OUT: the data is about 220 MB and only the report and the logs come back).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
# Whether a Python has these modules, without importing them (torch takes seconds; the device
# step imports it and reports a broken one).
has() {
  "$1" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" "${@:2}" 2>/dev/null
}
# No cd: --out and --work are the caller's paths, relative to where it stands.
if [ -x "$repo/.venv/bin/python" ] && has "$repo/.venv/bin/python" torch lsurf; then
  python=$repo/.venv/bin/python
  install="the project's .venv (made by make install)"
elif has python3 torch h5py yaml; then
  python=python3
  install="python3, which imports torch; lsurf from this checkout through PYTHONPATH"
else
  echo "gpu_check.sh: no Python here imports torch; running make install" >&2
  make -C "$repo" install >&2 || { echo "gpu_check.sh: make install failed" >&2; exit 1; }
  python=$repo/.venv/bin/python
  install="make install (no Python here imported torch)"
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
export LSURF_GPU_CHECK_INSTALL=$install
# Progress lines are timestamped as they arrive: nothing may sit in a buffer.
export PYTHONUNBUFFERED=1
exec "$python" "$repo/benchmarks/gpu_check.py" "$@"
