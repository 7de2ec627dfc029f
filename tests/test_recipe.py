"""lsurf.train.recipe: learning-rate schedules, per-epoch draws and augmentation, exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsurf.config import TrainingConfig
from lsurf.data.cifar import _normalize
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.train.recipe import (
    PADDING,
    augment,
    draw_epoch,
    draw_epoch_with,
    epoch_generator,
    learning_rate,
    padding_fill,
)

# ---------------------------------------------------------------------------- schedules


def test_step_schedule_decays_after_each_milestone_as_the_reference():
    training = TrainingConfig(epochs=300, schedule="step", milestones=(150, 225, 275), gamma=0.1)
    rates = {epoch: learning_rate(training, epoch) for epoch in range(1, 301)}
    assert {rates[epoch] for epoch in range(1, 151)} == {0.1}
    # The reference multiplies its lr in place after epochs 150, 225 and 275.
    assert {rates[epoch] for epoch in range(151, 226)} == {0.1 * 0.1}
    assert {rates[epoch] for epoch in range(226, 276)} == {0.1 * 0.1 * 0.1}
    assert {rates[epoch] for epoch in range(276, 301)} == {0.1 * 0.1 * 0.1 * 0.1}


def test_cosine_schedule_falls_from_lr_to_zero_over_the_run():
    training = TrainingConfig(epochs=10, lr=0.2, schedule="cosine")
    rates = [learning_rate(training, epoch) for epoch in range(1, 11)]
    assert rates[0] == 0.2
    assert rates == [0.1 * (1 + math.cos(math.pi * (epoch - 1) / 10)) for epoch in range(1, 11)]
    assert all(a > b > 0 for a, b in zip(rates, rates[1:], strict=False))
    assert learning_rate(training, 11) == pytest.approx(0.0, abs=1e-15)  # where it would go next
    assert learning_rate(TrainingConfig(lr=0.3), 7) == 0.3  # constant


# ---------------------------------------------------------------------------- augmentation


def test_padding_is_a_normalized_black_pixel():
    fill = padding_fill(REFERENCE_MEAN, REFERENCE_STD)
    black = _normalize(np.zeros((1, 3072), np.uint8), REFERENCE_MEAN, REFERENCE_STD)
    assert torch.equal(fill, black[0, :, 0, 0])  # bit for bit
    assert (fill < -1.5).all()  # not 0, which is the mean colour after normalization


def test_crops_keep_the_shape_flips_flip_and_the_frame_is_padding():
    images = torch.randn(4, 3, 32, 32)
    fill = padding_fill(REFERENCE_MEAN, REFERENCE_STD)
    centre = torch.full((4, 2), PADDING)
    no, yes = torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    assert torch.equal(augment(images, centre, no, fill), images)
    assert torch.equal(augment(images, centre, yes, fill), images.flip(-1))
    corner = augment(images, torch.zeros(4, 2, dtype=torch.int64), no, fill)
    assert corner.shape == images.shape
    assert torch.equal(corner[:, :, 4:, 4:], images[:, :, :28, :28])  # shifted down and right
    frame = torch.cat([corner[:, :, :4, :].flatten(2), corner[:, :, :, :4].flatten(2)], dim=2)
    assert torch.equal(frame, fill.view(1, 3, 1).expand_as(frame))
    far = augment(images, torch.full((4, 2), 2 * PADDING), no, fill)
    assert torch.equal(far[:, :, :28, :28], images[:, :, 4:, 4:])


def test_augment_equals_pad_crop_flip_image_by_image():
    images = torch.randn(16, 3, 32, 32)
    draw = draw_epoch(16, seed=3, epoch=1)
    fill = padding_fill(REFERENCE_MEAN, REFERENCE_STD)
    batch = augment(images, draw.offsets, draw.flips, fill)
    for index in range(16):
        padded = torch.stack(
            [F.pad(images[index, c], (4, 4, 4, 4), value=float(fill[c])) for c in range(3)]
        )
        row, column = draw.offsets[index].tolist()
        expected = padded[:, row : row + 32, column : column + 32]
        if draw.flips[index]:
            expected = expected.flip(-1)
        assert torch.equal(batch[index], expected)


def test_an_epochs_shuffling_and_augmentation_depend_on_seed_and_epoch_only():
    first, again = draw_epoch(500, seed=0, epoch=3), draw_epoch(500, seed=0, epoch=3)
    for name in ("order", "offsets", "flips"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.order, draw_epoch(500, seed=0, epoch=4).order)
    assert not torch.equal(first.order, draw_epoch(500, seed=1, epoch=3).order)
    assert torch.equal(first.order.sort().values, torch.arange(500))
    assert first.offsets.min() == 0 and first.offsets.max() == 2 * PADDING
    assert 150 < int(first.flips.sum()) < 350


def test_the_epochs_generator_gives_the_same_draw_and_goes_on_past_it():
    """A curve's bend draws each batch's t from the generator after the epoch's draw; the
    draw itself is the one lsurf train uses."""
    generator = epoch_generator(5, 2)
    draw = draw_epoch_with(generator, 300)
    expected = draw_epoch(300, seed=5, epoch=2)
    for name in ("order", "offsets", "flips"):
        assert torch.equal(getattr(draw, name), getattr(expected, name))
    after = torch.rand(4, dtype=torch.float64, generator=generator)
    again = epoch_generator(5, 2)
    draw_epoch_with(again, 300)
    assert torch.equal(after, torch.rand(4, dtype=torch.float64, generator=again))
