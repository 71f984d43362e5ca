"""Benchmark tasks from dataset specs: the YAML's task entries, split files and search settings.

Rendering calls `data_sections` when the person gave ``--data`` or ``--geobench``; everything a
task needs comes from its DatasetSpec (or GEO-Bench PlannedTask) and the backbone's spec (bands,
frames, whether in_chans can be set).

With ``--bands`` (the model's input bands, in order, by name) a task reads the model's bands
that its dataset has, in the model's order: a ``--data`` task whose GeoTIFF band descriptions
are band names through the generic datamodules' ``dataset_bands``/``output_bands`` (with those
bands' statistics), a GEO-Bench task through its datamodule's ``bands``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from scaffold.data.bands import describe, per_band_args, task_bands
from scaffold.data.geobench import PlannedTask, summary
from scaffold.data.geobench2 import Planned2
from scaffold.data.spec import SPLITS, DatasetSpec
from scaffold.errors import ScaffoldError
from scaffold.render import geobench2 as gb2
from scaffold.render.dump import dump
from scaffold.render.task_kinds import benchmark_task, terratorch_task
from scaffold.spec import BackboneSpec
from scaffold.write.names import SPLITS_DIR

BATCH_SIZE = 8
MAX_EPOCHS = 50
N_TRIALS = 10
NUM_WORKERS = 4
NO_DATA_REPLACE = 0.0  # what image nodata/NaN pixels read as (before normalisation)
DEFAULT_IGNORE = -1  # TerraTorch's cross entropy needs an integer ignore_index

# The metric TerraTorch logs for each task type, and which way is better.
METRICS: dict[str, tuple[str, str]] = {
    "segmentation": ("val/mIoU", "max"),
    "classification": ("val/Accuracy", "max"),
    "regression": ("val/RMSE", "min"),
    "multilabel_classification": ("val/Multilabel_Accuracy", "max"),
}
DATAMODULES = {
    "segmentation": "terratorch.datamodules.GenericNonGeoSegmentationDataModule",
    "classification": "terratorch.datamodules.GenericNonGeoClassificationDataModule",
    "regression": "terratorch.datamodules.GenericNonGeoPixelwiseRegressionDataModule",
}


def input_layout(
    ds: DatasetSpec, spec: BackboneSpec, bands: Sequence[str] = ()
) -> tuple[int, int | None]:
    """(channels, frames) the data gives the model; ScaffoldError when the model cannot take them.

    A temporal model reads each file's bands as frames x channels, time-major (as TerraTorch's
    ``expand_temporal_dimension`` does), with the model's number of frames. With `bands` (the
    model's, by name) a dataset with named bands gives the model's bands it has.
    """
    frames = spec.num_frames
    if frames:
        if ds.task == "classification":
            raise ScaffoldError(
                f"--data {ds.root}: TerraTorch's classification datamodule cannot read "
                f"multitemporal images, and {spec.qualname} takes (C, T, H, W) input"
            )
        if ds.bands % frames:
            raise ScaffoldError(
                f"--data {ds.root}: {ds.bands} bands per file do not divide into the "
                f"{frames} frames {spec.qualname} takes (a stack is frames x channels bands)"
            )
        channels = ds.bands // frames
    else:
        channels = len(selected_bands(ds, spec, bands)) or ds.bands
    if spec.in_chans_arg is None and channels != spec.in_chans:
        raise ScaffoldError(
            f"--data {ds.root}: the data has {channels} band(s), {spec.qualname} takes "
            f"{spec.in_chans} input channels and has no in_chans-like parameter to change that"
        )
    return channels, frames


def selected_bands(ds: DatasetSpec, spec: BackboneSpec, bands: Sequence[str]) -> tuple[str, ...]:
    """The bands a ``--data`` task reads (``()``: all, by position). A multitemporal model reads
    its stack by position; a dataset with none of the model's bands is refused."""
    if not bands or not ds.band_names or spec.num_frames:
        return ()
    chosen = task_bands(bands, ds.band_names)
    if not chosen:
        raise ScaffoldError(
            f"--data {ds.root}: its bands ({', '.join(ds.band_names)}) include none of "
            f"--bands {','.join(bands)}"
        )
    return chosen


