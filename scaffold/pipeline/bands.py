"""The plan's band steps: ``--geobench`` surveyed, ``--bands`` read by name, and each GEO-Bench
task planned for the model, every refusal before anything is written.

A task reads the model's bands that its dataset has, in the model's order; a GEO-Bench task with
none of them is left out, and says so. Nothing about bands is silent: a ``--data`` task whose
files do not name their bands says it reads them by position.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaffold.data.bands import parse_bands, per_band_args, task_bands
from scaffold.data.geobench import DEFAULT_PARTITION, GeobenchTask, PlannedTask, survey_geobench
from scaffold.data.spec import DatasetSpec
from scaffold.errors import ScaffoldError
from scaffold.spec import BackboneSpec
from scaffold.write.state import Options


def surveyed_bands(
    options: Options,
    datasets: tuple[DatasetSpec, ...],
    progress: Any,
    more_known: Sequence[str] = (),
) -> tuple[tuple[GeobenchTask, ...], tuple[str, ...]]:
    """The GEO-Bench tasks under ``--geobench`` and the model's bands (``--bands``) by
    TerraTorch's names, checked against the known names, those of the surveyed datasets and
    `more_known` (the GEO-Bench-2 datasets' band names)."""
    if options.partition != DEFAULT_PARTITION and not options.geobench:
        raise ScaffoldError(
            f"--partition {options.partition}: a GEO-Bench partition, for --geobench ROOT"
        )
    geobench: tuple[GeobenchTask, ...] = ()
    if options.geobench:
        taken = {ds.name for ds in datasets}  # a task name is never given twice
        geobench = survey_geobench(options.geobench, options.partition, progress, taken)
    if not options.bands:
        return geobench, ()
    known = [b for t in geobench for b in t.bands]
    known += [b for ds in datasets for b in ds.band_names]
    known += list(more_known)
    if not options.band_modalities:
        return geobench, parse_bands(options.bands, known)
    # per modality: two inputs may read the same bands (two dates), one input reads each once
    pairs = zip(options.bands, options.band_modalities, strict=False)
    names: list[str] = []
    for _, group in itertools.groupby(pairs, key=lambda pair: pair[1]):
        names += parse_bands([band for band, _ in group], known)
    return geobench, tuple(names)


def planned_tasks(
    geobench: tuple[GeobenchTask, ...],
    spec: BackboneSpec,
    bands: tuple[str, ...],
    progress: Any,
    datasets: tuple[DatasetSpec, ...] = (),
    other_tasks: bool = False,
) -> tuple[PlannedTask, ...]:
    """The GEO-Bench tasks the model runs; a line for each ``--data`` task that reads its bands
    by position although --bands was given."""
    if bands and progress is not None:
        for ds in datasets:
            if not ds.band_names:
                progress.print(
                    f"  {ds.name}: its files' band descriptions are not band names: --bands "
                    f"does not apply, it reads its {ds.bands} bands by position",
                    highlight=False,
                )
        if not geobench and not datasets and not other_tasks:
            progress.print(
                "--bands: the smoke task reads its bands by position; --geobench or --data "
                "datasets with named bands read them by name",
                highlight=False,
            )
    if not geobench:
        return ()
    return plan_tasks(geobench, spec, bands, progress)


def plan_tasks(
    tasks: Sequence[GeobenchTask],
    spec: BackboneSpec,
    model_bands: Sequence[str] = (),
    progress: Any = None,
) -> tuple[PlannedTask, ...]:
    """The tasks the model can run; a ScaffoldError when it can run none or cannot take a
    task's channels. A task whose dataset has none of `model_bands` is left out with a line."""
    if spec.num_frames:
        raise ScaffoldError(
            f"--geobench: GEO-Bench v1 datasets are single images, and {spec.qualname} takes "
            "(C, T, H, W) input"
        )
    planned = []
    for task in tasks:
        bands = task_bands(model_bands, task.bands) if model_bands else task.bands
        if not bands:
            if progress is not None:
                progress.print(
                    f"  {task.name}: left out: its bands ({', '.join(task.bands)}) include none "
                    f"of --bands {','.join(model_bands)}",
                    highlight=False,
                )
            continue
        per_band = spec.forward_call.per_band
        if spec.in_chans_arg is None and not per_band and len(bands) != spec.in_chans:
            raise ScaffoldError(
                f"--geobench: task {task.name} reads {len(bands)} band(s), {spec.qualname} takes "
                f"{spec.in_chans} input channels and has no in_chans-like parameter to change that"
            )
        args, source = per_band_args(spec.forward_call, model_bands, bands)
        planned.append(PlannedTask(task, tuple(bands), args, source))
    if not planned:
        raise ScaffoldError(
            f"--geobench: no dataset has any of --bands {','.join(model_bands)}: nothing to run"
        )
    return tuple(planned)


def check_bands_fit_weights(weights: Path, spec: BackboneSpec, bands: Sequence[str]) -> None:
    """``--bands`` names the bands the checkpoint's first layer reads: their count must be its
    input channels (else no task could load that layer by band name). ScaffoldError if not."""
    import torch

    if not bands or spec.first_conv is None or spec.forward_call.modalities:
        return  # (a model with several inputs: each one's first layer reads its own bands)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # as checkpoint_filter_fn
        if isinstance(state.get(key), dict):
            state = state[key]
    suffix = f"{spec.first_conv}.weight"
    found = [k for k in state if k == suffix or k.endswith(f".{suffix}")]
    if len(found) != 1 or getattr(state[found[0]], "ndim", 0) < 2:
        return  # the weights check names what does not fit
    channels = int(state[found[0]].shape[1])
    if channels != len(bands):
        raise ScaffoldError(
            f"--bands names {len(bands)} bands, and the first layer of --weights {weights.name} "
            f"({found[0]}) reads {channels} input channels: name the {channels} bands it was "
            "trained on, in order"
        )
