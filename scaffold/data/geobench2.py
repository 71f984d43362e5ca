"""GEO-Bench-2 datasets (``--geobench2 ROOT``) -> benchmark tasks on geobenchv2's own datamodules.

The ``geobenchv2`` package (an optional extra) ships a Lightning datamodule per dataset, one module
each under ``geobench_v2.datamodules``, named as the GEO-Bench-2 leaderboard names the dataset
(``burn_scars``, ``pastis``, ...). Each module holds the datamodule and the dataset class it reads
with; the dataset class names its files (``paths``: ``.tortilla`` files that ``tacoreader``
reads), its bands per modality (``dataset_band_config``), its classes and the per-band statistics
it normalises with (``normalization_stats``). A folder under ROOT that holds every file of a
dataset is that dataset (the package's own download puts them in ``root``).

The task type follows the datamodule's base class (classification, segmentation, detection) and
the dataset's own attributes: ``multilabel``, and no ``classes`` on a pixel-wise dataset
(regression). Detection and panoptic datasets are left out, with the reason. The split sizes come
from the files' metadata (``tortilla:data_split``); no sample is read here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scaffold.data.bands import canonical
from scaffold.data.suites import GEOBENCH2_DIMENSIONS, LEADERBOARD_METRICS
from scaffold.errors import ScaffoldError, check_utf8_path

EXTRA = "pip install 'scaffold-backbone[geobench2]'"
DEPTH = 2  # how deep under ROOT the dataset files are looked for
SPLITS = ("train", "validation", "test")  # the files' split names
DEFAULT_DIMENSION = "Core"
GEOBENCH2_FILE = "geobench2.json"  # in DIR/.scaffold: the surveys of the last generation


@dataclass(frozen=True)
class Reader:
    """geobenchv2's datamodule for one dataset, its dataset class and the task kind."""

    name: str  # the module's name: the leaderboard's dataset name
    datamodule: str  # class path
    dataset: Any  # geobenchv2's dataset class (untyped)
    kind: str  # "classification", "segmentation" or "detection"


@dataclass(frozen=True)
class Geobench2Task:
    """What the survey of one GEO-Bench-2 dataset found; round-trips through JSON.

    - `root`: the folder holding the dataset's files (the datamodule's ``root``);
    - `modalities`: (modality, bands) in the dataset's order, bands by the dataset's own names
      (a one-modality dataset's modality is ``""``); `band_names`: the same bands by
      TerraTorch's names where they have one (``B02`` -> ``BLUE``), else upper-cased;
    - `frames`: the dataset takes ``num_time_steps`` (a time series per sample), else None;
    - `means`/`stds`: the dataset's own statistics, by its band names (its normaliser's).
    """

    name: str
    root: str
    files: tuple[str, ...]
    datamodule: str
    task: str
    num_classes: int | None
    modalities: tuple[tuple[str, tuple[str, ...]], ...]
    band_names: tuple[tuple[str, ...], ...]
    split_sizes: tuple[int, int, int]
    time_series: bool
    means: dict[str, float]
    stds: dict[str, float]
    # the dataset takes ``temporal_output_format`` (it can give time second itself)
    time_format_arg: bool = False

    @property
    def leaderboard_metric(self) -> str:
        return LEADERBOARD_METRICS[self.task][0]

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geobench2Task:
        kwargs = dict(data)
        kwargs["modalities"] = tuple((m, tuple(b)) for m, b in kwargs["modalities"])
        kwargs["band_names"] = tuple(tuple(b) for b in kwargs["band_names"])
        kwargs["split_sizes"] = tuple(kwargs["split_sizes"])
        kwargs["files"] = tuple(kwargs["files"])
        return cls(**kwargs)


@dataclass(frozen=True)
class Planned2:
    """One GEO-Bench-2 task as the benchmark runs it.

    - `band_order`: what the datamodule is asked for, by the dataset's band names (a list for a
      one-modality dataset, else a dict by modality);
    - `bands`: the same bands by the model's names, in the order the model receives them;
    - `modalities`: dataset modality -> the model's modality, for a model fed a dict (else {});
    - `dataset_args`: more arguments of the dataset (``num_time_steps``, ...); `time_first`:
      the adapter puts time second;
    - `forward_args`/`forward_source`: per-band forward arguments of `bands`.
    """

    task: Geobench2Task
    band_order: list[str] | dict[str, list[str]]
    bands: tuple[str, ...]
    modalities: dict[str, str]
    dataset_args: dict[str, Any]
    time_first: bool
    forward_args: dict[str, Any]
    forward_source: str


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def require() -> None:
    """ScaffoldError (one line, naming the extra) when geobenchv2 is not installed."""
    try:
        import geobench_v2  # noqa: F401
        import tacoreader  # noqa: F401
    except ImportError as exc:
        raise ScaffoldError(
            f"--geobench2 reads GEO-Bench-2 through the geobenchv2 package, which is not "
            f"installed ({exc.name}): {EXTRA}"
        ) from exc


