"""A multi-node MPI job on one machine: two hostnames made with UTS namespaces, hydra starting
a proxy on each through tests/cluster/node_launcher.sh (in place of ssh), all traffic on the
loopback: placement per node, and the serial surface bit for bit."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import test_mpi
from conftest import MpiRun
from test_mpi import GRID, assert_same, finish

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


def sweep_on_nodes(nodes_run, config, env=None):
    return nodes_run.start(RANKS, "-m", "lsurf", "sweep", config, *GRID, env=env)


def test_two_nodes_of_two_workers_give_the_serial_surface_bit_for_bit(
    nodes_run, sweep_yaml, tmp_path, serial_surface
):
    output = tmp_path / "nodes.h5"
    config = sweep_yaml({"output": str(output)}, name="nodes.yaml")
    code, text = finish(sweep_on_nodes(nodes_run, config))
    assert code == 0, text
    assert f"on {RANKS - 1} workers" in text
    assert_same(read_surface(output), serial_surface)