def split_file(ds: DatasetSpec, split: str) -> str:
    return f"{SPLITS_DIR}/{ds.name}/{split}.txt"


def uses_split_files(ds: DatasetSpec) -> bool:
    return any(s.needs_split_file for s in ds.splits)


def split_files(datasets: tuple[DatasetSpec, ...], header: str) -> dict[str, str]:
    """Split files to write beside the YAML: relative path -> text.

    Each lists the exact file names (images and labels) of one split; the YAML reads them with
    ``allow_substring_split_file: false``, so ``s1`` never picks ``s10`` too.
    """
    files: dict[str, str] = {}
    for ds in datasets:
        if not uses_split_files(ds):
            continue
        for split in SPLITS:
            s = ds.split(split)
            names = [p.rsplit("/", 1)[-1] for p in (*s.images, *s.labels)]
            files[split_file(ds, split)] = header + "\n" + "\n".join(names) + "\n"
    return files


def _per_channel(ds: DatasetSpec, channels: int, frames: int | None) -> tuple[list, list]:
    """Band statistics per model channel: a time-major stack pools each channel's frames."""
    means, stds = list(ds.means), list(ds.stds)
    if not frames or frames == 1:
        return [_round(m) for m in means], [_round(s) for s in stds]
    out_m, out_s = [], []
    for c in range(channels):
        idx = [t * channels + c for t in range(frames)]
        m = sum(means[i] for i in idx) / frames
        second = sum(stds[i] ** 2 + means[i] ** 2 for i in idx) / frames
        out_m.append(_round(m))
        out_s.append(_round(max(second - m * m, 0.0) ** 0.5))
    return out_m, out_s


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def datamodule(ds: DatasetSpec, channels: int, frames: int | None) -> dict[str, Any]:
    train = ds.split("train")
    args: dict[str, Any] = {
        "batch_size": min(BATCH_SIZE, len(train.images)),
        "num_workers": NUM_WORKERS,
    }
    if ds.num_classes is not None:
        args["num_classes"] = ds.num_classes
    for split in SPLITS:
        s = ds.split(split)
        args[f"{split}_data_root"] = s.image_root
        if s.label_root is not None:
            args[f"{split}_label_data_root"] = s.label_root
    if ds.img_grep is not None:
        args["img_grep"] = ds.img_grep
        args["label_grep"] = ds.label_grep
    if uses_split_files(ds):
        for split in SPLITS:
            args[f"{split}_split"] = split_file(ds, split)  # relative to the output folder
        args["allow_substring_split_file"] = False
        args["ignore_split_file_extensions"] = True
    means, stds = _per_channel(ds, channels, frames)
    args["means"], args["stds"] = means, stds
    if ds.nodata is not None or ds.has_nan:
        args["no_data_replace"] = NO_DATA_REPLACE
    if ds.task == "segmentation":
        args["no_label_replace"] = (
            ds.ignore_index if ds.ignore_index is not None else DEFAULT_IGNORE
        )
    elif ds.task == "regression" and ds.ignore_index is not None:
        args["no_label_replace"] = ds.ignore_index
    if frames:
        bands = list(range(channels))
        args |= {"expand_temporal_dimension": True, "dataset_bands": bands, "output_bands": bands}
    return {"class_path": DATAMODULES[ds.task], "init_args": args}


