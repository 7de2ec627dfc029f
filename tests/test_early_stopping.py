"""Standard errors and early stopping (evaluation.standard_errors, rel_error, min_examples).

The estimator against textbook values, the loss's sampling units, the columns a sweep stores
checked against a recomputation by hand (the model moved with the sweep's own directions, the
examples taken in the documented seeded order), the loss's bits untouched when stopping is
off, the same bits on 1 and 3 ranks, the keys refused in one line, and the readers (info, the
1D plot) on files that hold these columns.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from surface_helpers import write_surface_by_hand

from lsurf import checkpoint, models
from lsurf.cli import main
from lsurf.config import DataConfig, load_sweep_config
from lsurf.data.cifar import load_configured
from lsurf.data.splits import open_split
from lsurf.files.directions import read_directions
from lsurf.files.info import describe_surface
from lsurf.files.surface import read_surface
from lsurf.losses import Baseline, BatchTerms, Moments, Population, build_loss, mean_and_error
from lsurf.metrics import EXAMPLES, LOSS, LOSS_SE
from lsurf.plot import PlotOptions
from lsurf.plot.curves import draw_curves
from lsurf.plot.view import load_panels

# Small batches and a low minimum on the 200/100-example synthetic CIFAR, so that points stop
# after a few batches, or not at all, within one grid.
STOPPING = {
    "data.batch_size": 16,
    "evaluation.rel_error": 0.006,
    "evaluation.min_examples": 32,
}
# The same with θ*'s loss as control variate, on a grid through θ* (the centre is (0, 0)).
CONTROLLED = STOPPING | {
    "evaluation.rel_error": 0.0005,
    "evaluation.control_variate": True,
    "grid": {"x": "-1:1:5", "y": "-0.5:0.5:3"},
}
PLAIN = STOPPING | {"evaluation.control_variate": False}


def sweep(sweep_yaml, changes: dict, name: str) -> tuple[Path, Path]:
    """Run a sweep of the conftest config with `changes`, to its own output: (config, output)."""
    config = sweep_yaml(changes, name=f"{name}.yaml")
    output = config.parent / "out" / f"{name}.h5"
    config = sweep_yaml({**changes, "output": str(output)}, name=f"{name}.yaml")
    assert main(["sweep", str(config)]) == 0
    return config, output


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every array of a surface file (the coordinates, `done` and the columns) by name."""
    with h5py.File(path, "r") as h5file:
        found = {name: h5file[name] for name in h5file if isinstance(h5file[name], h5py.Dataset)}
        return {name: data[()] for name, data in found.items() if data.dtype.kind in "fb"}


def per_example_by_hand(config_path: Path, split: str, a: float, b: float, seeded: bool):
    """Each example's cross-entropy (float64) and whether it is classified right, at (a, b):
    θ* + a·d1 + b·d2 written by hand from the sweep's direction file, the split read with
    the config's data settings, in the seeded order (randperm under data.subset_seed) or not."""
    config = load_sweep_config(config_path)
    model = models.build(config.model.name)
    checkpoint.load_weights(model, config.model.checkpoint)
    directions, _ = read_directions(config.direction_file)
    state = model.state_dict()  # references to the model's own tensors
    with torch.no_grad():
        for key, x in directions.x.items():
            state[key].add_(a * x + b * directions.y[key])
    data = load_configured(config.data, split)
    images, labels = data.images, data.labels
    if seeded:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        images, labels = images[order], labels[order]
    with torch.no_grad():
        outputs = model.eval()(images).float()
    losses = F.cross_entropy(outputs, labels, reduction="none").double().numpy()
    return losses, (outputs.argmax(dim=1) == labels).numpy()


def textbook(losses: np.ndarray, whole: int | None = None) -> tuple[float, float]:
    """The mean of `losses` and its standard error by the textbook: as an estimate of the mean
    of the split's `whole` examples they were drawn from, s/√n · √(1 − n/N) (0 with n = N);
    without `whole`, the with-replacement s/√n the stop test reads."""
    mean, plain = float(losses.mean()), float(losses.std(ddof=1) / math.sqrt(len(losses)))
    if whole is None:
        return mean, plain
    return mean, 0.0 if len(losses) == whole else plain * math.sqrt(1 - len(losses) / whole)


