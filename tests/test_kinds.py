"""Direction kinds as objects: each validates and defaults its settings, records and describes
itself; the registry rejects settings a kind does not read."""

import subprocess
import sys
from dataclasses import replace

import pytest

from lsurf import kinds
from lsurf.config import DirectionsConfig
from lsurf.errors import ConfigError


def test_each_kind_fills_its_own_defaults():
    assert kinds.resolve(DirectionsConfig(), plane=True, auto_axes=[]) == DirectionsConfig(
        norm="filter", ignore="biasbn"
    )
    target = kinds.resolve(DirectionsConfig("target", target="b.pt"), False, [])
    assert (target.norm, target.ignore) == ("none", "none")
    pca = kinds.resolve(DirectionsConfig("pca", trajectory="run"), True, ["grid.x"])
    assert (pca.norm, pca.ignore) == ("none", "biasbn")


@pytest.mark.parametrize(
    ("settings", "plane", "auto", "message"),
    [
        (
            DirectionsConfig("random", target="b.pt"),
            True,
            [],
            "directions.target is only used with directions.kind: target",
        ),
        (
            DirectionsConfig("target", target="b.pt", seed=3),
            False,
            [],
            "directions.seed shapes the y direction of a plane",
        ),
        (
            DirectionsConfig("random", center=False),
            True,
            [],
            "directions.center is only used with directions.kind: pca",
        ),
        (
            DirectionsConfig("random", same_dir=True),
            False,
            [],
            "directions.same_dir shapes the y direction of a plane: give grid.y",
        ),
        (
            DirectionsConfig("random", same_dir=True, y_norm="layer"),
            True,
            [],
            "same_dir makes y the same direction as x: remove y_norm",
        ),
        (
            DirectionsConfig("target", target="b.pt", y_target="c.pt", seed=2),
            True,
            [],
            "with y_target y is not random: remove them",
        ),
        (
            DirectionsConfig("target", target="b.pt", y_target="c.pt", same_dir=True),
            True,
            [],
            "same_dir and y_target both set y",
        ),
        (
            DirectionsConfig("pca", trajectory="run", space="states"),
            True,
            [],
            "directions.space is only used with directions.kind: random or target",
        ),
        (DirectionsConfig("random"), True, ["grid.x"], "needs directions.kind: pca"),
        (
            DirectionsConfig("sharpness"),
            True,
            [],
            "directions.kind must be one of random, target, pca, hessian, reference; "
            "got 'sharpness'",
        ),
        (
            DirectionsConfig("hessian", norm="filter"),
            True,
            [],
            "directions.norm is only used with directions.kind: random or target or pca",
        ),
    ],
)
def test_settings_a_kind_does_not_read_are_refused(settings, plane, auto, message):
    with pytest.raises(ConfigError, match=message):
        kinds.resolve(settings, plane, auto)


def test_kinds_record_what_reuse_must_match_and_describe_themselves():
    random = kinds.get("random")
    settings = kinds.resolve(DirectionsConfig(seed=4), True, [])
    assert random.record(settings) == {"norm": "filter", "ignore": "biasbn", "seed": 4}
    assert random.describe({"norm": "layer", "ignore": "none", "seed": 4}) == (
        "norm=layer  ignore=none  seed=4"
    )
    assert random.subject({"norm": "filter", "ignore": "biasbn"}) == (
        "random directions, filter-normalized, biases/BN fixed"
    )
    target = kinds.get("target")
    line = kinds.resolve(DirectionsConfig("target", target="b.pt"), False, [])
    assert target.moves_buffers(line) and not random.moves_buffers(settings)
    assert not target.moves_buffers(replace(line, space="weights"))
    assert random.moves_buffers(replace(settings, space="states"))
    # Reference-parity settings are recorded only where they differ from the old defaults,
    # so direction files written before them are still reused.
    assert random.record(replace(settings, y_norm="layer")) == {
        "norm": "filter",
        "ignore": "biasbn",
        "seed": 4,
        "y_norm": "layer",
        "y_ignore": "biasbn",
    }
    assert random.record(replace(settings, y_norm="filter")) == random.record(settings)
    assert random.record(replace(settings, same_dir=True, space="states"))["same_dir"] is True
    plane = kinds.resolve(DirectionsConfig("target", target="b.pt"), True, [])
    assert (plane.y_norm, plane.y_ignore, plane.space) == ("filter", "biasbn", "states")
    assert target.record(line) == {"norm": "none", "ignore": "none", "seed": 0}
    assert target.describe({"target": "/runs/b.pt"}) == "to /runs/b.pt"
    assert target.describe({}) == "θ2 − θ1, unnormalized"  # a direction file keeps no path
    assert target.axis_labels({"target": "/b/final.pt"}, "/a/final.pt")[0] == (
        "α  (0: a/final.pt, 1: b/final.pt)"
    )
    assert kinds.get("pca").describe(
        {"trajectory": "run", "ignore": "biasbn", "center": False}
    ) == ("trajectory run  ignore=biasbn  not centred")
    # A file from a newer lsurf names a kind this one lacks: named, not described, no crash.
    assert kinds.described("sharpness").subject({}) == "sharpness directions"
    hessian = kinds.get("hessian")
    assert hessian.uses_hessian and not random.uses_hessian
    assert hessian.subject({"eigenvectors": "extremes"}) == (
        "Hessian eigenvectors of the largest and smallest eigenvalue"
    )
    assert hessian.axis_labels({"eigenvectors": "top"}, "a.pt") == (
        "α (eigenvector of λ1)",
        "β (eigenvector of λ2)",
    )
    assert kinds.described(None) is random


def test_config_kinds_info_and_plots_import_no_torch():
    code = (
        "import sys, lsurf.config, lsurf.kinds, lsurf.files.info, lsurf.plot, lsurf.metrics; "
        "print('torch' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
