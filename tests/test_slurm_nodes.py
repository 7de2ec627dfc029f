"""launch/slurm.sbatch across two Slurm nodes faked on one machine.

tests/cluster/slurm_up.sh with NODES=2 runs a slurmd per node, each in a UTS namespace whose
hostname is its node's name (node1, node2), so every job step sees the hostname of its node:
MPI's shared-memory split and lsurf's node-local placement see two nodes, as on a real
cluster. All traffic stays on the loopback (NodeAddr=127.0.0.1, the nodes' names resolve to
127.0.0.1 in the slurmds' own hosts file, hydra and UCX held to `lo` by the cluster's task
prolog). What it cannot show: a network between machines (UCX carries the ranks' messages in
the one kernel), or GPUs. Skips like tests/test_slurm.py (fails with LSURF_REQUIRE_SLURM=1).
"""

import ipaddress
import json
import os
import shlex
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doc_commands import documented
from test_slurm import (
    ENDED,
    GRID,
    INJECT,
    assert_same,
    cluster,
    job_log,
    submit,
    wait_for,
    wait_for_points,
)

from lsurf.files.surface import read_surface

POINTS = 48  # GRID's

# The jobs' shapes as docs/cluster.md shows them, and the node each rank must run on.


def four_tasks() -> list[str]:
    """The master and a worker on node1, two workers on node2."""
    shown = documented("sbatch --nodes=2 --ntasks-per-node=2 launch/slurm.sbatch CONFIG.yaml")
    return _options(shown.text)


FOUR_HOSTS = ["node1", "node1", "node2", "node2"]  # by rank


def three_tasks() -> list[str]:
    """A real cluster's shape (workers = GPUs a node, one more task for the master) scaled down
    to one worker a node: Slurm allocates 2 + 2, mpiexec starts 2 + 1 ranks."""
    shown = documented(
        "sbatch --nodes=2 --ntasks=3 --ntasks-per-node=2 launch/slurm.sbatch CONFIG.yaml"
    )
    return _options(shown.text)


THREE_HOSTS = ["node1", "node1", "node2"]


def _options(command: str) -> list[str]:
    """The sbatch options of `sbatch OPTIONS launch/slurm.sbatch ...`."""
    words = shlex.split(command)
    return words[1 : words.index("launch/slurm.sbatch")]


def _required() -> bool:
    return os.environ.get("LSURF_REQUIRE_SLURM") == "1"


def _environment(proc: Path) -> list[bytes]:
    """The NAME=value entries a process was started with (root reads every process's)."""
    return (proc / "environ").read_bytes().split(b"\0")


def _cluster_processes(folder: Path) -> list[str]:
    """Processes of the cluster in `folder` still alive: its daemons (named by their files in
    the folder) and whatever they started (slurmstepd and the jobs inherit SLURM_CONF)."""
    conf = f"SLURM_CONF={folder / 'slurm.conf'}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            environment = _environment(proc)
            status = (proc / "stat").read_text().rpartition(")")[2].split()[0]  # after (comm)
        except OSError:  # ended meanwhile
            continue
        if status != "Z" and (str(folder).encode() in command or conf in environment):
            shown = command.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {shown}")
    return found


