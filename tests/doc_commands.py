"""The shell commands that README.md and docs/*.md show, and what runs each of them.

Every fenced code block in those files is one of three things, by its language tag:
- data or code (yaml, python, ...): not commands;
- output (text): what a command printed; it may hold no `$ ` prompt line, so a command
  cannot hide in one;
- commands (no tag, sh, console): with `$ ` prompts, each prompt line (with its `\\`
  continuations) is a command and the lines after it, up to the next prompt, are what it
  printed; without prompts, every line that is not blank or a comment is a command.
A tag outside these lists is refused, so nothing is skipped by accident.

Each command must be accounted for in one of three ways:
- CHECKED (and the other CHAINS): `make docs-check` (this file, run as a script;
  tests/test_docs.py runs the same, one test per chain) runs it exactly as written, with
  bash, in list order, from a scratch folder that holds small synthetic stand-ins for what
  `make demo` leaves in runs/demo, and needs exit code 0 and every printed line the page
  shows that has no figure in it (figures differ between the stand-ins and the real demo;
  `…` in a shown line matches anything);
- a test runs it: the test gets it with `documented("the command")`, which fails when the
  pages no longer show it; test_docs finds these calls by reading tests/*.py;
- EXEMPT says why it runs nowhere in CI.
A command in none of them fails tests/test_docs.py.

    python tests/doc_commands.py [--keep]    # what `make docs-check` runs
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

COMMAND_TAGS = {"", "sh", "console"}
OUTPUT_TAGS = {"text"}
OTHER_TAGS = {"yaml", "python"}
PROMPT = "$ "
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<tag>[\w-]*)\s*$")

# What make docs-check runs, in this order: later commands read what earlier ones wrote.
# The README's first sweep and what reads it (a chain of its own: it shares only the stand-ins).
FIRST_CHAIN = [
    # README: a first sweep and a first plot
    ".venv/bin/lsurf sweep configs/first.yaml",
    ".venv/bin/lsurf info runs/first/line.h5",
    ".venv/bin/lsurf plot runs/first/line.h5",
    # docs/configuration.md
    ".venv/bin/lsurf sweep configs/first.yaml --set grid.x=-1:1:201 --set output=runs/first/fine.h5"
    " --plan",
    # docs/cluster.md
    ".venv/bin/mpiexec -n 3 .venv/bin/python -m mpi4py -m lsurf sweep configs/first.yaml"
    " --set output=runs/first/line-mpi.h5",
    ".venv/bin/lsurf compare runs/first/line.h5 runs/first/line-mpi.h5 --rtol 0",
    # docs/file-format.md
    ".venv/bin/lsurf info runs/first/line.directions.h5",
]
# What reads the demo's surface, trajectory and checkpoint (their stand-ins).
CHECKED = [
    # docs/plotting.md
    ".venv/bin/lsurf plot runs/demo/surface.h5 --log --kinds contour,heatmap --format png,pdf",
    ".venv/bin/lsurf plot runs/demo/surface.h5 --preset paper --out runs/demo/paper",
    ".venv/bin/lsurf plot runs/demo/surface.h5 --format vtk,html --log --log-offset 0.1",
    # docs/topology.md
    ".venv/bin/lsurf topology runs/demo/surface.h5",
    # docs/sharpness.md
    ".venv/bin/lsurf sharpness configs/sharpness.yaml",
    ".venv/bin/lsurf plot runs/demo/sharpness.h5",
    # docs/training.md
    ".venv/bin/lsurf sweep configs/demo/pca.yaml",
    ".venv/bin/lsurf plot runs/demo/pca.h5 --log",
    ".venv/bin/lsurf weights runs/demo/train/model_0.pt runs/demo/train/final.pt"
    " --out runs/demo/weights",
]

# Commands that read nothing the other chains or the stand-ins write: a chain of its own.
# tests/test_docs.py runs each chain as a test, so the pytest workers run them side by side.
# docs/connect.md: two seeds of convnet_small, their paths and barriers (about 40 s).
CONNECT_CHAIN = [
    ".venv/bin/lsurf data synth --out runs/connect/data --train-size 1000 --test-size 500",
    ".venv/bin/lsurf train configs/connect/train.yaml",
    ".venv/bin/lsurf train configs/connect/train.yaml --set training.seed=1"
    " --set output=runs/connect/seed1",
    ".venv/bin/lsurf connect configs/connect/connect.yaml",
    ".venv/bin/lsurf plot runs/connect/connect.h5",
]
# Each chain runs in its own scratch folder, its commands in order; the stand-ins only for
# the chains that read what `make demo` leaves.
CHAINS = {
    "first": (FIRST_CHAIN, True),
    "demo": (CHECKED, True),
    "connect": (CONNECT_CHAIN, False),
}
ALL_CHECKED = [text for commands, _ in CHAINS.values() for text in commands]

# The stand-ins for what `make demo` leaves (runs/demo: data, the trained ResNet-20 and its
# trajectory, a surface), small enough for seconds on CPU: the same commands as the demo's,
# on 250 train and 250 test images, 2 epochs, a 3x3 plane of 100 images.
STAND_INS = [
    ".venv/bin/lsurf data synth --out runs/demo/data --train-size 250 --test-size 250",
    ".venv/bin/lsurf train configs/demo/train.yaml --set training.epochs=2",
    ".venv/bin/lsurf sweep configs/demo/sweep.yaml --set grid.x=-1:1:3 --set grid.y=-1:1:3"
    " --set data.subset=100",
]

# Commands no CI step runs, each with the reason. Keep this short: a command that can run on
# a CPU in seconds belongs in CHECKED.
EXEMPT = {
    # The set-up commands themselves: CI runs `make test` (.ci/run is exactly that), and
    # `make demo` takes 3 minutes; its steps are CHECKED's stand-ins at a smaller size, and
    # tests/test_docker.py checks that both targets exist and begin with `make install`.
    "make demo": "3 minutes; its steps run as CHECKED's stand-ins",
    "make test": "is CI (.ci/run)",
    "make bench": "the benchmarks take tens of minutes; their figures are docs/benchmarks.md",
    # Real CIFAR-10, published checkpoints and GPUs (docs/cluster.md, docs/reference-code.md).
    "mpiexec -n 9 python -m mpi4py -m lsurf sweep configs/paper/fig1-resnet56-3d.yaml"
    " configs/paper/fig1-resnet56-noshort-3d.yaml": "real CIFAR-10, trained ResNet-56s, GPUs",
    ".venv/bin/lsurf sweep again.yaml": "the reference code's trained net and direction file",
    ".venv/bin/lsurf compare runs/resnet56-again.h5"
    " model_300.t7_weights_xignore=biasbn_xnorm=filter_yignore=biasbn_ynorm=filter.h5"
    "_[-1.0,1.0,51]x[-1.0,1.0,51].h5 --rtol 1e-4": "a surface file the reference code wrote",
    # docs/benchmarks.md: the reference code side by side (a network: GitHub, CIFAR-10).
    "git clone https://github.com/tomgoldstein/loss-landscape && cd loss-landscape": (
        "a network (GitHub)"
    ),
    "python -c \"import torch, cifar10.model_loader as m; torch.save({'state_dict':"
    " m.load('resnet20').state_dict()}, 'resnet20_init.t7')\"": "the reference code's clone",
    "python plot_surface.py --model resnet20 --model_file resnet20_init.t7 --x=-1:1:3"
    " --y=-1:1:3 --xnorm filter --xignore biasbn --ynorm filter --yignore biasbn"
    " --batch_size 250 --data_split 50": "the reference code's clone, real CIFAR-10",
    ".venv/bin/lsurf sweep configs/random-2d.yaml --set model.name=resnet20"
    " --set model.checkpoint=loss-landscape/resnet20_init.t7"
    " --set data.root=loss-landscape/cifar10/data --set data.reference_split=50"
    " --set data.splits=[train] --set data.batch_size=250 --set grid.x=-1:1:3"
    " --set grid.y=-1:1:3 --set output=runs/side-by-side.h5 --plan": (
        "the reference code's clone, real CIFAR-10"
    ),
    # A Slurm cluster with GPUs (tests/test_slurm.py submits launch/slurm.sbatch to a real
    # one-node cluster, with 3 tasks and no GPUs).
    "sbatch --nodes=1 --ntasks=5 --gpus=4 --time=12:00:00 launch/slurm.sbatch"
    " configs/random-2d.yaml": "a Slurm cluster with GPUs",
    "sbatch --nodes=4 --ntasks=17 --gpus-per-node=4 launch/slurm.sbatch configs/random-2d.yaml"
    " --set grid.x=-1:1:401 --set grid.y=-1:1:401": "a Slurm cluster with GPUs",
    "sbatch --nodes=2 --ntasks=9 --gpus-per-node=4 --time=24:00:00 launch/slurm.sbatch"
    " configs/paper/fig1-resnet56-3d.yaml configs/paper/fig1-resnet56-noshort-3d.yaml": (
        "a Slurm cluster with GPUs, real CIFAR-10"
    ),
    "sbatch --ntasks=5 --gpus=4 --time=02:00:00 launch/slurm.sbatch connect"
    " configs/connect/connect.yaml": "a Slurm cluster with GPUs (test_slurm submits a connect job)",
    # tests/test_slurm_nodes.py submits the two-node line of the same section to two fake nodes.
    "sbatch --nodes=2 --ntasks=9 --ntasks-per-node=5 --gpus-per-node=4 launch/slurm.sbatch"
    " CONFIG.yaml": "a Slurm cluster of two nodes with GPUs",
    # Several real nodes (tests/test_nodes.py runs such a job across two fake nodes on one
    # machine, through tests/cluster/node_launcher.sh in place of ssh).
    "mpiexec -hosts gpu01:5,gpu02:4 -n 9 .venv/bin/python -m mpi4py -m lsurf sweep"
    " configs/random-2d.yaml": "several real nodes with GPUs, ssh between them",
    "mpiexec -f hosts.txt -n 9 .venv/bin/python -m mpi4py -m lsurf sweep configs/random-2d.yaml": (
        "several real nodes with GPUs, ssh between them"
    ),
    "srun --mpi=pmix --nodes=2 --ntasks=9 --ntasks-per-node=5 --gpus-per-node=4 .venv/bin/python"
    " -m mpi4py -m lsurf sweep configs/random-2d.yaml": (
        "a Slurm allocation of two GPU nodes, a PMIx-enabled MPI"
    ),
    # docs/container.md: a Docker engine with GPUs, Apptainer, Slurm. `make docker-test`
    # builds the same Dockerfile with podman and runs --version, mpiexec and the demo inside;
    # tests/test_docker.py checks the Dockerfile.
    "make docker-test": "builds a 7 GB image and runs the demo twice: 25 minutes",
    "docker build -f docker/Dockerfile -t lsurf .": "Docker; make docker-test builds it (podman)",
    "docker run --rm lsurf --version": "Docker; make docker-test runs it with podman",
    'docker run --rm --gpus all -v "$PWD/runs:/opt/lsurf/runs" lsurf sweep runs/sweep.yaml': (
        "Docker with GPUs"
    ),
    'docker run --rm --gpus all --entrypoint mpiexec -v "$PWD/runs:/opt/lsurf/runs" lsurf'
    " -n 5 python -m mpi4py -m lsurf sweep runs/sweep.yaml": (
        "Docker with GPUs; make docker-test runs mpiexec -n 3 in the image with podman"
    ),
    "apptainer build lsurf.sif docker-daemon://lsurf:latest": "Apptainer (not in Debian)",
    "podman save --format oci-archive -o lsurf.tar localhost/lsurf:latest": (
        "a 7 GB archive of an image make docker-test builds"
    ),
    "apptainer build lsurf.sif oci-archive://lsurf.tar": "Apptainer (not in Debian)",
    "srun --ntasks=1 --gpus=4 apptainer exec --nv lsurf.sif mpiexec -launcher fork -n 5"
    " python -m mpi4py -m lsurf sweep CONFIG.yaml": "Slurm with GPUs and Apptainer",
    "srun --mpi=pmix apptainer exec --nv lsurf.sif python -m mpi4py -m lsurf sweep CONFIG.yaml": (
        "Slurm with PMIx and Apptainer"
    ),
    # Installing against a cluster's own MPI (a module system, the network).
    "python -m venv .venv && . .venv/bin/activate": "a cluster's MPI module",
    "pip install torch==2.14.1 torchvision==0.29.1": "a cluster's MPI module",
    "pip install --no-binary=mpi4py mpi4py": "a cluster's MPI module, a C compiler",
    "pip install -e .": "a cluster's MPI module",
    # The GPU check (README, docs/benchmarks.md): its CPU mode runs in tests/test_gpu_check.py.
    "make gpu-check": "needs a CUDA device (8 minutes)",
    "benchmarks/gpu_check.sh --out runs/gpu-check": "needs a CUDA device (8 minutes)",
    "benchmarks/gpu_check.sh --out $OUT --work /tmp/gpu-check": "the device tool's command",
    "echo /.whl/ >> .git/info/exclude": "the device tool's carried wheels",
    "python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64"
    " -d .whl mpich==5.0.2": "a package index",
    # docs/trackers.md: the optional extras (the test environment has both installed).
    "pip install lsurf[wandb]": "a package index",
    "pip install lsurf[tensorboard]": "a package index",
    # Curvature on the demo's ResNet-20: 8 and 2 minutes of Hessian-vector products on 2
    # cores; tests/test_curvature.py and tests/test_run_hessian.py run the same paths on small
    # models, serially and under MPI.
    ".venv/bin/lsurf sweep configs/curvature.yaml --set model.name=resnet20"
    " --set model.checkpoint=runs/demo/train/final.pt --set data.root=runs/demo/data"
    " --set data.subset=64 --set data.batch_size=64 --set grid.x=-1:1:5 --set grid.y=-1:1:5"
    " --set output=runs/demo/curvature.h5": "8 minutes of Hessian-vector products",
    ".venv/bin/lsurf info runs/demo/curvature.h5": "reads the 8-minute curvature map",
    ".venv/bin/lsurf plot runs/demo/curvature.h5 --metric eig_ratio --kinds heatmap": (
        "reads the 8-minute curvature map"
    ),
    ".venv/bin/lsurf hessian configs/curvature.yaml --set model.name=resnet20"
    " --set model.checkpoint=runs/demo/train/final.pt --set data.root=runs/demo/data"
    " --set data.subset=128 --set output=runs/demo/curvature.h5 --set hessian.top_k=3"
    " --set hessian.trace_samples=20 --set hessian.density_runs=1"
    " --set hessian.density_steps=30 --set hessian.per_layer=false": (
        "2 minutes of Hessian-vector products"
    ),
}


@dataclass(frozen=True)
class Command:
    """One command as a page shows it."""

    page: str  # the page's path, relative to the repository root
    line: int  # where it starts on the page (1-based)
    text: str  # as written, continuation lines included (what bash runs)
    shown: tuple[str, ...]  # the lines the page shows it printing (prompt blocks only)

    @property
    def key(self) -> str:
        """The command with continuations joined, comments and extra spaces dropped."""
        return canonical(self.text)


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # the opening fence's line (1-based)
    tag: str
    lines: tuple[str, ...]  # the content, the fence's indentation removed


def canonical(text: str) -> str:
    return shlex.join(shlex.split(text.replace("\\\n", " "), comments=True))


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (fences may be indented inside lists)."""
    page = path.relative_to(ROOT).as_posix()
    found, lines = [], path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, start, body = len(opening["indent"]), index, []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(f"{page}:{start + 1}: a code block that never closes")
        found.append(Block(page, start + 1, opening["tag"], tuple(body)))
        index += 1
    return found


