"""Small GEO-Bench-2 datasets in the package's real on-disk format, written as geobenchv2's own
``generate_benchmark`` scripts write them: tacotoolbox's tortilla writer (``pytortilla``), one
tortilla per sample holding its files (GeoTIFF or HDF5, in the order the dataset reads them),
and one tortilla of those samples per dataset file, with ``data_split`` and the metadata columns
the dataset class reads (``labels``, ``dates``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SIZE = 16
SPLITS = ("train",) * 3 + ("validation",) * 2 + ("test",) * 2
STAC = {
    "crs": "EPSG:32633",
    "geotransform": (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0),
    "raster_shape": (SIZE, SIZE),
    "time_start": 0,
}


def _tif(path: Path, array: np.ndarray) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    count, height, width = array.shape
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": array.dtype,
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 4000000, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as f:
        f.write(array)
    return path


def _h5(path: Path, array: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=array)
    return path


def _write(
    out: Path,
    samples: list[tuple[str, list[tuple[Any, ...]], dict[str, Any]]],
    stac: bool = True,
):
    """`samples`: (split, [(id, file, format[, its own metadata])], metadata of the first file)
    -> one tortilla per sample under out.parent/parts, then `out` holding them. `stac`: the
    files are georeferenced (``stac_data``), as most datasets' writers give."""
    import tacotoolbox

    tortilla = tacotoolbox.tortilla
    parts = out.parent / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    outer = []
    where = {"stac_data": STAC} if stac else {}
    for i, (split, files, meta) in enumerate(samples):
        inner = [
            tortilla.datamodel.Sample(
                id=file[0],
                path=str(file[1]),
                file_format=file[2],
                data_split=split,
                **where,
                **(file[3] if len(file) > 3 else meta if j == 0 else {}),
            )
            for j, file in enumerate(files)
        ]
        path = parts / f"{out.stem}_sample_{i}.tortilla"
        tortilla.create(tortilla.datamodel.Samples(samples=inner), str(path), quiet=True)
        outer.append(
            tortilla.datamodel.Sample(
                id=f"sample_{i}",
                path=str(path),
                file_format="TORTILLA",
                data_split=split,
                **where,
                **(meta if stac else {}),
            )
        )
    tortilla.create(tortilla.datamodel.Samples(samples=outer), str(out), quiet=True, nworkers=1)


def _files(root: Path) -> Path:
    """ROOT/files, where a writer puts the files its samples hold (ROOT made too)."""
    work = root / "files"
    work.mkdir(parents=True, exist_ok=True)
    return work


def write_classification(root: Path, seed: int = 0) -> Path:
    """A single-date, single-modality classification set (geobenchv2's ``forestnet``: six
    Landsat-8 bands as one GeoTIFF, the class in the sample's ``labels``)."""
    rng, work = np.random.default_rng(seed), _files(root)
    samples = []
    for i, split in enumerate(SPLITS):
        image = _tif(work / f"fn{i}.tif", rng.random((6, SIZE, SIZE), dtype=np.float32) * 1000)
        samples.append((split, [("image", image, "GTiff")], {"labels": int(i % 3)}))
    _write(root / "geobench_forestnet.tortilla", samples)
    return root


def write_two_modalities(root: Path, seed: int = 1) -> Path:
    """A two-modality segmentation set (geobenchv2's ``flair2``: aerial red, green, blue, nir
    and elevation as one five-band GeoTIFF, a mask of classes 1..13)."""
    rng, work = np.random.default_rng(seed), _files(root)
    samples = []
    for i, split in enumerate(SPLITS):
        image = _tif(work / f"fl{i}.tif", rng.integers(0, 255, (5, SIZE, SIZE)).astype(np.uint8))
        mask = _tif(work / f"flm{i}.tif", rng.integers(1, 14, (1, SIZE, SIZE)).astype(np.uint8))
        samples.append((split, [("image", image, "GTiff"), ("mask", mask, "GTiff")], {}))
    _write(root / "geobench_flair2.tortilla", samples)
    return root


PASTIS_FILES = tuple(f"geobench_pastis.{i:04d}.part.tortilla" for i in range(3))


def write_time_series(root: Path, frames: int = 5, seed: int = 2) -> Path:
    """A multi-temporal, three-modality segmentation set (geobenchv2's ``pastis``: HDF5 series
    (T, C, H, W) of Sentinel-2 and Sentinel-1 ascending and descending, a semantic mask, in
    three part files)."""
    rng, work = np.random.default_rng(seed), _files(root)
    samples = []
    for i, split in enumerate(SPLITS):
        series = {
            "s2": _h5(work / f"s2_{i}.h5", rng.random((frames, 10, SIZE, SIZE), np.float32)),
            "s1a": _h5(work / f"s1a_{i}.h5", rng.random((frames, 3, SIZE, SIZE), np.float32)),
            "s1d": _h5(work / f"s1d_{i}.h5", rng.random((frames, 3, SIZE, SIZE), np.float32)),
            "semantic": _h5(work / f"sem_{i}.h5", rng.integers(0, 20, (3, SIZE, SIZE))),
            "instance": _h5(work / f"ins_{i}.h5", rng.integers(0, 5, (SIZE, SIZE))),
        }
        files = [(k, p, "HDF5") for k, p in series.items()]
        samples.append((split, files, {"dates": list(range(frames))}))
    for n, name in enumerate(PASTIS_FILES):  # each split's samples spread over the parts
        _write(root / name, samples[n::3])
    return root


BIOMASSTERS_FILES = tuple(f"geobench_biomassters.{i:04d}.part.tortilla" for i in range(3))


def write_regression_series(root: Path, months: int = 6, seed: int = 5) -> Path:
    """A pixel-wise regression set of two time series (geobenchv2's ``biomassters``): per sample
    `months` Sentinel-1 GeoTIFFs (VV and VH, ascending and descending; -9999 where no data),
    `months` Sentinel-2 GeoTIFFs (ten bands) and the above-ground biomass last, each file with
    its own ``modality`` and ``month``, not georeferenced, in three part files. Its dataset
    gives a series as (C, T, H, W) and takes no ``temporal_output_format``."""
    rng, work = np.random.default_rng(seed), _files(root)
    samples: list[tuple[str, list[tuple[Any, ...]], dict[str, Any]]] = []
    for i, split in enumerate(SPLITS):
        files: list[tuple[Any, ...]] = []
        for month in range(months):
            s1 = (rng.standard_normal((4, SIZE, SIZE)) * 4 - 12).astype(np.float32)
            s1[:, :2, :2] = -9999
            path = _tif(work / f"bm{i}_s1_{month}.tif", s1)
            files.append((f"c{i}_S1_{month}", path, "GTiff", {"modality": "S1", "month": month}))
        for month in range(months):
            s2 = rng.integers(0, 4000, (10, SIZE, SIZE)).astype(np.uint16)
            path = _tif(work / f"bm{i}_s2_{month}.tif", s2)
            files.append((f"c{i}_S2_{month}", path, "GTiff", {"modality": "S2", "month": month}))
        agb = _tif(work / f"bm{i}_agb.tif", (rng.random((1, SIZE, SIZE)) * 300).astype(np.float32))
        files.append((f"c{i}_AGBM", agb, "GTiff", {"modality": "AGBM", "month": -1}))
        samples.append((split, files, {}))
    for n, name in enumerate(BIOMASSTERS_FILES):  # each split's samples spread over the parts
        _write(root / name, samples[n::3], stac=False)
    return root