def readers() -> dict[str, Reader]:
    """Dataset name -> geobenchv2's reader, found by rule: each module of
    ``geobench_v2.datamodules`` with one datamodule class defined there and one dataset class
    (a ``GeoBenchBaseDataset`` with ``paths``) that it reads."""
    import importlib
    import inspect
    import pkgutil

    import geobench_v2.datamodules as dms
    from geobench_v2.datamodules import base
    from geobench_v2.datasets.base import GeoBenchBaseDataset

    found: dict[str, Reader] = {}
    for info in pkgutil.iter_modules(dms.__path__):
        module = importlib.import_module(f"{dms.__name__}.{info.name}")
        classes = [
            v
            for v in vars(module).values()
            if inspect.isclass(v)
            and issubclass(v, base.GeoBenchDataModule)
            and v.__module__ == module.__name__
        ]
        datasets = [
            v
            for v in vars(module).values()
            if inspect.isclass(v)
            and issubclass(v, GeoBenchBaseDataset)
            and getattr(v, "paths", None)
        ]
        if len(classes) != 1 or len(datasets) != 1:
            continue
        cls = classes[0]
        if issubclass(cls, base.GeoBenchObjectDetectionDataModule):
            kind = "detection"
        elif issubclass(cls, base.GeoBenchClassificationDataModule):
            kind = "classification"
        else:
            kind = "segmentation"
        path = f"{dms.__name__}.{cls.__name__}"
        found[info.name] = Reader(info.name, path, datasets[0], kind)
    return found


def model_name(band: str, aliases: tuple[str, ...] = ()) -> str:
    """A dataset band's name as the model's bands are named: TerraTorch's name when the band or
    one of its aliases has one (``B8A`` -> ``NIR_NARROW``), else the band upper-cased."""
    for name in (band, *aliases):
        found = canonical(name)
        if found is not None:
            return found
    return band.strip().upper().replace(" ", "_").replace("-", "_")


