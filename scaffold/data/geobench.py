"""GEO-Bench v1 datasets (``--geobench ROOT``) -> benchmark tasks on TerraTorch's own datamodules.

TerraTorch ships a datamodule for each GEO-Bench v1 dataset (the subclasses of its
``GeobenchDataModule``); each one's dataset class names its folder (``data_dir``, e.g.
``m-eurosat``) and its bands (``all_band_names``), and carries per-band means and stds. A folder
under ROOT with one of those names is that dataset; TerraTorch reads it as
``data_root/<data_dir>/``: ``{partition}_partition.json`` (``train``/``valid``/``test`` ids), one
``<id>.hdf5`` per sample (one dataset per band, in sorted key order; ``label`` for segmentation),
and the label files of its task.

The task type and the classes come from the dataset's files: a ``label`` array in the samples
(segmentation: classes up to the largest label value in the partition), a label file that maps
ids to 0/1 vectors (multilabel), one that maps classes to ids, or a class index pickled in each
sample's attributes (classification). One sample is read to check the bands and the size.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scaffold.errors import ScaffoldError

SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}  # TerraTorch's -> the file's
DEPTH = 3  # how deep under ROOT dataset folders are looked for (GEO-Bench: ROOT/<kind>_v1.0/m-*)
DEFAULT_PARTITION = "default"
GEOBENCH_FILE = "geobench.json"  # in DIR/.scaffold: the GEO-Bench surveys of the last generation


@dataclass(frozen=True)
class GeobenchTask:
    """What the survey of one GEO-Bench dataset folder found; round-trips through JSON.

    - `data_root`: the folder that holds `folder` (TerraTorch's ``data_root``);
    - `datamodule`: the class path of TerraTorch's datamodule for it;
    - `bands`: the dataset's bands, by TerraTorch's names (its ``all_band_names``);
    - `task`: ``classification``, ``multilabel_classification`` or ``segmentation``;
    - `split_sizes`: samples of (train, val, test) in `partition`;
    - `dtype` and `size` (height, width): of the sample read.
    """

    name: str
    data_root: str
    folder: str
    datamodule: str
    bands: tuple[str, ...]
    task: str
    num_classes: int
    partition: str
    split_sizes: tuple[int, int, int]
    dtype: str
    size: tuple[int, int]
    label_source: str

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeobenchTask:
        kwargs = dict(data)
        for key in ("bands", "split_sizes", "size"):
            kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class PlannedTask:
    """One GEO-Bench task as the benchmark runs it: the bands it reads (the model's that its
    dataset has, in the model's order; all of them without --bands) and the per-band forward
    arguments for those bands (`forward_args`, with where the values came from in
    `forward_source`)."""

    task: GeobenchTask
    bands: tuple[str, ...]
    forward_args: dict[str, Any]
    forward_source: str


@dataclass(frozen=True)
class Reader:
    """TerraTorch's datamodule for one GEO-Bench folder name, and its dataset class."""

    datamodule: str  # class path
    dataset: type


def readers() -> dict[str, Reader]:
    """Folder name -> TerraTorch's reader, found by rule: the subclasses of GeobenchDataModule
    in ``terratorch.datamodules``, each with the dataset class its module holds (the class
    with ``data_dir`` and ``all_band_names``)."""
    import inspect
    import sys

    import terratorch.datamodules as dms
    from terratorch.datamodules.geobench_data_module import GeobenchDataModule

    found: dict[str, Reader] = {}
    for name in sorted(dir(dms)):
        cls = getattr(dms, name)
        if not (inspect.isclass(cls) and issubclass(cls, GeobenchDataModule)):
            continue
        if cls is GeobenchDataModule:
            continue
        module = sys.modules[cls.__module__]
        datasets = [
            v
            for v in vars(module).values()
            if inspect.isclass(v) and hasattr(v, "data_dir") and hasattr(v, "all_band_names")
        ]
        if len(datasets) != 1:
            continue
        found[datasets[0].data_dir] = Reader(f"terratorch.datamodules.{name}", datasets[0])
    return found


def find_folders(root: Path, names: set[str]) -> list[Path]:
    """Folders under `root` (itself included, down to DEPTH levels) named as a GEO-Bench
    dataset, in path order."""
    found: list[Path] = []
    level = [root]
    for _ in range(DEPTH + 1):
        nxt: list[Path] = []
        for folder in level:
            if folder.name in names:
                found.append(folder)
                continue
            try:
                nxt.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
            except OSError:
                continue
        level = nxt
    return sorted(found)


def survey_geobench(
    root: str | Path, partition: str = DEFAULT_PARTITION, progress: Any = None
) -> tuple[GeobenchTask, ...]:
    """Every GEO-Bench v1 dataset under `root`, as a task; ScaffoldError (one line) for a ROOT
    with none or a malformed dataset folder."""
    given = str(root)
    root = Path(root).resolve()
    if not root.is_dir():
        raise ScaffoldError(f"--geobench {given}: no such directory")
    known = readers()
    folders = find_folders(root, set(known))
    if not folders:
        raise ScaffoldError(
            f"--geobench {given}: no GEO-Bench v1 dataset folder under it (TerraTorch reads "
            f"{', '.join(sorted(known))})"
        )
    tasks = []
    taken: set[str] = set()
    for folder in folders:
        if progress is not None:
            progress.print(f"surveying {folder}", highlight=False)
        task = survey_folder(folder, known[folder.name], partition, taken)
        taken.add(task.name)
        if progress is not None:
            progress.print(f"  {task.name}: {summary(task)}", highlight=False)
        tasks.append(task)
    return tuple(tasks)


def summary(task: GeobenchTask) -> str:
    sizes = ", ".join(f"{s} {n}" for s, n in zip(SPLIT_KEYS, task.split_sizes, strict=True))
    return (
        f"{task.task} ({task.num_classes} classes, {task.label_source}), "
        f"{len(task.bands)} bands {task.dtype} {task.size[0]}x{task.size[1]}, "
        f"partition {task.partition}: {sizes}"
    )


def _name(folder: Path, taken: set[str]) -> str:
    base = folder.name.lower().removeprefix("m-").replace("-", "_") or "geobench"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def survey_folder(
    folder: Path, reader: Reader, partition: str, taken: frozenset[str] | set[str] = frozenset()
) -> GeobenchTask:
    import h5py

    where = f"--geobench: {folder}"
    part_file = folder / f"{partition}_partition.json"
    if not part_file.is_file():
        have = sorted(
            p.name.removesuffix("_partition.json") for p in folder.glob("*_partition.json")
        )
        raise ScaffoldError(
            f"{where}: no {part_file.name}"
            + (f" (partitions there: {', '.join(have)}; --partition chooses one)" if have else "")
        )
    parts = _json(part_file, where)
    ids: dict[str, list[str]] = {}
    for split, key in SPLIT_KEYS.items():
        value = parts.get(key) if isinstance(parts, dict) else None
        if not isinstance(value, list) or not value:
            raise ScaffoldError(f"{where}: {part_file.name} has no {key!r} list of sample ids")
        ids[split] = [str(v) for v in value]
    every = [i for split in SPLIT_KEYS for i in ids[split]]
    missing = [i for i in every if not (folder / f"{i}.hdf5").is_file()]
    if missing:
        raise ScaffoldError(
            f"{where}: {len(missing)} sample(s) of {part_file.name} have no .hdf5 file "
            f"(first: {missing[0]}.hdf5)"
        )
    first = folder / f"{every[0]}.hdf5"
    bands = tuple(reader.dataset.all_band_names)
    try:
        with h5py.File(first, "r") as h5:
            keys = sorted(h5.keys())
            band_keys = [k for k in keys if "label" not in k]
            has_label_array = len(band_keys) < len(keys)
            if len(band_keys) != len(bands):
                raise ScaffoldError(
                    f"{where}: {first.name} holds {len(band_keys)} band arrays, TerraTorch's "
                    f"{reader.dataset.__name__} reads {len(bands)} ({', '.join(bands)})"
                )
            shapes = {tuple(h5[k].shape) for k in band_keys}
            dtype = str(h5[band_keys[0]].dtype)
    except OSError as exc:
        raise ScaffoldError(
            f"{where}: {first.name} is not an HDF5 file h5py can read ({exc})"
        ) from exc
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ScaffoldError(
            f"{where}: {first.name}: the band arrays are not one 2-D size ({sorted(shapes)})"
        )
    size = next(iter(shapes))
    if has_label_array:
        task, num_classes, source = (
            "segmentation",
            _mask_classes(folder, every, where),
            "label arrays",
        )
    else:
        task, num_classes, source = _class_labels(folder, reader, every, where)
    if num_classes < 2 and task != "multilabel_classification":
        raise ScaffoldError(f"{where}: the labels hold {num_classes} class; a task needs two")
    return GeobenchTask(
        name=_name(folder, set(taken)),
        data_root=str(folder.parent),
        folder=folder.name,
        datamodule=reader.datamodule,
        bands=bands,
        task=task,
        num_classes=num_classes,
        partition=partition,
        split_sizes=tuple(len(ids[s]) for s in SPLIT_KEYS),  # type: ignore[arg-type]
        dtype=dtype,
        size=(int(size[0]), int(size[1])),
        label_source=source,
    )


def _json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScaffoldError(f"{where}: {path.name} is not JSON ({exc})") from exc


def _mask_classes(folder: Path, ids: list[str], where: str) -> int:
    """Classes of a segmentation dataset: up to the largest label value in the partition."""
    import h5py
    import numpy as np

    top = -1
    for i in ids:
        with h5py.File(folder / f"{i}.hdf5", "r") as h5:
            labels = [k for k in h5 if "label" in k]
            for k in labels:
                values = np.asarray(h5[k])
                if values.size:
                    top = max(top, int(values.max()))
    if top < 0:
        raise ScaffoldError(f"{where}: the label arrays hold no value")
    return top + 1


class _Stub:
    """Stands in for any object of a class the label does not need (a band's metadata)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


# numpy's own reconstructors (a label may be a numpy integer), and how pickle's text
# protocol writes bytes: nothing else is imported.
_PLAIN = {
    ("_codecs", "encode"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class _LabelUnpickler(pickle.Unpickler):
    """Reads a sample's pickled attributes without importing or running any class of theirs
    (numpy's scalars and arrays aside): other objects become stubs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN:
            return super().find_class(module, name)
        return _Stub


def _pickled_label(path: Path, where: str) -> int:
    import h5py

    with h5py.File(path, "r") as h5:
        raw = h5.attrs.get("pickle")
    if raw is None:
        raise ScaffoldError(
            f"{where}: {path.name} has no label: no label array, no 'pickle' attribute, and "
            "no label file beside it"
        )
    try:
        # As TerraTorch reads it: the repr of the pickled bytes, as text.
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        value = ast.literal_eval(text)
        attrs = _LabelUnpickler(io.BytesIO(value)).load()
        return int(attrs["label"])
    except Exception as exc:
        raise ScaffoldError(
            f"{where}: {path.name}: its 'pickle' attribute holds no label ({exc})"
        ) from exc


def _class_labels(folder: Path, reader: Reader, ids: list[str], where: str) -> tuple[str, int, str]:
    label_file = getattr(reader.dataset, "label_map_file", None)
    if label_file is not None:
        path = folder / label_file
        if not path.is_file():
            raise ScaffoldError(f"{where}: no {label_file} (TerraTorch reads the labels there)")
        data = _json(path, where)
        if not isinstance(data, dict) or not data:
            raise ScaffoldError(f"{where}: {label_file} is not a mapping")
        values = list(data.values())
        if all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) for v in values):
            lengths = {len(v) for v in values}
            if len(lengths) != 1:
                raise ScaffoldError(
                    f"{where}: {label_file}: label vectors of lengths {sorted(lengths)}"
                )
            unlabelled = [i for i in ids if i not in data]
            if unlabelled:
                raise ScaffoldError(f"{where}: {label_file} has no labels for {unlabelled[0]}")
            return "multilabel_classification", lengths.pop(), f"0/1 vectors in {label_file}"
        if all(isinstance(v, list) for v in values):
            labelled = {str(i) for v in values for i in v}
            unlabelled = [i for i in ids if i not in labelled]
            if unlabelled:
                raise ScaffoldError(f"{where}: {label_file} has no class for {unlabelled[0]}")
            return "classification", len(data), f"class lists in {label_file}"
        raise ScaffoldError(f"{where}: {label_file} maps neither classes to ids nor ids to vectors")
    top = max(_pickled_label(folder / f"{i}.hdf5", where) for i in ids)
    return "classification", top + 1, "class index in each sample's attributes"


def write_tasks(state_dir: Path, tasks: tuple[GeobenchTask, ...]) -> None:
    """Record the surveys in DIR/.scaffold (none: the record goes)."""
    path = state_dir / GEOBENCH_FILE
    if not tasks:
        path.unlink(missing_ok=True)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([t.to_dict() for t in tasks], indent=2) + "\n", encoding="utf-8")
