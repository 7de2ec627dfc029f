#!/usr/bin/env bash
# Stops the cluster slurm_up.sh started in DIR (whatever state it is in). Jobs still running
# are cancelled first and given up to 20 s to end: slurmstepd outlives a stopped slurmd by
# design, so a job left hanging would keep its processes after the cluster is gone.
dir=$(realpath -m "$1")
export SLURM_CONF="$dir/slurm.conf"
if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  scancel --partition=test 2>/dev/null || true
  for _ in $(seq 1 40); do
    [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ] && break
    sleep 0.5
  done
fi
# slurmd.pid for one node, slurmd-nodeK.pid for each fake node (slurm_up.sh DIR CPUS MPI NODES).
pid_files=("$dir"/slurmd.pid "$dir"/slurmd-*.pid "$dir"/slurmctld.pid "$dir"/munge/munged.pid)
for pid_file in "${pid_files[@]}"; do
  if [ -f "$pid_file" ]; then
    kill "$(cat "$pid_file")" 2>/dev/null || true
  fi
done
sleep 1
for pid_file in "${pid_files[@]}"; do
  if [ -f "$pid_file" ]; then
    kill -9 "$(cat "$pid_file")" 2>/dev/null || true
  fi
done
exit 0
