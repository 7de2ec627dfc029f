#!/usr/bin/env bash
# Submit one long sweep as a chain of Slurm jobs that all feed the same surface file.
#
#   launch/slurm-chain.sh JOBS CONFIG.yaml [sbatch options ...] [-- lsurf sweep options ...]
#   launch/slurm-chain.sh 5 configs/random-2d.yaml --time=04:00:00 --ntasks=5 --gpus=4
#
# Each job runs launch/slurm.sbatch and starts after the previous one ends, however it ended
# (afterany): a job stopped by its time limit leaves everything computed on disk and the next
# resumes; once the surface is complete the remaining jobs exit 0 within seconds. Cancel the
# rest with `scancel --name=lsurf` (or their job ids, printed here).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: launch/slurm-chain.sh JOBS CONFIG.yaml [sbatch options] [-- sweep options]" >&2
  exit 2
fi
jobs=$1
config=$2
shift 2
sbatch_options=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  sbatch_options+=("$1")
  shift
done
[ $# -gt 0 ] && shift  # the "--"
here=$(cd "$(dirname "$0")" && pwd)
previous=""
for _ in $(seq 1 "$jobs"); do
  dependency=()
  [ -n "$previous" ] && dependency=(--dependency="afterany:$previous")
  previous=$(sbatch --parsable "${dependency[@]}" "${sbatch_options[@]}" \
    "$here/slurm.sbatch" "$config" "$@")
  previous=${previous%%;*}
  echo "$previous"
done
