#!/usr/bin/env bash
# Stops the cluster slurm_up.sh started in DIR (whatever state it is in).
dir=$(realpath -m "$1")
for name in slurmd slurmctld munge/munged; do
  if [ -f "$dir/$name.pid" ]; then
    kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
  fi
done
sleep 1
for name in slurmd slurmctld munge/munged; do
  if [ -f "$dir/$name.pid" ]; then
    kill -9 "$(cat "$dir/$name.pid")" 2>/dev/null || true
  fi
done
exit 0
