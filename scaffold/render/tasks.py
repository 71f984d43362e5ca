"""Benchmark tasks from dataset specs: the YAML's task entries, split files and search settings.

Rendering calls `data_sections` when the person gave ``--data``; everything a task needs comes
from its DatasetSpec and the backbone's spec (bands, frames, whether in_chans can be set).
"""

from __future__ import annotations

from typing import Any

from scaffold.data.spec import SPLITS, DatasetSpec
from scaffold.errors import ScaffoldError
from scaffold.render.dump import dump
from scaffold.spec import BackboneSpec
from scaffold.write.names import SPLITS_DIR

BATCH_SIZE = 8
MAX_EPOCHS = 50
N_TRIALS = 10
EARLY_STOP_PATIENCE = 10
NUM_WORKERS = 4
NO_DATA_REPLACE = 0.0  # what image nodata/NaN pixels read as (before normalisation)
DEFAULT_IGNORE = -1  # TerraTorch's cross entropy needs an integer ignore_index

# The metric TerraTorch logs for each task type, and which way is better.
METRICS: dict[str, tuple[str, str]] = {
    "segmentation": ("val/mIoU", "max"),
    "classification": ("val/Accuracy", "max"),
    "regression": ("val/RMSE", "min"),
}
DATAMODULES = {
    "segmentation": "terratorch.datamodules.GenericNonGeoSegmentationDataModule",
    "classification": "terratorch.datamodules.GenericNonGeoClassificationDataModule",
    "regression": "terratorch.datamodules.GenericNonGeoPixelwiseRegressionDataModule",
}


def input_layout(ds: DatasetSpec, spec: BackboneSpec) -> tuple[int, int | None]:
    """(channels, frames) the data gives the model; ScaffoldError when the model cannot take them.

    A temporal model reads each file's bands as frames x channels, time-major (as TerraTorch's
    ``expand_temporal_dimension`` does), with the model's number of frames.
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
        channels = ds.bands
    if spec.in_chans_arg is None and channels != spec.in_chans:
        raise ScaffoldError(
            f"--data {ds.root}: the data has {channels} band(s), {spec.qualname} takes "
            f"{spec.in_chans} input channels and has no in_chans-like parameter to change that"
        )
    return channels, frames


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


def datamodule(ds: DatasetSpec, channels: int, frames: int | None, out_dir: str) -> dict[str, Any]:
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
            args[f"{split}_split"] = f"{out_dir}/{split_file(ds, split)}"
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


def task_entry(ds: DatasetSpec, spec: BackboneSpec, out_dir: str) -> dict[str, Any]:
    channels, frames = input_layout(ds, spec)
    metric, direction = METRICS[ds.task]
    model_args: dict[str, Any] = {"backbone_in_chans": channels}
    terratorch_task: dict[str, Any] = {}
    if ds.task == "classification":
        terratorch_task["loss"] = "ce"
        model_args |= {"decoder": "IdentityDecoder", "num_classes": ds.num_classes}
    elif ds.task == "segmentation":
        ignore = ds.ignore_index if ds.ignore_index is not None else DEFAULT_IGNORE
        terratorch_task |= {"loss": "ce", "ignore_index": ignore}
        model_args |= {
            "decoder": "UperNetDecoder",
            "decoder_channels": 64,
            "num_classes": ds.num_classes,
        }
    else:
        terratorch_task["loss"] = "rmse"
        if ds.ignore_index is not None:
            terratorch_task["ignore_index"] = ds.ignore_index
        model_args |= {"decoder": "UperNetDecoder", "decoder_channels": 64}
    terratorch_task["model_args"] = model_args
    return {
        "name": ds.name,
        "type": ds.task,
        "direction": direction,
        "metric": metric,
        "early_stop_patience": EARLY_STOP_PATIENCE,
        "terratorch_task": terratorch_task,
        "datamodule": datamodule(ds, channels, frames, out_dir),
    }


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


def data_sections(
    datasets: tuple[DatasetSpec, ...],
    spec: BackboneSpec,
    terratorch_task: dict[str, Any],
    out_dir: str,
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
        task_comment(ds) + "\n" + _item(dump(task_entry(ds, spec, out_dir))) for ds in datasets
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
