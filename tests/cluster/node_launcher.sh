#!/usr/bin/env bash
# Hydra's "ssh" for tests/test_nodes.py: fakes a cluster node on this machine.
# Hydra runs `node_launcher.sh [ssh options] HOST COMMAND...` once per host; this starts the
# proxy COMMAND in a UTS namespace of its own whose hostname is HOST, so MPI, mpi4py and lsurf
# see a separate node. The network namespace is shared and every address is on the loopback
# (hydra is started with -iface lo), so nothing outside this machine is reached and nothing
# is left behind: the namespace ends with the proxy.
set -euo pipefail
while [[ $# -gt 0 && $1 == -* ]]; do  # ssh options hydra may pass (-x: no X forwarding)
  shift
done
host=$1
shift
# The proxy's command arrives as ssh would get it: words of one shell command line.
exec unshare --uts -- /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$*"' "$host" "$@"
