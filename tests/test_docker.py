"""What can be checked of docker/Dockerfile without a Docker engine (none runs in CI)."""

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


def test_dockerfile_parses_with_a_cuda_base_and_lsurf_entrypoint():
    parsed = instructions()
    assert all(len(item) == 2 and item[0] in KNOWN for item in parsed), parsed
    assert parsed[0][0] == "FROM" and "nvidia/cuda" in parsed[0][1] and "runtime" in parsed[0][1]
    entrypoint = [args for keyword, args in parsed if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["lsurf"]']


def test_dockerfile_installs_with_the_readmes_command_and_copies_what_it_needs():
    parsed = instructions()
    runs = [args for keyword, args in parsed if keyword == "RUN"]
    assert "make install" in runs
    # `make install` is the step both README commands (make demo, make test) begin with.
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert re.search(r"^install:", makefile, re.M)
    assert re.search(r"^demo: install\b", makefile, re.M)
    assert re.search(r"^test: install\b", makefile, re.M)
    copied = " ".join(args for keyword, args in parsed if keyword == "COPY")
    for needed in ("setup.cfg", "pyproject.toml", "Makefile", "README.md", "lsurf"):
        assert needed in shlex.split(copied)
    # Every file the install step reads exists in the repository.
    for needed in ("setup.cfg", "pyproject.toml", "Makefile", "README.md"):
        assert (ROOT / needed).is_file()
