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
