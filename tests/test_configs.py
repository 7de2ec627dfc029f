"""Every shipped config parses: sweeps as sweeps, training runs as training runs; the paper's
configs match its figures (configs/paper/README.md) and the reference's resolutions.

Checkpoints and data named by the configs need not exist: loading checks the config, not the
files, so these tests run on a fresh checkout."""

import fnmatch
import itertools
import re
from pathlib import Path

import pytest
import yaml

from lsurf import models
from lsurf.config import (
    SweepConfig,
    load_connect_config,
    load_sharpness_config,
    load_sweep_config,
    load_train_config,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
PAPER = CONFIGS / "paper"
PAPER_SWEEPS = sorted(PAPER.glob("*.yaml"))
PAPER_README = PAPER / "README.md"
# The reference's script/1d_linear_interpolation_*.sh: --x=-0.5:1.5:401.
REFERENCE_INTERPOLATION = (-0.5, 1.5, 401)
# Where the paper's runs live: `lsurf train configs/train/<run>.yaml` writes runs/paper/<run>/.
RUN = re.compile(r"^runs/paper/([^/]+)(/|$)")


def _written(path: Path) -> str:
    """A config path as written: loading resolves relative paths against the current folder."""
    return path.relative_to(Path.cwd()).as_posix() if path.is_absolute() else path.as_posix()


def _is_sweep(path: Path) -> bool:
    return "grid" in yaml.safe_load(path.read_text())


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(CONFIGS)) for path in paths]


def _is_interpolation_line(config: SweepConfig) -> bool:
    return config.directions.kind == "target" and config.grid.y is None


def test_there_is_a_config_for_each_kind_of_sweep():
    kinds = {load_sweep_config(path).directions.kind for path in ALL if _is_sweep(path)}
    assert kinds == {"random", "target", "pca"}


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_shipped_config_is_valid(path):
    if _is_sweep(path):
        config = load_sweep_config(path)
        assert config.output.suffix == ".h5"
        if config.directions.kind == "target":  # the line through both end points, and beyond
            assert config.grid.x.start < 0 < 1 < config.grid.x.stop
    elif "connect" in yaml.safe_load(path.read_text()):
        connect = load_connect_config(path)
        assert connect.output.suffix == ".h5" and len(connect.connect.checkpoints) >= 2
    elif "sharpness" in yaml.safe_load(path.read_text()):
        found = load_sharpness_config(path)
        assert found.output.suffix == ".h5" and found.sharpness.rho
    else:
        config = load_train_config(path)
        assert config.training.epochs >= 1


def test_the_paper_folder_holds_sweeps_only():
    assert PAPER_SWEEPS, "configs/paper/ has no configs"
    assert all(_is_sweep(path) for path in PAPER_SWEEPS)


@pytest.mark.parametrize("path", PAPER_SWEEPS, ids=_ids(PAPER_SWEEPS))
def test_paper_config_names_a_registry_model_and_a_paper_run(path):
    config = load_sweep_config(path)
    assert config.model.name in models.available()
    assert RUN.match(_written(config.model.checkpoint)), config.model.checkpoint
    assert _written(config.output).startswith("runs/paper/")


def test_paper_configs_write_distinct_files_named_after_them():
    outputs = {}
    for path in PAPER_SWEEPS:
        output = _written(load_sweep_config(path).output)
        if path.name.startswith(("fig", "appendix")):
            assert output == f"runs/paper/figures/{path.stem}.h5", path.name
        assert output not in outputs, f"{path.name} and {outputs.get(output)} write {output}"
        outputs[output] = path.name


def test_interpolations_have_the_reference_scripts_401_points():
    # A CPU-sized interpolation (configs/cpu/) keeps fewer points for speed and says so.
    lines = {
        path: load_sweep_config(path)
        for path in ALL
        if _is_sweep(path) and path.parent.name != "cpu"
    }
    lines = {path: config for path, config in lines.items() if _is_interpolation_line(config)}
    assert {path.name for path in lines} >= {
        "fig2-vgg9-interpolate.yaml",
        "fig2-vgg9-wd5e-4-interpolate.yaml",
        "appendix-resnet56-interpolate.yaml",
        "interpolate.yaml",
    }
    for path, config in lines.items():
        axis = config.grid.x
        assert (axis.start, axis.stop, axis.num) == REFERENCE_INTERPOLATION, path.name
        # The reference's --dir_type states: BN running statistics are interpolated too.
        assert config.directions.space == "states", path.name


