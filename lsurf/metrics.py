"""The metric table: every quantity a surface can hold, as one row each, and its columns.

A `Metric` is a row: its name (the suffix of dataset names: `loss`, `acc`), the words and
unit that label it, how the values of a point's batches combine, and whether lower is
better. A `Column` is one metric on one data split, i.e. one dataset of a surface file
(`train_loss`). The surface file lists its columns, each with its whole row, in the
attribute `metrics` (`encode`/`decode`), so readers (`lsurf info`, the plots) never parse
dataset names and show a metric this version does not know by its stored row.

Files without that attribute (lsurf format 1, the reference code's files) name their
metrics only by suffix; `legacy_columns` recognises `*_loss` and `*_acc` for them alone.

Standard library only: plotting and `info` import this without torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lsurf.errors import ConfigError, OutputError


@dataclass(frozen=True)
class Metric:
    """One row of the table: a quantity measured at every point of a surface."""

    name: str  # the suffix in dataset names: 'loss', 'acc'
    label: str  # words for figures: 'loss', 'accuracy'
    unit: str  # '' or e.g. '%'; shown after the label
    # How a point's value is found: "mean" = (sum over batches of each batch's sum) /
    # (sum of batch sizes) × scale; "solver" = an iterative solver's result over the whole
    # split (Hessian eigenvalues by Lanczos, lsurf.hessian), recorded as it returns it;
    # "standard_error" = the standard error of a "mean" over the examples it used, as an
    # estimate of the mean over the whole split (0 when it used them all; lsurf.losses);
    # "count" = how many examples the point used.
    combine: str
    scale: float = 1.0  # applied after combining: 100 turns a fraction into percent
    lower_is_better: bool = True  # decides where `lsurf info` looks for the best point
    ranked: bool = True  # whether a best point means anything (not for a residual)
    # Whether the dataset name carries the split ('train_loss'); the curvature rows keep the
    # reference code's bare names ('max_eig') and their split is only in the stored row.
    per_split: bool = True

    def mean(self, total: float, count: float) -> float:
        """The 'mean' combination: batch sums `total` over `count` examples, scaled."""
        assert self.combine == "mean", f"{self.name} combines by {self.combine!r}"
        # scale first: 100 * 2 / 7 is the percentage as people (and the reference) compute it
        return self.scale * total / count


LOSS = Metric("loss", "loss", "", "mean")
ACCURACY = Metric("acc", "accuracy", "%", "mean", scale=100.0, lower_is_better=False)

# Precision (`evaluation.standard_errors`, `evaluation.rel_error`): the loss's standard error
# at every point, and, when a point may stop early, how many examples it used. Neither has a
# best point.
LOSS_SE = Metric("loss_se", "loss standard error", "", "standard_error", ranked=False)
EXAMPLES = Metric("examples", "examples used", "", "count", ranked=False)

# Curvature (`hessian.eigenvalues: true`): the extreme eigenvalues of the Hessian of the mean
# loss on one split at every point, the relative residual each reached (‖Hv − λv‖ / |λ|max,
# flagged when above hessian.tol) and the Hessian-vector products spent on the point.
MAX_EIG = Metric("max_eig", "largest Hessian eigenvalue", "", "solver", per_split=False)
MIN_EIG = Metric(
    "min_eig", "smallest Hessian eigenvalue", "", "solver", lower_is_better=False, per_split=False
)
MAX_EIG_RESIDUAL = Metric(
    "max_eig_residual",
    "residual of the largest eigenvalue",
    "",
    "solver",
    ranked=False,
    per_split=False,
)
MIN_EIG_RESIDUAL = Metric(
    "min_eig_residual",
    "residual of the smallest eigenvalue",
    "",
    "solver",
    ranked=False,
    per_split=False,
)
EIG_PRODUCTS = Metric(
    "eig_products", "Hessian-vector products", "", "solver", ranked=False, per_split=False
)
CURVATURE = (MAX_EIG, MIN_EIG, MAX_EIG_RESIDUAL, MIN_EIG_RESIDUAL, EIG_PRODUCTS)

TABLE: dict[str, Metric] = {
    metric.name: metric for metric in (LOSS, ACCURACY, LOSS_SE, EXAMPLES, *CURVATURE)
}
DEFAULT_METRICS: tuple[str, ...] = ("loss", "acc")  # what a sweep measures unless told


@dataclass(frozen=True)
class Column:
    """One dataset of a surface file: one metric on one split."""

    split: str
    metric: Metric

    @property
    def name(self) -> str:
        """The dataset's name: 'train_loss', 'test_acc'; 'max_eig' for a row not per split."""
        if not self.metric.per_split:
            return self.metric.name
        return f"{self.split}_{self.metric.name}"

    @property
    def label(self) -> str:
        """'train loss', 'test accuracy (%)', 'largest Hessian eigenvalue (train)'."""
        if not self.metric.per_split:
            return f"{self.metric.label} ({self.split})"
        text = f"{self.split} {self.metric.label}"
        return f"{text} ({self.metric.unit})" if self.metric.unit else text


