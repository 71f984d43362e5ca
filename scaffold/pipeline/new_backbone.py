"""`scaffold new-backbone`: analyse, render and put the result in place atomically.

Everything is written into a temporary folder and moved into place at the end, so an error or
Ctrl-C leaves nothing half-written. A new DIR is the temporary folder (made beside it) renamed; an
existing empty DIR is never replaced (its mode, owner, or a mount on it stay): the temporary
folder is made inside it and its entries are moved up. A non-empty DIR that scaffold did not make
is refused; one that scaffold made is left to `scaffold update`. ``--weights`` is loaded and
checked before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import importlib.machinery
import importlib.util
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.errors import ScaffoldError
from scaffold.progress import status
from scaffold.write.names import (
    BASELINES_DIR,
    DATA_DIR,
    RUNS_DIR,
    SPLITS_DIR,
    STATE_DIR,
    TEMP_SUFFIX,
    names_for,
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


@contextlib.contextmanager
def _os_errors_name(out: Path, label: str | None = None) -> Iterator[None]:
    """A folder that cannot be written is bad input (exit 2), not an internal error."""
    try:
        yield
    except OSError as exc:
        where = label or f"--out {out}"
        raise ScaffoldError(f"{where}: cannot write there ({exc.strerror or exc})") from exc


def out_label(out: Path, given: bool) -> str:
    """How messages name the output folder: as the person's --out, or as the default it is."""
    return f"--out {out}" if given else f"{out} (the default output folder; --out chooses another)"


def absolute_target(target: str) -> str:
    """A file target with an absolute path, so that the state works from any directory."""
    from scaffold.resolve.target import is_file_target, split_target

    where, name = split_target(target)
    if is_file_target(where):
        where = str(Path(where).resolve())
    return f"{where}:{name}" if name else where


def check_output_dir(out: Path, label: str | None = None) -> None:
    """`label` names the folder in messages (default: ``--out OUT``)."""
    label = label or f"--out {out}"
    with _os_errors_name(out, label):
        _check_output_dir(out, label)


def _check_output_dir(out: Path, label: str) -> None:
    if out.exists() and not out.is_dir():
        raise ScaffoldError(f"{label}: exists and is not a directory")
    ancestor = next(p for p in (out, *out.parents) if p.exists())  # "/" at the latest
    if not ancestor.is_dir():
        raise ScaffoldError(f"{label}: cannot write there ({ancestor} is a file)")
    # what a killed run left inside goes once nothing is refused: it does not count here
    if out.is_dir() and set(out.iterdir()) - set(dead_temps(out)):
        if is_generated(out):
            raise ScaffoldError(
                f"{label}: already holds a generated backbone; "
                f"run `scaffold update {shlex.quote(str(out))}`"
            )
        raise ScaffoldError(
            f"{label}: not empty and not made by scaffold; choose an empty or new directory"
        )


def _is_temp_of(out: Path, path: Path) -> bool:
    # the name stays short of the 255-character limit whatever the output's name
    return path.name.startswith(f".{out.name[:64]}.") and path.name.endswith(TEMP_SUFFIX)