def dataset_modalities(dataset: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(modality, bands) of a dataset class, in its own order; one modality is named ``""``."""
    config = dataset.dataset_band_config
    order = config.default_order
    if isinstance(order, dict):
        return tuple((m, tuple(b)) for m, b in order.items())
    return (("", tuple(order)),)


def _band_names(dataset: Any, modalities) -> tuple[tuple[str, ...], ...]:
    config = dataset.dataset_band_config
    out = []
    for modality, bands in modalities:
        mod_config = config.modalities["self" if modality == "" else modality]
        out.append(
            tuple(
                model_name(b, tuple(getattr(mod_config.bands.get(b), "aliases", ()) or ()))
                for b in bands
            )
        )
    return tuple(out)


def _statistics(dataset: Any) -> tuple[dict[str, float], dict[str, float]]:
    """The dataset's per-band means and stds (by its band names), as its normaliser reads them;
    empty when they are not kept per band."""
    stats = getattr(dataset, "normalization_stats", None) or {}
    means, stds = stats.get("means"), stats.get("stds")
    if not isinstance(means, dict) or not isinstance(stds, dict):
        return {}, {}
    flat = [v for v in (*means.values(), *stds.values()) if not isinstance(v, (int, float))]
    if flat:
        return {}, {}
    return {k: float(v) for k, v in means.items()}, {k: float(v) for k, v in stds.items()}


def find_root(root: Path, files: list[str]) -> Path | None:
    """The first folder under `root` (itself included, down to DEPTH levels) holding every one
    of `files`."""
    level = [root]
    for _ in range(DEPTH + 1):
        nxt: list[Path] = []
        for folder in level:
            if all((folder / f).is_file() for f in files):
                return folder
            try:
                nxt.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
            except OSError:
                continue
        level = nxt
    return None


def parse_datasets(text: str | None) -> tuple[str, ...]:
    """``--datasets a,b`` -> names (lower case), in order, once each."""
    if text is None:
        return ()
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise ScaffoldError("--datasets: no dataset names given (e.g. --datasets burn_scars)")
    return names


def survey_geobench2(
    root: str | Path, names: tuple[str, ...] = (), progress: Any = None
) -> tuple[tuple[Geobench2Task, ...], tuple[Skipped, ...]]:
    """The GEO-Bench-2 datasets under `root` as tasks: those `names` (``--datasets``), by default
    the leaderboard's Core datasets that ROOT holds; and those left out, with the reason."""
    require()
    given = str(root)
    root = Path(root).resolve()
    check_utf8_path("--geobench2", root)
    if not root.is_dir():
        raise ScaffoldError(f"--geobench2 {given}: no such directory")
    known = readers()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ScaffoldError(
            f"--datasets: {', '.join(unknown)}: not a geobenchv2 dataset (it reads "
            f"{', '.join(sorted(known))})"
        )
    wanted = names or tuple(n for n in GEOBENCH2_DIMENSIONS[DEFAULT_DIMENSION] if n in known)
    tasks: list[Geobench2Task] = []
    skipped: list[Skipped] = []
    for name in wanted:
        reader = known[name]
        folder = find_root(root, list(reader.dataset.paths))
        if folder is None:
            if names:  # asked for by name: missing is an error
                raise ScaffoldError(
                    f"--geobench2 {given}: no {', '.join(reader.dataset.paths)} under it "
                    f"(the files of {name})"
                )
            continue
        if reader.kind == "detection":
            skipped.append(
                Skipped(name, "object detection / instance segmentation: no TerraTorch task here")
            )
            continue
        tasks.append(survey_dataset(folder, reader))
    if not tasks and not skipped:
        raise ScaffoldError(
            f"--geobench2 {given}: no GEO-Bench-2 dataset files under it (looked for "
            f"{', '.join(wanted)}; --datasets chooses others)"
        )
    if progress is not None:
        for task in tasks:
            progress.print(f"  {task.name}: {summary(task)}", highlight=False)
        for s in skipped:
            progress.print(f"  {s.name}: left out: {s.reason}", highlight=False)
    return tuple(tasks), tuple(skipped)


def survey_dataset(folder: Path, reader: Reader) -> Geobench2Task:
    """One dataset's task: its type and classes from its classes, its splits from its files'
    metadata (each split must hold samples)."""
    import inspect

    import tacoreader

    dataset = reader.dataset
    where = f"--geobench2: {folder}"
    try:
        frame = tacoreader.load([str(folder / f) for f in dataset.paths])
        column = frame["tortilla:data_split"]
    except Exception as exc:  # tacoreader raises whatever its parsers raise
        raise ScaffoldError(
            f"{where}: {', '.join(dataset.paths)} is not a tortilla file tacoreader can read "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    sizes = tuple(int((column == s).sum()) for s in SPLITS)
    empty = [s for s, n in zip(SPLITS, sizes, strict=True) if n == 0]
    if empty:
        raise ScaffoldError(f"{where}: no {'/'.join(empty)} samples in {dataset.paths[0]}")
    classes = getattr(dataset, "classes", None)
    if reader.kind == "classification":
        task = (
            "multilabel_classification"
            if getattr(dataset, "multilabel", False)
            else ("classification")
        )
    else:
        task = "segmentation" if classes else "regression"
    num_classes = int(getattr(dataset, "num_classes", 0) or len(classes or ())) or None
    modalities = dataset_modalities(dataset)
    means, stds = _statistics(dataset)
    params = inspect.signature(dataset).parameters
    return Geobench2Task(
        name=reader.name,
        root=str(folder),
        files=tuple(dataset.paths),
        datamodule=reader.datamodule,
        task=task,
        num_classes=num_classes if task != "regression" else None,
        modalities=modalities,
        band_names=_band_names(dataset, modalities),
        split_sizes=sizes,  # type: ignore[arg-type]
        time_series="num_time_steps" in params,
        time_format_arg="temporal_output_format" in params,
        means=means,
        stds=stds,
    )


def summary(task: Geobench2Task) -> str:
    sizes = ", ".join(
        f"{s} {n}" for s, n in zip(("train", "val", "test"), task.split_sizes, strict=True)
    )
    what = f"{task.num_classes} classes" if task.num_classes else "pixel-wise values"
    mods = "; ".join(f"{m + ': ' if m else ''}{', '.join(b)}" for m, b in task.modalities)
    series = ", time series" if task.time_series else ""
    return (
        f"{task.task} ({what}, leaderboard metric {task.leaderboard_metric}), bands {mods}"
        f"{series}: {sizes}"
    )


def write_tasks(state_dir: Path, tasks: tuple[Geobench2Task, ...]) -> None:
    """Record the surveys in DIR/.scaffold (none: the record goes)."""
    path = state_dir / GEOBENCH2_FILE
    if not tasks:
        path.unlink(missing_ok=True)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([t.to_dict() for t in tasks], indent=2) + "\n", encoding="utf-8")