def stratified(
    losses, centre, labels, whole_centre, whole_labels, corrected: bool = True
) -> tuple[float, float]:
    """The mean of `losses` (the first examples of the order) post-stratified by class with
    `centre` (the same examples' losses at θ*) as control variate, and its SE, by the
    textbook: the slope from least squares on θ*'s loss and one indicator per class, the
    class shares and θ*'s class means from the whole split (`whole_*`), the stratified
    variance of the residuals, each class's with its finite-population factor 1 − k_h/N_h
    (none from a class seen whole; `corrected` False: the factor 1 for the others, as the
    stop test reads it). NaN until every class has two examples in (or all it has)."""
    classes = np.unique(whole_labels)
    if any(np.sum(labels == h) < min(2, np.sum(whole_labels == h)) for h in classes):
        return math.nan, math.nan
    design = np.column_stack([centre] + [labels == h for h in classes]).astype(float)
    slope = np.linalg.lstsq(design, losses, rcond=None)[0][0]
    estimate = variance = 0.0
    for h in classes:
        y, x, share = losses[labels == h], centre[labels == h], np.mean(whole_labels == h)
        estimate += share * (y.mean() - slope * (x.mean() - whole_centre[whole_labels == h].mean()))
        residuals = (y - y.mean()) - slope * (x - x.mean())
        if len(y) < np.sum(whole_labels == h):
            unseen = 1 - len(y) / np.sum(whole_labels == h) if corrected else 1.0
            variance += share**2 * unseen * (residuals @ residuals) / ((len(y) - 1) * len(y))
    return float(estimate), math.sqrt(variance)


def seeded_labels(config_path: Path, split: str) -> np.ndarray:
    """The split's class labels in the seeded order (randperm under data.subset_seed 0)."""
    labels = load_configured(load_sweep_config(config_path).data, split).labels
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return labels[order].numpy()


def stopping_count(
    losses: np.ndarray, batch_size: int, rel_error: float, minimum: int, centre=None, labels=None
) -> int:
    """How many examples the documented rule uses: the first batch boundary with at least
    `minimum` examples and SE ≤ rel_error·|mean|, else all; the estimate is the textbook
    one, or with `centre` (θ*'s losses of the same examples) and their `labels` the
    stratified one, its SE without the finite-population factor while examples remain."""
    for used in range(batch_size, len(losses) + batch_size, batch_size):
        used = min(used, len(losses))
        if centre is None:
            mean, error = textbook(losses[:used])
        else:
            seen = (losses[:used], centre[:used], labels[:used])
            mean, error = stratified(*seen, centre, labels, corrected=False)
        if used >= minimum and error <= rel_error * abs(mean):
            return used
    return len(losses)


# ---------------------------------------------------------------------------- the estimator


def test_per_example_units_give_the_textbook_standard_error_of_the_splits_mean():
    losses = np.array([0.5, 1.5, 2.0, 4.0, 0.25, 3.0])
    # 6 of a split's 20 examples, in 3 batches of 8: the error of the split's mean.
    moments = Moments(torch.device("cpu"), Population(examples=20, batches=3))
    for part in (losses[:2], losses[2:]):  # two batches of unequal size
        values = torch.from_numpy(part)
        moments.add(BatchTerms(values.sum(), len(part), values))
    mean, error = moments.estimate()
    assert mean == pytest.approx(losses.mean(), rel=1e-15)
    spread = losses.std(ddof=1) / math.sqrt(6)
    assert error == pytest.approx(spread * math.sqrt(1 - 6 / 20), rel=1e-12)
    # The stop test's error leaves the finite-population factor out.
    assert moments.estimate(corrected=False) == pytest.approx((losses.mean(), spread), rel=1e-12)


