import subprocess
import sys

import h5py
import pytest

import lsurf
from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main


def bad_inputs(tmp_path, sweep_yaml, cifar_root):
    names = iter(range(100))

    def config(changes=None):
        return sweep_yaml(changes, name=f"bad{next(names)}.yaml")

    wrong_model = tmp_path / "resnet.pt"
    save_checkpoint(wrong_model, models.build("resnet20").state_dict())
    return {
        "missing config": (["sweep", str(tmp_path / "none.yaml")], "config file not found"),
        "unknown model": (
            ["sweep", str(config({"model.name": "resnet21"}))],
            "unknown model 'resnet21'",
        ),
        "missing checkpoint": (
            ["sweep", str(config({"model.checkpoint": "/no/such.pt"}))],
            "/no/such.pt",
        ),
        "key mismatch": (
            ["sweep", str(config({"model.checkpoint": str(wrong_model)}))],
            "layer1.0.conv1.weight",
        ),
        "malformed grid": (["sweep", str(config()), "--set", "grid.y=0:1"], "min:max:num"),
        "wrong key": (["sweep", str(config({"grid.z": "0:1:3"}))], "unknown key grid.z"),
        "no data": (
            [
                "sweep",
                str(
                    config(
                        {"data.root": str(tmp_path / "nodata"), "output": str(tmp_path / "new.h5")}
                    )
                ),
            ],
            "lsurf data synth",
        ),
        "other sweep": (
            ["sweep", str(config()), "--set", "grid.x=-2:2:4"],
            "holds a different sweep",
        ),
        "bad subset": (["sweep", str(config({"data.subset": 10**6}))], "subset"),
        "info on nothing": (["info", str(tmp_path / "none.h5")], "not found"),
        "info on a config": (["info", str(config())], "not a readable HDF5 file"),
        "unknown command": (["sweeep"], "invalid choice"),
        "bad synth size": (
            ["data", "synth", "--out", str(tmp_path / "d"), "--train-size", "0"],
            "--train-size must be at least 1",
        ),
    }


