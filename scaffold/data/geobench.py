"""GEO-Bench v1 datasets (``--geobench ROOT``) -> benchmark tasks on TerraTorch's own datamodules.

TerraTorch ships a datamodule for each GEO-Bench v1 dataset (the subclasses of its
``GeobenchDataModule``); each one's dataset class names its folder (``data_dir``, e.g.
``m-eurosat``) and its bands (``all_band_names``), and carries per-band means and stds. A folder
under ROOT with one of those names is that dataset; TerraTorch reads it as
``data_root/<data_dir>/``: ``{partition}_partition.json`` (``train``/``valid``/``test`` ids), one
``<id>.hdf5`` per sample (one dataset per band, in sorted key order; ``label`` for segmentation),
and the label files of its task.

The task type and the classes come from the dataset's files: a ``label`` array in the samples
(segmentation: classes up to the largest training label value; a "no label" value such as 255
set apart from them is the task's ignore_index), a label file that maps ids to 0/1 vectors
(multilabel), one that maps classes to ids, or a class index pickled in each sample's attributes
(classification).

Before anything reads a sample, every sample's pickled attributes are checked (`pickles`):
TerraTorch's readers unpickle them. Then every sample of the partition is read once, one at a
time, as the ``--data`` survey reads GeoTIFFs: the band arrays TerraTorch's reader indexes, one
size and data type, finite values, integral label values.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaffold.data.pickles import UnsafePickle, check_folder_pickles, load_attributes, refusal
from scaffold.errors import ScaffoldError, check_utf8_path

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
    - `dtype` and `size` (height, width): of the samples' bands (they all agree);
    - `ignore_index`: the label value that means "no label" (segmentation), if any.
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
    ignore_index: int | None = None  # a label value meaning "no label" (segmentation)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return data

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
    dataset: type[Any]  # a class of terratorch's, read for its attributes


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
    root: str | Path,
    partition: str = DEFAULT_PARTITION,
    progress: Any = None,
    taken: set[str] | frozenset[str] = frozenset(),
) -> tuple[GeobenchTask, ...]:
    """Every GEO-Bench v1 dataset under `root`, as a task named apart from the `taken` names
    (the ``--data`` tasks'); ScaffoldError (one line) for a ROOT with none or a malformed
    dataset folder."""
    given = str(root)
    root = Path(root).resolve()
    check_utf8_path("--geobench", root)  # the tasks name it in the YAML
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
    taken = set(taken)
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
    ignore = f", ignore value {task.ignore_index}" if task.ignore_index is not None else ""
    return (
        f"{task.task} ({task.num_classes} classes{ignore}, {task.label_source}), "
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
    bad = check_folder_pickles(folder)  # before anything else reads a sample
    if bad is not None:
        raise ScaffoldError(f"--geobench: {refusal(*bad)}")
    bands = tuple(reader.dataset.all_band_names)
    found = _scan(folder, reader, ids, where)
    ignore = None
    if found.label_values:
        task, source = "segmentation", "label arrays"
        num_classes, ignore = _mask_classes(found, set(ids["train"]), where)
    else:
        task, num_classes, source = _class_labels(folder, reader, every, found, where)
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
        dtype=found.dtype,
        size=found.size,
        label_source=source,
        ignore_index=ignore,
    )


@dataclass
class _Scan:
    """What reading every sample of a partition found (the survey's streaming pass)."""

    dtype: str = ""
    size: tuple[int, int] = (0, 0)
    label_values: dict[str, set[float]] = field(default_factory=dict)  # sample id -> values
    pickled: dict[str, Any] = field(default_factory=dict)  # sample id -> attribute dict


MAX_LABEL_VALUES = 1024  # more distinct values in label arrays than this: not classes


def _scan(folder: Path, reader: Reader, ids: dict[str, list[str]], where: str) -> _Scan:
    """Read each sample once, as TerraTorch's reader will: its band arrays (as many as the
    reader indexes, one 2-D size and data type in the whole partition, finite values), its label
    array (integral class values) or its pickled attributes (read safely: they were checked)."""
    import h5py
    import numpy as np

    bands = tuple(reader.dataset.all_band_names)
    found = _Scan()
    labelled: bool | None = None
    for sid in dict.fromkeys(i for split in SPLIT_KEYS for i in ids[split]):
        path = folder / f"{sid}.hdf5"
        name = str(path)
        try:
            with h5py.File(path, "r") as h5:
                keys = sorted(h5.keys())
                band_keys = [k for k in keys if "label" not in k]
                label_keys = [k for k in keys if "label" in k]
                if len(band_keys) != len(bands):
                    raise ScaffoldError(
                        f"{where}: {path.name} holds {len(band_keys)} band arrays, TerraTorch's "
                        f"{reader.dataset.__name__} reads {len(bands)} ({', '.join(bands)})"
                    )
                if labelled is not None and bool(label_keys) != labelled:
                    raise ScaffoldError(
                        f"--geobench: {name} {'has' if label_keys else 'has no'} label array, "
                        f"the partition's first sample {'has' if labelled else 'has none'}"
                    )
                labelled = bool(label_keys)
                for key in band_keys:
                    array = h5[key]
                    shape, dtype = tuple(array.shape), str(array.dtype)
                    if len(shape) != 2:
                        raise ScaffoldError(
                            f"--geobench: {name}: band {key} has shape {shape}; TerraTorch's "
                            "reader stacks 2-D bands"
                        )
                    if not found.dtype:
                        found.dtype, found.size = dtype, shape
                    if shape != found.size or dtype != found.dtype:
                        raise ScaffoldError(
                            f"--geobench: {name}: band {key} is {dtype} "
                            f"{'x'.join(map(str, shape))}, the partition's first band is "
                            f"{found.dtype} {'x'.join(map(str, found.size))} (TerraTorch's "
                            "reader stacks them: every band of every sample must agree)"
                        )
                    if np.issubdtype(array.dtype, np.floating):
                        values = np.asarray(array)
                        if not np.isfinite(values).all():
                            what = "NaN" if np.isnan(values).any() else "infinite values"
                            raise ScaffoldError(
                                f"--geobench: {name}: band {key} holds {what}; TerraTorch's "
                                "reader has no nodata replacement, so training would read them"
                            )
                for key in label_keys:
                    found.label_values[sid] = _label_values(h5[key], found.size, name, key)
                if not label_keys and getattr(reader.dataset, "label_map_file", None) is None:
                    raw = h5.attrs.get("pickle")
                    if raw is not None:
                        found.pickled[sid] = load_attributes(raw)
        except OSError as exc:
            raise ScaffoldError(
                f"--geobench: {name} is not an HDF5 file h5py can read ({exc})"
            ) from exc
        except (UnsafePickle, ValueError, SyntaxError, pickle.UnpicklingError) as exc:
            raise ScaffoldError(
                f"--geobench: {name}: its 'pickle' attribute is not GEO-Bench's attribute "
                f"pickle ({exc})"
            ) from exc
    found.size = (int(found.size[0]), int(found.size[1]))
    return found


def _label_values(array: Any, size: tuple[int, int], name: str, key: str) -> set[float]:
    """The distinct values of a label array (integral, finite, of the bands' size)."""
    import numpy as np

    values = np.asarray(array)
    if tuple(values.shape) != tuple(size):
        raise ScaffoldError(
            f"--geobench: {name}: label array {key} is {'x'.join(map(str, values.shape))}, "
            f"its bands are {'x'.join(map(str, size))}"
        )
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ScaffoldError(
                f"--geobench: {name}: label array {key} holds NaN or infinite values; a "
                "segmentation label is a class index per pixel"
            )
        if not np.all(np.floor(values) == values):
            raise ScaffoldError(
                f"--geobench: {name}: label array {key} holds fractional values; a "
                "segmentation label is a class index per pixel"
            )
    distinct = np.unique(values)
    if distinct.size > MAX_LABEL_VALUES:
        raise ScaffoldError(
            f"--geobench: {name}: label array {key} holds {distinct.size} distinct values: "
            "not classes"
        )
    return {float(v) for v in distinct}


def _json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScaffoldError(f"{where}: {path.name} is not JSON ({exc})") from exc


def _mask_classes(found: _Scan, train: set[str], where: str) -> tuple[int, int | None]:
    """(classes, ignore value) of a segmentation, as the ``--data`` survey finds them: a
    "no label" value (a negative one, or 255 or 65535 set apart from the rest) is the task's
    ignore_index, not a class; the classes go up to the largest training value; any other
    value beyond them is refused, naming the sample."""
    from scaffold.data.survey import no_label_value

    every: set[float] = set().union(*found.label_values.values())
    ignore = no_label_value(every)
    classes = sorted(
        {int(v) for sid in train for v in found.label_values.get(sid, ()) if int(v) != ignore}
    )
    if not classes:
        raise ScaffoldError(f"{where}: the training label arrays hold no class value")
    num_classes = classes[-1] + 1
    for sid, values in found.label_values.items():
        outside = sorted(int(v) for v in values if int(v) != ignore and not 0 <= v < num_classes)
        if outside:
            raise ScaffoldError(
                f"{where}: {sid}.hdf5: label value(s) {outside} outside the classes "
                f"0..{num_classes - 1} of the training labels"
                + (f" (ignore value {ignore})" if ignore is not None else "")
            )
    return num_classes, ignore


def _pickled_label(sid: str, found: _Scan, where: str) -> int:
    attrs = found.pickled.get(sid)
    if attrs is None:
        raise ScaffoldError(
            f"{where}: {sid}.hdf5 has no label: no label array, no 'pickle' attribute, and "
            "no label file beside it"
        )
    label = attrs.get("label") if isinstance(attrs, dict) else None
    try:
        value = float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value.is_integer() and value >= 0):
        raise ScaffoldError(
            f"{where}: {sid}.hdf5: its 'pickle' attribute holds no class index (label: {label!r})"
        )
    return int(value)


def _class_labels(
    folder: Path, reader: Reader, ids: list[str], found: _Scan, where: str
) -> tuple[str, int, str]:
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
            odd = next((i for i in ids if any(x not in (0, 1) for x in data[i])), None)
            if odd is not None:
                raise ScaffoldError(
                    f"{where}: {label_file}: the labels of {odd} are not 0/1 ({data[odd]})"
                )
            return "multilabel_classification", lengths.pop(), f"0/1 vectors in {label_file}"
        if all(isinstance(v, list) for v in values):
            labelled = {str(i) for v in values for i in v}
            unlabelled = [i for i in ids if i not in labelled]
            if unlabelled:
                raise ScaffoldError(f"{where}: {label_file} has no class for {unlabelled[0]}")
            return "classification", len(data), f"class lists in {label_file}"
        raise ScaffoldError(f"{where}: {label_file} maps neither classes to ids nor ids to vectors")
    top = max(_pickled_label(i, found, where) for i in ids)
    return "classification", top + 1, "class index in each sample's attributes"


def write_tasks(state_dir: Path, tasks: tuple[GeobenchTask, ...]) -> None:
    """Record the surveys in DIR/.scaffold (none: the record goes)."""
    path = state_dir / GEOBENCH_FILE
    if not tasks:
        path.unlink(missing_ok=True)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([t.to_dict() for t in tasks], indent=2) + "\n", encoding="utf-8")
