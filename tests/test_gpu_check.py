"""benchmarks/gpu_check.sh: its arithmetic and budgets, its install step and launcher search,
and a whole run in its CPU mode (every step, the MPI comparison included, and the report); a
failing step and a step past its budget are reported and make the exit code non-zero, without
stopping the run; the CUDA mode on a machine without a GPU fails at once, saying why."""

import importlib.util
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from doc_commands import documented

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
assert _spec is not None and _spec.loader is not None
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
_spec.loader.exec_module(gpu_check)


def run_script(
    *args: str, cwd: Path, shell: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """The check's Python side, or (`shell`) the whole script with its install step, which
    costs a torch import to choose the Python."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    # The Python running the tests first on PATH: the script's python3 (and mpiexec) is that one.
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment['PATH']}"
    environment["PYTHONPATH"] = f"{ROOT}:{environment.get('PYTHONPATH', '')}"
    command = [str(SCRIPT)] if shell else [sys.executable, str(ROOT / "benchmarks/gpu_check.py")]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def section(report: str, heading: str) -> str:
    """The report's section whose heading starts with `heading`, up to the next heading."""
    return report.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


def table(report: str, first_cell: str) -> list[list[str]]:
    """The cells of the table rows (in `report`, or a section of it) that start with
    `first_cell`."""
    rows = [line.split("|")[1:-1] for line in report.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows if row[0].strip() == first_cell]


def test_the_rate_leaves_start_up_out_and_extrapolates_to_2601_points():
    lines = [
        (101.0, "starting out.h5: 0/2601 points done, 2601 to go"),
        (110.0, "1/2601 points (0%), 0.10 points/s, elapsed 10s, ETA 26000s"),
        (110.5, "  a note"),
        (111.0, "3/2601 points (0%), 0.27 points/s, elapsed 11s, ETA 9600s"),
        (112.0, "6/2601 points (0%), 0.50 points/s, elapsed 12s, ETA 5200s"),
        (112.6, "SIGTERM received: 6/2601 points are on disk in out.h5; saving the points"),
    ]
    stamps = gpu_check.progress_stamps(lines)
    assert stamps == [(110.0, 1), (111.0, 3), (112.0, 6)]
    timing = gpu_check.timing_from("tf32", 100.0, stamps)
    assert timing.timed_points == 5
    assert timing.seconds_per_point == pytest.approx(0.4)  # 2 s over the 5 points after the 1st
    assert timing.startup_seconds == pytest.approx(9.6)  # 10 s to the first point, less 0.4
    assert timing.plane_minutes == pytest.approx(0.4 * 2601 / 60)
    assert timing.total_minutes == pytest.approx((9.6 + 0.4 * 2601) / 60)
    assert not timing.met  # 17.5 minutes against tf32's 3
    assert gpu_check.timing_row(timing) == (
        "| tf32 | 5 | 0.4000 | 9.6 | 17.34 | 17.50 | 3 | missed |"
    )
    fast = gpu_check.timing_from("fp32", 0.0, [(5.0, 1), (6.0, 11)])
    assert fast.total_minutes == pytest.approx((4.9 + 260.1) / 60) and fast.met  # 4.4 ≤ 10
    with pytest.raises(ValueError, match="2 points finished"):
        gpu_check.timing_from("fp32", 0.0, stamps[:1] + [(111.0, 2)])


def test_the_cuda_run_fits_eight_minutes():
    plan = run_script("--plan", cwd=ROOT)
    assert plan.returncode == 0, plan.stderr
    budgets = {line.split()[0]: float(line.split()[1]) for line in plan.stdout.splitlines()}
    total = budgets.pop("total")
    assert list(budgets) == [
        "device",
        "cuda-tests",
        "data",
        "mpi",
        "timing-fp32",
        "timing-tf32",
        "timing-bf16",
    ]
    assert total == sum(budgets.values()) <= 480
    page = section((ROOT / "docs" / "benchmarks.md").read_text(), "GPU check")
    shown = {name: float(table(page, name)[0][1]) for name in budgets}
    assert shown == budgets  # docs/benchmarks.md shows the budgets --plan prints
    for name, window in gpu_check.CUDA.windows.items():
        # The window of points, the stop before the kill, and at least 20 s of start-up.
        assert window + gpu_check.KILL_GRACE + 5 + 20 <= budgets[name]


def test_the_launcher_is_found_in_order_or_its_absence_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)  # no .venv, no .whl
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "--mpiexec none" in gpu_check.find_launcher("none", tmp_path)
    assert (
        gpu_check.find_launcher("/opt/mpi/bin/mpiexec", tmp_path).mpiexec == "/opt/mpi/bin/mpiexec"
    )
    reason = gpu_check.find_launcher(None, tmp_path)
    assert isinstance(reason, str) and reason.startswith("no MPI launcher")
    wheel = tmp_path / ".whl" / "mpich-5.0.2-py3-none-manylinux_2_28_x86_64.whl"
    wheel.parent.mkdir()
    wheel.touch()
    carried = gpu_check.find_launcher(None, tmp_path / "work")
    prefix = tmp_path / "work" / "mpich"
    assert carried.mpiexec == str(prefix / "bin" / "mpiexec")
    assert carried.env == {"MPI4PY_LIBMPI": str(prefix / "lib")}
    assert carried.install[-3:] == ["--prefix", str(prefix), str(wheel)]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "mpiexec").touch(mode=0o755)
    assert gpu_check.find_launcher(None, tmp_path).found == "on PATH"  # before the wheel


