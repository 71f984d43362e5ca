# scaffold runtime 1: owned by scaffold, copied verbatim into each generated package.
# `scaffold update` replaces this folder (it never merges it): a hand edit here is kept
# aside as <file>.orig-<version> and reported. Change behaviour in backbone.py instead,
# by overriding methods of the subclass there.
"""The benchmark's tasks as configurations: what derives ``fit/<task>.yaml`` and the
HPO YAMLs of iterate2 in scaffold, and what ``iterate2/trial.py`` builds each trial from
(it loads this file from the package's runtime copy). The standard library only."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

# terratorch-iterate's task types -> the TerraTorch task class it builds for each.
TASK_CLASSES = {
    "segmentation": "terratorch.tasks.SemanticSegmentationTask",
    "regression": "terratorch.tasks.PixelwiseRegressionTask",
    "classification": "terratorch.tasks.ClassificationTask",
    "multilabel_classification": "terratorch.tasks.MultiLabelClassificationTask",
    "object_detection": "terratorch.tasks.ObjectDetectionTask",
}
# iterate turns validation plots off for these task types.
NO_PLOTS = ("segmentation", "regression")
SEED = 0  # terratorch-iterate seeds every trial with 0 too


class ConfigError(ValueError):
    """A problem in benchmark.yaml: one line."""


def middle(space: Any) -> Any:
    """The value a search space entry stands for when nothing is searched: the first
    choice of a list, the middle of a range (geometric when `log`), or, for a mapping of
    entries (``model_args: {decoder_channels: [...]}``), a mapping of their middles."""
    if isinstance(space, list):
        return space[0] if space else None
    if isinstance(space, dict) and {"min", "max"} <= space.keys():
        low, high = space["min"], space["max"]
        if space.get("log") and low > 0 and high > 0:
            value = math.sqrt(low * high)
        else:
            value = (low + high) / 2
        if str(space.get("type", "real")) == "int":
            return round(value)
        return float(f"{value:.3g}")
    if isinstance(space, dict):
        return {key: middle(value) for key, value in space.items()}
    return space


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, mappings key by key (as iterate merges
    them)."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def fit_config(
    main: dict[str, Any],
    task: dict[str, Any],
    out: Path,
    space: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The LightningCLI config of `task` of the benchmark config `main` (output folder
    `out`), with the hyperparameters `space` (nested as ``optimization_space``; default:
    the middle of each searched one)."""
    defaults = main.get("defaults") or {}
    task_type = str(task.get("type", "segmentation"))
    if task_type not in TASK_CLASSES:
        name = task.get("name")
        raise ConfigError(f"benchmark.yaml: task {name!r} has type {task_type!r}")
    searched = main.get("optimization_space") or {}
    space = middle(searched) if space is None else copy.deepcopy(space)
    batch_size = space.pop("batch_size", None)
    base = defaults.get("terratorch_task") or {}
    init_args = merge(merge(base, task.get("terratorch_task") or {}), space)
    if task_type in NO_PLOTS:
        init_args.setdefault("plot_on_val", False)
    trainer = copy.deepcopy(defaults.get("trainer_args") or {})
    root = out / "runs" / "fit" / str(task.get("name"))
    trainer.setdefault("default_root_dir", str(root))
    patience = task.get("early_stop_patience")
    if patience is not None:
        early_stop = {
            "class_path": "lightning.pytorch.callbacks.EarlyStopping",
            "init_args": {"monitor": "val/loss", "patience": patience},
        }
        trainer["callbacks"] = [*(trainer.get("callbacks") or []), early_stop]
    datamodule = copy.deepcopy(task.get("datamodule") or {})
    if batch_size is not None:
        datamodule.setdefault("init_args", {})["batch_size"] = batch_size
    config: dict[str, Any] = {"seed_everything": SEED}
    if main.get("custom_modules_path"):
        config["custom_modules_path"] = main["custom_modules_path"]
    config |= {
        "trainer": trainer,
        "model": {"class_path": TASK_CLASSES[task_type], "init_args": init_args},
        "data": datamodule,
    }
    return config


def plain_choices(choices: list[Any]) -> bool:
    """Whether Optuna can hold each of `choices` and the trial tell them apart by
    their text (numbers, booleans, text); other choices (lists, mappings, None) go by
    position: iterate2 samples 0, 1, ... and the trial script takes the choice there."""
    for choice in choices:
        if choice is None or not isinstance(choice, (bool, int, float, str)):
            return False
    return len({str(c) for c in choices}) == len(choices)


def search_space(main: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """The searched entries of `task`: ``optimization_space`` flattened to dotted names
    (``model_args.decoder_channels``, as iterate names them in Optuna), each a list of
    choices or a ``{min, max, type, log}`` range; the task's ``optimization_except``
    left out."""
    skip = set(task.get("optimization_except") or ())
    flat: dict[str, Any] = {}

    def walk(space: Any, prefix: str) -> None:
        for key, value in (space or {}).items():
            if key in skip:
                continue
            name = f"{prefix}{key}"
            if isinstance(value, list) or (
                isinstance(value, dict) and {"min", "max"} <= value.keys()
            ):
                flat[name] = value
            elif isinstance(value, dict):
                walk(value, f"{name}.")

    walk(main.get("optimization_space") or {}, "")
    return flat


def printed_name(metric: str, direction: str) -> str:
    """The name the trial script prints the metric under: ``val/mIoU`` ->
    ``val_mIoU``; a min-direction ``val/loss`` -> ``neg_val_loss`` (iterate2
    maximises)."""
    base = re.sub(r"\W+", "_", metric).strip("_")
    return f"neg_{base}" if direction == "min" else base