CASES = [
    "missing config",
    "unknown model",
    "missing checkpoint",
    "key mismatch",
    "malformed grid",
    "wrong key",
    "no data",
    "other sweep",
    "bad subset",
    "info on nothing",
    "info on a config",
    "unknown command",
    "bad synth size",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(
    case, tmp_path, sweep_yaml, cifar_root, existing_output, capsys
):
    argv, expected = bad_inputs(tmp_path, sweep_yaml, cifar_root)[case]
    capsys.readouterr()
    with pytest.raises(SystemExit) if case == "unknown command" else _no_exit() as stop:
        code = main(argv)
    if stop is not None and hasattr(stop, "value"):
        code = stop.value.code
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err
    output, content, stamp = existing_output
    assert output.read_bytes() == content and output.stat().st_mtime_ns == stamp


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_bad_input_aimed_at_a_new_output_creates_nothing(
    tmp_path, sweep_yaml, cifar_root, monkeypatch, capsys
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = {
        "no usable CUDA device": {"evaluation.device": "cuda"},
        "lsurf data synth": {"data.root": str(tmp_path / "nodata")},
    }
    for expected, changes in cases.items():
        output = tmp_path / "new" / "surface.h5"
        config = sweep_yaml(changes | {"output": str(output)}, name="new.yaml")
        assert main(["sweep", str(config)]) == 2
        assert expected in capsys.readouterr().err
        assert not output.exists() and not output.with_name("surface.directions.h5").exists()
    # Fixed, the same command runs: no half-made file from the failed attempts stands in the way.
    assert main(["sweep", str(config), "--set", f"data.root={cifar_root}"]) == 0


def test_as_a_process_bad_input_prints_one_line_without_traceback(tmp_path, sweep_yaml):
    config = sweep_yaml({"model.name": "resnet21"})
    result = subprocess.run(
        [sys.executable, "-m", "lsurf", "sweep", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "valid names" in result.stderr
    assert not (tmp_path / "out").exists()


def test_version_prints_the_packages_version_without_importing_torch():
    # The first thing `make docker-test` asks of an image; it must not wait for torch.
    code = (
        "import sys\n"
        "from lsurf.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "finally:\n"
        "    print('torch' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"lsurf {lsurf.__version__}\n" and result.stderr == "False\n"


def test_rerunning_a_complete_sweep_exits_0_untouched(sweep_yaml, existing_output, capsys):
    output, content, stamp = existing_output
    assert main(["sweep", str(sweep_yaml())]) == 0
    assert "already complete" in capsys.readouterr().err
    assert output.read_bytes() == content and output.stat().st_mtime_ns == stamp


def test_plot_writes_a_png_with_masked_unfinished_points(existing_output, capsys):
    output = existing_output[0]
    with h5py.File(output, "r+") as h5file:
        h5file["done"][0, 0] = False
    assert main(["plot", str(output), "--metric", "test_loss"]) == 0
    kinds = ("contour", "filled", "heatmap", "surface3d")  # the standard set for a 2D surface
    pngs = [output.with_name(f"surface_test_loss_{kind}.png") for kind in kinds]
    assert capsys.readouterr().out.split() == [str(png) for png in pngs]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # The unfinished point is painted in the "not computed" grey, not in a colormap color.
    import matplotlib.colors
    import matplotlib.image
    import numpy as np

    from lsurf.plot.planes import NOT_COMPUTED_COLOR

    heatmap = matplotlib.image.imread(pngs[2])[..., :3]
    grey = np.array(matplotlib.colors.to_rgb(NOT_COMPUTED_COLOR))
    assert np.sum(np.all(np.abs(heatmap - grey) < 0.01, axis=-1)) > 1000
    assert main(["plot", str(output), "--metric", "val_loss"]) == 2
    assert "available: test_acc, test_loss, train_acc, train_loss" in capsys.readouterr().err


def test_an_unwritable_output_folder_is_one_line(sweep_yaml, tmp_path, capsys):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    config = sweep_yaml({"output": str(blocked / "surface.h5")}, name="blocked.yaml")
    assert main(["sweep", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in lines[0]


# ------------------------------------------------------------------ damaged and locked outputs

WRITER_HINT = (
    "choose another output path, or pass --force to replace it (move it aside first to keep it)"
)
READER_HINT = (
    "if a sweep wrote it, run that sweep again with --force to replace it (move it aside "
    "first to keep it)"
)


def damage(output, how):
    """Damage the surface file as a copy cut short, a disk error or an emptied file would;
    return what HDF5 finds wrong, as the message words it."""
    contents = output.read_bytes()
    if how == "truncated":
        output.write_bytes(contents[: len(contents) // 2])
        return (
            f"corrupt: it ends at byte {len(contents) // 2:,} of {len(contents):,}, as after a "
            "copy cut short or a full disk"
        )
    output.write_bytes(b"" if how == "empty" else bytes(range(256)) * 20)
    return "no HDF5 signature: empty, corrupt, or another format"


@pytest.mark.parametrize("how", ["truncated", "random bytes", "empty"])
def test_a_corrupt_output_is_named_corrupt_by_sweep_plot_and_info_and_kept(
    existing_output, sweep_yaml, tmp_path, capsys, how
):
    output = existing_output[0]
    reason = damage(output, how)
    contents, stamp = output.read_bytes(), output.stat().st_mtime_ns
    plots = tmp_path / "plots"
    expected = {
        "sweep": f"output file {output} is not a readable HDF5 file ({reason}); {WRITER_HINT}",
        "plot": f"surface file {output} is not a readable HDF5 file ({reason}); {READER_HINT}",
        "info": f"file {output} is not a readable HDF5 file ({reason}); {READER_HINT}",
    }
    commands = {
        "sweep": ["sweep", str(sweep_yaml())],
        "plot": ["plot", str(output), "--out", str(plots)],
        "info": ["info", str(output)],
    }
    for command, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, command
        assert capsys.readouterr().err == f"lsurf: error: {expected[command]}\n"
        assert output.read_bytes() == contents and output.stat().st_mtime_ns == stamp
    assert not plots.exists()


def test_force_replaces_a_corrupt_output_with_the_whole_surface(existing_output, sweep_yaml):
    from lsurf.files.surface import read_surface

    output = existing_output[0]
    before = read_surface(output)
    damage(output, "truncated")
    assert main(["sweep", str(sweep_yaml()), "--force"]) == 0
    after = read_surface(output)
    assert after.done.all()
    for name, values in before.metrics.items():
        assert (after.metrics[name] == values).all(), name


def test_an_output_another_process_holds_is_named_locked_not_corrupt(
    existing_output, sweep_yaml, capsys
):
    output = existing_output[0]
    # A sweep's writer in another process holds the file's HDF5 lock, as a running rank 0 or
    # the rank 0 of a killed job that has not exited yet does.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, time; from lsurf.files.surface import SurfaceWriter; "
            f"w = SurfaceWriter(pathlib.Path({str(output)!r})); "
            "print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        contents = output.read_bytes()  # as the holder left it: HDF5 flags a file open to write
        assert main(["sweep", str(sweep_yaml())]) == 2
        assert capsys.readouterr().err == (
            f"lsurf: error: output file {output} is open for writing in another process: a "
            "sweep still running, or the ranks of a killed job that have not exited yet (look "
            "with `pgrep -af 'lsurf sweep'`; wait a few seconds, or kill them), then run the "
            "same command again\n"
        )
        assert main(["info", str(output)]) == 0  # readers take no lock
        assert output.read_bytes() == contents
    finally:
        holder.kill()
        holder.wait()
    assert main(["sweep", str(sweep_yaml())]) == 0  # the same command, once it has exited


def test_a_file_system_without_locks_is_named_with_its_way_out(
    existing_output, sweep_yaml, monkeypatch, capsys
):
    def unlockable(*args, **kwargs):
        raise OSError(
            "Unable to synchronously open file (unable to lock file, errno = 38, error "
            "message = 'Function not implemented')"
        )

    monkeypatch.setattr(h5py, "File", unlockable)
    config = sweep_yaml()
    assert main(["sweep", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"lsurf: error: direction file {existing_output[0].with_name('surface.directions.h5')} "
        "cannot be locked (Function not implemented); on a file system without file locks "
        "(some NFS or Lustre mounts) set HDF5_USE_FILE_LOCKING=FALSE, and let one sweep at a "
        "time write an output\n"
    )
