"""GEO-Bench-2 tasks (scaffold.data.geobench2) in the benchmark YAML, and the datamodule they run on.

Each task reads its dataset through geobenchv2's own datamodule, wrapped by
``scaffold.datamodules.geobench2`` (importable wherever scaffold is installed, as terratorch-iterate
needs every ``class_path`` before it imports the generated package): that wrapper hands
TerraTorch's tasks the batch keys they read (``image``, ``mask``/``label``), routes several
modalities by the model's names and puts time second. The data is normalised by the dataset's own
statistics inside geobenchv2's dataset; the task's metric is the leaderboard's, by the name
TerraTorch logs it under.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from scaffold.data.geobench2 import Planned2, summary
from scaffold.data.suites import LEADERBOARD_METRICS
from scaffold.render.task_kinds import benchmark_task, terratorch_task

# scaffold's own: terratorch-iterate imports every class_path before the generated package
DATAMODULE = "scaffold.datamodules.geobench2.GeoBench2DataModule"
BATCH_SIZE = 8
NUM_WORKERS = 4
COMMENT_WIDTH = 82
DIRECTIONS = {"regression": "min"}


def datamodule(p: Planned2, img_size: int) -> dict[str, Any]:
    task = p.task
    args: dict[str, Any] = {
        "datamodule": task.datamodule,
        "root": task.root,
        "band_order": p.band_order,
    }
    if p.modalities:
        args["modalities"] = dict(p.modalities)
    if p.dataset_args:
        args["dataset_args"] = dict(p.dataset_args)
    if p.time_first:
        args["time_first"] = True
    # geobenchv2's training loader drops the last incomplete batch: never larger than the split
    args |= {
        "img_size": img_size,
        "batch_size": min(BATCH_SIZE, task.split_sizes[0]),
        "num_workers": NUM_WORKERS,
    }
    return {"class_path": DATAMODULE, "init_args": args}


def entry(p: Planned2, model_bands: Sequence[str], img_size: int) -> dict[str, Any]:
    task = p.task
    _, metric = LEADERBOARD_METRICS[task.task]
    model_args: dict[str, Any] = {}
    if not p.modalities:
        model_args["backbone_in_chans"] = len(p.bands)
        if model_bands:
            model_args["backbone_bands"] = list(p.bands)
    if p.forward_args:
        model_args["backbone_forward_args"] = p.forward_args
    # a label value one past the classes is "no label" where a dataset has one
    ignore = task.num_classes if task.task == "segmentation" else None
    settings = terratorch_task(task.task, model_args, task.num_classes, ignore)
    direction = DIRECTIONS.get(task.task, "max")
    return benchmark_task(
        task.name, task.task, metric, direction, settings, datamodule(p, img_size)
    )


def comment(
    p: Planned2,
    pretrained: bool,
    model_bands: Sequence[str],
    model_modalities: Sequence[str] = (),
) -> str:
    """Comment lines of a GEO-Bench-2 task: the dataset, its leaderboard metric, the bands (by
    modality) it feeds and the model's modalities it does not, the normalisation."""
    task = p.task
    leaderboard, logged = LEADERBOARD_METRICS[task.task]
    lines = [
        (
            f"{task.name}: GEO-Bench-2, {', '.join(task.files)} under {task.root}, read by "
            f"{task.datamodule.rsplit('.', 1)[-1]};"
        ),
        f"{summary(task)}.",
        f"leaderboard metric {leaderboard} (TerraTorch logs it as {logged}).",
    ]
    if p.modalities:
        fed = "; ".join(
            f"{model} <- {mod or 'its bands'} ({', '.join(p.band_order[mod] if isinstance(p.band_order, dict) else p.band_order)})"
            for mod, model in p.modalities.items()
        )
        lines.append(f"modalities fed as a dict: {fed}.")
        unfed = [m for m in model_modalities if m not in p.modalities.values()]
        if unfed:
            lines.append(f"not fed (no dataset modality holds all its bands): {', '.join(unfed)}.")
    else:
        lines.append(f"bands: {', '.join(p.bands)} (one tensor, in this order).")
    if pretrained and model_bands and not p.modalities:
        new = [b for b in p.bands if b not in model_bands]
        lines.append(f"first layer: new (initialised) bands: {', '.join(new) or 'none'}.")
    if p.dataset_args:
        lines.append(
            "dataset args: " + ", ".join(f"{k}={v}" for k, v in p.dataset_args.items()) + "."
        )
    lines.append(
        "normalised by the dataset's own per-band statistics (geobenchv2's ZScoreNormalizer)."
    )
    if p.forward_source:
        lines.append(f"forward args per band: {p.forward_source}.")
    wrapped = [w for line in lines for w in textwrap.wrap(line, COMMENT_WIDTH)]
    return "\n".join(f"# {line}" for line in wrapped)