def test_a_loss_returning_its_own_counts_is_a_ratio_estimator_over_batches():
    # Three of a split's five batches of (token-loss sum, token count): r = 14/7 = 2;
    # residuals y − r·n are −1, 2, −1, so SE² = (1 − 3/5) · 3/2 · 6 / 7² and SE = 3/7 · √0.4.
    pairs = [(3.0, 2), (10.0, 4), (1.0, 1)]
    loss = build_loss("tokens", lambda outputs, targets: (outputs.sum(), int(targets.sum())))
    moments = Moments(torch.device("cpu"), Population(examples=9, batches=5))
    for total, count in pairs:
        terms = loss.terms(torch.tensor([[total]]), torch.tensor([count]))
        assert terms.total.item() == total and terms.count == count
        moments.add(terms)
    mean, error = moments.estimate()
    assert mean == 2.0
    assert error == pytest.approx(3 / 7 * math.sqrt(1 - 3 / 5), rel=1e-14)
    assert moments.estimate(corrected=False)[1] == pytest.approx(3 / 7, rel=1e-14)
    # One unit has no spread to measure; a non-finite mean none to give.
    assert math.isnan(mean_and_error([1.0, 3.0, 2.0, 9.0, 6.0, 4.0], 5)[1])
    assert math.isnan(mean_and_error([5.0, math.inf, 5.0, math.inf, math.inf, 5.0], 5)[1])


def two_batches(y: np.ndarray, x: np.ndarray, labels, baseline: Baseline) -> Moments:
    """Moments over a point's losses `y` (θ*'s: `x`) in two batches of unequal size, of a
    split of `baseline.examples` examples in batches of 7 (the first batch's size)."""
    population = Population(baseline.examples, math.ceil(baseline.examples / 7))
    moments = Moments(torch.device("cpu"), population, baseline)
    for batch, part in enumerate((slice(0, 7), slice(7, None))):
        values = torch.from_numpy(y[part])
        targets = None if labels is None else torch.from_numpy(labels[part])
        moments.add(BatchTerms(values.sum(), len(values), values), batch, targets)
    return moments


def test_the_control_variate_alone_is_the_textbook_regression_estimate():
    generator = np.random.default_rng(3)
    whole = generator.gamma(0.5, 2.0, 400)  # θ*'s losses over the whole split
    x = whole[:50]  # the examples seen so far
    y = 1.7 * x + generator.normal(0, 0.3, 50)
    units = [torch.from_numpy(x[:7]), torch.from_numpy(x[7:])]
    baseline = Baseline(units, float(whole.mean()), len(whole))
    mean, error = two_batches(y, x, None, baseline).estimate()
    slope = np.polyfit(x, y, 1)[0]
    residuals = (y - y.mean()) - slope * (x - x.mean())
    assert mean == pytest.approx(y.mean() - slope * (x.mean() - whole.mean()), rel=1e-12)
    expected = math.sqrt((1 - 50 / 400) * (residuals @ residuals) / 48 / 50)
    assert error == pytest.approx(expected, rel=1e-10)
    assert error < 0.5 * textbook(y, 400)[1]  # the point of it: y follows x
    # At θ* itself: θ*'s whole-split mean, and nothing left to be uncertain about.
    mean, error = two_batches(x, x, None, baseline).estimate()
    assert mean == pytest.approx(whole.mean(), rel=1e-12) and error < 1e-12


def test_the_stratified_estimate_is_the_textbook_one_and_waits_for_every_class():
    generator = np.random.default_rng(4)
    whole_labels = np.concatenate([generator.integers(0, 3, 299), [3]])  # class 3: one example
    whole_labels = whole_labels[generator.permutation(300)]
    whole = generator.gamma(0.5, 2.0, 300) + whole_labels  # θ*'s losses, by class
    first = int(np.flatnonzero(whole_labels == 3)[0])
    y_all = 0.8 * whole + 2.0 * (whole_labels == 1) + generator.normal(0, 0.2, 300)
    counts = tuple(int(np.sum(whole_labels == h)) for h in range(5))  # class 4: none at all
    means = tuple(float(whole[whole_labels == h].mean()) if counts[h] else 0.0 for h in range(5))
    for seen in (first, max(first + 1, 40)):
        x, y, labels = whole[:seen], y_all[:seen], whole_labels[:seen]
        units = [torch.from_numpy(x[:7]), torch.from_numpy(x[7:])]
        baseline = Baseline(units, float(whole.mean()), len(whole), counts, means)
        moments = two_batches(y, x, labels, baseline)
        mean, error = moments.estimate()
        expected = stratified(y, x, labels, whole, whole_labels)
        if seen == first:  # class 3 not seen yet: the plain mean, and it may not stop
            assert math.isnan(expected[1]) and math.isnan(error)
            assert mean == pytest.approx(y.mean(), rel=1e-12)
        else:
            assert (mean, error) == pytest.approx(expected, rel=1e-9)
            assert error < 0.5 * textbook(y, 300)[1]
            without = stratified(y, x, labels, whole, whole_labels, corrected=False)
            assert moments.estimate(corrected=False) == pytest.approx(without, rel=1e-9)
            assert error < without[1]  # each class's factor 1 − k_h/N_h < 1