def commands_in(block: Block) -> list[Command]:
    """The commands of one block (nothing for data, code and output blocks)."""
    if block.tag in OTHER_TAGS:
        return []
    if block.tag in OUTPUT_TAGS:
        prompts = [n for n, text in enumerate(block.lines) if text.startswith(PROMPT)]
        if prompts:
            raise ValueError(
                f"{block.page}:{block.line + 1 + prompts[0]}: a `$ ` command in a text block"
                " (text blocks are output; put commands in a console block)"
            )
        return []
    if block.tag not in COMMAND_TAGS:
        raise ValueError(
            f"{block.page}:{block.line}: code block tag {block.tag!r} is none of "
            f"{sorted(COMMAND_TAGS | OUTPUT_TAGS | OTHER_TAGS)}"
        )
    prompted = any(text.startswith(PROMPT) for text in block.lines)
    found: list[Command] = []
    index = 0
    while index < len(block.lines):
        text = block.lines[index]
        if prompted and not text.startswith(PROMPT):
            index += 1  # output, collected below with its command
            continue
        if not prompted and (not text.strip() or text.lstrip().startswith("#")):
            index += 1
            continue
        start, parts = index, [text.removeprefix(PROMPT) if prompted else text]
        while parts[-1].rstrip().endswith("\\") and index + 1 < len(block.lines):
            index += 1
            parts.append(block.lines[index])
        index += 1
        shown: list[str] = []
        while prompted and index < len(block.lines) and not block.lines[index].startswith(PROMPT):
            shown.append(block.lines[index])
            index += 1
        line = block.line + 1 + start
        found.append(Command(block.page, line, "\n".join(parts), tuple(shown)))
    return found


