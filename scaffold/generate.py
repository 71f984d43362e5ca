"""`scaffold new-backbone`: analyse, render and put the result in place atomically.

Everything is written into a temporary folder beside DIR and renamed into place at the end, so an
error or Ctrl-C leaves nothing half-written. A non-empty DIR that scaffold did not make is
refused; one that scaffold made is left to `scaffold update`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.errors import ScaffoldError
from scaffold.progress import status
from scaffold.state import STATE_DIR, Options, State, is_generated, write_state

__all__ = ["GenerateResult", "Options", "generate"]


@dataclass(frozen=True)
class GenerateResult:
    backbone: str
    out: Path
    package: Path
    benchmark_config: Path
    input_shape: tuple[int, ...]
    files: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "package": str(self.package),
            "benchmark_config": str(self.benchmark_config),
            "out": str(self.out),
            "input_shape": list(self.input_shape),
            "files": [str(f) for f in self.files],
        }


@contextlib.contextmanager
def _os_errors_name(out: Path) -> Iterator[None]:
    """A folder that cannot be written is bad input (exit 2), not an internal error."""
    try:
        yield
    except OSError as exc:
        raise ScaffoldError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc


def absolute_target(target: str) -> str:
    """A file target with an absolute path, so that the state works from any directory."""
    from scaffold.target import is_file_target, split_target

    where, name = split_target(target)
    if is_file_target(where):
        where = str(Path(where).resolve())
    return f"{where}:{name}" if name else where


def check_output_dir(out: Path) -> None:
    with _os_errors_name(out):
        _check_output_dir(out)


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ScaffoldError(f"--out {out}: exists and is not a directory")
    ancestor = next(p for p in out.parents if p.exists())
    if not ancestor.is_dir():
        raise ScaffoldError(f"--out {out}: cannot write there ({ancestor} is a file)")
    if out.is_dir() and any(out.iterdir()):
        if is_generated(out):
            raise ScaffoldError(
                f"--out {out}: already holds a generated backbone; run `scaffold update {out}`"
            )
        raise ScaffoldError(
            f"--out {out}: not empty and not made by scaffold; choose an empty or new directory"
        )


def taken_names() -> tuple[set[str], set[str], set[str]]:
    """The backbone names timm and TerraTorch already have, and TerraTorch's factory names."""
    import timm
    from terratorch.registry import MODEL_FACTORY_REGISTRY, TERRATORCH_BACKBONE_REGISTRY

    return (
        set(timm.list_models()),
        set(TERRATORCH_BACKBONE_REGISTRY),
        set(MODEL_FACTORY_REGISTRY),
    )


def choose_name(requested: str | None, spec) -> str:
    from scaffold.render import default_name, names_for

    timm_names, terratorch_names, factory_names = taken_names()
    model_top = spec.module.split(".")[0]

    def problem(name: str) -> str | None:
        if name in timm_names:
            return "is already a timm model"
        if name in terratorch_names:
            return "is already a TerraTorch backbone"
        if names_for(name).factory_class in factory_names:
            return f"would register {names_for(name).factory_class}, which TerraTorch already has"
        if name == model_top:
            return f"is the name of the model's own module ({spec.module})"
        if importlib.util.find_spec(name) is not None:
            return "is the name of an installed Python module"
        return None

    if requested is not None:  # its syntax was checked before the analysis
        why = problem(requested)
        if why:
            raise ScaffoldError(f"--name {requested!r} {why}; choose another name")
        return requested
    base = default_name(spec.qualname)
    for candidate in (base, f"{base}_backbone", f"{base}_scaffold"):
        if not candidate.startswith(("timm_", "terratorch_")) and problem(candidate) is None:
            return candidate
    raise ScaffoldError(f"no free default name for {spec.qualname}; pass --name")


def generate(options: Options, progress=None) -> GenerateResult:
    """Analyse the model, render everything into a temp folder, move it to the output dir."""
    from scaffold.analysis import analyse
    from scaffold.render import (
        CONFIG_FILE,
        DATA_DIR,
        NUM_CLASSES,
        TASKS,
        RenderOptions,
        check_name_syntax,
        check_task,
        render_to_temp,
    )
    from scaffold.smoke import write_smoke_dataset
    from scaffold.target import split_target

    if options.task not in TASKS:
        raise ScaffoldError(f"--task {options.task!r}: choose one of {', '.join(TASKS)}")
    if options.name is not None:
        check_name_syntax(options.name)
    weights = options.weights.resolve() if options.weights else None
    if weights is not None and not weights.is_file():
        raise ScaffoldError(f"--weights {options.weights}: no such file")
    if options.out is not None:
        check_output_dir(options.out.resolve())

    target = absolute_target(options.target)
    with status(progress, f"analysing {options.target}"):
        spec = analyse(
            target, options.args, options.input_shape, options.forward_args, options.image_arg
        )
    check_task(spec, options.task)
    with status(progress, "checking the name against timm and TerraTorch"):
        name = choose_name(options.name, spec)
    out = (options.out or Path.cwd() / name).resolve()
    check_output_dir(out)

    # The class by name from now on: `update` must not silently pick another one.
    if split_target(target)[1] is None:
        target = f"{target}:{spec.qualname}"
        spec = dataclasses.replace(spec, target=target)
    render_options = RenderOptions(
        name=name, out=out, task=options.task, target=target, weights=weights
    )
    tmp: Path | None = None
    try:
        with status(progress, f"writing {out}"), _os_errors_name(out):
            tmp, files = render_to_temp(spec, render_options)
            pristine = {rel: (tmp / rel).read_bytes() for rel in files}
            write_smoke_dataset(
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
                forward_args=dict(options.forward_args),
                image_arg=options.image_arg,
            )
            write_state(tmp, State(__version__, recorded, spec, tuple(files)), pristine)
            if out.is_dir():
                out.rmdir()  # empty (checked above); rename needs it gone
            tmp.rename(out)
            tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    return GenerateResult(
        backbone=name,
        out=out,
        package=out / name,
        benchmark_config=out / CONFIG_FILE,
        input_shape=tuple(spec.input_shape),
        files=tuple(out / f for f in files) + (out / DATA_DIR, out / STATE_DIR),
    )
