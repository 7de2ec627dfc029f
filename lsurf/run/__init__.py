"""Running jobs: a sweep (serially or under MPI), `lsurf hessian`, and `--plan`.

- `protocol`: the messages between rank 0 and the workers, `MasterSide` and `WorkerSide`,
  failures, termination, placement — the core the two sessions depend on;
- `mpi` (the only module that imports mpi4py) and `local` (the in-process session): the
  two sessions, each depending on the protocol and never on each other;
- `worker`: building evaluators and evaluating chunks, for every process that evaluates;
- `phases`: check, load and commit, before the run; `identity`: what tells one sweep from
  another (resume, direction-file reuse);
- `sweep` (orchestration), `hessian` (the `lsurf hessian` job), `plan` (`--plan`);
- `schedule` (chunk sizes), `capacity` (whether a grid fits), `progress` (the job's log).
"""

__all__ = [
    "capacity",
    "hessian",
    "identity",
    "local",
    "mpi",
    "phases",
    "plan",
    "progress",
    "protocol",
    "schedule",
    "sweep",
    "worker",
]
