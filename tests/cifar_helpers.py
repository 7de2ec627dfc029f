"""The CIFAR file layouts as the tests know them, shared by the reader's and the writer's tests.

Written out here rather than imported from lsurf.data.layouts, so a change to the format there fails
the tests instead of silently moving them along.
"""

from pathlib import Path

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{number}" for number in range(1, 6)]
# Sizes that are not multiples of 5, so the uneven split over the batch files is exercised.
SMALL_TRAIN, SMALL_TEST = 103, 27

FOLDER_100 = "cifar-100-python"
FILES_100 = ["train", "test", "meta"]
# The superclass of each of CIFAR-100's 100 classes, by class index, as the real files'
# 'coarse_labels' pair them with 'fine_labels'.
FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


def md5sums(root: Path, folder: str = FOLDER) -> dict[str, str]:
    """The synthetic dataset's checksum file, as {file name: md5 hex digest}."""
    lines = (root / folder / "SYNTHETIC_MD5SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ") for line in lines)}
