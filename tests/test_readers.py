"""lsurf.data.readers: every example checked against the first, and each way a dataset can be
wrong is one line (also from inside a DataLoader worker, through the `_Rejected` marker)."""

import pytest
import torch
from PIL import Image

from lsurf.config import DataConfig
from lsurf.data import readers
from lsurf.errors import DataError


class ListDataset:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def good(n=4):
    return [(torch.full((2, 3), float(i)), i % 2) for i in range(n)]


def test_checked_examples_keep_shapes_turn_int_targets_into_tensors_and_restrict_in_order():
    examples = readers.checked_dataset("toy:make", "train", ListDataset(good()))
    assert len(examples) == 4
    assert (examples.input_shape, examples.target_shape) == ((2, 3), ())
    assert examples.target_dtype == torch.int64
    picked = examples.restricted_to([3, 1])
    inputs, targets = readers.accepted(readers.collate([picked[0], picked[1]]))
    assert inputs[:, 0, 0].tolist() == [3.0, 1.0] and targets.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            (torch.zeros(2, 4), 0),
            "example 2 is (float32 (2, 4), int64 ()) but example 0 is (float32 (2, 3)",
        ),
        (("pixels", 0), "example 2 has an input of type str, not a tensor"),
        ((torch.zeros(2, 3), "cat"), "example 2 has a target of type str, not a tensor or an int"),
        (torch.zeros(2, 3), "example 2 is a tensor of shape (2, 3), not an (input, target) pair"),
    ],
)
def test_a_bad_example_travels_as_a_marker_and_becomes_one_line(bad, message):
    items = good()
    items[2] = bad
    examples = readers.checked_dataset("toy:make", "test", ListDataset(items))
    batch = readers.collate([examples[1], examples[2], examples[3]])
    assert isinstance(batch, readers._Rejected)  # picklable, no traceback from a worker
    with pytest.raises(DataError) as caught:
        readers.accepted(batch)
    assert str(caught.value).startswith("data.dataset toy:make (split 'test'): ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_what_a_callable_returned_is_refused_when_it_is_no_dataset_or_pair():
    with pytest.raises(DataError, match=r"returned a tensor of shape \(3,\)"):
        readers.checked_dataset("toy:make", "train", torch.zeros(3))
    with pytest.raises(DataError, match="has no examples"):
        readers.checked_dataset("toy:make", "train", ListDataset([]))
    with pytest.raises(DataError, match=r"shapes \(5, 2\) and \(4,\) .* do not pair up"):
        readers.checked_tensors("toy:make", "train", (torch.zeros(5, 2), torch.zeros(4)))
    assert readers.is_tensor_pair((torch.zeros(1), torch.zeros(1)))
    assert not readers.is_tensor_pair((torch.zeros(1), [0]))


def write_image_folder(root, split, classes, size=(40, 30)):
    for index, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        Image.new("RGB", size, (40 * index, 100, 200)).save(folder / "a.png")


def test_an_image_folder_is_resized_cropped_normalized_and_classes_must_match(tmp_path):
    write_image_folder(tmp_path, "train", ["cat", "dog"])
    write_image_folder(tmp_path, "test", ["cat", "dog"])
    config = DataConfig(
        dataset="imagefolder",
        root=str(tmp_path),
        image_size=16,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    examples, classes = readers.image_folder(config, "test")
    assert classes == 2 and len(examples) == 2
    inputs, target = examples[1]
    assert inputs.shape == (3, 16, 16) and int(target) == 1
    # A flat colour survives resize and crop; normalization is (value/255 - 0.5) / 0.25.
    expected = torch.tensor([40, 100, 200]) / 255.0
    torch.testing.assert_close(inputs[:, 8, 8], (expected - 0.5) / 0.25, atol=1e-5, rtol=0)
    write_image_folder(tmp_path, "val", ["cat", "owl"])
    with pytest.raises(DataError, match=r"other classes than .*train \(missing: dog; extra: owl\)"):
        readers.image_folder(config, "val")
    with pytest.raises(DataError, match="imagefolder split 'nope' not found"):
        readers.image_folder(config, "nope")
