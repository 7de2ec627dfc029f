"""Injected into MPI test ranks through PYTHONPATH to change how their evaluations behave.

LSURF_TEST_FAIL_RANK=r: every evaluation on rank r raises.
LSURF_TEST_SLOW_SECONDS=s: every evaluation first sleeps s seconds, so a test that signals a
running sweep is not raced by a sweep that finishes first on a fast machine.
LSURF_TEST_PLACES=DIR: each rank of an MPI session writes DIR/rank-R.json, where it ran (its
hostname, Slurm node, MPI processor name, lsurf's node-local ranks) and how many points it
has evaluated, so a multi-node test sees which node each worker ran on and that it worked.
LSURF_TEST_PID_DIR=d: each process writes an empty file d/HOSTNAME.PID as it starts, so a test
can find (and kill) the processes of one fake node.
LSURF_TEST_SPLITS_DIR=d: each worker writes d/RANK.json once set up: its host, and for each
split it holds, the memory mapping (/proc/self/maps) its inputs and targets lie in.
LSURF_TEST_NO_SHARED_MEMORY=1: MPI refuses every shared-memory window (as where it has none).
Inactive without these variables, so the production code carries no test hooks.
"""

import os

FAIL_RANK = os.environ.get("LSURF_TEST_FAIL_RANK")
SLOW_SECONDS = os.environ.get("LSURF_TEST_SLOW_SECONDS")
PLACES = os.environ.get("LSURF_TEST_PLACES")
PID_DIR = os.environ.get("LSURF_TEST_PID_DIR")
SPLITS_DIR = os.environ.get("LSURF_TEST_SPLITS_DIR")
NO_SHARED_MEMORY = os.environ.get("LSURF_TEST_NO_SHARED_MEMORY")

if PID_DIR:
    import pathlib
    import socket

    pathlib.Path(PID_DIR, f"{socket.gethostname()}.{os.getpid()}").touch()

if FAIL_RANK or SLOW_SECONDS:
    import time

    import lsurf.evaluate as evaluate_module

    original = evaluate_module.Evaluator.evaluate

    def changed_evaluate(self, a, b):
        if FAIL_RANK:
            from mpi4py import MPI

            if MPI.COMM_WORLD.Get_rank() == int(FAIL_RANK):
                raise RuntimeError("injected failure")
        if SLOW_SECONDS:
            time.sleep(float(SLOW_SECONDS))
        return original(self, a, b)

    evaluate_module.Evaluator.evaluate = changed_evaluate

    # lsurf sharpness's units go through the same queue with an evaluator of their own.
    import lsurf.run.sharpness as sharpness_module

    original_unit = sharpness_module.UnitEvaluator.evaluate

    def changed_unit(self, a, b):
        if SLOW_SECONDS:
            time.sleep(float(SLOW_SECONDS))
        return original_unit(self, a, b)

    sharpness_module.UnitEvaluator.evaluate = changed_unit

if PLACES:
    import json
    import socket
    from pathlib import Path

    import lsurf.evaluate as evaluate_module
    import lsurf.run.mpi as mpi_module

    place = {}  # this rank's record, once its MPI world exists

    def write_place():
        # Whole or not at all (a rename): the test may read it while the job runs.
        path = Path(PLACES, f"rank-{place['rank']}.json")
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(place))
        partial.replace(path)

    original_world = mpi_module._World.__init__

    def recording_world(self):
        original_world(self)
        place.update(
            rank=self.rank,
            host=socket.gethostname(),
            slurm_node=os.environ.get("SLURMD_NODENAME"),
            slurm_node_id=os.environ.get("SLURM_NODEID"),
            processor=self._mpi.Get_processor_name(),
            node_ranks=self.node_ranks,
            points=0,
        )
        write_place()

    mpi_module._World.__init__ = recording_world

    counted = evaluate_module.Evaluator.evaluate  # the slowed one too, when both are asked

    def counting_evaluate(self, a, b):
        values = counted(self, a, b)
        if place:
            place["points"] += 1
            write_place()
        return values

    evaluate_module.Evaluator.evaluate = counting_evaluate


def mapping_of(address):
    """The /proc/self/maps entry holding `address`: its permissions, inode and path."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            if low <= address < high:
                path = fields[5].strip() if len(fields) > 5 else ""
                return {"perms": fields[1], "inode": int(fields[4]), "path": path}
    return None


if SPLITS_DIR:
    import json
    import pathlib
    import socket

    import lsurf.run.worker as worker_module

    original_check = worker_module.Evaluators.check

    def reporting_check(self):
        from mpi4py import MPI

        ready = original_check(self)
        held = {
            key[1]: {
                "inputs": mapping_of(split.inputs.data_ptr()),
                "targets": mapping_of(split.targets.data_ptr()),
            }
            for key, split in self._splits.items()
        }
        rank = MPI.COMM_WORLD.Get_rank()
        report = {"rank": rank, "host": socket.gethostname(), "splits": held}
        pathlib.Path(SPLITS_DIR, f"{rank}.json").write_text(json.dumps(report))
        return ready

    worker_module.Evaluators.check = reporting_check

if NO_SHARED_MEMORY:
    import lsurf.run.mpi as mpi_module

    def refused(self, nbytes, comm):
        from mpi4py import MPI

        raise MPI.Exception(MPI.ERR_NO_MEM)

    mpi_module.Session._allocate_shared = refused
