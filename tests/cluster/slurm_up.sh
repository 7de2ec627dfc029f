#!/usr/bin/env bash
# Starts a Slurm cluster (munge, slurmctld, a slurmd per node) with all state in DIR, as root.
# Usage: slurm_up.sh DIR CPUS [MPI_DEFAULT] [NODES] — prints the SLURM_CONF path;
# slurm_down.sh DIR stops it. Debian's slurm-wlm + munge, no cgroups (sandbox):
# proctrack/linuxproc, task/none. MPI_DEFAULT (default none) is slurm.conf's MpiDefault, the
# plugin every srun without --mpi loads: `pmix` without the PMIx library installed makes a
# site whose default cannot load.
#
# NODES (default 1) above 1 fakes that many nodes on this machine, node1..nodeN, CPUS each:
# one slurmd per node (`slurmd -N nodeK`, its own port, spool, pid file and log), each in a
# UTS namespace whose hostname is nodeK, so every job step it starts (the batch script,
# srun's tasks, mpiexec's proxies and their ranks) sees the hostname of its node, as MPI's
# shared-memory split and lsurf's node-local placement need. All traffic stays on the
# loopback: slurmctld reaches every slurmd at NodeAddr=127.0.0.1 on the node's own port; the
# nodes' names resolve to 127.0.0.1 through a private hosts file bound over /etc/hosts in
# each slurmd's mount namespace (the machine's own /etc/hosts is not touched); and a
# TaskProlog holds every task to the lo interface (HYDRA_IFACE=lo for MPICH's hydra,
# UCX_NET_DEVICES=lo for the ranks' UCX), where they would otherwise pick eth0's address.
set -euo pipefail
dir=$(realpath -m "$1")
cpus=${2:-4}
mpi_default=${3:-none}
nodes=${4:-1}
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ ]]; then
  echo "NODES must be a positive number, got '$nodes'" >&2
  exit 2
fi
if [ "$nodes" -gt 1 ] && { [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; }; then
  echo "fake nodes need root and util-linux's unshare (a UTS namespace per slurmd)" >&2
  exit 2
fi
mkdir -p "$dir"/{state,spool,log,munge}
chmod 700 "$dir/munge"
host=$(hostname -s)
port=$(( 20000 + RANDOM % 20000 ))

# munge: its own key, socket and files in DIR, so nothing system-wide is touched.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
  --seed-file="$dir/munge/munge.seed"

mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
if [ "$nodes" = 1 ]; then
  # The machine's own hostname and one slurmd port.
  slurmd_files="SlurmdPort=$(( port + 1 ))
SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/log/slurmd.log"
  node_lines="NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN"
else
  # %n: each slurmd's node name. The memory is shared out between the nodes.
  slurmd_files="SlurmdSpoolDir=$dir/spool/%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/log/slurmd-%n.log
TaskProlog=$dir/task_prolog.sh"
  node_lines=""
  for node in $(seq 1 "$nodes"); do
    node_lines+="NodeName=node$node NodeHostname=node$node NodeAddr=127.0.0.1"
    node_lines+=" Port=$(( port + node )) CPUs=$cpus RealMemory=$(( mem / nodes )) State=UNKNOWN
"
  done
  # What a task prolog prints as `export NAME=value` is set in the task's environment.
  cat > "$dir/task_prolog.sh" <<'PROLOG'
#!/bin/sh
echo "export HYDRA_IFACE=lo"
echo "export UCX_NET_DEVICES=lo"
PROLOG
  chmod 755 "$dir/task_prolog.sh"
  # The machine's hosts file, less any nodeK names it has, plus the fake nodes on 127.0.0.1.
  {
    grep -v -w -E 'node[0-9]+' /etc/hosts || true
    echo "127.0.0.1 $(seq -f 'node%g' -s ' ' 1 "$nodes")"
  } >"$dir/hosts"
fi
cat > "$dir/slurm.conf" <<CONF
ClusterName=lsurftest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
$slurmd_files
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=$mpi_default
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=3600
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
$node_lines
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
if [ "$nodes" = 1 ]; then
  slurmd -f "$SLURM_CONF"
else
  for node in $(seq 1 "$nodes"); do
    # The namespaces live as long as the slurmd (it daemonizes inside them), and so do the
    # job steps it starts; the bind mount is private to its mount namespace.
    unshare --uts --mount --propagation private -- /bin/sh -c \
      'mount --bind "$1" /etc/hosts && hostname "$0" && exec slurmd -f "$2" -N "$0"' \
      "node$node" "$dir/hosts" "$SLURM_CONF"
  done
fi
for _ in $(seq 1 60); do
  up=$(sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)' || true)
  if [ "$up" -ge "$nodes" ]; then
    echo "$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "slurm did not come up; see $dir/log" >&2
exit 1