def test_every_estimator_gives_the_splits_mean_with_error_0_once_every_example_is_in():
    generator = np.random.default_rng(5)
    labels = generator.integers(0, 3, 40)
    x = generator.gamma(0.5, 2.0, 40) + labels  # θ*'s losses over the whole split
    y = 1.3 * x + generator.normal(0, 0.3, 40)  # the point's
    counts = tuple(int(np.sum(labels == h)) for h in range(3))
    means = tuple(float(x[labels == h].mean()) for h in range(3))
    units = [torch.from_numpy(x[:7]), torch.from_numpy(x[7:])]
    by_class = Baseline(units, float(x.mean()), 40, counts, means)
    plain = Moments(torch.device("cpu"), Population(examples=40, batches=6))
    for part in (y[:7], y[7:]):
        values = torch.from_numpy(part)
        plain.add(BatchTerms(values.sum(), len(part), values))
    found = {
        "plain": plain,
        "controlled": two_batches(y, x, None, Baseline(units, float(x.mean()), 40)),
        "stratified": two_batches(y, x, labels, by_class),
    }
    for name, moments in found.items():
        mean, error = moments.estimate()
        assert mean == pytest.approx(y.mean(), rel=1e-12), name
        assert error == 0.0, name
    # The same for batches as units (a loss with its own counts): all 3 of 3 batches in.
    loss = build_loss("tokens", lambda outputs, targets: (outputs.sum(), int(targets.sum())))
    moments = Moments(torch.device("cpu"), Population(examples=3, batches=3))
    for total, count in [(3.0, 2), (10.0, 4), (1.0, 1)]:
        moments.add(loss.terms(torch.tensor([[total]]), torch.tensor([count])))
    assert moments.estimate() == (2.0, 0.0)


@pytest.mark.parametrize("name", ["cross_entropy", "mse", "per_example"])
def test_the_units_leave_the_loss_sum_as_it_was(name):
    generator = torch.Generator().manual_seed(1)
    outputs = torch.randn(37, 10, generator=generator) * 3
    targets = torch.randint(0, 10, (37,), generator=generator)
    function = lambda o, t: F.cross_entropy(o, t, reduction="none") ** 2  # noqa: E731
    loss = build_loss(name, function) if name == "per_example" else build_loss(name)
    total, count = loss.batch(outputs, targets)
    terms = loss.terms(outputs, targets)
    assert terms.total.dtype == torch.float64 and terms.count == count == 37
    assert terms.total.item() == total.item()  # bit for bit: the loss column is unchanged
    expected = {
        "cross_entropy": F.cross_entropy(outputs, targets, reduction="none"),
        "mse": (F.softmax(outputs, 1) - F.one_hot(targets, 10)).pow(2).mean(1),
        "per_example": function(outputs, targets),
    }[name]
    assert terms.unit_counts is None  # one example per unit
    assert torch.equal(terms.unit_sums, expected.double())


# ---------------------------------------------------------------------------- seeded order