def task_entry(ds: DatasetSpec, spec: BackboneSpec, bands: Sequence[str] = ()) -> dict[str, Any]:
    channels, frames = input_layout(ds, spec, bands)
    metric, direction = METRICS[ds.task]
    ignore = ds.ignore_index
    if ds.task == "segmentation" and ignore is None:
        ignore = DEFAULT_IGNORE
    classes = ds.num_classes if ds.task != "regression" else None
    task = terratorch_task(ds.task, {"backbone_in_chans": channels}, classes, ignore)
    entry = benchmark_task(
        ds.name, ds.task, metric, direction, task, datamodule(ds, channels, frames)
    )
    return _with_bands(entry, ds, spec, bands)


def _with_bands(
    entry: dict[str, Any], ds: DatasetSpec, spec: BackboneSpec, bands: Sequence[str]
) -> dict[str, Any]:
    """The task `entry` reading the model's bands of `ds` by name (unchanged without them)."""
    chosen = selected_bands(ds, spec, bands)
    if not chosen:
        return entry
    args = entry["datamodule"]["init_args"]
    index = [ds.band_names.index(b) for b in chosen]
    args["dataset_bands"] = list(ds.band_names)
    args["output_bands"] = list(chosen)
    args["means"] = [args["means"][i] for i in index]
    args["stds"] = [args["stds"][i] for i in index]
    model_args = entry["terratorch_task"]["model_args"]
    model_args["backbone_in_chans"] = len(chosen)
    model_args["backbone_bands"] = list(chosen)
    forward, _ = per_band_args(spec.forward_call, bands, chosen)
    if forward:
        model_args["backbone_forward_args"] = forward
    return entry


def task_comment(ds: DatasetSpec) -> str:
    """One comment line per task: where it came from and what the survey found."""
    split_sizes = ", ".join(f"{s.name} {len(s.images)}" for s in ds.splits)
    what = f"{ds.num_classes} classes" if ds.num_classes is not None else "pixel-wise regression"
    ignore = f", ignore value {ds.ignore_index}" if ds.ignore_index is not None else ""
    stats = (
        f"statistics from {ds.pixels_used} of {ds.pixels_total} training pixels"
        if ds.pixels_used < ds.pixels_total
        else "statistics from every training pixel"
    )
    lines = [
        f"{ds.name}: surveyed from {ds.root} ({ds.layout}, {ds.pairing}; {split_sizes});",
        f"{ds.bands} bands {ds.dtype} {ds.size[0]}x{ds.size[1]}; {what}{ignore}; {stats}.",
        *[f"{note}." for note in ds.notes],
    ]
    return "\n".join(f"# {line}" for line in lines)


def bands_comment(
    ds: DatasetSpec, spec: BackboneSpec, bands: Sequence[str], pretrained: bool
) -> str:
    """The bands a ``--data`` task reads by name (and, with weights, where its first layer
    comes from); empty when it reads its bands by position."""
    chosen = selected_bands(ds, spec, bands)
    if not chosen:
        return ""
    line = f"# bands: {', '.join(chosen)} (the model's bands, by the files' band descriptions)."
    if pretrained:
        line += f"\n# first layer {describe(chosen, [])}."
    return line


# -- GEO-Bench tasks (scaffold.data.geobench) on TerraTorch's own datamodules ----------------------
# A reader that hands integer arrays on unconverted fails in the datamodule's Normalize:
# these transforms make every image float32 (values unchanged), then a tensor.
TO_FLOAT = [
    {"class_path": "albumentations.ToFloat", "init_args": {"max_value": 1}},
    {"class_path": "albumentations.pytorch.ToTensorV2"},
]
# Task comments stay within the generated files' 88 columns (their indent and "# " included).
COMMENT_WIDTH = 82


def geobench_datamodule(p: PlannedTask) -> dict[str, Any]:
    task = p.task
    args: dict[str, Any] = {
        "data_root": task.data_root,
        "partition": task.partition,
        "bands": list(p.bands),
        "batch_size": min(BATCH_SIZE, task.split_sizes[0]),
        "num_workers": NUM_WORKERS,
    }
    if not task.dtype.startswith("float"):
        for split in SPLITS:
            args[f"{split}_transform"] = TO_FLOAT
    return {"class_path": task.datamodule, "init_args": args}