def test_the_install_step_takes_a_python_with_torch_and_installs_only_without_one(tmp_path):
    # A copy of the script in a repository of its own, whose gpu_check.py says what it got.
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "benchmarks")
    (repo / "benchmarks" / "gpu_check.py").write_text(
        "import os, sys\n"
        "print(sys.argv[1:], os.environ['LSURF_GPU_CHECK_INSTALL'],"
        " os.environ['PYTHONPATH'].split(':')[0], os.environ['PYTHONUNBUFFERED'])\n"
    )
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()

    def executable(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + text + "\n")
        path.chmod(0o755)

    def run(path: str) -> str:
        env = {**os.environ, "PATH": path}
        script = str(repo / "benchmarks" / "gpu_check.sh")
        result = subprocess.run([script, "--cpu"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    system = "/usr/bin:/bin"
    # python3 imports torch (the device machine): it runs, lsurf from the checkout.
    said = run(f"{Path(sys.executable).parent}:{system}")
    assert said.startswith("['--cpu'] python3, which imports torch")
    assert f" {repo} 1" in said
    # A .venv that has torch and lsurf wins over python3.
    executable(repo / ".venv" / "bin" / "python", f'exec {sys.executable} "$@"')
    assert "the project's .venv" in run(f"{Path(sys.executable).parent}:{system}")
    # No Python with torch: make install, and its .venv runs the check.
    (repo / ".venv").rename(tmp_path / "venv")
    executable(bin_folder / "python3", "exit 1")
    executable(
        bin_folder / "make",
        f'echo "$@" > {tmp_path / "make.args"}; mv {tmp_path / "venv"} {repo / ".venv"}',
    )
    assert "make install (no Python here imported torch)" in run(f"{bin_folder}:{system}")
    assert (tmp_path / "make.args").read_text().split() == ["-C", str(repo), "install"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a CUDA device")
def test_the_cuda_mode_fails_its_first_step_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["-c", "cuda"])  # as the device step runs it
    with pytest.raises(SystemExit, match="no CUDA device: the check needs one"):
        exec(gpu_check.DEVICE_REPORT, {})
    assert "device cpu (no CUDA device)" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["-c", "cpu"])  # the CPU mode's
    exec(gpu_check.DEVICE_REPORT, {})


def test_a_failing_step_and_one_past_its_budget_are_reported_and_the_run_goes_on(tmp_path):
    started = time.monotonic()
    result = run_script(
        "--steps",
        "device,data,mpi",
        "--mpiexec",
        "none",
        "--out",
        "out",
        cwd=tmp_path,
        LSURF_GPU_CHECK_FAIL="device",
        LSURF_GPU_CHECK_HANG="data",  # a command that ignores SIGTERM: SIGKILL ends it
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    report = (tmp_path / "out" / "gpu-check-report.md").read_text()
    steps = section(report, "steps")
    assert table(steps, "device")[0][1] == "FAIL (injected)"
    [[_, outcome, seconds, budget]] = table(steps, "data")
    assert outcome == "TIMEOUT (cut at 2 s)" and budget == "2"
    assert 1.5 <= float(seconds) < 3.5  # cut at its budget, not at the sleep's 600 s
    assert "cut: past the step's budget of 2 s" in report
    assert "## step mpi: skipped" in report and "--mpiexec none" in report  # no failure
    bad = run_script("--steps", "device,nonsense", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown step nonsense" in bad.stdout
    # A rerun empties its own work folder; a folder of someone else's is refused, untouched.
    again = run_script("--steps", "mpi", "--mpiexec", "none", "--out", "out", cwd=tmp_path)
    assert (
        again.returncode == 0 and not (tmp_path / "out" / "gpu-check-work/logs/data.log").exists()
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = run_script("--work", "mine", "--steps", "mpi", "--mpiexec", "none", cwd=tmp_path)
    assert refused.returncode == 2 and "holds files this check did not write" in refused.stdout
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_reports_them(tmp_path):
    command = documented("benchmarks/gpu_check.sh --cpu --out runs/gpu-check-cpu")
    result = run_script(*shlex.split(command.text)[1:], cwd=tmp_path, shell=True)
    out = tmp_path / "runs" / "gpu-check-cpu"
    report = (out / "gpu-check-report.md").read_text()
    assert result.returncode == 0, report
    for step in ["device", "cuda-tests", "data", "mpi", "timing-fp32"]:
        assert f"## step {step}: pass" in report
    assert "needs a CUDA device" in report  # the CUDA tests skip here, with the reason
    # The MPI sweep (1 master + 1 worker) equals the serial one, bit for bit.
    assert "on 1 workers" in report
    assert re.search(r"^train_loss +9 +0 +0", report, re.MULTILINE)
    assert re.search(r"^train_acc +9 +0 +0", report, re.MULTILINE)
    [[precision, timed, rate, startup, minutes, total, goal, verdict]] = table(
        section(report, "timing"), "fp32"
    )
    assert precision == "fp32" and int(timed) >= gpu_check.MIN_TIMED_POINTS
    assert float(rate) > 0 and float(startup) > 0
    assert math.isclose(float(minutes), float(rate) * 2601 / 60, rel_tol=1e-2, abs_tol=0.01)
    wanted_total = (float(startup) + float(rate) * 2601) / 60
    assert math.isclose(float(total), wanted_total, rel_tol=1e-2, abs_tol=0.01)
    assert goal == "10" and verdict == ("met" if float(total) <= 10 else "missed")
    logs = (out / "gpu-check-logs.txt").read_text()
    assert "===== timing-fp32: pass" in logs and "SIGTERM received" in logs