def test_streamed_and_cached_splits_hand_out_the_same_seeded_order(cifar_root):
    data = DataConfig(root=cifar_root, workers=0)
    cached = open_split(data, "test", torch.device("cpu"), channels_last=False)
    streamed = open_split(
        DataConfig(root=cifar_root, workers=0, cache_mb=0), "test", torch.device("cpu"), False
    )
    assert cached.cached and not streamed.cached
    order = torch.randperm(100, generator=torch.Generator().manual_seed(5))
    for split in (cached, streamed):
        first = next(split.batches(16, order_seed=5))  # left unfinished, like a stopped point
        batches = list(split.batches(16, order_seed=5))
        assert [len(targets) for _, targets in batches] == [16] * 6 + [4]
        inputs = torch.cat([inputs for inputs, _ in batches])
        assert torch.equal(inputs, cached.inputs[order])
        assert torch.equal(first[0], cached.inputs[order[:16]])
    # Without a seed, the split's own order, as before.
    assert torch.equal(next(cached.batches(16))[0], cached.inputs[:16])


# ---------------------------------------------------------------------------- sweeps


def test_standard_errors_alone_leave_every_value_bit_for_bit_and_are_0(sweep_yaml):
    plain = datasets(sweep(sweep_yaml, {}, "plain")[1])
    config, output = sweep(sweep_yaml, {"evaluation.standard_errors": True}, "errors")
    found = datasets(output)
    assert set(found) == set(plain) | {"train_loss_se", "test_loss_se"}
    for name, values in plain.items():
        assert np.array_equal(values, found[name]), name
    # Every point uses every example: its loss is the split's mean, with no error at all.
    for split in ("train", "test"):
        assert (found[f"{split}_loss_se"] == 0.0).all(), split
    for i, j in ((2, 2), (0, 1)):
        a, b = found["xcoordinates"][i], found["ycoordinates"][j]
        losses, _ = per_example_by_hand(config, "test", a, b, seeded=False)
        assert found["test_loss"][i, j] == pytest.approx(losses.mean(), rel=1e-5)


def test_early_stopped_points_match_a_recomputation_from_the_seeded_order(sweep_yaml):
    config, output = sweep(sweep_yaml, PLAIN, "stopped")
    surface = read_surface(output)
    assert surface.done.all()
    names = [column.name for column in surface.columns.values()]
    assert names == [
        "train_loss", "train_loss_se", "train_examples", "train_acc",
        "test_loss", "test_loss_se", "test_examples", "test_acc",
    ]  # fmt: skip
    values = surface.metrics
    used_counts = set()
    for split, size in (("train", 200), ("test", 100)):
        for i, j in np.ndindex(*surface.done.shape):
            a, b = surface.x[i], surface.y[j]
            losses, right = per_example_by_hand(config, split, a, b, seeded=True)
            used = stopping_count(losses, 16, 0.006, 32)
            used_counts.add((split, used < size))
            assert values[f"{split}_examples"][i, j] == used, (split, a, b)
            mean, error = textbook(losses[:used], size)  # of the split's mean: 0 for all
            assert values[f"{split}_loss"][i, j] == pytest.approx(mean, rel=1e-5)
            assert values[f"{split}_loss_se"][i, j] == pytest.approx(error, rel=1e-4)
            if used == size:
                assert values[f"{split}_loss_se"][i, j] == 0.0
            assert values[f"{split}_acc"][i, j] == pytest.approx(100 * right[:used].mean())
    # The grid exercises both outcomes: points that stopped early and points that used all.
    assert {stopped for _, stopped in used_counts} == {True, False}


