"""The `lsurf` command line: sweep, hessian, info, compare, train, plot, weights, data synth.

Input: argv. Output: exit codes — 0 done, 2 bad input (one line on stderr, no traceback, no
existing output touched), 130 interrupted. Library code raises `LsurfError`; only this
module turns it into a message and an exit code. Heavy imports (torch) happen inside the
commands, so `lsurf info`, `lsurf plot` and `--help` start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from lsurf.errors import LsurfError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other lsurf error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key (repeatable), e.g. {example}",
    )


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "configs",
        nargs="+",
        type=Path,
        metavar="CONFIG",
        help="sweep config YAML; with several, their sweeps run through one queue (the first "
        "one's points first), each into its own output and resumable on its own",
    )
    _add_overrides(parser, "grid.x=-1:1:51 (applied to every config)")
    parser.add_argument(
        "--force", action="store_true", help="start over, replacing an existing output"
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=None,
        metavar="N",
        help="a plain progress line every N points (default: a bar on a terminal, "
        "else about every 1%% of the grid)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="check everything, time one point and say what the sweep would do; write nothing",
    )


def _sweep(args: argparse.Namespace) -> int:
    from lsurf.config import load_sweep_config
    from lsurf.run.sweep import run_sweeps

    if args.log_every is not None and args.log_every < 1:
        raise LsurfError("--log-every must be at least 1")
    configs = [load_sweep_config(path, args.overrides) for path in args.configs]
    if args.plan:
        from lsurf.run.plan import plan_sweeps

        print("\n".join(plan_sweeps(configs, force=args.force)))
        return 0
    run_sweeps(configs, force=args.force, log_every=args.log_every)
    return 0


def _connect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="connect config YAML (its connect: section)")
    _add_overrides(parser, "connect.points=51")
    parser.add_argument(
        "--curve",
        choices=("bezier", "polychain"),
        default=None,
        help="also train a curve through a bend and evaluate along it (connect.curve)",
    )
    parser.add_argument(
        "--force", action="store_true", help="start over, replacing an existing output"
    )
    parser.add_argument(
        "--log-every", type=int, default=None, metavar="N", help="a progress line every N points"
    )


def _connect(args: argparse.Namespace) -> int:
    from lsurf.config import load_connect_config
    from lsurf.run.connect import run_connect

    if args.log_every is not None and args.log_every < 1:
        raise LsurfError("--log-every must be at least 1")
    overrides = list(args.overrides)
    if args.curve is not None:
        overrides.append(f"connect.curve={args.curve}")
    outcome = run_connect(
        load_connect_config(args.config, overrides), force=args.force, log_every=args.log_every
    )
    if outcome is not None:
        from lsurf.files.info import describe

        print(describe(outcome.path))
    return 0


def _sharpness_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="sharpness config YAML (its sharpness: section)")
    _add_overrides(parser, "sharpness.samples=50")
    parser.add_argument(
        "--rho",
        default=None,
        help="comma list of radii (sharpness.rho), e.g. 0.01,0.02,0.05: a curve against ρ",
    )
    parser.add_argument(
        "--force", action="store_true", help="start over, replacing an existing output"
    )
    parser.add_argument(
        "--log-every", type=int, default=None, metavar="N", help="a progress line every N units"
    )


def _sharpness(args: argparse.Namespace) -> int:
    from lsurf.config import load_sharpness_config
    from lsurf.run.sharpness import run_sharpness

    if args.log_every is not None and args.log_every < 1:
        raise LsurfError("--log-every must be at least 1")
    overrides = list(args.overrides)
    if args.rho is not None:
        overrides.append(f"sharpness.rho=[{args.rho}]")
    outcome = run_sharpness(
        load_sharpness_config(args.config, overrides), force=args.force, log_every=args.log_every
    )
    if outcome is not None:
        from lsurf.files.info import describe

        print(describe(outcome.path))
    return 0


def _hessian_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="sweep config YAML (its hessian: section)")
    _add_overrides(parser, "hessian.top_k=10")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing Hessian analysis file"
    )


def _hessian(args: argparse.Namespace) -> int:
    from lsurf.config import load_sweep_config
    from lsurf.run.hessian import run_hessian

    run_hessian(load_sweep_config(args.config, args.overrides), force=args.force)
    return 0


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a surface file or a direction file")


def _info(args: argparse.Namespace) -> int:
    from lsurf.files.info import describe

    print(describe(args.file))
    return 0


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", type=Path, metavar="SURFACE", help="a surface file")
    parser.add_argument("second", type=Path, metavar="REFERENCE", help="the one to compare to")
    parser.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="exit 1 when any metric's largest relative difference is above this",
    )


def _compare(args: argparse.Namespace) -> int:
    from lsurf.files.compare import describe_comparison

    report, worst = describe_comparison(args.first, args.second)
    print(report)
    if args.rtol is not None and worst > args.rtol:
        print(f"lsurf: differences above --rtol {args.rtol:g}", file=sys.stderr)
        return 1
    return 0


def _topology_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("surface", type=Path, metavar="SURFACE", help="a surface file (1D or 2D)")
    parser.add_argument(
        "--metric", default=None, help="the column to analyse (default: the first loss column)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="persistence below which a basin merges into its neighbour, in the column's units",
    )
    parser.add_argument(
        "--relative",
        type=float,
        default=None,
        help="the threshold as a share of the column's value range (default 0.05)",
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        choices=(4, 8),
        default=4,
        help="a point's neighbours on the grid: 4 (along x and y, default) or 8 (diagonals too)",
    )
    parser.add_argument(
        "--stats",
        default=None,
        help="comma list of columns summarised per basin (default: every other column)",
    )
    parser.add_argument(
        "--format",
        default="png",
        choices=("png", "pdf", "svg"),
        help="the figure's format (written beside the file, or in --out)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the figure")


def _topology(args: argparse.Namespace) -> int:
    from lsurf.files.topology import analyse_file, describe_analysis, write_topology
    from lsurf.plot.topology import write_topology_figure

    statistics = None if args.stats is None else [n for n in args.stats.split(",") if n]
    found = analyse_file(
        args.surface, args.metric, args.threshold, args.relative, args.neighbours, statistics
    )
    write_topology(
        args.surface, found.column, found.topology, found.table, found.relative, found.points
    )
    folder = args.out if args.out is not None else args.surface.parent
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{args.surface.stem}.topology.{found.column}.{args.format}"
    figure = write_topology_figure(found, folder / name, args.format)
    print("\n".join(describe_analysis(found)))
    print(f"written to {args.surface} (group topology/{found.column}); figure {figure}")
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training config YAML")
    _add_overrides(parser, "training.epochs=2")
    parser.add_argument(
        "--force",
        action="store_true",
        help="start over, replacing the training files in the output folder",
    )


def _train(args: argparse.Namespace) -> int:
    from lsurf.config import load_train_config
    from lsurf.train.trainer import train

    train(load_train_config(args.config, args.overrides), force=args.force)
    return 0


def _plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("surfaces", nargs="+", type=Path, metavar="SURFACE", help="surface files")
    parser.add_argument(
        "--metric",
        default=None,
        help="dataset to draw (default train_loss, else the first loss); with curvature maps "
        "also max_eig, min_eig and eig_ratio (|λmin/λmax|)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the files (default: beside the first surface file)",
    )
    parser.add_argument(
        "--format",
        default="png",
        metavar="LIST",
        help="comma list of png, pdf, svg (figures), vtk (ParaView .vtu), html (interactive "
        "3D page) (default png)",
    )
    parser.add_argument(
        "--kinds",
        default=None,
        metavar="LIST",
        help="2D: comma list of contour, filled, heatmap, surface3d (default all); 1D: curve",
    )
    parser.add_argument("--log", action="store_true", help="log color scale / log10 heights")
    parser.add_argument(
        "--zmax",
        type=float,
        default=None,
        metavar="Z",
        help="clip values above Z to Z for display (the figures say how many)",
    )
    parser.add_argument(
        "--levels",
        default=None,
        metavar="SPEC",
        help="contour levels: MIN:MAX:STEP (the paper's vmin:vmax:vlevel) or a comma list",
    )
    parser.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="paper: the reference scripts' defaults (levels 0.1:10:0.5, 1D loss axis 0-5, "
        "extra levels 10..1e8 on planes with a training path, their colormaps, VTK log "
        "offset 0.1); flags given explicitly win",
    )
    parser.add_argument(
        "--compare",
        default="files",
        metavar="HOW",
        help="seeds: the files are one checkpoint swept along different random seeds: checked "
        "(same checkpoint and grid), named by seed, 1D curves overlaid (default files: side "
        "by side)",
    )
    parser.add_argument(
        "--path-levels",
        default=None,
        metavar="SPEC",
        help="extra grey contour lines on planes that carry a training path, e.g. "
        "10,100,1000 (the reference's 10 to 1e8 on its trajectory plots)",
    )
    parser.add_argument(
        "--ymax",
        type=float,
        default=None,
        metavar="Y",
        help="1D: the loss axis from 0 to Y (the reference's loss_max; default: the data)",
    )
    parser.add_argument(
        "--colormap",
        default=None,
        metavar="NAME",
        help="matplotlib colormap for every 2D kind (default viridis)",
    )
    parser.add_argument(
        "--view",
        default=None,
        metavar="ELEV,AZIM",
        help="3D surface: elevation and azimuth in degrees, e.g. 30,-60 (default: the lowest "
        "view that shows every panel's minimum)",
    )
    parser.add_argument(
        "--interp",
        type=int,
        default=None,
        metavar="N",
        help="VTK: resample the surface onto N×N points, bicubic (the reference's interp)",
    )
    parser.add_argument(
        "--log-offset",
        type=float,
        default=None,
        metavar="C",
        help="VTK with --log: heights log10(value + C), so values near 0 stay finite "
        "(default 0; the reference uses ln(value + 0.1))",
    )
    parser.add_argument(
        "--log-to",
        action="append",
        default=[],
        metavar="TRACKER",
        help="also log the figures, scalars and file to wandb or tensorboard (repeatable or a "
        "comma list; needs pip install lsurf[wandb] / lsurf[tensorboard])",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --log-to: the tracker's folder (W&B's dir, TensorBoard's log_dir; default "
        "the tracker's own: ./wandb, ./runs/...)",
    )
    parser.add_argument(
        "--project",
        default=None,
        metavar="NAME",
        help="with --log-to wandb: the W&B project (default lsurf)",
    )


def _plot(args: argparse.Namespace) -> int:
    from lsurf.plot import parse_options

    options = parse_options(
        metric=args.metric,
        out=args.out,
        formats=args.format,
        kinds=args.kinds,
        log=args.log,
        zmax=args.zmax,
        levels=args.levels,
        preset=args.preset,
        path_levels=args.path_levels,
        ymax=args.ymax,
        colormap=args.colormap,
        view=args.view,
        interp=args.interp,
        log_offset=args.log_offset,
        compare=args.compare,
    )
    from lsurf.plot import plot_any_files
    from lsurf.trackers import log_surfaces, parse_trackers

    # Checked first: a tracker that is not installed stops the command before a figure is drawn.
    trackers = parse_trackers(args.log_to)
    for path in plot_any_files(args.surfaces, options):
        print(path)
    if trackers:
        logged = log_surfaces(
            args.surfaces, trackers, log_dir=args.log_dir, project=args.project, options=options
        )
        for tracker in trackers:
            print(
                f"logged to {tracker}: {len(logged.figures)} figures, {len(logged.scalars)} "
                f"scalars, {len(args.surfaces)} file{'s' if len(args.surfaces) > 1 else ''}"
            )
    return 0


def _weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files to compare")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for weights.h5 and weights.png"
    )


def _weights(args: argparse.Namespace) -> int:
    print(compare_weights(args.checkpoints, args.out))
    return 0


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    data_commands = parser.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    from lsurf.data.layouts import LAYOUTS  # torch-free, like the rest of the parser

    synth = data_commands.add_parser(
        "synth", help="write a synthetic dataset in the CIFAR-10 or CIFAR-100 python format"
    )
    synth.add_argument(
        "--dataset",
        choices=list(LAYOUTS),
        default="cifar10",
        help="which dataset's layout and number of classes to imitate (default cifar10)",
    )
    synth.add_argument(
        "--out",
        type=Path,
        required=True,
        help="root folder for the dataset's folder (cifar-10-batches-py or cifar-100-python)",
    )
    synth.add_argument("--train-size", type=int, default=10000)
    synth.add_argument("--test-size", type=int, default=2000)
    synth.add_argument("--seed", type=int, default=0)


def _data(args: argparse.Namespace) -> int:
    from lsurf.data.layouts import layout_of
    from lsurf.data.synthetic import write_synthetic

    for name in ("train_size", "test_size"):
        if getattr(args, name) < 1:
            raise LsurfError(f"--{name.replace('_', '-')} must be at least 1")
    root = write_synthetic(
        args.out, args.train_size, args.test_size, args.seed, dataset=args.dataset
    )
    title = layout_of(args.dataset).title
    print(f"synthetic {title} ({args.train_size} train, {args.test_size} test) in {root}")
    return 0


@dataclass(frozen=True)
class Command:
    """One `lsurf` command: its help line, its arguments, and what it does."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS = {
    "sweep": Command(
        "compute (or resume) a loss surface; several configs: one job, one queue, one file each",
        _sweep_arguments,
        _sweep,
    ),
    "connect": Command(
        "are two minima one basin? loss and error along the paths between checkpoints "
        "(linear, permutation-aligned, trained curves) and their barriers, in one file",
        _connect_arguments,
        _connect,
    ),
    "sharpness": Command(
        "how sharp is the minimum: average-case, worst-case and m-sharpness at θ* (plain or "
        "adaptive, L2 or L∞ balls) at one radius or several, with standard errors, in one file",
        _sharpness_arguments,
        _sharpness,
    ),
    "hessian": Command(
        "analyse the Hessian of the loss at the checkpoint: top eigenvalues, trace, "
        "spectral density, per-layer sharpness (serial, or every rank under mpiexec)",
        _hessian_arguments,
        _hessian,
    ),
    "info": Command(
        "what a surface file holds and how complete it is (or a direction file, or a "
        "Hessian analysis file)",
        _info_arguments,
        _info,
    ),
    "compare": Command(
        "how far two surfaces of one grid are apart, metric by metric (e.g. lsurf's "
        "against a surface the reference code wrote)",
        _compare_arguments,
        _compare,
    ),
    "topology": Command(
        "how many basins, how deep: the merge tree, persistence pairs, basins and smoothness "
        "of a stored surface's column, written into its file, with a figure",
        _topology_arguments,
        _topology,
    ),
    "train": Command(
        "train a model (SGD/Adam, lr schedules, augmentation) into a checkpoint "
        "trajectory; rerun the same command to resume",
        _train_arguments,
        _train,
    ),
    "plot": Command(
        "draw surface files: contours, heatmap and 3D (2D) or loss/accuracy curves (1D); "
        "several files side by side on one color scale",
        _plot_arguments,
        _plot,
    ),
    "weights": Command(
        "per-layer weight norms and weight histograms of checkpoints",
        _weights_arguments,
        _weights,
    ),
    "data": Command(
        "dataset utilities",
        _data_arguments,
        _data,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from lsurf import __version__

    parser = _Parser(prog="lsurf", description="Loss-surface sweeps of neural networks.")
    # What an installed image or environment holds, without importing torch.
    parser.add_argument("--version", action="version", version=f"lsurf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        command.arguments(commands.add_parser(name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except LsurfError as error:
        print(f"lsurf: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("lsurf: interrupted", file=sys.stderr)
        return 130


def compare_weights(paths: list[Path], out: Path) -> Path:
    """`lsurf weights`: statistics on one shared histogram range, a stats file and a figure."""
    from lsurf.checkpoint import read_state_dict
    from lsurf.files.weights import write_weight_file
    from lsurf.plot.weights import plot_weight_statistics
    from lsurf.weights import shared_limit, weight_statistics

    states = [read_state_dict(path) for path in paths]
    labels = [path.stem for path in paths]
    if len(set(labels)) < len(labels):  # e.g. run_a/final.pt and run_b/final.pt
        labels = [f"{path.parent.name}/{path.stem}" for path in paths]
    limit = shared_limit(states)
    statistics = {
        label: weight_statistics(state, limit) for label, state in zip(labels, states, strict=True)
    }
    write_weight_file(out / "weights.h5", statistics)
    return plot_weight_statistics(statistics, out / "weights.png")


if __name__ == "__main__":
    sys.exit(main())
