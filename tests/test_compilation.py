"""lsurf.compilation: evaluation.compile: auto's rule, its record in the surface file (a resume
makes the first run's choice), and the compile cache a second process finds warm."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import torch
import yaml

from lsurf import compilation
from lsurf.config import load_sweep_config
from lsurf.files.surface import read_surface
from lsurf.run import phases
from lsurf.run.plan import plan_sweep
from lsurf.run.sweep import run_sweep

COMPILE_NOTES = ("compile auto", "compiled", "not compiled")  # the evaluator's log lines
RESNET20_FLOPS = 82e6  # per example, as FlopCounterMode counts a ResNet-20's forward


def test_auto_compiles_only_where_the_points_of_a_worker_save_more_than_the_compile_costs():
    cold_cost = compilation.COMPILE_SECONDS["cpu"][False]
    # 9 points of 1000 examples: well under a second saved against a cold compile.
    small = compilation.decide(9, 1000, RESNET20_FLOPS, "cpu", warm=False)
    saved = 9 * 1000 * RESNET20_FLOPS / 1e9 * compilation.SAVED_PER_GFLOP["cpu"]
    assert small == compilation.Decision(
        False,
        f"compile auto: eager (9 points per worker x 1000 examples x 82 MFLOP save "
        f"~{saved:.3g} s < cold compile ~{cold_cost:.0f} s)",
    )
    # A 51x51 plane on one worker: minutes saved.
    large = compilation.decide(2601, 1000, RESNET20_FLOPS, "cpu", warm=False)
    assert large.compile and large.reason.startswith("compile auto: compiled (2601 points ")
    assert large.reason.endswith(f"> cold compile ~{cold_cost:.0f} s)")
    # Where the break-even lies: cost / (examples x GFLOP x saving per GFLOP) points.
    per_point = 1000 * RESNET20_FLOPS / 1e9 * compilation.SAVED_PER_GFLOP["cpu"]
    cold = compilation.COMPILE_SECONDS["cpu"][False] / per_point
    warm = compilation.COMPILE_SECONDS["cpu"][True] / per_point
    assert warm < cold
    for points in (int(warm) - 1, int(warm) + 1, int(cold) - 1, int(cold) + 1):
        assert compilation.decide(points, 1000, RESNET20_FLOPS, "cpu", False).compile == (
            points > cold
        )
        assert compilation.decide(points, 1000, RESNET20_FLOPS, "cpu", True).compile == (
            points > warm
        )
    # The same grid over 64 workers gives each too few points.
    assert not compilation.decide(2601 // 64 + 1, 1000, RESNET20_FLOPS, "cpu", False).compile
    # No count (the counter failed) saves nothing; an unmeasured device stays eager.
    assert not compilation.decide(10**6, 1000, 0.0, "cpu", False).compile
    gpu = compilation.decide(10**6, 50_000, RESNET20_FLOPS, "cuda", True)
    assert not gpu.compile and "unmeasured on cuda" in gpu.reason


def test_the_cache_folder_is_the_setting_then_inductors_variable_then_the_user_cache(
    monkeypatch, tmp_path
):
    monkeypatch.delenv(compilation.CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation.cache_folder(None) == tmp_path / "xdg" / "lsurf" / "inductor"
    monkeypatch.setenv(compilation.CACHE_VARIABLE, str(tmp_path / "inductor"))
    assert compilation.cache_folder(None) == tmp_path / "inductor"
    assert compilation.cache_folder(tmp_path / "mine") == tmp_path / "mine"


def stored_compile(output: Path) -> object:
    return yaml.safe_load(read_surface(output).attributes["config"])["evaluation"]["compile"]


def test_a_small_auto_sweep_stays_eager_says_why_and_records_the_choice(
    sweep_yaml, monkeypatch, tmp_path
):
    # A cache of its own, empty: the machine's may hold this network already (warm).
    monkeypatch.setenv(compilation.CACHE_VARIABLE, str(tmp_path / "inductor"))
    config = load_sweep_config(sweep_yaml())
    assert config.evaluation.compile == "auto"  # the default
    lines = plan_sweep(config)
    # 12 points of 300 examples of a ~1 MFLOP network: far below any compile's cost.
    saved = 12 * 300 * 1.03e6 / 1e9 * compilation.SAVED_PER_GFLOP["cpu"]
    cost = compilation.COMPILE_SECONDS["cpu"][False]
    assert [line for line in lines if "compile" in line] == [
        "network  compile auto: eager (12 points per worker x 300 examples x 1.03 MFLOP save "
        f"~{saved:.3g} s < cold compile ~{cost:.0f} s)"
    ]
    logged: list[str] = []
    output = run_sweep(config, log=logged.append).path
    assert any(line.strip().startswith("compile auto: eager (12 points") for line in logged)
    assert stored_compile(output) is False  # what the resume reads back, never 'auto'


def test_every_worker_of_an_mpi_sweep_makes_the_same_choice_and_rank_0_records_it(
    mpi_run, sweep_yaml
):
    # 12 points over 2 workers: 6 each, as every worker computes from what rank 0 sent.
    config = sweep_yaml()
    job = mpi_run(3, "-m", "lsurf", "sweep", config, timeout=180)
    assert job.returncode == 0, job.stderr
    chose = [line.strip() for line in job.stderr.splitlines() if "compile auto" in line]
    assert len(chose) == 1, job.stderr  # one line: the workers' notes agree
    assert chose[0].startswith("compile auto: eager (6 points per worker x 300 examples")
    assert stored_compile(load_sweep_config(config).output) is False


def test_a_resume_makes_the_first_runs_choice_whatever_the_rule_says_now(sweep_yaml, monkeypatch):
    path = sweep_yaml()
    output = run_sweep(load_sweep_config(path), log=lambda _: None).path
    first = read_surface(output).metrics["train_loss"].copy()
    with h5py.File(output, "r+") as h5file:
        h5file["done"][1:, :] = False  # 3 of 12 points stay done
    # Were the rule asked again it would compile now (say, the cache became warm)...
    chosen = compilation.Decision(True, "compile auto: compiled (patched)")
    monkeypatch.setattr(compilation, "decide", lambda *args: chosen)
    prepared = phases.with_recorded_compile(phases.prepare(load_sweep_config(path)), False)
    assert prepared.config.evaluation.compile is False  # ...but the file says eager
    compiles: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda module: compiles.append(module) or module)
    logged: list[str] = []
    run_sweep(load_sweep_config(path), log=logged.append)
    assert compiles == []
    said = [line.strip() for line in logged if line.strip().startswith(COMPILE_NOTES)]
    assert said == ["compile auto: eager, as the sweep's first run chose"]
    surface = read_surface(output)
    assert surface.done.all() and stored_compile(output) is False
    assert (surface.metrics["train_loss"] == first).all()  # eager again: the same bits
    # --force starts a new sweep, which asks the rule again (here: compile, as patched).
    prepared = phases.with_recorded_compile(phases.prepare(load_sweep_config(path)), True)
    assert prepared.config.evaluation.compile == "auto"


def test_a_compile_that_auto_chose_and_that_fails_leaves_eager_values_and_a_note(
    sweep_yaml, monkeypatch
):
    chosen = compilation.Decision(True, "compile auto: compiled (patched)")
    monkeypatch.setattr(compilation, "decide", lambda *args: chosen)

    def failing(module):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", failing)
    logged: list[str] = []
    config = load_sweep_config(sweep_yaml())
    output = run_sweep(config, log=logged.append).path
    notes = [line.strip() for line in logged if line.strip().startswith(COMPILE_NOTES)]
    assert notes == [
        "compile auto: compiled (patched)",
        "not compiled: torch.compile failed (RuntimeError: no C++ compiler)",
    ]
    assert stored_compile(output) is True  # the choice made; the values are the eager ones
    eager = run_sweep(
        load_sweep_config(sweep_yaml({"evaluation": {"compile": False}}, "eager.yaml")),
        force=True,
        log=lambda _: None,
    )
    surface, expected = read_surface(output), read_surface(eager.path)
    assert (surface.metrics["train_loss"] == expected.metrics["train_loss"]).all()


# One process compiles a network into a fresh cache folder; a second one, of the same network
# and shapes, loads the graphs from there (inductor's own hit counter says so) and rank 0's
# plan sees the cache warm. Not timed: what the cache saves is the benchmark's to measure.
COMPILE_ONCE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from lsurf import compilation, params
    from lsurf.directions import random_directions
    from lsurf.evaluate import Evaluator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)).eval()
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    inputs, targets = torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))
    cache = Path(sys.argv[1])
    key = compilation.graph_key(model, 16, "fp32", True, "cpu")
    warm = compilation.is_warm(cache, key)
    evaluator = Evaluator(
        model, directions, {"train": (inputs, targets)}, 16, torch.device("cpu"),
        fold_bn=True, compile=True, compile_cache=cache,
    )
    print(json.dumps({"warm": warm, "notes": evaluator.notes,
                      "marked": compilation.is_warm(cache, key),
                      "loss": evaluator.evaluate(0.5, -0.5)["train_loss"]}))
    """
)


def compile_in_a_new_process(cache: Path) -> dict:
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    environment.pop(compilation.CACHE_VARIABLE, None)
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ONCE, str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_second_process_finds_the_compiled_graphs_in_the_cache_folder(tmp_path):
    cache = tmp_path / "inductor"
    first = compile_in_a_new_process(cache)
    assert not first["warm"] and first["marked"]
    assert first["notes"][-1].startswith("compiled with torch.compile in ")
    assert first["notes"][-1].endswith(f" (0 graphs from the cache, cache {cache})")
    assert (cache / "fxgraph").is_dir() and any((cache / "fxgraph").rglob("*"))
    second = compile_in_a_new_process(cache)
    assert second["warm"] and second["marked"]
    hits = int(second["notes"][-1].split(" (", 1)[1].split()[0])
    assert hits >= 1, second["notes"]
    assert second["loss"] == first["loss"]  # the same kernels, the same bits
