"""lsurf.losses: each built-in loss and a callable's (sum, count) by hand, and the standard
error of a split's mean as Cochran writes it (with its finite-population factor)."""

import math

import numpy as np
import pytest
import torch

from lsurf.errors import ConfigError
from lsurf.losses import BatchTerms, Moments, Population, build_loss, classifies, mean_and_error


def batch():
    generator = torch.Generator().manual_seed(3)
    outputs = torch.randn(9, 4, generator=generator)
    targets = torch.randint(0, 4, (9,), generator=generator)
    return outputs, targets


def test_cross_entropy_sums_and_units_match_a_hand_computation():
    outputs, targets = batch()
    terms = build_loss("cross_entropy").terms(outputs, targets)
    log_probabilities = outputs.double().log_softmax(dim=1)
    by_hand = -log_probabilities[torch.arange(9), targets]
    assert terms.count == 9
    assert terms.total.dtype == torch.float64
    np.testing.assert_allclose(terms.total.item(), by_hand.sum().item(), rtol=1e-6)
    np.testing.assert_allclose(terms.unit_sums.numpy(), by_hand.numpy(), rtol=1e-6)
    assert build_loss("cross_entropy").batch(outputs, targets)[0].item() == terms.total.item()


def test_mse_is_the_reference_probabilities_against_one_hot_or_plain_for_regression():
    outputs, targets = batch()
    total, count = build_loss("mse").batch(outputs, targets)
    one_hot = torch.nn.functional.one_hot(targets, 4).double()
    by_hand = (outputs.double().softmax(dim=1) - one_hot).pow(2).mean(dim=1).sum()
    assert count == 9
    np.testing.assert_allclose(total.item(), by_hand.item(), rtol=1e-6)
    regression = torch.randn(9, 4)
    total, _ = build_loss("mse").batch(outputs, regression)
    expected = (outputs.double() - regression.double()).pow(2).mean(dim=1).sum().item()
    np.testing.assert_allclose(total.item(), expected, rtol=1e-6)


def test_a_callable_returning_sum_and_count_counts_what_it_says():
    outputs, targets = batch()

    def tokens(outputs, targets):  # e.g. a loss counting tokens, not examples
        return outputs.sum(), 27

    total, count = build_loss("mine", tokens).batch(outputs, targets)
    assert count == 27
    np.testing.assert_allclose(float(total), outputs.sum().item(), rtol=1e-6)


def test_a_shape_cross_entropy_cannot_take_is_one_line():
    outputs, _ = batch()
    assert not classifies(outputs, torch.randn(9, 4))
    with pytest.raises(ConfigError, match=r"cross_entropy needs outputs \(batch, classes\)"):
        build_loss("cross_entropy").batch(outputs, torch.randn(9, 4))


@pytest.mark.parametrize("seen", [1, 2, 5, 10])
def test_the_error_of_a_split_mean_from_seen_examples_is_cochrans(seen):
    losses = torch.tensor([0.5, 1.5, 0.25, 2.0, 1.0, 0.75, 3.0, 0.1, 0.9, 1.2], dtype=torch.float64)
    moments = Moments(torch.device("cpu"), Population(examples=10, batches=2))
    moments.add(BatchTerms(losses[:seen].sum(), seen, losses[:seen]))
    mean, error = moments.estimate()
    sample = losses[:seen].numpy()
    assert mean == pytest.approx(sample.mean(), rel=1e-12)
    if seen == 10:
        assert error == 0.0  # a census: the split's mean itself
    elif seen == 1:
        assert math.isnan(error)
    else:
        by_hand = math.sqrt((1 - seen / 10) * sample.var(ddof=1) / seen)
        assert error == pytest.approx(by_hand, rel=1e-12)
        _, uncorrected = moments.estimate(corrected=False)
        assert uncorrected == pytest.approx(math.sqrt(sample.var(ddof=1) / seen), rel=1e-12)


def test_batches_as_units_weigh_each_batch_by_its_count():
    # Three batches of (sum, count): the ratio estimator's mean is Σy/Σn, not the mean of means.
    sums = [3.0, 6.0, 3.0]
    counts = [2.0, 4.0, 6.0]
    moments = [
        3,
        sum(sums),
        sum(counts),
        sum(y * y for y in sums),
        sum(y * n for y, n in zip(sums, counts, strict=True)),
        sum(n * n for n in counts),
    ]
    mean, error = mean_and_error(moments, whole=6)
    assert mean == pytest.approx(12.0 / 12.0)
    residual = sum((y - mean * n) ** 2 for y, n in zip(sums, counts, strict=True))
    assert error == pytest.approx(math.sqrt(0.5 * 3 / 2 * residual) / 12.0)


def test_causal_lm_scores_each_next_token_and_skips_padded_targets():
    # Two sequences of 4 positions over a vocabulary of 3; the second padded after 2 tokens.
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2, 1], [2, 0, -100, -100]])
    loss = build_loss("causal_lm")
    terms = loss.terms(logits, targets)
    log_probabilities = logits.double().log_softmax(dim=-1)
    first = -sum(float(log_probabilities[0, t, targets[0, t + 1]]) for t in range(3))
    second = -float(log_probabilities[1, 0, targets[1, 1]])  # position 0 scores token 1
    assert int(terms.count) == 4  # 3 next tokens of the first, 1 of the second
    assert float(terms.total) == pytest.approx(first + second, rel=1e-6)
    assert terms.unit_sums.tolist() == pytest.approx([first, second], rel=1e-6)
    assert terms.unit_counts.tolist() == [3.0, 1.0] and terms.units_are_examples
    with pytest.raises(ConfigError, match="causal_lm needs logits"):
        loss.batch(logits[:, 0], targets)
