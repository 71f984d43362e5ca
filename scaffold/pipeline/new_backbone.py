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
from scaffold.errors import ScaffoldError, one_line
from scaffold.pipeline import analyse
from scaffold.resolve.naming import (
    absolute_target,
    check_name_syntax,
    choose_name,
    model_import_root,
    model_module,
)
from scaffold.write.folder import (
    check_output_dir,
    move_entries_up,
    new_temp,
    os_errors_named,
    out_label,
    remove_leftovers,
)
from scaffold.write.names import (
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
        from scaffold.render.baselines import summary

        return {
            "backbone": self.backbone,
            "package": str(self.package),
            "benchmark_config": str(self.benchmark_config),
            "out": str(self.out),
            "input_shape": list(self.input_shape),
            "files": [str(f) for f in self.files],
            "baselines": summary(self.out, self.baselines),
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
    """Analyse the model, render everything into a temp folder, move it to the output dir."""
    from scaffold.render.backbone import (
        CONFIG_FILE,
        DATA_DIR,
        NUM_CLASSES,
        TASKS,
        RenderOptions,
        check_task,
        render,
    )
    from scaffold.render.smoke import write_smoke_dataset
    from scaffold.resolve.target import check_target_exists, split_target

    if options.task not in TASKS:
        raise ScaffoldError(f"--task {options.task!r}: choose one of {', '.join(TASKS)}")
    if options.name is not None:
        check_name_syntax(options.name)
    weights = options.weights.resolve() if options.weights else None
    if weights is not None:
        check_weights_file(weights, options.weights)
    if options.out is not None:
        check_output_dir(options.out.resolve())
    if options.baselines:
        from scaffold.render.baselines import check_names

        with status(progress, "checking the baselines against TerraTorch"):
            check_names(options.baselines)

    datasets = ()
    if options.data:  # bad data is refused before anything else runs
        datasets = survey_all(options.data, progress)
    target = absolute_target(options.target)
    if options.name is not None:  # a taken name is refused before the analysis, not after it
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
    with status(progress, f"analysing {options.target}"):
        spec = analyse(
            target, options.args, options.input_shape, options.forward_args, options.image_arg
        )
    if progress is not None and spec.head_modules:
        progress.print(skipped_line(spec), markup=False, highlight=False)
    check_task(spec, options.task)
    if datasets:
        from scaffold.render.tasks import input_layout

        for ds in datasets:
            input_layout(ds, spec)
    if options.name is None:
        with status(progress, "checking the name against timm and TerraTorch"):
            name = choose_name(None, spec, out=options.out.resolve() if options.out else None)
    else:
        name = options.name
    if name in options.baselines:
        raise ScaffoldError(f"--baseline {name!r} is the backbone being benchmarked")
    out = (options.out or Path.cwd() / name).resolve()
    label = out_label(out, given=options.out is not None)
    check_output_dir(out, label)
    remove_leftovers(out, progress)  # nothing is refused from here on

    # The class by name from now on: `update` must not silently pick another one.
    if split_target(target)[1] is None:
        target = f"{target}:{spec.qualname}"
        spec = dataclasses.replace(spec, target=target)
    render_options = RenderOptions(
        name=name,
        out=out,
        task=options.task,
        target=target,
        weights=weights,
        datasets=datasets,
        ray=options.ray,
        baselines=options.baselines,
    )
    tmp: Path | None = None
    lock: int | None = None
    try:
        with status(progress, f"writing {out}"), os_errors_named(out, label):
            # An existing (empty) DIR is filled in place: the temp folder goes inside it.
            tmp, lock = new_temp(out, inside=out.is_dir())
            files = render(spec, render_options, tmp)
            pristine = {rel: (tmp / rel).read_bytes() for rel in files}
            data_files = []
            if not datasets:  # the smoke task's data
                data_files = write_smoke_dataset(
                    tmp / DATA_DIR,
                    bands=spec.in_chans,
                    frames=spec.num_frames,
                    size=spec.img_size,
                    task=options.task,
                    num_classes=NUM_CLASSES,
                )
            recorded = Options(
                target=target,
                args=dict(spec.args),
                input_shape=options.input_shape,
                name=name,
                out=out,
                weights=weights,
                task=options.task,
                data=tuple(ds.root for ds in datasets),
                ray=options.ray,
                baselines=options.baselines,
                forward_args=dict(options.forward_args),
                image_arg=options.image_arg,
            )
            data = tuple(sorted(str(p.relative_to(tmp)) for p in data_files))
            state = State(__version__, recorded, spec, tuple(files), data_files=data)
            write_state(tmp, state, pristine)
            if datasets:
                write_datasets(tmp / STATE_DIR, datasets)
            if tmp.parent == out:
                move_entries_up(tmp)
            else:
                try:
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

    return GenerateResult(
        backbone=name,
        out=out,
        package=out / name,
        benchmark_config=out / CONFIG_FILE,
        input_shape=tuple(spec.input_shape),
        files=tuple(out / f for f in files)
        + ((out / DATA_DIR,) if not datasets else ())
        + (out / STATE_DIR,),
        baselines=options.baselines,
    )
