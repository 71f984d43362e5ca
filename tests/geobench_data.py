"""Tiny GEO-Bench v1 datasets in GEO-Bench's on-disk layout, written with h5py.

``root/<data_dir>/``: ``default_partition.json`` (train/valid/test ids), one ``<id>.hdf5`` per
sample whose datasets are the bands (named so that their sorted order is the dataset's band
order, as GEO-Bench's are) plus ``label`` for segmentation, and the label file each reader
wants: ``label_map.json`` (class -> ids), ``label_stats.json`` (id -> 0/1 vector) or a class
index pickled in the sample's attributes.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")


def write_geobench(
    root: Path,
    folder: str,
    bands: Sequence[str],
    labels: str,
    num_classes: int = 3,
    per_split: int = 4,
    size: int = 32,
    dtype: type = np.float32,
    seed: int = 0,
) -> Path:
    """One dataset under `root`; `labels`: ``map`` (label_map.json), ``stats`` (label_stats.json,
    multilabel), ``pickle`` (each sample's attrs) or ``mask`` (a label array: segmentation).
    Every class (or label) occurs in every split."""
    rng = np.random.default_rng(seed)
    where = root / folder
    where.mkdir(parents=True, exist_ok=True)
    import h5py

    partition: dict[str, list[str]] = {}
    label_map: dict[str, list[str]] = {f"class_{k}": [] for k in range(num_classes)}
    label_stats: dict[str, list[int]] = {}
    for split in SPLITS:
        ids = [f"{split}_{i:03d}" for i in range(per_split)]
        partition[split] = ids
        for i, sid in enumerate(ids):
            klass = i % num_classes
            levels = (np.arange(len(bands)) + 1) * 100.0
            image = levels[:, None, None] + rng.normal(0, 20, (len(bands), size, size))
            with h5py.File(where / f"{sid}.hdf5", "w") as h5:
                for b, name in enumerate(bands):
                    h5.create_dataset(f"{b:02d}_{name}", data=image[b].astype(dtype))
                if labels == "mask":
                    mask = (np.arange(size * size).reshape(size, size) + i) % num_classes
                    h5.create_dataset("label", data=mask.astype(np.int64))
                elif labels == "pickle":
                    h5.attrs["pickle"] = str(pickle.dumps({"label": klass}))
            label_map[f"class_{klass}"].append(sid)
            vector = [0] * num_classes
            vector[klass] = 1
            vector[(klass + 1) % num_classes] = 1
            label_stats[sid] = vector
    (where / "default_partition.json").write_text(json.dumps(partition))
    if labels == "map":
        (where / "label_map.json").write_text(json.dumps(label_map))
    elif labels == "stats":
        (where / "label_stats.json").write_text(json.dumps(label_stats))
    return where


def all_bands(folder: str) -> tuple[str, ...]:
    """TerraTorch's band names for the dataset folder `folder`."""
    from scaffold.data.geobench import readers

    return tuple(readers()[folder].dataset.all_band_names)


def write_suite(root: Path) -> Path:
    """A classification, a multilabel (int16, as BigEarthNet's), a segmentation and an
    RGB-only dataset."""
    write_geobench(root, "m-eurosat", all_bands("m-eurosat"), "map", num_classes=3, seed=1)
    write_geobench(
        root, "m-bigearthnet", all_bands("m-bigearthnet"), "stats", num_classes=4,
        dtype=np.int16, seed=2,
    )  # fmt: skip
    write_geobench(root, "m-chesapeake", all_bands("m-chesapeake"), "mask", num_classes=3, seed=3)
    write_geobench(root, "m-pv4ger", all_bands("m-pv4ger"), "pickle", num_classes=2, seed=4)
    return root
