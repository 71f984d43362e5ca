"""`scaffold new-backbone`: analyse, render and put the result in place atomically.

Everything is written into a temporary folder and moved into place at the end, so an error or
Ctrl-C leaves nothing half-written. A new DIR is the temporary folder (made beside it) renamed; an
existing empty DIR is never replaced (its mode, owner, or a mount on it stay): the temporary
folder is made inside it and its entries are moved up. A non-empty DIR that scaffold did not make
is refused; one that scaffold made is left to `scaffold update`. ``--weights`` is loaded and
checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.console import skipped_line, status
from scaffold.data import survey_all, write_datasets
from scaffold.data.geobench import GeobenchTask, PlannedTask, write_tasks
from scaffold.data.geobench2 import Geobench2Task, Planned2
from scaffold.data.geobench2 import write_tasks as write_geobench2
from scaffold.data.spec import DatasetSpec
from scaffold.errors import ScaffoldError, one_line
from scaffold.pipeline import analysed, render_options
from scaffold.pipeline.bands import check_bands_fit_weights, planned_tasks, surveyed_bands
from scaffold.pipeline.geobench2 import (
    check_names_apart,
    known_names,
    plan_geobench2,
    split_band_modalities,
    surveyed_geobench2,
)
from scaffold.render import smoke
from scaffold.resolve.naming import (
    absolute_target,
    check_name_syntax,
    choose_name,
    model_import_root,
    model_module,
)
from scaffold.spec import BackboneSpec
from scaffold.write.folder import (
    check_output_dir,
    move_entries_up,
    new_temp,
    os_errors_named,
    out_label,
    remove_leftovers,
)
from scaffold.write.names import (
    CONFIG_FILE,
    DATA_DIR,
    STATE_DIR,
)
from scaffold.write.state import Options, State, is_generated, write_state

__all__ = ["GenerateResult", "Options", "generate"]


@dataclass(frozen=True)
class GenerateResult:
    backbone: str
    out: Path
    package: Path
    benchmark_config: Path
    input_shape: tuple[int, ...]
    files: tuple[Path, ...]
    baselines: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        from scaffold.render.iterate2 import summary as iterate2_summary
        from scaffold.results.baselines import summary

        return {
            "backbone": self.backbone,
            "package": str(self.package),
            "benchmark_config": str(self.benchmark_config),
            "out": str(self.out),
            "input_shape": list(self.input_shape),
            "files": [str(f) for f in self.files],
            "baselines": summary(self.out, self.baselines),
            **iterate2_summary(self.out),
        }


def check_weights_file(weights: Path, given: Path) -> None:
    """Load the checkpoint as verify and timm will (``weights_only=True``) and make sure it holds
    a state dict (name -> tensor), itself or under one key: before anything is written."""
    import torch

    if not weights.is_file():
        raise ScaffoldError(f"--weights {given}: no such file")
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ScaffoldError(
            f"--weights {given}: not a checkpoint torch.load(weights_only=True) can read "
            f"({one_line(exc)})"
        ) from exc

    def is_state_dict(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
        )

    if is_state_dict(checkpoint):
        return
    if isinstance(checkpoint, dict) and any(is_state_dict(v) for v in checkpoint.values()):
        return
    if isinstance(checkpoint, dict):
        keys = ", ".join(map(str, list(checkpoint)[:5])) + (", ..." if len(checkpoint) > 5 else "")
        what = f"a dict ({len(checkpoint)} keys: {keys})"
    else:
        what = f"a {type(checkpoint).__name__}"
    raise ScaffoldError(
        f"--weights {given}: holds {what}, not a state dict (parameter name -> tensor) or a "
        "dict holding one (e.g. under 'state_dict' or 'model')"
    )


def generate(options: Options, progress=None) -> GenerateResult:
    """Analyse the model, render everything into a temp folder, move it to the output dir.

    Every check of the input happens in `plan_new`, which writes nothing; `write_new` then
    refuses nothing more."""
    return write_new(plan_new(options, progress), progress)


@dataclass(frozen=True)
class NewPlan:
    """What `new-backbone` will write, every input checked: the spec and the options to record
    (name, absolute output folder and target, resolved weights, bands by TerraTorch's names),
    the surveyed datasets, the surveyed GEO-Bench datasets and the tasks planned of them."""

    spec: BackboneSpec
    recorded: Options
    datasets: tuple[DatasetSpec, ...]
    label: str  # how messages name the output folder
    geobench: tuple[GeobenchTask, ...] = ()
    planned: tuple[PlannedTask, ...] = ()
    geobench2: tuple[Geobench2Task, ...] = ()
    planned2: tuple[Planned2, ...] = ()

    @property
    def out(self) -> Path:
        assert self.recorded.out is not None
        return self.recorded.out


def checked_inputs(options: Options, progress) -> tuple[DatasetSpec, ...]:
    """Refuse what needs no analysis (task, name syntax, weights, output folder, baselines, data),
    cheapest first; return the surveyed datasets."""
    from scaffold.render.backbone import TASKS

    if options.task not in TASKS:
        raise ScaffoldError(f"--task {options.task!r}: choose one of {', '.join(TASKS)}")
    if options.name is not None:
        check_name_syntax(options.name)
    if options.weights is not None:
        check_weights_file(options.weights.resolve(), options.weights)
    if options.out is not None:
        check_output_dir(options.out.resolve())
    if options.baselines:
        from scaffold.render.baselines import check_names

        with status(progress, "checking the baselines against TerraTorch"):
            check_names(options.baselines)
    if options.data:  # bad data is refused before anything else runs
        return survey_all(options.data, progress)
    return ()


def checked_requested_name(options: Options, target: str, progress) -> None:
    """A taken --name is refused before the analysis, not after it."""
    from scaffold.resolve.target import check_target_exists

    if options.name is None:
        return
    check_target_exists(target)  # a missing file first: that needs no TerraTorch import
    with status(progress, "checking the name against timm and TerraTorch"):
        choose_name(
            options.name,
            module=model_module(target),
            root=model_import_root(target),
            out=options.out.resolve() if options.out else None,
        )
    if options.out is None:
        default_out = Path.cwd() / options.name
        check_output_dir(default_out, out_label(default_out, given=False))


def chosen_name(options: Options, spec: BackboneSpec, progress) -> str:
    if options.name is None:
        with status(progress, "checking the name against timm and TerraTorch"):
            name = choose_name(None, spec, out=options.out.resolve() if options.out else None)
    else:
        name = options.name
    if name in options.baselines:
        raise ScaffoldError(f"--baseline {name!r} is the backbone being benchmarked")
    return name


def plan_new(options: Options, progress=None) -> NewPlan:
    """Every check of `new-backbone`'s input, in the order that refuses the cheapest first;
    nothing is written (leftovers of killed runs are removed only once nothing is refused)."""
    from scaffold.resolve.target import split_target

    datasets = checked_inputs(options, progress)
    options = split_band_modalities(options)
    geobench2, _ = surveyed_geobench2(options, progress)
    geobench, bands = surveyed_bands(options, datasets, progress, known_names(geobench2))
    check_names_apart(geobench2, [ds.name for ds in datasets] + [t.name for t in geobench])
    options = dataclasses.replace(options, bands=bands)
    target = absolute_target(options.target)
    checked_requested_name(options, target, progress)
    spec = analysed(target, options, datasets, progress)
    planned = planned_tasks(geobench, spec, bands, progress, datasets, bool(geobench2))
    planned2 = plan_geobench2(geobench2, spec, bands, options.band_modalities, progress)
    if options.weights is not None and bands:
        check_bands_fit_weights(options.weights.resolve(), spec, bands)
    if progress is not None and spec.head_modules:
        progress.print(skipped_line(spec), markup=False, highlight=False)
    name = chosen_name(options, spec, progress)
    out = (options.out or Path.cwd() / name).resolve()
    label = out_label(out, given=options.out is not None)
    check_output_dir(out, label)
    # The class by name from now on: `update` must not silently pick another one.
    if split_target(target)[1] is None:
        target = f"{target}:{spec.qualname}"
        spec = dataclasses.replace(spec, target=target)
    recorded = Options(
        target=target,
        args=dict(spec.args),
        input_shape=options.input_shape,
        name=name,
        out=out,
        weights=options.weights.resolve() if options.weights else None,
        task=options.task,
        data=tuple(ds.root for ds in datasets),
        ray=options.ray,
        iterate2=options.iterate2,
        baselines=options.baselines,
        forward_args=dict(options.forward_args),
        image_arg=options.image_arg,
        geobench=str(Path(options.geobench).resolve()) if options.geobench else None,
        partition=options.partition,
        bands=bands,
        band_modalities=options.band_modalities,
        geobench2=str(Path(options.geobench2).resolve()) if options.geobench2 else None,
        geobench2_datasets=options.geobench2_datasets,
        taps=options.taps,
        protocol=options.protocol,
        seeds=options.seeds,
    )
    return NewPlan(spec, recorded, datasets, label, geobench, planned, geobench2, planned2)


def write_new(plan: NewPlan, progress=None) -> GenerateResult:
    """Render `plan` into a temporary folder and move it into place; on any error or Ctrl-C,
    nothing of it is left."""
    from scaffold.render.backbone import NUM_CLASSES, render

    spec, recorded, datasets, out, label = (
        plan.spec,
        plan.recorded,
        plan.datasets,
        plan.out,
        plan.label,
    )
    remove_leftovers(out, progress)  # nothing is refused from here on
    tmp: Path | None = None
    lock: int | None = None
    try:
        with status(progress, f"writing {out}"), os_errors_named(out, label):
            # An existing (empty) DIR is filled in place: the temp folder goes inside it.
            tmp, lock = new_temp(out, inside=out.is_dir())
            rendering = render_options(recorded, datasets, plan.planned, plan.planned2)
            files = render(spec, rendering, tmp)
            pristine = {rel: (tmp / rel).read_bytes() for rel in files}
            data_files = []
            if not datasets and not plan.planned and not plan.planned2:  # the smoke task's data
                data_files = smoke.write_smoke_dataset(
                    tmp / DATA_DIR,
                    bands=spec.in_chans,
                    frames=spec.num_frames,
                    size=spec.img_size,
                    task=recorded.task,
                    num_classes=NUM_CLASSES,
                )
            data = tuple(sorted(str(p.relative_to(tmp)) for p in data_files))
            state = State(__version__, recorded, spec, tuple(files), data_files=data)
            write_state(tmp, state, pristine)
            if datasets:
                write_datasets(tmp / STATE_DIR, datasets)
            if plan.geobench:
                write_tasks(tmp / STATE_DIR, plan.geobench)
            if plan.geobench2:
                write_geobench2(tmp / STATE_DIR, plan.geobench2)
            try:
                if tmp.parent == out:
                    move_entries_up(tmp)
                else:
                    tmp.rename(out)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not is_generated(out):
                    raise
                raise ScaffoldError(
                    f"{label}: another scaffold run wrote it meanwhile; run `scaffold "
                    f"update {shlex.quote(str(out))}` to regenerate it"
                ) from exc
            tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            os.close(lock)

    name = recorded.name
    assert name is not None
    return GenerateResult(
        backbone=name,
        out=out,
        package=out / name,
        benchmark_config=out / CONFIG_FILE,
        input_shape=tuple(spec.input_shape),
        files=tuple(out / f for f in files)
        + ((out / DATA_DIR,) if not datasets and not plan.planned and not plan.planned2 else ())
        + (out / STATE_DIR,),
        baselines=recorded.baselines,
    )