def test_cpu_interpolations_say_why_they_are_coarse():
    for path in sorted((CONFIGS / "cpu").glob("*.yaml")):
        config = load_sweep_config(path) if _is_sweep(path) else None
        if config is not None and _is_interpolation_line(config):
            assert config.grid.x.num < 401 and "401" in path.read_text(), path.name


def _expand(pattern: str) -> list[str]:
    """`fig5-resnet{20,56}-2d.yaml` -> both names (globs such as `fig3-*-1d.yaml` stay)."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[part] if index % 2 == 0 else part.split(",") for index, part in enumerate(parts)]
    return ["".join(combination) for combination in itertools.product(*choices)]


def _figure_rows() -> list[tuple[str, list[tuple[str, int | None]]]]:
    """The README's figure table: each row's figure and the configs of its second column, as
    (name or glob, how many files the glob stands for: the "(8)" written after it)."""
    text = PAPER_README.read_text()
    table = text.split("## Figures", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        # Cells split at unescaped pipes (a caption may hold \|λmin/λmax\|).
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) < 4 or not cells[0].startswith(("Fig.", "Appendix")):
            continue
        configs = [
            (name, int(count) if count else None)
            for quoted, count in re.findall(r"`([^`]+\.yaml)`(?: \((\d+)\))?", cells[1])
            for name in _expand(quoted)
        ]
        rows.append((cells[0], configs))
    return rows


def test_the_readme_table_lists_every_figure_of_the_paper():
    figures = {row.split(":", 1)[0] for row, _ in _figure_rows()}
    assert {f"Fig. {number}" for number in range(1, 10)} <= figures
    assert "Appendix" in figures


def test_each_figure_in_the_readme_has_its_config_files():
    present = [path.name for path in PAPER_SWEEPS]
    listed: set[str] = set()
    for figure, configs in _figure_rows():
        for name, count in configs:
            matches = fnmatch.filter(present, name)
            assert matches, f"{figure}: configs/paper/{name} does not exist"
            if name != matches[0]:  # a glob says how many panels it stands for
                assert len(matches) == count, f"{figure}: {name} matches {sorted(matches)}"
            listed.update(matches)
    # ... and every figure config is in the table (a config no row names is undocumented).
    figure_configs = {name for name in present if name.startswith(("fig", "appendix"))}
    assert figure_configs <= listed, sorted(figure_configs - listed)


def test_figure_configs_are_named_after_their_figure():
    for figure, configs in _figure_rows():
        names = [name for name, _ in configs]
        number = re.match(r"Fig\. (\d+)", figure)
        prefix = f"fig{number.group(1)}-" if number else "appendix-"
        if figure.startswith("Fig. 6"):  # its k = 1 column is Fig. 5's ResNet-56 pair
            names = [name for name in names if not name.startswith("fig5-resnet56")]
        assert all(name.startswith(prefix) for name in names), (figure, names)


def _paper_runs_of(config: SweepConfig) -> set[str]:
    directions = config.directions
    paths = [config.model.checkpoint, directions.target, directions.y_target, directions.trajectory]
    matches = [RUN.match(_written(path)) for path in paths if path is not None]
    return {match.group(1) for match in matches if match}


def _missing_runs() -> set[str]:
    """The runs the README lists as having no training config yet (its bullets)."""
    section = PAPER_README.read_text().split("## Training runs not yet in configs/train/", 1)[1]
    section = section.split("\n## ", 1)[0]
    return {
        name
        for line in section.splitlines()
        if line.startswith(("- ", "  "))  # a bullet or its continuation
        for name in re.findall(r"`([a-z0-9-]+)`", line)
    }


def _trained_runs() -> set[str]:
    runs = set()
    for path in sorted((CONFIGS / "train").glob("*.yaml")):
        match = RUN.match(_written(load_train_config(path).output))
        if match:
            runs.add(match.group(1))
    return runs


def test_every_run_a_paper_config_reads_is_trained_or_listed_as_missing():
    trained, missing = _trained_runs(), _missing_runs()
    needed = set().union(*(_paper_runs_of(load_sweep_config(path)) for path in PAPER_SWEEPS))
    unlisted = needed - trained - missing
    assert not unlisted, f"no training config, and not listed in the README: {sorted(unlisted)}"
    # A listed run that now has its training config must leave the list.
    assert not missing & trained, f"listed as missing but in configs/train/: {missing & trained}"
