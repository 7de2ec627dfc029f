"""lsurf.data.layouts: the CIFAR formats agree with torchvision's own readers' tables, and the
module stays free of torch and numpy so the config layer can read it cheaply."""

import subprocess
import sys
from collections import Counter

import pytest
from torchvision import datasets

from lsurf.data import layouts
from lsurf.errors import DataError


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_each_layout_matches_torchvisions_reader(name):
    layout = layouts.layout_of(name)
    reader = getattr(datasets, layout.torchvision_class)
    assert layout.folder == reader.base_folder
    assert layout.train_files == tuple(file for file, _ in reader.train_list)
    assert layout.test_files == tuple(file for file, _ in reader.test_list)
    assert layout.meta_file == reader.meta["filename"]
    assert layout.label_names_key == reader.meta["key"]
    assert layout.num_classes == len(layout.label_names) == {"cifar10": 10, "cifar100": 100}[name]
    assert layouts.dataset_classes(name) == layout.num_classes
    assert set(layout.split_files) == set(layouts.SPLITS)


def test_cifar100_has_twenty_superclasses_of_five_classes_each():
    layout = layouts.layout_of("cifar100")
    assert len(layout.coarse_of_fine) == 100
    assert sorted(Counter(layout.coarse_of_fine).values()) == [5] * 20
    assert len(layout.coarse_label_names) == 20


def test_an_image_row_is_three_planes_of_32_by_32():
    assert layouts.VALUES_PER_IMAGE == 3 * 32 * 32 == layouts.CHANNELS * layouts.SIDE**2


@pytest.mark.parametrize("name", ["cifar", "CIFAR10", None])
def test_an_unknown_dataset_is_one_line_naming_the_valid(name):
    with pytest.raises(DataError, match=r"^unknown dataset .*; valid datasets: cifar10, cifar100$"):
        layouts.layout_of(name)


def test_reading_the_layouts_loads_neither_torch_nor_numpy():
    code = (
        "import sys; import lsurf.data.layouts as l; l.layout_of('cifar100');"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