def geobench_entry(p: PlannedTask, model_bands: Sequence[str]) -> dict[str, Any]:
    task = p.task
    metric, direction = METRICS[task.task]
    model_args: dict[str, Any] = {"backbone_in_chans": len(p.bands)}
    if model_bands:
        model_args["backbone_bands"] = list(p.bands)
    if p.forward_args:
        model_args["backbone_forward_args"] = p.forward_args
    ignore = None
    if task.task == "segmentation":
        ignore = task.ignore_index if task.ignore_index is not None else DEFAULT_IGNORE
    settings = terratorch_task(task.task, model_args, task.num_classes, ignore)
    return benchmark_task(task.name, task.task, metric, direction, settings, geobench_datamodule(p))


def geobench_comment(p: PlannedTask, model_bands: Sequence[str], pretrained: bool) -> str:
    """Comment lines of a GEO-Bench task: the dataset, its labels, the bands it reads and, with
    weights, which of the first layer's bands the checkpoint gives and which are new."""
    task = p.task
    lines = [
        (
            f"{task.name}: GEO-Bench {task.folder} under {task.data_root}, read by "
            f"{task.datamodule.rsplit('.', 1)[-1]};"
        ),
        f"{summary(task)}.",
    ]
    if model_bands:
        lines.append(f"bands: {', '.join(p.bands)} (the model's bands this dataset has).")
        if pretrained:
            new = [b for b in p.bands if b not in model_bands]
            loaded = [b for b in p.bands if b in model_bands]
            lines.append(f"first layer {describe(loaded, new)}.")
    if p.forward_source:
        lines.append(f"forward args per band: {p.forward_source}.")
    wrapped = [w for line in lines for w in textwrap.wrap(line, COMMENT_WIDTH)]
    return "\n".join(f"# {line}" for line in wrapped)


def data_sections(
    datasets: tuple[DatasetSpec, ...],
    spec: BackboneSpec,
    terratorch_task: dict[str, Any],
    geobench: tuple[PlannedTask, ...] = (),
    bands: Sequence[str] = (),
    pretrained: bool = False,
    geobench2: tuple[Planned2, ...] = (),
) -> dict[str, str]:
    """YAML text for a benchmark of real tasks, in place of the template's smoke sections.

    The defaults keep only what every task shares (factory, optimizer, the backbone); each task
    brings its decoder, classes and the data's channels.
    """
    shared = {"backbone", "backbone_pretrained", "backbone_forward_args"}
    defaults = {
        **terratorch_task,
        "model_args": {k: v for k, v in terratorch_task["model_args"].items() if k in shared},
    }
    tasks = [
        "\n".join(filter(None, [task_comment(ds), bands_comment(ds, spec, bands, pretrained)]))
        + "\n"
        + _item(dump(task_entry(ds, spec, bands)))
        for ds in datasets
    ]
    tasks += [
        geobench_comment(p, bands, pretrained) + "\n" + _item(dump(geobench_entry(p, bands)))
        for p in geobench
    ]
    if geobench2:
        size = spec.img_size[0]
        tasks += [
            gb2.comment(p, pretrained, bands, [m for m, _ in spec.forward_call.modalities])
            + "\n"
            + _item(dump(gb2.entry(p, bands, size)))
            for p in geobench2
        ]
    return {
        "terratorch_task": dump(defaults),
        "tasks": "\n".join(tasks),
        "real_trainer_args": dump({"max_epochs": MAX_EPOCHS}),
        "search": dump(
            {
                "n_trials": N_TRIALS,
                "optimization_space": {
                    "lr": {"min": 1.0e-5, "max": 1.0e-3, "type": "real", "log": True}
                },
            }
        ),
    }


def _item(block: str) -> str:
    """A YAML mapping block as an item of a block list."""
    lines = block.splitlines()
    return "\n".join(["- " + lines[0], *("  " + line if line else line for line in lines[1:])])
