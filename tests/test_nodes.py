"""A multi-node MPI job on one machine: two hostnames made with UTS namespaces, hydra starting
a proxy on each through tests/cluster/node_launcher.sh (in place of ssh), all traffic on the
loopback: placement per node, the serial surface bit for bit, a node lost mid-sweep."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import test_mpi
from conftest import MpiRun
from surface_helpers import done_count
from test_mpi import GRID, INJECT, assert_same, finish

from lsurf.files.surface import read_surface

LAUNCHER = Path(__file__).resolve().parent / "cluster" / "node_launcher.sh"
# node1 runs the master and two workers, node2 two workers: ranks 0-2 on node1, 3-4 on node2.
HOSTS = "node1:3,node2:2"
serial_surface = test_mpi.serial_surface  # the fixture: the same sweep, serially
RANKS = 5


class NodesRun(MpiRun):
    """MpiRun across the fake nodes: hydra's ssh launcher is the namespace script; its proxies
    and the ranks' UCX traffic are held to the loopback interface."""

    def command(self, ranks: int, *args: object) -> list[str]:
        command = super().command(ranks, *args)
        fake = ["-launcher", "ssh", "-launcher-exec", str(LAUNCHER), "-iface", "lo"]
        return [command[0], *fake, "-hosts", HOSTS, *command[1:]]

    def environment(self, **extra: str) -> dict[str, str]:
        # UCX (MPICH's netmod between nodes) may use no network device but lo. It then
        # carries the ranks' messages between the nodes in shared memory (one kernel).
        return super().environment(UCX_NET_DEVICES="lo", **extra)

    def injected(self, **extra: str) -> dict[str, str]:
        """The environment with tests/inject's hooks in front of the PYTHONPATH it had (which
        may name the checkout under test)."""
        path = os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")]))
        return self.environment(PYTHONPATH=path, **extra)


@pytest.fixture
def nodes_run(mpi_run: MpiRun) -> NodesRun:
    if os.geteuid() != 0:
        pytest.skip("fake nodes need root: `unshare --uts` makes each node's hostname")
    if shutil.which("unshare") is None:
        pytest.skip("fake nodes need util-linux's `unshare`")
    return NodesRun()


# Each rank's view of the job, through lsurf's own session: its node, the node's ranks, and
# where lsurf would put it with 2 GPUs per node (on CPU the device is cpu; the index is this).
PROBE = """
import json, pathlib, socket, sys
from mpi4py import MPI
from lsurf.run.mpi import Session
session = Session()
shared = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
# A file per rank: the ranks' printed lines reach mpiexec interleaved.
pathlib.Path(sys.argv[1], f"{session.rank}.json").write_text(json.dumps({
    "rank": session.rank, "host": socket.gethostname(), "processor": MPI.Get_processor_name(),
    "shared": shared.Get_size(), "node_ranks": session.node_ranks,
    "device": None if session.is_master else session.placement(2).device,
    "named": session.name_rank(session.rank),  # how lsurf's messages name this rank
}))
"""


