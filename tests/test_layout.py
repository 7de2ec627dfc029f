"""The package's import rules (README/docs Layout): the folders tell the architecture, and the
imports point one way. Read from the source with `ast`, so a new import that breaks a rule
fails here, naming the module, the line and the rule.

Imports under `if TYPE_CHECKING:` are for annotations only and are not counted; imports inside
functions are (a lazy import is still a dependency), except where a rule says otherwise.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lsurf"

# Modules every other one may build on. `data.layouts` is constants only; the kind registry
# (`kinds`, its __init__) is what config validates a kind's settings against, and it loads
# each kind's own module (the math) only when a kind is asked for.
LEAVES = {
    "lsurf",
    "lsurf.errors",
    "lsurf.atomic",
    "lsurf.imports",
    "lsurf.config",
    "lsurf.schema",
    "lsurf.grid",
    "lsurf.metrics",
    "lsurf.barrier",
    "lsurf.topology",
    "lsurf.estimates",
    "lsurf.data.layouts",
    "lsurf.kinds",
}
MATH = {
    "lsurf.params",
    "lsurf.directions",
    "lsurf.pca",
    "lsurf.projection",
    "lsurf.folding",
    "lsurf.compilation",
    "lsurf.hessian",
    "lsurf.losses",
    "lsurf.evaluate",
    "lsurf.checkpoint",
    "lsurf.weights",
    "lsurf.align",
    "lsurf.sharpness",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for every import of `path`."""
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    name = module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and _type_checking_only(node, parents):
            continue
        lazy = False
        parent = parents.get(node)
        while parent is not None:
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
                lazy = True
            parent = parents.get(parent)
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")[: -node.level or None]
                if path.name == "__init__.py":
                    package = name.split(".")[: len(name.split(".")) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                module = candidate if _is_module(candidate) else base
                found.append((node.lineno, module, lazy))
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _lsurf(module: str) -> str | None:
    """The lsurf module a dotted name belongs to (the longest existing prefix), or None."""
    if module != "lsurf" and not module.startswith("lsurf."):
        return None
    parts = module.split(".")
    while len(parts) > 1 and not _is_module(".".join(parts)):
        parts.pop()
    return ".".join(parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))


def broken(rule) -> list[str]:
    problems = []
    for path in SOURCES:
        name = module_name(path)
        for line, imported, lazy in imports_of(path):
            reason = rule(name, imported, _lsurf(imported), lazy)
            if reason:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {imported}: {reason}")
    return problems


def under(module: str | None, *packages: str) -> bool:
    return module is not None and any(
        module == package or module.startswith(package + ".") for package in packages
    )


def test_leaves_import_only_leaves():
    def rule(name, imported, target, lazy):
        if name in LEAVES and target is not None and target not in LEAVES:
            if name == "lsurf.kinds" and lazy and under(target, "lsurf.kinds"):
                return None  # the registry loading its own kinds, when one is asked for
            if name == "lsurf" and lazy:
                return None  # the public names, imported when first used
            return "a leaf imports only leaves"
        return None

    assert broken(rule) == []


def test_the_library_below_the_run_never_imports_run_or_plot():
    below = ("lsurf.data", "lsurf.models", "lsurf.kinds", "lsurf.files", *MATH)

    def rule(name, imported, target, lazy):
        if under(name, *below) and under(target, "lsurf.run", "lsurf.plot"):
            return "data, models, kinds, files and the math never import run/ or plot/"
        return None

    assert broken(rule) == []


def test_weight_matching_is_math_on_state_dicts_and_reads_no_files():
    """lsurf.align takes a model and state dicts and returns them permuted: writing the
    aligned checkpoint is lsurf.checkpoint's, running it is the job's."""

    def rule(name, imported, target, lazy):
        doors = ("lsurf.files", "lsurf.run", "lsurf.plot", "lsurf.cli", "lsurf.api")
        if name == "lsurf.align" and under(target, *doors, "lsurf.checkpoint"):
            return "the alignment math imports no file format, checkpoint, run/, plot/ or door"
        return None

    assert broken(rule) == []


def test_only_run_mpi_imports_mpi4py():
    def rule(name, imported, target, lazy):
        if imported.split(".")[0] == "mpi4py" and name != "lsurf.run.mpi":
            return "only lsurf.run.mpi imports mpi4py"
        return None

    assert broken(rule) == []


def test_the_two_sessions_depend_on_the_protocol_never_on_each_other():
    def rule(name, imported, target, lazy):
        pair = {"lsurf.run.mpi": "lsurf.run.local", "lsurf.run.local": "lsurf.run.mpi"}
        if name in pair and target == pair[name]:
            return "mpi and local never import each other"
        if name == "lsurf.run.protocol" and target is not None and target.startswith("lsurf.run"):
            return "the protocol is the core: it imports no other part of run/"
        return None

    assert broken(rule) == []


def test_plot_draws_only():
    def rule(name, imported, target, lazy):
        if not under(name, "lsurf.plot"):
            return None
        if imported.split(".")[0] == "torch":
            return "plot/ never imports torch"
        if under(target, "lsurf.data", "lsurf.models", "lsurf.run", *MATH):
            return "plot/ reads files (lsurf.files) and draws; it never imports data, models, run"
        return None

    assert broken(rule) == []


def test_files_import_no_torch_at_import_time():
    """files/ may name torch types for annotations, and read_directions builds tensors when
    called, but importing every file module (as `lsurf info` and plot do) loads no torch."""

    def rule(name, imported, target, lazy):
        if under(name, "lsurf.files") and imported.split(".")[0] == "torch" and not lazy:
            return "files/ imports no torch"
        return None

    assert broken(rule) == []
    modules = [module_name(path) for path in SOURCES if under(module_name(path), "lsurf.files")]
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import lsurf; lsurf.read_surface; lsurf.Surface\n"
        "bad = sorted(m for m in ('torch', 'mpi4py') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "rule",
    [test_plot_draws_only, test_only_run_mpi_imports_mpi4py],
    ids=["plot", "mpi4py"],
)
def test_a_broken_rule_is_caught(rule, monkeypatch, tmp_path):
    """The checker is not vacuous: a module that breaks a rule makes it fail. The module is
    only pretended (its imports given to the checker), never written into the package, where
    the ruff and mypy tests running beside this one would find it."""
    fake = PACKAGE / "plot" / "_layout_probe.py"
    this = sys.modules[__name__]
    real_imports_of = imports_of
    broken_imports = [(1, "torch", False), (2, "mpi4py", False), (3, "lsurf.run.sweep", False)]
    monkeypatch.setattr(this, "SOURCES", [*SOURCES, fake])
    monkeypatch.setattr(
        this, "imports_of", lambda path: broken_imports if path == fake else real_imports_of(path)
    )
    with pytest.raises(AssertionError):
        rule()
