"""The plan's GEO-Bench-2 steps: ``--geobench2`` surveyed, ``--bands`` per modality read, and each
dataset planned for the model, every refusal before anything is written.

A model with one input gets the model's bands that the dataset has, by name, in one tensor (the
bands of several modalities stacked, modality by modality). A model whose bands are named per
modality (``--bands 's2=B02,B03;s1=VV,VH'``) with two or more modalities is fed a dict: each of
its modalities gets its bands from a dataset modality that has all of them (the one of the same
name first); a modality whose bands no dataset modality has in full is not fed. A dataset with none of the model's bands, or none of its modalities, is left out
and says so; so is a single-image dataset for a model that takes a time series.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from scaffold.data.bands import per_band_args
from scaffold.data.geobench2 import Geobench2Task, Planned2, Skipped, require, survey_geobench2
from scaffold.errors import ScaffoldError
from scaffold.spec import BackboneSpec
from scaffold.write.state import Options


def split_band_modalities(options: Options) -> Options:
    """``--bands`` items ``s2=B02`` -> the band and its modality (`band_modalities`)."""
    if not any("=" in b for b in options.bands):
        return options
    names, mods = bands_by_modality(options.bands)
    return dataclasses.replace(options, bands=names, band_modalities=mods)


def bands_by_modality(items: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``("s2=B02", "s1=VV")`` -> the bands ``("B02", "VV")`` and their modalities."""
    mods, names = [], []
    for item in items:
        mod, sep, name = item.partition("=")
        if not sep or not mod.strip() or not name.strip():
            raise ScaffoldError(
                f"--bands: {item!r}: name the modality of every band "
                "(--bands 's2=B02,B03;s1=VV,VH') or of none"
            )
        mods.append(mod.strip())
        names.append(name.strip())
    return tuple(names), tuple(mods)


def input_modalities(
    bands: Sequence[str], band_modalities: Sequence[str]
) -> tuple[tuple[str, int], ...]:
    """The model's inputs by modality, ``((name, channels), ...)`` in ``--bands``'s order, when
    it names two or more (the analysis then feeds every one of them); () otherwise. A
    modality's bands come together: ``s2=B02;s1=VV;s2=B03`` is a ScaffoldError."""
    counts: dict[str, int] = {}
    previous = None
    for mod in band_modalities[: len(bands)]:
        if mod != previous and mod in counts:
            raise ScaffoldError(
                f"--bands: the bands of {mod} are split by another modality's; "
                "name each modality once (--bands 's2=B02,B03;s1=VV,VH')"
            )
        counts[mod] = counts.get(mod, 0) + 1
        previous = mod
    return tuple(counts.items()) if len(counts) >= 2 else ()


def surveyed_geobench2(
    options: Options, progress: Any
) -> tuple[tuple[Geobench2Task, ...], tuple[Skipped, ...]]:
    """The GEO-Bench-2 datasets under ``--geobench2`` (none without it)."""
    if not options.geobench2:
        if options.geobench2_datasets:
            raise ScaffoldError("--datasets: GEO-Bench-2 dataset names, for --geobench2 ROOT")
        return (), ()
    require()  # the missing package first: one line, before any progress
    if progress is not None:
        progress.print(f"surveying {options.geobench2}", highlight=False)
    return survey_geobench2(options.geobench2, options.geobench2_datasets, progress)


def check_names_apart(tasks: Sequence[Geobench2Task], taken: Sequence[str]) -> None:
    """GEO-Bench-2 tasks keep the leaderboard's names: a ``--data`` or ``--geobench`` task of
    the same name is a ScaffoldError (two tasks of one name would overwrite each other's runs)."""
    clash = [t.name for t in tasks if t.name in set(taken)]
    if clash:
        raise ScaffoldError(
            f"--geobench2: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} also the name "
            "of a --data or --geobench task; GEO-Bench-2 tasks keep the leaderboard's names: "
            "leave it out with --datasets"
        )


def known_names(tasks: Sequence[Geobench2Task]) -> list[str]:
    """The surveyed datasets' band names, as ``--bands`` may name them."""
    return [b for t in tasks for group in t.band_names for b in group]


def _left_out(progress: Any, name: str, reason: str) -> None:
    if progress is not None:
        progress.print(f"  {name}: left out: {reason}", highlight=False)