def test_each_node_places_its_own_workers_and_the_master_stays_on_node1(nodes_run, tmp_path):
    result = nodes_run(RANKS, "-c", PROBE, tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    by_rank = {report["rank"]: report for report in ranks}
    assert sorted(by_rank) == list(range(RANKS))
    assert [by_rank[r]["host"] for r in range(RANKS)] == ["node1"] * 3 + ["node2"] * 2
    assert all(report["processor"] == report["host"] for report in ranks)
    # MPI's shared-memory split follows the node, not the machine that holds both.
    assert [by_rank[r]["shared"] for r in range(RANKS)] == [3, 3, 3, 2, 2]
    assert [by_rank[r]["node_ranks"] for r in range(RANKS)] == [[0, 1, 2]] * 3 + [[3, 4]] * 2
    # The master uses no GPU, so node1's workers take cuda:0 and cuda:1 as node2's do.
    devices = [by_rank[r]["device"] for r in range(RANKS)]
    assert devices == [None, "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    # A failure's line ("rank 3 on node2 failed at point ...") says where the rank ran.
    assert by_rank[3]["named"] == "rank 3 on node2" and by_rank[0]["named"] == "rank 0 on node1"


def sweep_on_nodes(nodes_run, config, env=None):
    return nodes_run.start(RANKS, "-m", "lsurf", "sweep", config, *GRID, env=env)


def held_splits(folder: Path) -> dict[int, dict]:
    """Each worker's report of where its splits' tensors lie (tests/inject, SPLITS_DIR)."""
    return {int(path.stem): json.loads(path.read_text()) for path in folder.glob("*.json")}


def test_two_nodes_of_two_workers_hold_one_copy_each_and_give_the_serial_surface_bit_for_bit(
    nodes_run, sweep_yaml, tmp_path, serial_surface
):
    output = tmp_path / "nodes.h5"
    config = sweep_yaml({"output": str(output)}, name="nodes.yaml")
    reports = tmp_path / "splits"
    reports.mkdir()
    env = nodes_run.injected(LSURF_TEST_SPLITS_DIR=str(reports))
    code, text = finish(sweep_on_nodes(nodes_run, config, env=env))
    assert code == 0, text
    assert f"on {RANKS - 1} workers" in text
    assert "  data: train, test held once per node, in MPI shared memory" in text.splitlines()
    assert_same(read_surface(output), serial_surface)
    held = held_splits(reports)
    assert sorted(held) == [1, 2, 3, 4]
    for node, ranks in (("node1", [1, 2]), ("node2", [3, 4])):
        assert {held[rank]["host"] for rank in ranks} == {node}
        for tensor in ("inputs", "targets"):
            for name in ("train", "test"):
                where = [held[rank]["splits"][name][tensor] for rank in ranks]
                # One mapping of one file in the node's shared memory, the same for its workers.
                assert where[0] == where[1] and where[0]["perms"].endswith("s"), where
                assert where[0]["path"].startswith("/dev/shm/") and where[0]["inode"] > 0
    # Each node its own copy (the nodes share no memory on a real cluster).
    mapped = {held[rank]["host"]: held[rank]["splits"]["train"]["inputs"]["inode"] for rank in held}
    assert mapped["node1"] != mapped["node2"]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie left for its parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_node_killed_mid_sweep_ends_the_job_naming_it_and_the_rerun_resumes(
    nodes_run, sweep_yaml, tmp_path, serial_surface
):
    output = tmp_path / "nodes.h5"
    config = sweep_yaml({"output": str(output)}, name="nodes.yaml")
    pids = tmp_path / "pids"
    pids.mkdir()
    # Slowed (a chunk is ~2 points at 0.5 s a point), so the kill lands mid-sweep; every rank
    # leaves HOSTNAME.PID in `pids`, so node2's are known.
    env = nodes_run.injected(LSURF_TEST_SLOW_SECONDS="0.5", LSURF_TEST_PID_DIR=str(pids))
    process = sweep_on_nodes(nodes_run, config, env=env)
    deadline = time.monotonic() + 120
    while done_count(output) < 3:
        assert process.poll() is None, finish(process)[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ranks = {path.name: int(path.suffix[1:]) for path in pids.iterdir()}
    node2 = [pid for name, pid in ranks.items() if name.startswith("node2.")]
    assert len(node2) == 2 and len(ranks) == RANKS
    killed = time.monotonic()
    for pid in node2:  # the whole node at once: its ranks die without a word
        os.kill(pid, signal.SIGKILL)
    code, text = finish(process, timeout=30)
    assert code != 0
    # Every rank is gone within the 30 s too (node1's may end a moment after mpiexec).
    while any(alive(pid) for pid in ranks.values()):
        assert time.monotonic() - killed < 30, [pid for pid in ranks.values() if alive(pid)]
        time.sleep(0.05)
    # The line that names the node is hydra's: it ends the job as soon as a rank dies.
    lost = [line for line in text.splitlines() if "RUNNING AT node2" in line]
    assert len(lost) == 1, text
    stopped = read_surface(output)  # readable after the kill, partly done
    assert 3 <= stopped.done.sum() < 24
    code, text = finish(sweep_on_nodes(nodes_run, config))
    assert code == 0, text
    assert "resuming" in text
    assert_same(read_surface(output), serial_surface)
