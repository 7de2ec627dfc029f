"""lsurf.metrics: the table's rows, the columns of a sweep, and their record in a file."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lsurf import metrics
from lsurf.errors import ConfigError, OutputError
from lsurf.metrics import ACCURACY, LOSS, Column, Metric

# A row this version's table lacks, as a later lsurf may write it.
TRACE = Metric("hessian_trace", "Hessian trace", "", "solver")
SHARPNESS = Metric("sharp", "sharpness", "a.u.", "mean", scale=0.5, lower_is_better=False)


def test_the_table_holds_loss_and_accuracy_in_percent():
    assert list(metrics.TABLE) == [
        "loss",
        "acc",
        "loss_se",
        "examples",
        "max_eig",
        "min_eig",
        "max_eig_residual",
        "min_eig_residual",
        "eig_products",
    ]
    assert (LOSS.unit, LOSS.scale, LOSS.lower_is_better) == ("", 1.0, True)
    assert (ACCURACY.unit, ACCURACY.scale, ACCURACY.lower_is_better) == ("%", 100.0, False)
    # Batch sums over example counts: 3 right of 4, then 2 right of 4 → 62.5 %.
    assert ACCURACY.mean(3.0 + 2.0, 8) == 62.5
    assert LOSS.mean(1.5 + 2.5, 8) == 0.5


def test_columns_are_split_major_with_names_and_labels():
    found = metrics.columns(["train", "test"])
    assert [column.name for column in found] == ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert [column.label for column in found] == [
        "train loss",
        "train accuracy (%)",
        "test loss",
        "test accuracy (%)",
    ]
    assert metrics.columns(["test"], ["acc"]) == [Column("test", ACCURACY)]
    assert Column("val", SHARPNESS).label == "val sharpness (a.u.)"
    with pytest.raises(
        ConfigError,
        match=r"^unknown metric 'eig'; valid: loss, acc, loss_se, examples, max_eig, min_eig, "
        r"max_eig_residual, min_eig_residual, eig_products$",
    ):
        metrics.columns(["train"], ["loss", "eig"])


def test_encode_decode_round_trips_every_row_unknown_ones_included():
    stored = [*metrics.columns(["train", "test"]), Column("train", TRACE)]
    stored.append(Column("val", SHARPNESS))
    text = metrics.encode(stored)
    assert metrics.decode(text) == stored
    entries = json.loads(text)
    assert [entry["dataset"] for entry in entries] == [column.name for column in stored]
    assert entries[4]["metric"] == dataclasses.asdict(TRACE)  # the whole row


def test_a_stored_row_is_believed_over_the_table_and_gaps_are_filled_from_it():
    row = {**dataclasses.asdict(LOSS), "label": "cross-entropy"}
    [column] = metrics.decode(json.dumps([{"split": "train", "metric": row}]))
    assert column.label == "train cross-entropy" and column.name == "train_loss"
    sparse = [{"split": "test", "metric": {"name": "acc"}}, {"split": "x", "metric": {"name": "e"}}]
    sparse[1]["metric"].update(label="e", unit="", combine="solver", scale=2)
    found = metrics.decode(json.dumps(sparse))
    assert found == [Column("test", ACCURACY), Column("x", Metric("e", "e", "", "solver", 2.0))]
    assert type(found[1].metric.scale) is float


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"split": "train"}', "not a list of columns"),
        ('[{"split": "train", "metric": "loss"}]', "malformed column"),
        ('[{"split": "train", "metric": {"name": "eig", "label": "e"}}]', "lacks 'unit' of 'eig'"),
        ('[{"split": "train", "metric": {"name": "loss", "scale": "1"}}]', "malformed 'scale'"),
        (
            '[{"split": "train", "metric": {"name": "acc", "lower_is_better": "no"}}]',
            "malformed 'lower_is_better'",
        ),
        ('[{"dataset": "loss", "split": "train", "metric": {"name": "loss"}}]', "names dataset"),
        (metrics.encode([Column("a", LOSS), Column("a", LOSS)]), "lists a dataset twice"),
    ],
)
def test_a_malformed_attribute_is_an_output_error(text, message):
    with pytest.raises(OutputError, match=message):
        metrics.decode(text)


def test_legacy_columns_recognise_the_two_suffixes_only():
    names = ["test_acc", "test_loss", "train_loss", "xcoordinates", "done", "_loss", "loss"]
    assert metrics.legacy_columns(names) == [
        Column("test", ACCURACY),
        Column("test", LOSS),
        Column("train", LOSS),
    ]


def test_curvature_columns_keep_the_reference_names_and_their_split_in_the_row():
    column = Column("train", metrics.MAX_EIG)
    assert column.name == "max_eig"
    assert column.label == "largest Hessian eigenvalue (train)"
    (read,) = metrics.decode(metrics.encode([Column("test", metrics.MIN_EIG)]))
    assert (read.name, read.split, read.metric) == ("min_eig", "test", metrics.MIN_EIG)
    # A row written before `ranked`/`per_split` existed takes the defaults.
    old = [
        {
            "dataset": "train_loss",
            "split": "train",
            "metric": {
                "name": "loss",
                "label": "loss",
                "unit": "",
                "combine": "mean",
                "scale": 1,
                "lower_is_better": True,
            },
        }
    ]
    assert metrics.decode(json.dumps(old)) == [Column("train", LOSS)]
    assert not metrics.EIG_PRODUCTS.ranked and metrics.MAX_EIG.ranked


def test_the_reference_codes_eigenvalue_maps_are_recognised_by_name():
    found = metrics.legacy_columns(["max_eig", "min_eig", "train_loss", "xcoordinates"])
    assert [column.name for column in found] == ["max_eig", "min_eig", "train_loss"]
    assert {column.split for column in found} == {"train"}
