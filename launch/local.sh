#!/usr/bin/env bash
# lsurf sweep on this machine: one worker per GPU plus the master (rank 0), or on CPU a
# master plus workers sharing the cores.
#
#   launch/local.sh CONFIG.yaml [CONFIG.yaml ...] [lsurf sweep options]
#   LSURF_WORKERS=2 launch/local.sh configs/demo/sweep.yaml
#
# Workers: LSURF_WORKERS if set, else the number of GPUs torch sees, else 2 on CPU (two
# one-thread workers beat one two-thread process on small CPUs; use cores/2 on big ones).
# Rerunning the same command resumes an interrupted sweep.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: launch/local.sh CONFIG.yaml [CONFIG.yaml ...] [lsurf sweep options]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
python=${LSURF_PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=$(command -v python3)
workers=${LSURF_WORKERS:-$("$python" -c 'import torch; print(torch.cuda.device_count())')}
[ "$workers" -gt 0 ] || workers=2
mpiexec=${LSURF_MPIEXEC:-$(dirname "$python")/mpiexec}
[ -x "$mpiexec" ] || mpiexec=$(command -v mpiexec)
echo "lsurf: $workers workers + master via $mpiexec" >&2
# Inside a Slurm allocation (salloc) mpiexec starts its helpers with srun: SLURM_MPI_TYPE=none
# keeps the site's MpiDefault plugin out of them, as in launch/slurm.sbatch.
exec env SLURM_MPI_TYPE=none "$mpiexec" -n $((workers + 1)) "$python" -m mpi4py -m lsurf sweep "$@"