def plan_geobench2(
    tasks: Sequence[Geobench2Task],
    spec: BackboneSpec,
    bands: Sequence[str] = (),
    band_modalities: Sequence[str] = (),
    progress: Any = None,
) -> tuple[Planned2, ...]:
    """The GEO-Bench-2 tasks the model runs; ScaffoldError when it runs none of them or cannot
    take a task's channels."""
    groups = _model_groups(bands, band_modalities)
    planned = []
    for task in tasks:
        if spec.num_frames and not task.time_series:
            _left_out(
                progress,
                task.name,
                f"single images, and {spec.qualname} takes {spec.num_frames} frames",
            )
            continue
        if len(groups) >= 2:
            chosen = _by_modality(task, groups)
            if not chosen:
                _left_out(
                    progress,
                    task.name,
                    f"its modalities ({', '.join(m or 'one' for m, _ in task.modalities)}) "
                    f"hold none of the model's ({', '.join(groups)})",
                )
                continue
            unfed = [m for m in groups if m not in {model for *_, model in chosen}]
            if unfed and progress is not None:  # the model runs without them: said, not hidden
                progress.print(
                    f"  {task.name}: {', '.join(unfed)} not fed (no modality of the dataset "
                    "holds all of its bands); the ladder's checks fed every modality",
                    highlight=False,
                )
        else:
            chosen = _single_input(task, bands)
            if not chosen:
                _left_out(
                    progress,
                    task.name,
                    f"its bands include none of --bands {','.join(bands)}",
                )
                continue
            fed = [b for _, _, model, _ in chosen for b in model]
            if spec.in_chans_arg is None and len(fed) != spec.in_chans:
                raise ScaffoldError(
                    f"--geobench2: task {task.name} reads {len(fed)} band(s), {spec.qualname} "
                    f"takes {spec.in_chans} input channels and has no in_chans-like parameter "
                    "to change that"
                )
        planned.append(_planned(task, spec, chosen, bands, multi=len(groups) >= 2))
    if tasks and not planned:
        raise ScaffoldError(
            "--geobench2: the model can run none of the GEO-Bench-2 datasets found: nothing to run"
        )
    return tuple(planned)


# (dataset modality, its bands by the dataset's names, the same by the model's names, the
# model's modality or "")
Chosen = list[tuple[str, list[str], list[str], str]]


def _model_groups(bands: Sequence[str], modalities: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for band, mod in zip(bands, modalities, strict=False):
        groups.setdefault(mod, []).append(band)
    return groups


def _single_input(task: Geobench2Task, bands: Sequence[str]) -> Chosen:
    """The model's bands the dataset has (all of its bands without --bands), grouped by the
    dataset's modality, in the dataset's modality order and the model's band order."""
    chosen: Chosen = []
    for (modality, natives), names in zip(task.modalities, task.band_names, strict=True):
        if bands:
            pairs = [(natives[names.index(b)], b) for b in bands if b in names]
        else:
            pairs = list(zip(natives, names, strict=True))
        if pairs:
            chosen.append((modality, [n for n, _ in pairs], [m for _, m in pairs], ""))
    return chosen


def _by_modality(task: Geobench2Task, groups: dict[str, list[str]]) -> Chosen:
    """Each model modality's bands from a dataset modality that has all of them (the one named
    as it first), in the dataset's modality order."""
    found: dict[str, tuple[list[str], list[str], str]] = {}
    for model_mod, wanted in groups.items():
        best: tuple[int, str, list[tuple[str, str]]] | None = None
        for (modality, natives), names in zip(task.modalities, task.band_names, strict=True):
            pairs = [(natives[names.index(b)], b) for b in wanted if b in names]
            # a modality's own input takes all of its bands: a part of them is not fed
            if len(pairs) < len(wanted) or modality in found:
                continue
            score = (2 if modality.lower() == model_mod.lower() else 1) * 1000 + len(pairs)
            if best is None or score > best[0]:
                best = (score, modality, pairs)
        if best is not None:
            _, modality, pairs = best
            found[modality] = ([n for n, _ in pairs], [m for _, m in pairs], model_mod)
    return [(m, *found[m]) for m, _ in task.modalities if m in found]


def _planned(
    task: Geobench2Task,
    spec: BackboneSpec,
    chosen: Chosen,
    model_bands: Sequence[str],
    multi: bool,
) -> Planned2:
    one_modality = len(task.modalities) == 1
    band_order: list[str] | dict[str, list[str]]
    if one_modality:
        band_order = list(chosen[0][1])
    else:
        band_order = {m: list(natives) for m, natives, _, _ in chosen}
    fed = tuple(b for _, _, names, _ in chosen for b in names)
    dataset_args: dict[str, Any] = {}
    time_first = False
    if task.time_series:
        dataset_args["num_time_steps"] = spec.num_frames or 1
        if spec.num_frames and task.time_format_arg:
            dataset_args["temporal_output_format"] = "CTHW"
        time_first = bool(spec.num_frames) and not task.time_format_arg
    forward: dict[str, Any] = {}
    source = ""
    if not multi:
        forward, source = per_band_args(spec.forward_call, model_bands, fed)
    return Planned2(
        task=task,
        band_order=band_order,
        bands=fed,
        modalities={m: model for m, _, _, model in chosen} if multi else {},
        dataset_args=dataset_args,
        time_first=time_first,
        forward_args=forward,
        forward_source=source,
    )