def new_temp(out: Path, inside: bool) -> tuple[Path, int]:
    """The temporary folder to render into, beside `out` or `inside` it (the same filesystem
    either way, so the result moves in by renames), and the descriptor that holds its lock
    while this run works in it. It gets its recognisable name only once locked, so that
    `remove_leftovers` never takes a live run's folder for a dead one."""
    parent = out if inside else out.parent
    parent.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix=f".{out.name[:64]}.", dir=parent))
    fd = os.open(made, os.O_RDONLY)
    try:
        # Where folders cannot be locked (some network filesystems), no run's folder counts as
        # dead: `remove_leftovers` cannot lock it either and leaves it.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = made.with_name(made.name + TEMP_SUFFIX)
        made.rename(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
    except BaseException:
        os.close(fd)
        shutil.rmtree(made, ignore_errors=True)
        raise
    return tmp, fd


def dead_temps(out: Path) -> list[Path]:
    """The temporary folders that runs killed while writing `out` left beside it (or in it);
    one that a live run holds locked is not among them. Nothing is removed."""
    found = []
    for folder in (out.parent, out):
        if not folder.is_dir():
            continue
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue  # a folder that cannot be listed is refused where it matters
        for tmp in entries:
            if not _is_temp_of(out, tmp) or not tmp.is_dir() or tmp.is_symlink():
                continue
            try:
                fd = os.open(tmp, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a run is working in it (or it cannot be locked here)
            else:
                found.append(tmp)
            finally:
                os.close(fd)
    return found


def remove_leftovers(out: Path, progress=None) -> list[Path]:
    """Remove what `dead_temps` finds, saying so. Returns those removed."""
    removed = dead_temps(out)
    for tmp in removed:
        shutil.rmtree(tmp, ignore_errors=True)
    say_removed(progress, removed)
    say_older_temps(out, progress)
    return removed


def older_temps(out: Path) -> list[Path]:
    """The temporary folders older versions of scaffold made beside `out` (``.OUT.XXXXXXXX``,
    without the suffix) that a killed run left holding its state. They were never locked, so
    a live run's cannot be told from a dead one's: they are reported, never removed."""
    if not out.parent.is_dir():
        return []
    names = {f".{out.name}.", f".{out.name[:64]}."}
    try:
        entries = sorted(out.parent.iterdir())
    except OSError:
        return []
    return [
        path
        for path in entries
        if any(
            path.name.startswith(prefix) and re.fullmatch(r"[a-z0-9_]{8}", path.name[len(prefix) :])
            for prefix in names
        )
        and not path.is_symlink()
        and (path / STATE_DIR).is_dir()
    ]


def say_older_temps(out: Path, progress) -> None:
    """Mention what `older_temps` finds: the person removes it once no run is writing."""
    if progress is None:
        return
    for path in older_temps(out):
        progress.print(
            f"{path} looks left by an interrupted run of an older scaffold; remove it if no "
            f"scaffold run is writing {out}",
            highlight=False,
            soft_wrap=True,
        )


def say_removed(progress, paths: list[Path], dry_run: bool = False) -> None:
    """Tell the person what scaffold removed (or would) that an interrupted run of it left."""
    if progress is None:
        return
    what = "would remove" if dry_run else "removed"
    for path in paths:
        progress.print(
            f"{what} {path}, left by an interrupted scaffold run", highlight=False, soft_wrap=True
        )


def _move_entries_up(tmp: Path) -> None:
    """Move what `tmp` holds into its parent (the empty output folder), the state last, so that
    the folder counts as generated only once it is complete; on an error, take it all back."""
    out = tmp.parent
    entries = sorted(tmp.iterdir(), key=lambda p: p.name == STATE_DIR)
    moved: list[Path] = []
    try:
        for entry in entries:
            entry.rename(out / entry.name)
            moved.append(out / entry.name)
        tmp.rmdir()
    except BaseException:
        for path in moved:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def check_weights_file(weights: Path, given: Path) -> None:
    """Load the checkpoint as verify and timm will (``weights_only=True``) and make sure it holds
    a state dict (name -> tensor), itself or under one key: before anything is written."""
    import torch

    from scaffold.errors import one_line

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


def taken_names() -> tuple[set[str], set[str], set[str]]:
    """The backbone names timm and TerraTorch already have, and TerraTorch's factory names."""
    import timm
    from terratorch.registry import MODEL_FACTORY_REGISTRY, TERRATORCH_BACKBONE_REGISTRY

    return (
        set(timm.list_models()),
        set(TERRATORCH_BACKBONE_REGISTRY),
        set(MODEL_FACTORY_REGISTRY),
    )


def model_module(target: str) -> str:
    """The dotted module TARGET names, without importing it."""
    from scaffold.resolve.target import is_file_target, package_root, split_target

    where, _ = split_target(target)
    return package_root(Path(where).resolve())[1] if is_file_target(where) else where


def model_import_root(target: str) -> Path | None:
    """The folder the generated package puts on ``sys.path`` for the model (None: installed)."""
    from scaffold.resolve.target import is_file_target, package_root, split_target

    where, _ = split_target(target)
    return package_root(Path(where).resolve())[0] if is_file_target(where) else None


def output_folders() -> tuple[str, ...]:
    """The folders scaffold writes in DIR beside the package: a package by one of these names
    would share it with them."""

    return (DATA_DIR, RUNS_DIR, BASELINES_DIR, SPLITS_DIR)


def _holds_modules(spec, out: Path | None) -> bool:
    """Whether the module `spec` finds is Python a package by its name would hide. Any directory
    is a namespace package to the import system; one counts only when it holds Python to
    import: an empty one, the output folder itself or an earlier output of scaffold hide
    nothing the model uses."""
    if spec is None:
        return False
    if spec.origin is not None:  # a module or a regular package
        return True
    suffixes = tuple(importlib.machinery.all_suffixes())
    for location in spec.submodule_search_locations or ():
        folder = Path(location)
        if (out is not None and folder.resolve() == out.resolve()) or is_generated(folder):
            continue
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                if entry.is_file() and entry.name.endswith(suffixes):
                    return True
                if entry.is_dir() and entry.name.isidentifier() and _holds_python(entry, suffixes):
                    return True
    return False


def _holds_python(folder: Path, suffixes: tuple[str, ...]) -> bool:
    """A subpackage: a folder with Python files of its own (one level: not a dataset walk)."""
    with contextlib.suppress(OSError):
        return any(p.is_file() and p.name.endswith(suffixes) for p in folder.iterdir())
    return False


def choose_name(
    requested: str | None,
    spec=None,
    module: str | None = None,
    root: Path | None = None,
    out: Path | None = None,
) -> str:
    """The requested name, checked, or a free default from the spec's class name. `module`
    (the model's module) and `root` (its import folder) stand in for the spec when only a
    requested name is checked; `out` is the output folder (which may sit beside the model)."""
    from scaffold.render.backbone import default_name

    timm_names, terratorch_names, factory_names = taken_names()
    module = module or spec.module
    if root is None and spec is not None and spec.import_root:
        root = Path(spec.import_root)
    model_top = module.split(".")[0]
    folders = output_folders()

    def problem(name: str) -> str | None:
        if name in folders:
            return (
                f"is the name of a folder scaffold writes in the output folder beside the "
                f"package ({', '.join(folders)})"
            )
        if name in timm_names:
            return "is already a timm model"
        if name in terratorch_names:
            return "is already a TerraTorch backbone"
        if names_for(name).factory_class in factory_names:
            return f"would register {names_for(name).factory_class}, which TerraTorch already has"
        if name == model_top:
            return f"is the name of the model's own module ({module})"
        # The package goes first on sys.path: it would shadow a module beside the model.
        where = out if out is not None else Path.cwd() / name
        beside = (
            None if root is None else importlib.machinery.PathFinder.find_spec(name, [str(root)])
        )
        if _holds_modules(beside, where):
            return (
                f"is the name of a module in the model's folder {root}, which the package "
                "would hide"
            )
        if _holds_modules(importlib.util.find_spec(name), where):
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
    from scaffold.analyse import analyse
    from scaffold.render.backbone import (
        CONFIG_FILE,
        DATA_DIR,
        NUM_CLASSES,
        TASKS,
        RenderOptions,
        check_name_syntax,
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
        from scaffold.data import survey_all

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
        from scaffold.console import skipped_line

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
        with status(progress, f"writing {out}"), _os_errors_name(out, label):
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
                from scaffold.data import write_datasets

                write_datasets(tmp / STATE_DIR, datasets)
            if tmp.parent == out:
                _move_entries_up(tmp)
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
