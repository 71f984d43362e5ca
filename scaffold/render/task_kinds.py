"""What a benchmark task of each kind asks of TerraTorch, shared by every source of tasks
(``--data``, ``--geobench``, ``--geobench2``): the loss, the "no label" value, the decoder and the
classes, and the entry of ``benchmark.yaml`` that holds them."""

from __future__ import annotations

from typing import Any

EARLY_STOP_PATIENCE = 10
LOSSES = {"regression": "rmse", "multilabel_classification": "bce"}  # others: cross entropy
# Pixel-wise tasks decode the features back to the image; classifications read them as they are.
PIXEL_DECODER = {"decoder": "UperNetDecoder", "decoder_channels": 64}
VECTOR_DECODER = {"decoder": "IdentityDecoder"}


def terratorch_task(
    kind: str,
    model_args: dict[str, Any],
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> dict[str, Any]:
    """TerraTorch's settings of a task of `kind` (segmentation, regression, classification or
    multilabel_classification): its loss, `ignore_index` where given, and the backbone's
    `model_args` with the kind's decoder and `num_classes` where given."""
    task: dict[str, Any] = {"loss": LOSSES.get(kind, "ce")}
    if ignore_index is not None:
        task["ignore_index"] = ignore_index
    pixel = kind in ("segmentation", "regression")
    args = {**model_args, **(PIXEL_DECODER if pixel else VECTOR_DECODER)}
    if num_classes:
        args["num_classes"] = num_classes
    task["model_args"] = args
    return task


def benchmark_task(
    name: str,
    kind: str,
    metric: str,
    direction: str,
    task: dict[str, Any],
    datamodule: dict[str, Any],
) -> dict[str, Any]:
    """One entry of ``benchmark.yaml``'s ``tasks``, in terratorch-iterate's schema."""
    return {
        "name": name,
        "type": kind,
        "direction": direction,
        "metric": metric,
        "early_stop_patience": EARLY_STOP_PATIENCE,
        "terratorch_task": task,
        "datamodule": datamodule,
    }
