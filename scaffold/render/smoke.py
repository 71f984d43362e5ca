"""The smoke dataset: a few small random GeoTIFFs with the model's bands, frames and classes.

The benchmark YAML's smoke task reads them, so a generated backbone is proven on the real
terratorch-iterate pipeline (datamodule, transforms, task, trainer) without any real data.
Layouts follow TerraTorch's generic datamodules: ``<split>/img/*_img.tif`` and
``<split>/lbl/*_mask.tif`` for pixel-wise tasks, ``<split>/class<k>/*.tif`` for classification.
Temporal inputs are stored as C*T bands, time-major, as ``expand_temporal_dimension`` reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
IMAGES_PER_SPLIT = 8
BAND_MEAN = 0.5  # uniform [0, 1) noise
BAND_STD = 0.29


def write_smoke_dataset(
    root: Path, bands: int, frames: int | None, size: tuple[int, int], task: str, num_classes: int
) -> list[Path]:
    """Write the dataset under `root`; return the files written."""
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
                write(root / split / f"class{i % num_classes}" / f"s{i}.tif", image)
                continue
            write(root / split / "img" / f"s{i}_img.tif", image)
            if task == "segmentation":
                # Classes follow the first band, so there is something to learn.
                label = np.minimum(image[0] * num_classes, num_classes - 1).astype(np.int16)
            else:
                label = image[0].astype(np.float32)
            write(root / split / "lbl" / f"s{i}_mask.tif", label[None])
    return written
