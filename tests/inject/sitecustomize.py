"""Injected into MPI test ranks through PYTHONPATH to change how their evaluations behave.

LSURF_TEST_FAIL_RANK=r: every evaluation on rank r raises.
LSURF_TEST_SLOW_SECONDS=s: every evaluation first sleeps s seconds, so a test that signals a
running sweep is not raced by a sweep that finishes first on a fast machine.
Inactive without these variables, so the production code carries no test hooks.
"""

import os

FAIL_RANK = os.environ.get("LSURF_TEST_FAIL_RANK")
SLOW_SECONDS = os.environ.get("LSURF_TEST_SLOW_SECONDS")

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