def documented_commands() -> list[Command]:
    return [command for page in PAGES for block in blocks(page) for command in commands_in(block)]


def documented(text: str) -> Command:
    """The command `text` as the pages show it, for a test that runs it: a test that calls
    this counts as running it (tests/test_docs.py reads the calls)."""
    matches = [command for command in documented_commands() if command.key == canonical(text)]
    assert matches, f"no page shows the command {text!r}"
    return matches[0]


def commands_run_by_tests(tests: Path = ROOT / "tests") -> dict[str, str]:
    """canonical command -> the test file that runs it through `documented("...")`."""
    found = {}
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "documented"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found[canonical(node.args[0].value)] = path.name
    return found


def unaccounted(
    commands: list[Command],
    checked: list[str] = ALL_CHECKED,
    tested: dict[str, str] | None = None,
    exempt: dict[str, str] = EXEMPT,
) -> list[Command]:
    """The commands that nothing runs and no exemption names."""
    tested = commands_run_by_tests() if tested is None else tested
    accounted = {canonical(text) for text in [*checked, *tested, *exempt]}
    return [command for command in commands if command.key not in accounted]


def shown_line_pattern(shown: str) -> re.Pattern | None:
    """A printed line the check can hold the real output to: none where the line has a
    figure (a number, which differs on the stand-ins; digits inside a name such as resnet20
    or .h5 are no figure) or is an elision."""
    text = shown.strip()
    if not text or re.search(r"(?<![A-Za-z_])\d", text) or set(text) <= {".", "…"}:
        return None
    pieces = [r"\s+".join(map(re.escape, piece.split())) for piece in text.split("…")]
    return re.compile(".*".join(pieces))


