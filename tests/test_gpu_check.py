"""benchmarks/gpu_check.sh in its CPU mode: every step reported, the timing arithmetic
right, and a failing step (injected) making the exit code non-zero."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STEPS = ["device", "cuda-tests", "data", "timing-fp32", "timing-tf32"]


def run_check(out: Path, fail: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LSURF_GPU_CHECK_FAIL=fail, OMP_NUM_THREADS="1")
    # The python running the tests first on PATH: the script's python3 is that one.
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cpu_mode_reports_every_step_and_a_failure_is_non_zero(tmp_path):
    good = run_check(tmp_path / "good")
    report = (tmp_path / "good" / "gpu-check-report.md").read_text()
    assert good.returncode == 0, report
    for step in STEPS:
        assert f"## step {step}: pass" in report
    assert "needs a CUDA device" in report  # the CUDA tests skip on the CPU, with the reason
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| fp32")]
    rows += [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| tf32")]
    assert len(rows) == 2
    for _, points, seconds, rate, minutes, goal, verdict in rows:
        assert int(points) == 9
        assert math.isfinite(float(rate)) and float(rate) > 0
        assert math.isclose(float(rate), float(seconds) / 9, rel_tol=1e-3)
        assert math.isclose(float(minutes), float(rate) * 2601 / 60, rel_tol=1e-3)
        assert verdict.strip() == ("met" if float(minutes) <= float(goal) else "missed")

    bad = run_check(tmp_path / "bad", fail="data")
    assert bad.returncode != 0
    report = (tmp_path / "bad" / "gpu-check-report.md").read_text()
    assert "## step data: FAIL" in report
    assert "## step device: pass" in report  # it went on after the failing step
