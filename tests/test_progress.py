import io
import sys
import types

import pytest

from lsurf.errors import ConfigError
from lsurf.run import progress
from lsurf.run.progress import Progress


def test_every_n_points_when_asked(monkeypatch):
    lines = []
    bar = Progress(total=10, done=2, log=lines.append, every=3)
    for _ in range(8):
        bar.advance(1)
    bar.finish()
    assert [line.split(" ")[0] for line in lines] == ["5/10", "8/10", "10/10"]
    assert lines[-1].startswith("10/10 points (100%)") and "ETA 0s" in lines[-1]


def test_default_is_about_one_percent_but_not_more_than_one_line_per_gap(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    lines = []
    bar = Progress(total=1000, done=0, log=lines.append)
    for _ in range(100):  # 100 points in 1 s: 10 due by count, none by time
        clock[0] += 0.01
        bar.advance(1)
    assert lines == []
    clock[0] += 20
    bar.advance(1)
    assert len(lines) == 1 and lines[0].startswith("101/1000 points (10%)")
    clock[0] += 400  # a long quiet stretch logs even without 1% progress
    bar.advance(1)
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("choice", "every", "notebook", "terminal", "display"),
    [
        ("auto", None, False, True, "terminal"),  # a terminal: tqdm as before
        ("auto", None, False, False, "lines"),  # a job log
        ("auto", None, True, False, "notebook"),  # a Jupyter kernel: tqdm.auto
        ("auto", 5, True, True, "lines"),  # --log-every asks for lines anywhere
        ("bar", None, False, False, "notebook"),
        ("lines", None, True, True, "lines"),
        ("none", 5, True, True, "none"),
    ],
)
def test_the_display_is_chosen_by_the_caller_else_by_where_it_runs(
    choice, every, notebook, terminal, display
):
    assert progress.choose_display(choice, every, notebook, terminal) == display


def test_a_notebook_is_a_kernel_shell_not_only_a_loaded_ipykernel(monkeypatch):
    class ZMQInteractiveShell:  # the kernel's shell, by name as IPython names it
        pass

    class TerminalInteractiveShell:
        pass

    shell: list[object] = [None]
    fake_ipython = types.SimpleNamespace(get_ipython=lambda: shell[0])
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not progress.in_notebook()
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not progress.in_notebook()  # imported, but no shell running
    shell[0] = TerminalInteractiveShell()
    assert not progress.in_notebook()
    shell[0] = ZMQInteractiveShell()
    assert progress.in_notebook()


def test_the_bar_counts_every_point_and_no_line_is_logged():
    lines: list[str] = []
    stream = io.StringIO()
    bar = Progress(total=12, done=2, log=lines.append, choice="bar", bar_file=stream)
    for _ in range(5):
        bar.advance(2)
    bar.finish()
    assert lines == []
    last = stream.getvalue().split("\r")[-1]
    assert "12/12" in last and "100%" in last and "point" in last


def test_none_shows_nothing_and_a_bad_choice_is_refused():
    lines: list[str] = []
    bar = Progress(total=4, done=0, log=lines.append, every=1, choice="none")
    for _ in range(4):
        bar.advance(1)
    bar.finish()
    assert lines == [] and bar.bar is None
    with pytest.raises(ConfigError, match=r"progress='bars' .* valid: 'auto', 'bar', 'lines'"):
        with progress.chosen_progress("bars"):
            pass


def test_the_python_door_passes_its_choice_to_the_sweep(monkeypatch):
    import torch

    import lsurf

    seen: list[str] = []
    original = Progress.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.display)

    monkeypatch.setattr(Progress, "__init__", spy)
    model = torch.nn.Linear(3, 2)
    data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    lines: list[str] = []
    lsurf.sweep(model, data, x="-1:1:3", log=lines.append, progress="none", device="cpu")
    lsurf.sweep(model, data, x="-1:1:3", log=lines.append, progress="lines", device="cpu")
    assert seen == ["none", "lines"]
    assert sum("3/3 points" in line for line in lines) == 1  # only the "lines" sweep said it