@pytest.fixture(scope="module")
def slurm_nodes(tmp_path_factory):
    """The two-node cluster's environment; afterwards, no process of it may be left."""
    probe = subprocess.run(
        ["unshare", "--uts", "--mount", "true"], capture_output=True, text=True, check=False
    )
    if os.geteuid() != 0 or probe.returncode != 0:
        reason = f"fake nodes need root and `unshare --uts --mount` ({probe.stderr.strip()})"
        if _required():
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm-nodes")
    with cluster(folder, nodes=2) as env:
        yield env
    deadline = time.monotonic() + 10  # slurm_down.sh's SIGKILLs land within moments
    while (left := _cluster_processes(folder)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == []


def _job_sockets(job: str) -> list[tuple[str, str, str, str]]:
    """The internet sockets of every process of `job` now (the batch script, mpiexec, srun,
    the proxies, the ranks: all carry SLURM_JOB_ID): (pid, local, remote, TCP state), the
    addresses as /proc/net/{tcp,udp}[6] lists them, read back to text."""
    marker = f"SLURM_JOB_ID={job}".encode()
    owners = {}  # socket inode: pid
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or marker not in _environment(proc):
                continue
            for descriptor in (proc / "fd").iterdir():
                target = os.readlink(descriptor)
                if target.startswith("socket:["):
                    owners[target[len("socket:[") : -1]] = proc.name
        except OSError:  # ended meanwhile
            continue
    sockets = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path("/proc/net", table).read_text().splitlines()[1:]
        for fields in (line.split() for line in lines):
            if fields[9] in owners:
                local, remote = (_address(field) for field in fields[1:3])
                sockets.append((owners[fields[9]], local, remote, fields[3]))
    return sockets


def _address(field: str) -> str:
    """/proc/net's `0100007F:1F90` as `127.0.0.1`: the kernel prints the address as 32-bit
    words in this machine's byte order (IPv6 as four of them), the port after the colon."""
    digits = field.split(":")[0]
    words = [int(digits[i : i + 8], 16) for i in range(0, len(digits), 8)]
    return str(ipaddress.ip_address(struct.pack(f"={len(words)}I", *words)))


def _on_loopback(address: str) -> bool:
    """In 127.0.0.0/8 (as IPv4, or IPv4 mapped into IPv6)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("127.0.0.0/8")


def assert_on_the_loopback(sockets, log):
    """Every connection of the job runs between two loopback addresses; a socket not connected
    (one that listens, say) is bound to one, or to every address: srun's and hydra's
    listeners take no address."""
    unspecified = [ipaddress.ip_address(remote).is_unspecified for _, _, remote, _ in sockets]
    assert not all(unspecified), (sockets, log)  # the job's connections were seen: it checks
    for (pid, local, remote, state), alone in zip(sockets, unspecified, strict=True):
        if alone:
            assert ipaddress.ip_address(local).is_unspecified or _on_loopback(local), (pid, local)
        else:
            assert _on_loopback(local) and _on_loopback(remote), (pid, local, remote, state)


_SERIAL_SURFACE = []


@pytest.fixture
def nodes_config(sweep_yaml, tmp_path):
    """A sweep config and its serial surface (computed once for the module)."""
    if not _SERIAL_SURFACE:
        serial = sweep_yaml({"output": str(tmp_path / "serial.h5")}, name="serial.yaml")
        result = subprocess.run(
            [sys.executable, "-m", "lsurf", "sweep", str(serial), *GRID],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        _SERIAL_SURFACE.append(read_surface(tmp_path / "serial.h5"))
    return sweep_yaml(), _SERIAL_SURFACE[0]


def recording(env, places, **extra):
    """The cluster's environment with every rank recording where it ran into `places`
    (tests/inject, ahead of the lsurf this test imports)."""
    places.mkdir()
    path = os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")]))
    return dict(env, PYTHONPATH=path, LSURF_TEST_PLACES=str(places), **extra)


def assert_on_both_nodes(places, hosts, log):
    """Each rank ran on its node of `hosts` (by rank) as its hostname, Slurm and MPI tell, MPI's
    shared-memory split (which lsurf's GPU placement follows) sees the nodes apart, and every
    worker evaluated points. Returns the points per rank."""
    ranks = {}
    for path in places.glob("rank-*.json"):
        record = json.loads(path.read_text())
        ranks[record["rank"]] = record
    assert sorted(ranks) == list(range(len(hosts))), (ranks, log)
    records = [ranks[rank] for rank in range(len(hosts))]
    assert [record["host"] for record in records] == hosts, (ranks, log)
    assert [record["slurm_node"] for record in records] == hosts, ranks
    assert [record["processor"] for record in records] == hosts, ranks
    node_ids = [str(sorted(set(hosts)).index(host)) for host in hosts]
    assert [record["slurm_node_id"] for record in records] == node_ids, ranks
    node_ranks = [[other for other, its in enumerate(hosts) if its == host] for host in hosts]
    assert [record["node_ranks"] for record in records] == node_ranks, ranks
    points = [record["points"] for record in records]
    assert points[0] == 0 and all(points[1:]), (points, log)  # the master evaluates nothing
    return points


def test_a_two_node_job_runs_workers_on_both_nodes_and_gives_the_serial_surface(
    slurm_nodes, nodes_config, tmp_path
):
    config, reference = nodes_config
    places = tmp_path / "places"
    job = submit(recording(slurm_nodes, places), config, tmp_path, tasks=four_tasks())
    ended = wait_for(slurm_nodes, job, ENDED)
    log = job_log(tmp_path, job)
    assert ended == "COMPLETED" and "4 tasks on node[1-2]" in log and "on 3 workers" in log, log
    assert f"{POINTS}/{POINTS} points (100%)" in log, log
    assert sum(assert_on_both_nodes(places, FOUR_HOSTS, log)) == POINTS  # each once
    assert_same(tmp_path / "out" / "surface.h5", reference)


def test_a_two_node_job_cancelled_part_way_resumes_to_the_serial_surface(
    slurm_nodes, nodes_config, tmp_path
):
    config, reference = nodes_config
    output = tmp_path / "out" / "surface.h5"
    # Every point 0.2 s slower, so the job is cancelled part-way, not raced by a fast machine.
    slowed = recording(slurm_nodes, tmp_path / "first", LSURF_TEST_SLOW_SECONDS="0.2")
    job = submit(slowed, config, tmp_path, tasks=three_tasks())
    wait_for_points(slurm_nodes, job, output, 6, tmp_path)
    # Mid-run, the ranks of both nodes, their proxies and sruns all connected: on the loopback.
    assert_on_the_loopback(_job_sockets(job), job_log(tmp_path, job))
    subprocess.run(["scancel", job], env=slurm_nodes, check=True)
    ended = wait_for(slurm_nodes, job, ENDED)
    log = job_log(tmp_path, job)
    assert ended == "CANCELLED" and "SIGTERM received: " in log, log
    done = int(read_surface(output).done.sum())
    assert 6 <= done < POINTS, log
    assert_on_both_nodes(tmp_path / "first", THREE_HOSTS, log)
    second = recording(slurm_nodes, tmp_path / "second")
    resumed = submit(second, config, tmp_path, tasks=three_tasks())
    ended = wait_for(slurm_nodes, resumed, ENDED)
    log = job_log(tmp_path, resumed)
    assert ended == "COMPLETED", log
    resumed_from = f"resuming {output}: {done}/{POINTS} points done, {POINTS - done} to go"
    assert f"{resumed_from} on 2 workers" in log, log
    assert sum(assert_on_both_nodes(tmp_path / "second", THREE_HOSTS, log)) == POINTS - done
    assert_same(output, reference)
