"""The smoke dataset: a few small random GeoTIFFs with the model's bands, frames and classes.

The benchmark YAML's smoke task reads them, so a generated backbone is proven on the real
terratorch-iterate pipeline (datamodule, transforms, task, trainer) without any real data.
Layouts follow TerraTorch's generic datamodules: ``<split>/img/*_img.tif`` and
``<split>/lbl/*_mask.tif`` for pixel-wise tasks, ``<split>/class<k>/*.tif`` for classification.
Temporal inputs are stored as C*T bands, time-major, as ``expand_temporal_dimension`` reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

SPLITS = ("train", "val", "test")
IMAGES_PER_SPLIT = 8
BAND_MEAN = 0.5  # uniform [0, 1) noise
BAND_STD = 0.29
# The layout, as the writer below makes it, the smoke task's datamodule reads it and `update`
# recognises the files of a state that did not record them.
IMAGE_DIR, LABEL_DIR = "img", "lbl"
IMAGE_GREP, LABEL_GREP = "*_img.tif", "*_mask.tif"


def image_file(split: str, i: int) -> str:
    return f"{split}/{IMAGE_DIR}/s{i}{IMAGE_GREP[1:]}"


def label_file(split: str, i: int) -> str:
    return f"{split}/{LABEL_DIR}/s{i}{LABEL_GREP[1:]}"


def class_file(split: str, i: int, num_classes: int) -> str:
    return f"{split}/class{i % num_classes}/s{i}.tif"


# Any file `write_smoke_dataset` may write, relative to its root.
SMOKE_FILE = re.compile(
    rf"({'|'.join(SPLITS)})/({IMAGE_DIR}/s\d+{re.escape(IMAGE_GREP[1:])}"
    rf"|{LABEL_DIR}/s\d+{re.escape(LABEL_GREP[1:])}|class\d+/s\d+\.tif)"
)


def write_smoke_dataset(
    root: Path, bands: int, frames: int | None, size: tuple[int, int], task: str, num_classes: int
) -> list[Path]:
    """Write the dataset under `root`; return the files written."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    height, width = size
    layers = bands * (frames or 1)
    written: list[Path] = []

    def write(path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": array.shape[0],
            "dtype": array.dtype,
            "transform": from_origin(0, height, 1, 1),
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
        written.append(path)

    for split in SPLITS:
        for i in range(IMAGES_PER_SPLIT):
            image = rng.random((layers, height, width), dtype=np.float32)
            if task == "classification":
                write(root / class_file(split, i, num_classes), image)
                continue
            write(root / image_file(split, i), image)
            if task == "segmentation":
                # Classes follow the first band, so there is something to learn.
                label = np.minimum(image[0] * num_classes, num_classes - 1).astype(np.int16)
            else:
                label = image[0].astype(np.float32)
            write(root / label_file(split, i), label[None])
    return written
