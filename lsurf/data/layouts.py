"""The datasets' on-disk formats and normalization statistics, as plain constants.

This module owns the facts that the reader (`lsurf.data.cifar`), the writer
(`lsurf.data.synthetic`) and the config layer (`lsurf.config`) must agree on, and nothing that
computes:

- the per-channel mean/std that published checkpoints were trained with;
- the layout of the python versions of CIFAR-10 and CIFAR-100 (folder, file names, the
  pickle key holding the labels, the class names), one `CifarLayout` each, looked up by the
  config's dataset name through `LAYOUTS` or `layout_of`;
- the image format shared by both: 3072 uint8 values per image, R plane, G plane, B plane.

It imports neither torch nor numpy, so the config layer can validate a dataset name or read
the default statistics without the cost of loading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lsurf.errors import DataError

Channels = tuple[float, float, float]

# tomgoldstein/loss-landscape, cifar10/dataloader.py: transforms.Normalize with the CIFAR-10
# channel statistics written in grey levels and divided by 255; written the same way here so
# the float32 values match the reference bit for bit.
REFERENCE_MEAN: Final[Channels] = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
REFERENCE_STD: Final[Channels] = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
# akamaster/pytorch_resnet_cifar10, trainer.py: its pretrained ResNets were trained with the
# ImageNet statistics, not CIFAR-10's.
AKAMASTER_MEAN: Final[Channels] = (0.485, 0.456, 0.406)
AKAMASTER_STD: Final[Channels] = (0.229, 0.224, 0.225)

SPLITS: Final = ("train", "test")

# Both datasets store an image as one row of 3072 uint8 values: the 32x32 red plane, then
# green, then blue, each row-major.
SIDE: Final = 32
CHANNELS: Final = 3
VALUES_PER_IMAGE: Final = CHANNELS * SIDE * SIDE  # 3072
# Its presence marks a dataset folder as synthetic, so ours to overwrite; it lists the files'
# MD5s in md5sum's format, which torchvision's readers can be given in place of the real ones.
SYNTHETIC_MARKER: Final = "SYNTHETIC_MD5SUMS"


@dataclass(frozen=True)
class CifarLayout:
    """Where and how the python version of one CIFAR dataset stores its splits.

    Every data file is a pickled dict with a ``'data'`` entry of shape (N, 3072) uint8 and a
    list of N integer labels under `label_key`; the meta file names the classes under
    `label_names_key`.
    """

    name: str  # as in configs and on the command line: "cifar10"
    title: str  # as in messages: "CIFAR-10"
    archive: str  # the real download, which extracts to `folder`
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    label_names_key: str
    label_names: tuple[str, ...]
    # CIFAR-100 also labels each image with one of 20 superclasses; empty for CIFAR-10.
    coarse_label_names: tuple[str, ...] = ()
    coarse_of_fine: tuple[int, ...] = ()  # superclass index of each class, by class index
    torchvision_class: str = ""  # the torchvision.datasets class that downloads it

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def split_files(self) -> dict[str, tuple[str, ...]]:
        """{split name: its data files, in the order their images are concatenated}."""
        return {"train": self.train_files, "test": self.test_files}


CIFAR10_LABEL_NAMES: Final = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

CIFAR10: Final = CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{number}" for number in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    label_names_key="label_names",
    label_names=CIFAR10_LABEL_NAMES,
    torchvision_class="CIFAR10",
)

# The superclasses of CIFAR-100 with their five classes each, as the dataset's web page lists
# them, in the names the real meta file uses. The class and superclass indices are the
# alphabetical positions of these names, as in the real files.
CIFAR100_SUPERCLASSES: Final[dict[str, tuple[str, ...]]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_COARSE_LABEL_NAMES: Final = tuple(sorted(CIFAR100_SUPERCLASSES))
CIFAR100_LABEL_NAMES: Final = tuple(
    sorted(name for members in CIFAR100_SUPERCLASSES.values() for name in members)
)
_SUPERCLASS_OF: Final = {
    name: CIFAR100_COARSE_LABEL_NAMES.index(superclass)
    for superclass, members in CIFAR100_SUPERCLASSES.items()
    for name in members
}

CIFAR100: Final = CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",  # lsurf classifies the 100 classes, not the 20 superclasses
    label_names_key="fine_label_names",
    label_names=CIFAR100_LABEL_NAMES,
    coarse_label_names=CIFAR100_COARSE_LABEL_NAMES,
    coarse_of_fine=tuple(_SUPERCLASS_OF[name] for name in CIFAR100_LABEL_NAMES),
    torchvision_class="CIFAR100",
)

LAYOUTS: Final[dict[str, CifarLayout]] = {layout.name: layout for layout in (CIFAR10, CIFAR100)}


def layout_of(dataset: str) -> CifarLayout:
    """The layout of a dataset named as in configs ("cifar10", "cifar100")."""
    layout = LAYOUTS.get(dataset) if isinstance(dataset, str) else None
    if layout is None:
        raise DataError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(LAYOUTS)}")
    return layout


def dataset_classes(dataset: str) -> int:
    """How many classes a model for this dataset must output: 10 for cifar10, 100 for cifar100."""
    return layout_of(dataset).num_classes


# The CIFAR-10 names under which lsurf.data.cifar has always exported its format; kept for its
# importers.
FOLDER: Final = CIFAR10.folder
TRAIN_FILES: Final = CIFAR10.train_files
META_FILE: Final = CIFAR10.meta_file
NUM_CLASSES: Final = CIFAR10.num_classes
LABEL_NAMES: Final = CIFAR10.label_names
