"""Small GeoTIFF datasets in the layouts people have, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tif(path: Path, array: np.ndarray, nodata: float | None = None) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 2:
        array = array[None]
    profile = {
        "driver": "GTiff",
        "height": array.shape[1],
        "width": array.shape[2],
        "count": array.shape[0],
        "dtype": array.dtype,
        "transform": from_origin(0, array.shape[1], 1, 1),
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def image(rng: np.random.Generator, bands: int = 3, size: int = 32, dtype=np.uint16) -> np.ndarray:
    """Bands with different levels, so that a statistic of the wrong band shows."""
    levels = np.arange(1, bands + 1, dtype=np.float64)[:, None, None] * 100
    values = levels + rng.normal(0, 20, (bands, size, size)) * levels / 100
    return np.clip(values, 0, None).astype(dtype)


def mask(img: np.ndarray, classes: int = 3) -> np.ndarray:
    """Classes that follow the first band (something to learn)."""
    first = img[0].astype(np.float64)
    edges = np.quantile(first, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(first, edges).astype(np.uint8)