def missing_lines(command: Command, printed: str) -> list[str]:
    """The shown lines (digit-free) that the real output lacks."""
    lines = [line.strip() for line in printed.splitlines()]
    missing = []
    for shown in command.shown:
        pattern = shown_line_pattern(shown)
        if pattern is not None and not any(pattern.fullmatch(line) for line in lines):
            missing.append(shown.strip())
    return missing


def link_repository(scratch: Path) -> None:
    """Make `scratch` a place the pages' commands run from as from the repository root:
    `.venv` is this Python's environment, and the folders the commands read are linked."""
    environment = Path(sys.prefix)
    for tool in ("lsurf", "mpiexec", "python"):
        if not (environment / "bin" / tool).exists():
            raise SystemExit(f"no {tool} in {environment}/bin: run `make install` first")
    (scratch / ".venv").symlink_to(environment)
    for shared in ("configs", "launch", "benchmarks"):
        (scratch / shared).symlink_to(ROOT / shared)


def prepare(scratch: Path, stand_ins: bool = True) -> None:
    """A folder that looks like the repository (after `make demo`, with small stand-ins)."""
    link_repository(scratch)
    for text in STAND_INS if stand_ins else ():
        run(text, scratch, echo=False)


def run(text: str, scratch: Path, echo: bool = True) -> str:
    """Runs one command with bash from `scratch`; its output, or an error saying why not."""
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", text], cwd=scratch, capture_output=True, text=True)
    printed = done.stdout + done.stderr
    if echo:
        print(f"$ {text}\n{printed.rstrip()}\n({time.monotonic() - started:.1f} s)\n", flush=True)
    if done.returncode != 0:
        raise AssertionError(f"`{text}` exited {done.returncode}:\n{printed}")
    return printed


def check(scratch: Path, chain: str | None = None) -> int:
    """Runs one chain of CHAINS (None: each, one after the other) from `scratch`, prepared
    here; the number of commands run."""
    if chain is None:
        return sum(check(scratch / name, name) for name in CHAINS)
    commands, stand_ins = CHAINS[chain]
    shown = {command.key: command for command in documented_commands()}
    stale = [text for text in commands if canonical(text) not in shown]
    assert not stale, f"CHECKED lists commands no page shows: {stale}"
    scratch.mkdir(parents=True, exist_ok=True)
    prepare(scratch, stand_ins)
    for text in commands:
        command = shown[canonical(text)]
        missing = missing_lines(command, run(command.text, scratch))
        assert not missing, f"{command.page}:{command.line}: `{text}` did not print {missing}"
    return len(commands)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the documentation's cheap commands.")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    keep = parser.parse_args().keep
    started = time.monotonic()
    folder = tempfile.mkdtemp(prefix="lsurf-docs-")
    try:
        count = check(Path(folder))
    finally:
        if not keep:
            shutil.rmtree(folder)
    seconds = time.monotonic() - started
    where = f"; scratch folder kept: {folder}" if keep else ""
    print(f"docs-check: {count} documented commands ran in {seconds:.0f} s{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
