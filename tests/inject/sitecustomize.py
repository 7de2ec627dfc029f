"""Injected into MPI test ranks through PYTHONPATH: one rank's evaluations all raise.

Only active when LSURF_TEST_FAIL_RANK is set, so the production code carries no test hooks.
"""

import os

if os.environ.get("LSURF_TEST_FAIL_RANK"):
    import lsurf.evaluate as evaluate_module

    original = evaluate_module.Evaluator.evaluate

    def failing_evaluate(self, a, b):
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == int(os.environ["LSURF_TEST_FAIL_RANK"]):
            raise RuntimeError("injected failure")
        return original(self, a, b)

    evaluate_module.Evaluator.evaluate = failing_evaluate
