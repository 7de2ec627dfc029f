"""What can be checked of the container without building it: docker/Dockerfile against the
Makefile and setup.cfg, the `make docker-test` target and CI step, and docker/test.py's own
pure parts (where the Debian mirror is read from, how the host's pip reaches the build).
`make docker-test` builds and runs the image itself; nothing here needs podman."""

import ast
import configparser
import importlib.util
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "WORKDIR",
    "ENTRYPOINT",
    "CMD",
    "ARG",
    "LABEL",
    "USER",
    "EXPOSE",
    "VOLUME",
    "SHELL",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "ONBUILD",
}


def instructions():
    """(keyword, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "docker" / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def make_target(name):
    """The recipe lines of a Makefile target (its prerequisites first)."""
    text = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{re.escape(name)}:(?P<needs>.*)\n(?P<recipe>(?:\t.*\n)*)", text, re.M)
    assert found, f"no target {name} in the Makefile"
    return found["needs"].split(), [line.strip() for line in found["recipe"].splitlines()]


def docker_test_script():
    spec = importlib.util.spec_from_file_location("docker_test", ROOT / "docker" / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dockerfile_parses_with_a_cuda_base_by_default_and_lsurf_entrypoint():
    parsed = instructions()
    assert all(len(item) == 2 and item[0] in KNOWN for item in parsed), parsed
    # ARG BASE before FROM: a cluster gets CUDA's runtime, `make docker-test` a local Debian.
    assert parsed[0][0] == "ARG" and parsed[1] == ("FROM", "${BASE}")
    name, default = parsed[0][1].split("=", 1)
    assert name == "BASE" and default.startswith("nvidia/cuda:") and "runtime" in default
    assert [args for keyword, args in parsed if keyword == "ENTRYPOINT"] == ['["lsurf"]']
    # docker/test.py builds on the base it makes.
    assert docker_test_script().BASE == "localhost/debian-base:bookworm"


def test_dockerfile_installs_with_make_install_after_copying_all_it_reads():
    parsed = instructions()
    runs = [args for keyword, args in parsed if keyword == "RUN"]
    assert "make install" in runs
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert make_target("demo")[0][0] == "install" and make_target("test")[0][0] == "install"
    # What the install reads: the stamp's prerequisites, and the files setup.cfg points at
    # (the long description, the module holding __version__).
    needs = make_target("$(VENV)/.installed")[0] + ["Makefile"]
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    needs.append(setup["metadata"]["long_description"].removeprefix("file:").strip())
    version_module = setup["metadata"]["version"].removeprefix("attr:").strip().rsplit(".", 1)[0]
    version_file = version_module.replace(".", "/") + "/__init__.py"
    needs.append(version_file)
    install = parsed.index(("RUN", "make install"))
    copied_before = [
        path
        for keyword, args in parsed[:install]
        if keyword == "COPY"
        for path in shlex.split(args)[:-1]
    ]
    for needed in needs:
        assert needed in copied_before, f"{needed} is read by make install but copied after it"
        assert (ROOT / needed).is_file()
    # Only lsurf/__init__.py is there when setuptools reads the version, so it must read it
    # without importing the package: a plain string assignment.
    tree = ast.parse((ROOT / version_file).read_text())
    assigned = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", "") for t in node.targets] == ["__version__"]
    ]
    assert len(assigned) == 1 and isinstance(assigned[0], ast.Constant)


def test_dockerfile_copies_the_package_and_what_make_demo_runs_and_ignores_the_rest():
    parsed = instructions()
    copied = [shlex.split(args)[0] for keyword, args in parsed if keyword == "COPY"] + [
        path for keyword, args in parsed if keyword == "COPY" for path in shlex.split(args)[:-1]
    ]
    for needed in ("lsurf", "configs"):  # the package, and configs/demo for `make demo`
        assert needed in copied
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # The build context leaves out the 7 GB venv and the results; nothing copied is ignored.
    assert {".venv", "runs", "build", ".git"} <= ignored
    assert not ignored & set(copied)
    # Relative paths in the configs resolve inside the checkout the image runs in.
    workdirs = [args for keyword, args in parsed if keyword == "WORKDIR"]
    assert workdirs[-1] == docker_test_script().IMAGE_CHECKOUT


def test_make_docker_test_runs_the_script_after_install_outside_make_test():
    needs, recipe = make_target("docker-test")
    assert needs == ["install"] and recipe == ["$(BIN)/python docker/test.py"]
    # Not part of `make test`, which must stay within its own time.
    assert "docker-test" not in make_target("test")[0]


def test_the_debian_mirror_is_read_from_one_line_and_deb822_sources(tmp_path):
    script = docker_test_script()
    one_line = tmp_path / "sources.list"
    one_line.write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main contrib\n"
    )
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: https://packages.example/apt\nSuites: nodistro\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert script.debian_mirror([one_line, deb822]) == "http://mirror.example/debian"
    assert script.debian_mirror([tmp_path / "absent", deb822]) == "http://deb822.example/debian"
    assert script.debian_mirror([]) == script.FALLBACK_MIRROR


def test_the_build_gets_the_hosts_pip_folders_indexes_constraints_and_certificate(tmp_path):
    script = docker_test_script()
    wheels, index = tmp_path / "wheels", tmp_path / "pypi" / "simple"
    wheels.mkdir()
    index.mkdir(parents=True)
    settings = {
        "find-links": str(wheels),
        "extra-index-url": f"file://{index} https://pypi.example/simple",
        "constraint": "/etc/xdg/pip/constraints.txt",
        "cert": "/etc/ssl/certs/ca-certificates.crt",
        "default-timeout": "180",
    }
    conf = tmp_path / "pip.conf"
    options = script.pip_mounts(settings, conf)
    mounts = options[1::2]
    assert options[::2] == ["-v"] * len(mounts)
    # The index's pages link to ../../files: its parent folder goes in, at the same path.
    assert f"{index.parent}:{index.parent}:ro" in mounts and f"{wheels}:{wheels}:ro" in mounts
    inside = script.PIP_FILES
    assert f"/etc/ssl/certs/ca-certificates.crt:{inside}/cert-ca-certificates.crt:ro" in mounts
    assert f"{conf}:/etc/pip.conf:ro" in mounts
    assert conf.read_text() == (
        "[global]\n"
        f"extra-index-url = file://{index} https://pypi.example/simple\n"
        f"find-links = {wheels}\n"
        f"constraint = {inside}/constraint-constraints.txt\n"
        f"cert = {inside}/cert-ca-certificates.crt\n"
        "default-timeout = 180\n"
    )


def test_podman_gets_its_ulimits_line_once_in_the_containers_table():
    script = docker_test_script()
    line = script.ULIMITS_LINE
    assert script.with_ulimits_line("") == f"[containers]\n{line}\n"
    # An existing [containers] table gets the line, not a second table (TOML refuses that).
    existing = '[engine]\ncgroup_manager = "cgroupfs"\n[containers]\nlog_size_max = 1\n'
    assert script.with_ulimits_line(existing) == (
        f'[engine]\ncgroup_manager = "cgroupfs"\n[containers]\n{line}\nlog_size_max = 1\n'
    )
    # Set already, to anything: left as it is, so a second run changes nothing.
    assert script.with_ulimits_line(script.with_ulimits_line(existing)) is None
    assert script.with_ulimits_line('[containers]\ndefault_ulimits = ["nofile=1:2"]\n') is None


def test_ci_runs_make_docker_test_as_its_own_step_after_the_tests():
    steps = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "make test" in steps and "make docker-test" in steps
    assert steps.index("make test") < steps.index("make docker-test")
    # Its own time, printed after it.
    assert any("docker-test" in line and "SECONDS" in line for line in steps)