def test_the_control_variate_matches_a_recomputation_and_stops_sooner_near_the_centre(sweep_yaml):
    config, output = sweep(sweep_yaml, CONTROLLED, "controlled")
    _, plain_output = sweep(sweep_yaml, CONTROLLED | {"evaluation.control_variate": False}, "plain")
    surface, plain = read_surface(output), read_surface(plain_output)
    assert surface.done.all() and list(surface.x) == [-1, -0.5, 0, 0.5, 1]
    values = surface.metrics
    for split in ("train", "test"):
        centre, _ = per_example_by_hand(config, split, 0.0, 0.0, seeded=True)
        labels = seeded_labels(config, split)
        for i, j in np.ndindex(*surface.done.shape):
            a, b = surface.x[i], surface.y[j]
            losses, right = per_example_by_hand(config, split, a, b, seeded=True)

            used = stopping_count(losses, 16, 0.0005, 32, centre, labels)
            assert values[f"{split}_examples"][i, j] == used, (split, a, b)
            mean, error = stratified(losses[:used], centre[:used], labels[:used], centre, labels)
            assert values[f"{split}_loss"][i, j] == pytest.approx(mean, rel=1e-5)
            assert values[f"{split}_loss_se"][i, j] == pytest.approx(error, rel=1e-3, abs=1e-9)
            assert values[f"{split}_acc"][i, j] == pytest.approx(100 * right[:used].mean())
        # At θ* the point's losses are θ*'s: it stops as soon as it may (min_examples in and
        # two examples of every class) with the exact whole-split loss (to fp32 rounding; its
        # first 32 examples' mean is far from it), where the plain estimate needs more.
        covered = next(k for k in range(32, 1000, 16) if np.bincount(labels[:k]).min() >= 2)
        assert values[f"{split}_examples"][2, 1] == covered < len(labels)
        assert values[f"{split}_loss"][2, 1] == pytest.approx(centre.mean(), rel=1e-6)
        assert abs(centre[:32].mean() - centre.mean()) > 100 * 1e-6 * centre.mean()
        assert plain.metrics[f"{split}_examples"][2, 1] > 32
        # Nowhere does the control variate need more examples than a few batches' noise.
        saved = plain.metrics[f"{split}_examples"] - values[f"{split}_examples"]
        assert saved.sum() > 0 and saved.min() >= -2 * 16, saved
    examples = values["train_examples"]
    assert examples.min() < 200 and examples.max() == 200  # stopped points, and full ones
    # A point that used every example keeps the loss's usual bits (the sum over the seeded
    # order): the plain estimate's, where that used every example too.
    for split, size in (("train", 200), ("test", 100)):
        whole = (values[f"{split}_examples"] == size) & (plain.metrics[f"{split}_examples"] == size)
        assert whole.any()
        assert np.array_equal(values[f"{split}_loss"][whole], plain.metrics[f"{split}_loss"][whole])


def test_early_stopped_surfaces_are_the_same_bits_on_three_ranks(mpi_run, sweep_yaml):
    config, serial = sweep(sweep_yaml, CONTROLLED, "serial")  # θ*'s pass on every rank too
    parallel = serial.with_name("parallel.h5")
    result = mpi_run(3, "-m", "lsurf", "sweep", config, "--set", f"output={parallel}")
    assert result.returncode == 0, result.stderr
    expected, found = datasets(serial), datasets(parallel)
    assert set(found) == set(expected)
    for name, values in expected.items():
        assert np.array_equal(values, found[name]), name
    examples = expected["train_examples"]
    assert examples.min() < 200 and examples.max() == 200  # stopped points, and full ones


