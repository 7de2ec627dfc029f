"""`make docker-test`: build docker/Dockerfile with podman on a local Debian base and run lsurf
inside it, the demo compared bit for bit with the same demo run on this host.

Steps, each timed: the host's tools (podman, runc, debootstrap and one containers.conf line,
installed when missing and this is root with apt-get), the base image
(`localhost/debian-base:bookworm`, debootstrapped from the Debian mirror apt uses, skipped
when it exists), the lsurf image (the Dockerfile's `make install`, pip using this host's
package folders and indexes, see `pip_mounts`), `lsurf --version` inside, `make demo` inside
with runs/ on a host folder, a 5x5 sweep under `mpiexec -n 3` inside, and the comparison with
`make demo` on the host, which runs beside the steps from the base image on. Everything it
writes lies under build/docker-test/.

Bit equality needs the same floating-point path on both sides: the same torch build (pip
resolves the same pinned wheels from the same folders) and the same thread count, pinned here
by giving both demos the same CPUs (taskset, --cpuset-cpus), which lsurf's workers and torch
read their thread counts from.

Run: .venv/bin/python docker/test.py   (what `make docker-test` runs, after `make install`)
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "docker-test"
BASE = "localhost/debian-base:bookworm"
IMAGE = "localhost/lsurf:bookworm"
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# The container runtime cannot raise RLIMIT_NOFILE/NPROC on machines like CI's, so podman
# must not ask it to; and crun refuses hybrid cgroup hierarchies, so runc runs the containers.
ULIMITS_LINE = "default_ulimits = []"
RUNTIME = ["--runtime", "runc"]
# Inside the image the checkout is /opt/lsurf (the Dockerfile's WORKDIR); runs/ is mounted.
IMAGE_CHECKOUT = "/opt/lsurf"
# The demo's sweep (configs/demo/sweep.yaml, -1:1:13 on both axes) at every third point: the
# MPI sweep's grid, so its values can be checked against the serial demo's own points.
MPI_GRID = "-1:1:5"
MPI_EVERY = 3
# The surface file's dataset naming its direction file (the reference code's layout): a path,
# which differs between the host and the container. The digests tell the rest apart.
PATH_DATASETS = {"dir_file"}
DIGESTS = ("checkpoint_sha256", "directions_sha256")
# Where a pip setting naming a file is mounted in the build (never at its host path: the
# host's certificate bundle would hide the image's own /etc/ssl/certs while apt runs).
PIP_FILES = "/mnt/lsurf-pip"

durations: list[tuple[str, float]] = []


@contextmanager
def step(name: str) -> Iterator[None]:
    print(f"\n== {name}", flush=True)
    start = time.monotonic()
    yield
    seconds = time.monotonic() - start
    durations.append((name, seconds))
    print(f"== {name}: {seconds:.1f} s", flush=True)


def run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    """Run a command shown as typed; a failure ends the test with what it printed."""
    print("$ " + shlex.join(command), flush=True)
    done = subprocess.run(command, text=True, **options)  # type: ignore[call-overload]
    if done.returncode != 0:
        print(done.stdout or "", done.stderr or "", sep="", file=sys.stderr)
        fail(f"exit code {done.returncode}: {shlex.join(command)}")
    return done


def fail(message: str) -> None:
    sys.exit(f"docker-test: {message}")


# ---------------------------------------------------------------------------- the host


def install_host_tools() -> None:
    """podman, runc and debootstrap (apt-get, as root), and podman's ulimits setting."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            fail(
                f"{', '.join(missing)} missing: install them (Debian: apt-get install podman runc"
                " debootstrap), or run as root on Debian/Ubuntu"
            )
        print(f"installing {' '.join(missing)}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env)
        run(
            ["apt-get", "install", "-y", "-qq", "podman", "runc", "debootstrap"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    text = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else ""
    changed = with_ulimits_line(text)
    if changed is None:
        return  # set already, by this script or by hand: leave it as it is
    if os.geteuid() != 0:
        fail(f"podman needs `{ULIMITS_LINE}` under [containers] in {CONTAINERS_CONF}: add it")
    CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
    CONTAINERS_CONF.write_text(changed)
    print(f"added `{ULIMITS_LINE}` under [containers] in {CONTAINERS_CONF}", flush=True)


def with_ulimits_line(text: str) -> str | None:
    """containers.conf's text with ULIMITS_LINE in its [containers] table (made when absent,
    since TOML refuses a table twice); None when some default_ulimits is set already."""
    lines = text.splitlines()
    stripped = [line.strip() for line in lines]
    if any(line.startswith("default_ulimits") for line in stripped):
        return None
    if "[containers]" in stripped:
        lines.insert(stripped.index("[containers]") + 1, ULIMITS_LINE)
    else:
        lines += ["[containers]", ULIMITS_LINE]
    return "\n".join(lines) + "\n"


def apt_sources() -> list[Path]:
    return [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]


def debian_mirror(sources: list[Path]) -> str:
    """The Debian mirror apt is configured with for bookworm (one-line or deb822 sources)."""
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():  # deb [options] URI SUITE COMPONENTS...
            words = [word for word in line.split() if not word.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
        for stanza in text.split("\n\n"):  # Types: deb / URIs: ... / Suites: ...
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if ":" in line and not line.startswith("#")
            )
            types, suites = fields.get("Types", "").split(), fields.get("Suites", "").split()
            if "deb" in types and SUITE in suites:
                return fields["URIs"].split()[0]
    return FALLBACK_MIRROR


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def make_base_image() -> None:
    if image_exists(BASE):
        print(f"{BASE} exists: reused", flush=True)
        return
    rootfs = WORK / "debian-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    run(
        ["debootstrap", "--variant=minbase", SUITE, str(rootfs), debian_mirror(apt_sources())],
        stdout=subprocess.DEVNULL,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(["podman", "import", "-", BASE], stdin=tar.stdout, stdout=subprocess.DEVNULL)
    if tar.wait() != 0:
        fail("tar of the debootstrapped root failed")
    shutil.rmtree(rootfs)


# ---------------------------------------------------------------------------- pip in the build


def pip_settings() -> dict[str, str]:
    """This host's effective pip settings (`pip config list`: files, then PIP_* variables)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    settings: dict[str, str] = {}
    environment: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.partition(".")
        (environment if scope == ":env:" else settings)[name] = ast.literal_eval(value)
    return settings | environment  # the variables win, as they do for pip


def pip_mounts(settings: dict[str, str], conf: Path) -> list[str]:
    """`podman build -v` options and a pip.conf that give the build this host's pip.

    Local package folders and file:// indexes are mounted read-only at their own paths (an
    index's pages link to files beside it, so a `.../simple` index brings its parent); the
    constraint file and the certificate bundle (the host's proxy may need its own CA) are
    mounted under PIP_FILES. A pip.conf naming all of them is mounted as /etc/pip.conf, which
    the venv's pip reads: the image itself keeps none of it.
    """
    folders: set[Path] = set()
    lines = ["[global]"]
    for name in ("index-url", "extra-index-url", "find-links"):
        if name not in settings:
            continue
        for location in settings[name].split():
            path = Path(location.removeprefix("file://"))
            if location.startswith("file://") or location.startswith("/"):
                folders.add(path.parent if path.name == "simple" else path)
        lines.append(f"{name} = {settings[name]}")
    files = []
    for name in ("constraint", "cert"):
        if name in settings:
            inside = f"{PIP_FILES}/{name}-{Path(settings[name]).name}"
            files.append(f"{settings[name]}:{inside}:ro")
            lines.append(f"{name} = {inside}")
    for name in ("default-timeout", "trusted-host", "no-index"):
        if name in settings:
            lines.append(f"{name} = {settings[name]}")
    conf.write_text("\n".join(lines) + "\n")
    options = [f"{folder}:{folder}:ro" for folder in sorted(folders) if folder.exists()]
    options += [*files, f"{conf}:/etc/pip.conf:ro"]
    return [word for option in options for word in ("-v", option)]


def build_image() -> None:
    conf = WORK / "pip.conf"
    mounts = pip_mounts(pip_settings(), conf)
    print(conf.read_text(), end="", flush=True)
    run(
        [
            "podman",
            "build",
            *RUNTIME,
            "-f",
            "docker/Dockerfile",
            "--build-arg",
            f"BASE={BASE}",
            "-t",
            IMAGE,
            *mounts,
            ".",
        ],
        cwd=ROOT,
    )
    # A rebuilt install layer (setup.cfg changed) would leave the old 7 GB one behind.
    run(["podman", "image", "prune", "-f"], stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------------------- the runs


def pinned_cpus() -> list[int]:
    """The same CPUs for both demos: thread counts follow them, and bits follow threads."""
    return sorted(os.sched_getaffinity(0))[:2]


def in_container(
    entrypoint: str, *arguments: str, runs: Path, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """`entrypoint arguments` in the image, on the pinned CPUs, with `runs` as its runs/."""
    cpus = pinned_cpus()
    return run(
        [
            "podman",
            "run",
            "--rm",
            *RUNTIME,
            "--cpuset-cpus",
            ",".join(map(str, cpus)),
            "-e",
            f"OMP_NUM_THREADS={len(cpus)}",
            "-v",
            f"{runs}:{IMAGE_CHECKOUT}/runs",
            "--entrypoint",
            entrypoint,
            IMAGE,
            *arguments,
        ],
        capture_output=capture,
    )


class HostDemo(threading.Thread):
    """`make demo` on the host, in a folder of its own (symlinks to the checkout's Makefile,
    configs and venv, so the Makefile's recipe runs unchanged with runs/ written there).

    It runs beside the image build: pip in the build keeps about one core busy, and the
    demo's result does not depend on the load, only on its pinned CPUs. Its output goes to
    a log file, so that the build's stays readable.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.log = folder, folder.with_suffix(".log")
        self.seconds = 0.0
        self.returncode: int | None = None

    def run(self) -> None:
        self.folder.mkdir(parents=True)
        for name in ("Makefile", "setup.cfg", "pyproject.toml", "configs", ".venv"):
            (self.folder / name).symlink_to(ROOT / name)
        cpus = pinned_cpus()
        command = ["taskset", "-c", ",".join(map(str, cpus)), "make", "-C", str(self.folder)]
        env = {**os.environ, "OMP_NUM_THREADS": str(len(cpus))}
        start = time.monotonic()
        with self.log.open("w") as log:
            done = subprocess.run([*command, "demo"], env=env, stdout=log, stderr=log)
        self.seconds, self.returncode = time.monotonic() - start, done.returncode

    def finish(self) -> None:
        print(f"$ make demo  (on the host in {self.folder}, log {self.log})", flush=True)
        self.join()
        if self.returncode != 0:
            print(self.log.read_text()[-4000:], file=sys.stderr)
            fail(f"make demo on the host failed (exit code {self.returncode}): see {self.log}")
        print(f"it ran {self.seconds:.1f} s, beside the steps before", flush=True)


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file by its path inside it, read whole."""
    found: dict[str, np.ndarray] = {}

    def keep(name: str, item: h5py.Group | h5py.Dataset) -> None:
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]  # returns None: visititems goes on to the next item

    with h5py.File(path, "r") as file:
        file.visititems(keep)
    return found


def bit_equal(first: np.ndarray, second: np.ndarray) -> bool:
    """Same dtype, shape and bytes; arrays of strings (names) element by element."""
    if first.dtype != second.dtype or np.shape(first) != np.shape(second):
        return False
    if first.dtype.kind == "O":
        return bool(np.all(first == second))
    return np.ascontiguousarray(first).tobytes() == np.ascontiguousarray(second).tobytes()


def compare_demos(host: Path, container: Path) -> None:
    """Every dataset of the surface and direction files byte for byte (but the paths they
    hold, which differ by design), and the digests of the trained checkpoint and of the
    directions that the surface file records."""
    for name in ("surface.h5", "surface.directions.h5"):
        ours, theirs = datasets(host / name), datasets(container / name)
        if ours.keys() != theirs.keys():
            fail(f"{name}: datasets differ: {sorted(ours)} vs {sorted(theirs)}")
        compared = sorted(key for key in ours if key not in PATH_DATASETS)
        differing = [key for key in compared if not bit_equal(ours[key], theirs[key])]
        if differing:
            fail(f"{name}: host and container differ in {', '.join(differing)}")
        shown = ", ".join(compared) if len(compared) < 12 else f"all {len(compared)} datasets"
        print(f"{name}: bit for bit equal: {shown}", flush=True)
    with h5py.File(host / "surface.h5", "r") as ours, h5py.File(container / "surface.h5") as theirs:
        for key in DIGESTS:
            if ours.attrs[key] != theirs.attrs[key]:
                fail(f"surface.h5: {key} differs: {ours.attrs[key]} vs {theirs.attrs[key]}")
        print(f"surface.h5: equal {', '.join(DIGESTS)} (the same trained checkpoint)", flush=True)


def check_mpi_sweep(serial: Path, mpi: Path) -> None:
    """The 5x5 sweep under 3 ranks against the demo's own values at the same points."""
    ours, theirs = datasets(serial), datasets(mpi)
    picked = np.s_[::MPI_EVERY, ::MPI_EVERY]
    if not theirs["done"].all():
        fail(f"{mpi}: not every point done")
    for key in ("xcoordinates", "ycoordinates"):
        if not bit_equal(ours[key][::MPI_EVERY], theirs[key]):
            fail(f"{mpi}: {key} are not the demo's every {MPI_EVERY}rd")
    for key in ("train_loss", "train_acc"):
        if not bit_equal(ours[key][picked], theirs[key]):
            gap = np.abs(ours[key][picked] - theirs[key]).max()
            fail(f"{mpi}: {key} differs from the serial demo's by up to {gap:.3g}")
    print(
        f"mpiexec -n 3: train_loss and train_acc equal the serial demo's bit for bit at its "
        f"{theirs['done'].size} points",
        flush=True,
    )


def main() -> None:
    start = time.monotonic()
    os.chdir(ROOT)
    WORK.mkdir(parents=True, exist_ok=True)
    container, host = WORK / "container", WORK / "host"
    for folder in (container, host):
        shutil.rmtree(folder, ignore_errors=True)
    with step("host tools"):
        install_host_tools()
    host_demo = HostDemo(host)
    host_demo.start()
    with step(f"base image {BASE}"):
        make_base_image()
    with step(f"lsurf image {IMAGE}"):
        build_image()
    with step("lsurf --version in the container"):
        printed = in_container("lsurf", "--version", runs=WORK, capture=True).stdout.strip()
        ours = [sys.executable, "-m", "lsurf", "--version"]
        expected = subprocess.run(ours, check=True, capture_output=True, text=True).stdout.strip()
        print(printed, flush=True)
        if printed != expected:
            fail(f"the container has {printed!r}, this checkout {expected!r}")
    with step("make demo in the container"):
        container.mkdir()
        in_container("make", "demo", runs=container)
    with step("mpiexec -n 3 sweep in the container"):
        grid = ["--set", f"grid.x={MPI_GRID}", "--set", f"grid.y={MPI_GRID}"]
        sweep = ["-m", "lsurf", "sweep", "configs/demo/sweep.yaml", *grid]
        mpi = ["-n", "3", "python", "-m", "mpi4py", *sweep, "--set", "output=runs/demo/mpi.h5"]
        in_container("mpiexec", *mpi, runs=container)
        check_mpi_sweep(container / "demo" / "surface.h5", container / "demo" / "mpi.h5")
    with step("make demo on the host (waiting for it)"):
        host_demo.finish()
    with step("compare the host's and the container's demo"):
        compare_demos(host / "runs" / "demo", container / "demo")
    total = time.monotonic() - start
    print("\ndocker-test times:")
    for name, seconds in durations:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {host_demo.seconds:7.1f} s  make demo on the host, beside the steps above")
    print(f"  {total:7.1f} s  total")


if __name__ == "__main__":
    main()
