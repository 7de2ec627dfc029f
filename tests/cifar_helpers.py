"""The CIFAR-10 file layout as the tests know it, shared by the reader's and the writer's tests.

Written out here rather than imported from lsurf.data, so a change to the format there fails
the tests instead of silently moving them along.
"""

from pathlib import Path

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{number}" for number in range(1, 6)]
# Sizes that are not multiples of 5, so the uneven split over the batch files is exercised.
SMALL_TRAIN, SMALL_TEST = 103, 27


def md5sums(root: Path) -> dict[str, str]:
    """The synthetic dataset's checksum file, as {file name: md5 hex digest}."""
    lines = (root / FOLDER / "SYNTHETIC_MD5SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ") for line in lines)}