def columns(splits: Sequence[str], metric_names: Sequence[str] = DEFAULT_METRICS) -> list[Column]:
    """The columns of a sweep, split-major: train_loss, train_acc, test_loss, test_acc."""
    unknown = [name for name in metric_names if name not in TABLE]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; valid: {', '.join(TABLE)}")
    return [Column(split, TABLE[name]) for split in splits for name in metric_names]


def encode(stored: Iterable[Column]) -> str:
    """The JSON text of the surface attribute `metrics`: per column its dataset name, its
    split and its metric's whole row, so a reader without this row in its table can show it."""
    return json.dumps(
        [
            {
                "dataset": column.name,
                "split": column.split,
                "metric": dataclasses.asdict(column.metric),
            }
            for column in stored
        ]
    )


def decode(text: str) -> list[Column]:
    """The columns listed in a surface file's `metrics` attribute, in their stored order.

    Each metric is rebuilt from its stored row (a row this version's TABLE lacks included);
    a field the row lacks is taken from the TABLE row of the same name, or its default.
    """
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise OutputError(f"the metrics attribute is not JSON ({error})") from None
    if not isinstance(entries, list):
        raise OutputError("the metrics attribute is not a list of columns")
    found = [_column(entry) for entry in entries]
    names = [column.name for column in found]
    if len(set(names)) < len(names):
        raise OutputError(f"the metrics attribute lists a dataset twice: {', '.join(names)}")
    return found


# What each field of a stored row must be (JSON gives int for a scale such as 100).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "label": str,
    "unit": str,
    "combine": str,
    "scale": (int, float),
    "lower_is_better": bool,
    "ranked": bool,
    "per_split": bool,
}


def _column(entry: Any) -> Column:
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("split"), str)
        and isinstance(entry.get("metric"), dict)
        and isinstance(entry["metric"].get("name"), str)
    ):
        raise OutputError(f"the metrics attribute holds a malformed column: {entry!r}")
    row = entry["metric"]
    known = TABLE.get(row["name"])
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Metric):
        if field.name in row:
            values[field.name] = row[field.name]
        elif known is not None:
            values[field.name] = getattr(known, field.name)
        elif field.default is not dataclasses.MISSING:
            values[field.name] = field.default
        else:
            raise OutputError(f"the metrics attribute lacks {field.name!r} of {row['name']!r}")
    for key, kinds in _FIELD_TYPES.items():
        value = values[key]
        if not isinstance(value, kinds) or (key == "scale" and isinstance(value, bool)):
            raise OutputError(f"the metrics attribute holds a malformed {key!r}: {row!r}")
    metric = Metric(**{**values, "scale": float(values["scale"])})
    column = Column(entry["split"], metric)
    if entry.get("dataset", column.name) != column.name:
        raise OutputError(
            f"the metrics attribute names dataset {entry['dataset']!r} for {column.name!r}"
        )
    return column


def legacy_columns(dataset_names: Iterable[str]) -> list[Column]:
    """Columns recognised by the suffixes `_loss` and `_acc`, in the order given, and the
    reference code's Hessian eigenvalue maps `max_eig`/`min_eig` (of the training loss).

    Only for files that predate the `metrics` attribute (lsurf format 1, the reference code's
    files), which hold nothing else to go by; other names are not metrics there.
    """
    found = []
    for name in dataset_names:
        if name in (MAX_EIG.name, MIN_EIG.name):
            found.append(Column("train", TABLE[name]))
            continue
        for metric in (LOSS, ACCURACY):
            split = name.removesuffix(f"_{metric.name}")
            if split != name and split:
                found.append(Column(split, metric))
    return found