# ---------------------------------------------------------------------------- the keys


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("evaluation.rel_error=0", "evaluation.rel_error must be between 0 and 1"),
        ("evaluation.rel_error=1.5", "evaluation.rel_error must be between 0 and 1"),
        ("evaluation.rel_error=.nan", "evaluation.rel_error must be between 0 and 1"),
        ("evaluation.min_examples=0", "evaluation.min_examples must be at least 1"),
        ("evaluation.standard_errors=maybe", "evaluation.standard_errors"),
    ],
)
def test_bad_values_are_refused_in_one_line(sweep_yaml, capsys, setting, message):
    config = sweep_yaml()
    capsys.readouterr()
    assert main(["sweep", str(config), "--set", setting]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (config.parent / "out" / "surface.h5").exists()


def test_resuming_with_other_precision_settings_is_refused(existing_output, sweep_yaml, capsys):
    output, content, _ = existing_output
    capsys.readouterr()
    assert main(["sweep", str(sweep_yaml()), "--set", "evaluation.rel_error=0.01"]) == 2
    assert "differs in: evaluation.rel_error" in capsys.readouterr().err
    assert output.read_bytes() == content


def test_a_file_written_before_these_keys_resumes_unchanged(existing_output, sweep_yaml):
    output, _, _ = existing_output
    before = datasets(output)
    with h5py.File(output, "r+") as h5file:
        stored = yaml.safe_load(h5file.attrs["config"])
        for key in ("standard_errors", "rel_error", "min_examples"):
            del stored["evaluation"][key]
        h5file.attrs["config"] = yaml.safe_dump(stored)
        h5file["done"][1:, :] = False
    assert main(["sweep", str(sweep_yaml())]) == 0
    after = datasets(output)
    assert set(after) == set(before)
    for name, values in before.items():
        assert np.array_equal(values, after[name]), name


# ---------------------------------------------------------------------------- the readers


def test_info_ranks_no_point_by_its_standard_error_or_example_count(tmp_path):
    path = precision_curve(tmp_path)
    report = describe_surface(path)
    assert "min train_loss  0.5 at x=0" in report
    assert "min train_loss_se" not in report and "min train_examples" not in report


def test_1d_loss_curves_carry_error_bars_of_one_standard_error(tmp_path):
    path = precision_curve(tmp_path)
    options = PlotOptions()
    figure = draw_curves(load_panels([path], options), options)
    [ax] = [ax for ax in figure.axes if ax.get_ylabel().startswith("loss")]
    [bars] = [artist for artist in ax.collections if artist.get_gid() == "standard_error"]
    segments = bars.get_segments()
    # One bar per point shown: the NaN point (index 3) has none; each spans loss ± SE.
    x, loss, error = np.linspace(-1, 1, 5), 0.5 + np.linspace(-1, 1, 5) ** 2, np.full(5, 0.02)
    shown = [0, 1, 2, 4]
    assert [segment[0][0] for segment in segments] == pytest.approx(x[shown])
    assert [segment[0][1] for segment in segments] == pytest.approx(loss[shown] - error[shown])
    assert [segment[1][1] for segment in segments] == pytest.approx(loss[shown] + error[shown])
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "±1 standard error" in labels


def precision_curve(tmp_path: Path) -> Path:
    """A 1D file holding train loss, its standard error and the examples used; NaN at x=0.5."""
    x = np.linspace(-1, 1, 5)
    loss = 0.5 + x**2
    loss[3] = np.nan
    rows = {metric.name: asdict(metric) for metric in (LOSS, LOSS_SE, EXAMPLES)}
    columns = {
        "train_loss": ("train", rows["loss"], loss),
        "train_loss_se": ("train", rows["loss_se"], np.full(5, 0.02)),
        "train_examples": ("train", rows["examples"], np.array([1000, 1000, 3000, 50000, 1000])),
    }
    return write_surface_by_hand(tmp_path / "curve.h5", x, None, columns)


def test_a_file_stopped_early_before_the_control_variate_resumes_as_it_was(sweep_yaml, capsys):
    _, finished = sweep(sweep_yaml, PLAIN, "finished")
    config, output = sweep(sweep_yaml, STOPPING, "older")  # the key left out: its default
    # As an older lsurf wrote it: no evaluation.control_variate in the stored config, the
    # points stopped without one, half of them done.
    with h5py.File(finished, "r") as source, h5py.File(output, "r+") as h5file:
        stored = yaml.safe_load(h5file.attrs["config"])
        del stored["evaluation"]["control_variate"]
        h5file.attrs["config"] = yaml.safe_dump(stored)
        for name in source:
            if isinstance(source[name], h5py.Dataset) and name in h5file:
                h5file[name][...] = source[name][()]
        h5file["done"][2:, :] = False
    before = output.read_bytes()
    capsys.readouterr()
    # The control variates on a file stopped without them: another sweep, refused untouched.
    assert main(["sweep", str(config), "--set", "evaluation.control_variate=true"]) == 2
    assert "differs in: evaluation.control_variate" in capsys.readouterr().err
    assert output.read_bytes() == before
    assert main(["sweep", str(config)]) == 0  # the default is what it was stopped with
    expected, found = datasets(finished), datasets(output)
    for name, values in expected.items():
        assert np.array_equal(values, found[name]), name
