"""The render stage: BackboneSpec + options -> the generated files, with copier and jinja2.

Every name and value reaches the generated Python through ``repr`` (or as an identifier checked to
be one) and the YAML through a YAML dumper; the templates in ``templates/backbone`` only place
them. Python files are formatted with ruff, so what a person opens is clean under ``ruff``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.data.geobench import PlannedTask
from scaffold.data.geobench2 import Planned2
from scaffold.data.spec import DatasetSpec
from scaffold.errors import ScaffoldError
from scaffold.render import smoke
from scaffold.render.dump import dump
from scaffold.render.tasks import DATAMODULES
from scaffold.render.tracks import track_sections
from scaffold.spec import TEMPORAL_LAYOUTS, BackboneSpec
from scaffold.write.names import DATA_DIR, RUNS_DIR, Names, names_for

TASKS = ("segmentation", "classification", "regression")
NUM_CLASSES = 2
SMOKE_BATCH = 4


@dataclass(frozen=True)
class RenderOptions:
    name: str  # registered backbone name == package name
    out: Path  # final (absolute) output directory
    task: str
    target: str
    weights: Path | None = None
    datasets: tuple[DatasetSpec, ...] = ()  # real tasks (one per --data folder) instead of smoke
    ray: bool = False  # also write the Ray route's config
    iterate2: bool = False  # also iterate2's trial script and HPO YAMLs (render/iterate2.py)
    baselines: tuple[str, ...] = ()
    geobench: tuple[PlannedTask, ...] = ()  # GEO-Bench datasets as tasks (--geobench)
    bands: tuple[str, ...] = ()  # the model's input bands by TerraTorch's names (--bands)
    protocol: tuple[str, ...] = ("full_ft",)  # evaluation tracks (render/tracks.py)
    seeds: int = 5  # repeats of each task (run_repetitions; fit/seeds.sh's seeds 0..N-1)
    geobench2: tuple[Planned2, ...] = ()  # GEO-Bench-2 datasets as tasks (--geobench2)


def render(spec: BackboneSpec, options: RenderOptions, dest: Path) -> list[str]:
    """Render the template into the empty folder `dest`; return the files written (relative)."""
    from copier import run_copy

    template = resources.files("scaffold.templates").joinpath("backbone")
    data = template_data(spec, options)
    with resources.as_file(template) as template_dir:
        run_copy(
            str(template_dir),
            str(dest),
            data=data,
            defaults=True,
            overwrite=True,
            quiet=True,
            unsafe=False,
        )
    if options.ray:  # made from the rendered benchmark.yaml, so the two cannot drift apart
        from scaffold.render.ray import write_ray_config

        write_ray_config(dest, options.out, names_for(options.name).package, data["header"])
    if options.iterate2:  # derived from the rendered benchmark.yaml too
        from scaffold.render.iterate2 import write_iterate2

        write_iterate2(dest, options.out, data["header"], names_for(options.name).package)
    if options.baselines:  # derived from the rendered benchmark.yaml
        from scaffold.render.baselines import write_baselines

        write_baselines(dest, options.baselines, tuple(spec.input_shape))
    # One `terratorch fit` config per task, derived from the rendered benchmark.yaml.
    from scaffold.render.fit import write_fit_configs

    write_fit_configs(dest, options.out, data["header"])
    files = sorted(
        str(p.relative_to(dest))
        for p in dest.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    format_python(dest, [f for f in files if f.endswith(".py")])
    # scaffold's runtime, copied as it is (formatted already): after the formatting.
    files = sorted([*files, *write_runtime(dest / names_for(options.name).package)])
    if options.datasets:
        from scaffold.render.tasks import split_files

        lists = split_files(options.datasets, template_data(spec, options)["header"])
        for rel, text in lists.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(text, encoding="utf-8")
        files = sorted({*files, *lists})
    return files


# The runtime's folder inside a generated package: a verbatim copy of scaffold/runtime.
RUNTIME_DIR = "_runtime"


def runtime_sources() -> dict[str, bytes]:
    """scaffold's runtime, file by file (``{"backbone.py": ...}``), as it is copied."""
    folder = resources.files("scaffold.runtime")
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".py")
    }


def write_runtime(package_dir: Path) -> list[str]:
    """Copy scaffold's runtime into ``<package>/_runtime/``; return the files written, relative to
    the package's parent (the output folder)."""
    target = package_dir / RUNTIME_DIR
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in runtime_sources().items():
        (target / name).write_bytes(content)
        written.append(f"{package_dir.name}/{RUNTIME_DIR}/{name}")
    return written


def format_python(root: Path, files: list[str]) -> None:
    """ruff: sort imports and format, with ruff's defaults (not the settings of any project)."""
    if not files:
        return
    paths = [str(root / f) for f in files]
    ruff = [sys.executable, "-m", "ruff"]
    for cmd in (
        [*ruff, "check", "--isolated", "--no-cache", "--select", "I", "--fix", "--quiet", *paths],
        [*ruff, "format", "--isolated", "--no-cache", "--quiet", *paths],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ruff failed on the generated code: {done.stdout}{done.stderr}")


def template_data(spec: BackboneSpec, options: RenderOptions) -> dict[str, Any]:
    names = names_for(options.name)
    package_dir = options.out / names.package
    header = generated_header(options.target)
    return {
        "package": names.package,
        "backbone_class": names.backbone_class,
        "factory_class": names.factory_class,
        "header": header,
        "py": python_literals(spec, options),
        "yaml_text": yaml_sections(spec, options, names, package_dir),
        "facts": {
            "model_name": spec.qualname,
            "input_shape": str(tuple(spec.input_shape)),
            "necks_comment": necks_comment(spec),
            "real_data": bool(options.datasets or options.geobench or options.geobench2),
            "full_ft": "full_ft" in options.protocol,
            "forward_call": not spec.forward_call.plain,
            "modalities": bool(spec.forward_call.modalities),
        },
    }


# The width of the generated files: ruff format's default, which formats the generated Python.
LINE_LENGTH = 88


def generated_header(target: str) -> str:
    """The comment that starts every generated file: its first line says it was generated and
    that `scaffold update` keeps hand edits; the model it came from follows, whole, on a line of
    its own when it does not fit beside "Model:" (marked for ruff when it fits no line)."""
    first = (
        f"# Generated by scaffold {__version__}; edit freely, `scaffold update` keeps hand edits."
    )
    model = f"# Model: {target!r}"
    if len(model) <= LINE_LENGTH:
        return f"{first}\n{model}"
    alone = f"# {target!r}"
    return f"{first}\n# Model:\n{alone}" + ("  # noqa: E501" if len(alone) > LINE_LENGTH else "")


def python_literals(spec: BackboneSpec, options: RenderOptions) -> dict[str, str]:
    """Python source for each value the Python templates place, made by repr."""
    features = []
    for f in spec.features:
        entry: dict[str, Any] = {
            "module": f"model.{f.module}" if f.source in ("hook", "input") else f.module,
            "num_chs": f.num_chs,
            "reduction": f.reduction,
            "layout": f.layout,
            "source": f.source,
        }
        if f.source in ("hook", "input"):
            entry["call"] = f.call
            entry["after"] = [f"model.{m}" for m in f.after]
        if f.source == "output" or f.key is not None:
            entry["key"] = f.key
        if f.layout in ("NLC", "NTLC"):
            entry["prefix_tokens"] = f.prefix_tokens
            if f.suffix_tokens:
                entry["suffix_tokens"] = f.suffix_tokens
            if f.groups > 1:
                entry["groups"] = f.groups
        if f.layout in TEMPORAL_LAYOUTS and f.num_frames is not None:
            entry["num_frames"] = f.num_frames
        features.append(entry)
    conv = spec.first_conv
    conv2d = f"model.{conv}" if conv and not spec.first_conv_3d else None
    conv3d = (
        conv if conv and spec.first_conv_3d else None
    )  # relative to the model: see registration
    tag = f"{options.name}.scaffold"
    cfg = {"file": str(options.weights)} if options.weights else {}
    default_cfgs = f"{{{tag!r}: _cfg({', '.join(f'{k}={v!r}' for k, v in cfg.items())})}}"
    return {
        "module": repr(spec.module),
        "qualname": repr(spec.qualname),
        "import_root": repr(
            import_root(spec.import_root, options.out / names_for(options.name).package)
        ),
        "args": py_repr(spec.args),
        "in_chans_arg": repr(spec.in_chans_arg),
        "in_chans": repr(spec.in_chans),
        "img_size": repr(tuple(spec.img_size)),
        "num_frames": repr(spec.num_frames),
        "input_layout": repr(spec.input_layout),
        # One feature a line (the template keeps ruff's formatter off them).
        "features": "[\n" + "".join(f"{wrapped_entry(e)},\n" for e in features) + "]",
        "out_indices": repr(tuple(spec.out_indices)),
        "frozen": repr(tuple(spec.frozen)),
        "package": repr(options.name),
        "first_conv": repr(conv2d),
        "first_conv_3d": repr(conv3d),
        "default_cfgs": default_cfgs,
        "necks": repr(default_necks(spec)),
        # a model with several inputs takes each one's bands whole: none is chosen by name
        "pretrained_bands": repr(() if spec.forward_call.modalities else tuple(options.bands)),
        **forward_call_literals(spec),
    }


def import_root(root: str | None, package_dir: Path) -> str | None:
    """The model's import root as backbone.py states it: relative to the package's folder when
    the model lives inside the output folder or beside it (in the output folder's parent), so
    that the two move together; else absolute (None: an installed module)."""
    if root is None:
        return None
    where = Path(root)
    if where.is_absolute() and where.is_relative_to(package_dir.parent.parent):
        return Path(os.path.relpath(where, package_dir)).as_posix()
    return root


def wrapped_entry(entry: dict[str, Any], width: int = LINE_LENGTH) -> str:
    """A FEATURES entry as one or more lines within `width` (lists broken between items), indented
    four spaces, continued at five: written as it is (the template keeps ruff's formatter off)."""
    pieces: list[str] = []
    for key, value in entry.items():
        head = f"{double_quoted(key)}: "
        if isinstance(value, list) and len(value) > 1:
            items = [double_quoted(v) for v in value]
            pieces += [f"{head}[{items[0]}", *items[1:-1], f"{items[-1]}]"]
        else:
            pieces.append(head + double_quoted(value))
    lines, line = [], "    {"
    for i, piece in enumerate(pieces):
        text = piece + ("}" if i == len(pieces) - 1 else ",")
        tail = "," if i == len(pieces) - 1 else ""  # the entry's own comma
        if line.strip() not in ("{", "") and len(line) + 1 + len(text) + len(tail) > width:
            lines.append(line)
            line = "     " + text
        else:
            line += ("" if line.endswith("{") else " ") + text
    lines.append(line)
    return "\n".join(lines)


def double_quoted(value: Any) -> str:
    """`repr(value)` with strings in double quotes, as ruff's formatter writes them (for code it
    does not format)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{double_quoted(k)}: {double_quoted(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(double_quoted(v) for v in value) + "]"
    if isinstance(value, tuple):
        items = [double_quoted(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return repr(value)


def py_repr(value: Any) -> str:
    """`repr(value)` as Python that runs: NaN and infinities (a model's way to say a value is
    unknown) are written ``float("nan")``, ``float("inf")``, inside lists, tuples and dicts too."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return 'float("nan")'
        return 'float("inf")' if value > 0 else '-float("inf")'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_repr(k)}: {py_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(py_repr(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(py_repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def forward_call_literals(spec: BackboneSpec) -> dict[str, str]:
    """How the forward is called (``spec.forward_call``), for the wrapper's literals."""
    call = spec.forward_call
    if call.plain:
        return {}
    return {
        "image_arg": repr(call.image),
        "image_positional": repr(call.image_positional),
        "forward_args": py_repr(call.args),
        "forward_forms": repr(call.forms),
        "per_band_args": repr(call.per_band),
        "per_frame_args": repr(call.per_frame),
        "fixed_noise": repr(call.fixed_noise),
        "modalities": repr(call.modalities),
    }


def default_necks(spec: BackboneSpec) -> list[dict[str, Any]]:
    """A one-resolution model (a ViT) with four outputs gets a learned pyramid for its decoder."""
    selected = spec.selected
    if len(selected) == 4 and len({f.reduction for f in selected}) == 1:
        return [{"name": "LearnedInterpolateToPyramidal"}]
    return []


def necks_comment(spec: BackboneSpec) -> str:
    if default_necks(spec):
        return "one resolution only, so a learned pyramid (x4, x2, x1, x1/2) for the decoder."
    return "a pyramid already, so none."


# -- the benchmark YAML --------------------------------------------------------------------------
def yaml_sections(
    spec: BackboneSpec, options: RenderOptions, names: Names, package_dir: Path
) -> dict[str, str]:
    task = options.task
    # The backbone is the same for every task: defaults. The decoder and the classes belong to
    # a task (terratorch-iterate merges each task's terratorch_task over the defaults, key by
    # key), so they are said once, in the task.
    model_args: dict[str, Any] = {
        "backbone": options.name,
        "backbone_pretrained": options.weights is not None,
        "backbone_in_chans": spec.in_chans,
    }
    if spec.forward_call.args:
        # The forward's other arguments (wavelengths, ...): change them with the bands.
        model_args["backbone_forward_args"] = dict(spec.forward_call.args)
    task_model_args: dict[str, Any]
    if task == "classification":
        task_model_args = {"decoder": "IdentityDecoder"}
    else:
        task_model_args = {"decoder": "UperNetDecoder", "decoder_channels": 64}
    if task in ("segmentation", "classification"):
        task_model_args["num_classes"] = NUM_CLASSES
    terratorch_task = {
        "model_factory": names.factory_class,
        "optimizer": "AdamW",
        "model_args": model_args,
    }
    task_entry: dict[str, Any] = {"type": task, "direction": "min", "metric": "val/loss"}
    if task == "segmentation":
        task_entry["terratorch_task"] = {"loss": "ce", "ignore_index": -1}
    elif task == "classification":
        task_entry["terratorch_task"] = {"loss": "ce"}
    else:
        task_entry["terratorch_task"] = {"loss": "rmse"}
    task_entry["terratorch_task"]["model_args"] = task_model_args
    sections = {
        "top": dump({"experiment_name": options.name, "run_name": f"{options.name}_benchmark"}),
        # Paths inside the folder are relative to it (see the YAML's opening comment).
        "custom_modules_path": dump({"custom_modules_path": package_dir.name}),
        "trainer_args": dump({"accelerator": "auto", "devices": 1, "log_every_n_steps": 1}),
        "smoke_limits": dump({"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1}),
        "terratorch_task": dump(terratorch_task),
        "task": dump(task_entry),
        "datamodule": dump(datamodule(spec, task, Path(DATA_DIR))),
        "search": dump(
            {
                "n_trials": 1,
                "optimization_space": {
                    "lr": {"min": 1.0e-5, "max": 1.0e-3, "type": "real", "log": True}
                },
            }
        ),
        "storage": dump(
            {
                "save_models": False,
                # Never "./runs/...": terratorch-iterate reads a storage_uri that starts
                # with "." against its own installed folder.
                "storage_uri": f"{RUNS_DIR}/hpo",
                "ray_storage_path": f"{RUNS_DIR}/ray",
            }
        ),
    }
    if options.datasets or options.geobench or options.geobench2:  # real tasks
        from scaffold.render.tasks import data_sections

        sections |= data_sections(
            options.datasets,
            spec,
            terratorch_task,
            geobench=options.geobench,
            bands=options.bands,
            pretrained=options.weights is not None,
            geobench2=options.geobench2,
        )
    # The frozen track's tasks and run_repetitions (render/tracks.py).
    smoke = {"name": "smoke", **task_entry, "datamodule": datamodule(spec, task, Path(DATA_DIR))}
    return sections | track_sections(sections, smoke, options.protocol, options.seeds)


def datamodule(spec: BackboneSpec, task: str, data: Path) -> dict[str, Any]:
    """The smoke task's datamodule: TerraTorch's generic one for `task`, on the smoke data."""
    args: dict[str, Any] = {"batch_size": SMOKE_BATCH, "num_workers": 0}
    class_path = DATAMODULES[task]
    if task in ("segmentation", "classification"):
        args["num_classes"] = NUM_CLASSES
    if task == "classification":
        for split in smoke.SPLITS:
            args[f"{split}_data_root"] = str(data / split)
    else:
        for split in smoke.SPLITS:
            args[f"{split}_data_root"] = str(data / split / smoke.IMAGE_DIR)
            args[f"{split}_label_data_root"] = str(data / split / smoke.LABEL_DIR)
        args["img_grep"] = smoke.IMAGE_GREP
        args["label_grep"] = smoke.LABEL_GREP
    args["means"] = [smoke.BAND_MEAN] * spec.in_chans
    args["stds"] = [smoke.BAND_STD] * spec.in_chans
    if spec.temporal:
        # Files hold C*T bands, time-major; the datamodule makes (B, C, T, H, W) batches.
        bands = list(range(spec.in_chans))
        args |= {"expand_temporal_dimension": True, "dataset_bands": bands, "output_bands": bands}
    return {"class_path": class_path, "init_args": args}


def check_task(spec: BackboneSpec, task: str) -> None:
    if task == "classification" and spec.temporal:
        raise ScaffoldError(
            "--task classification: terratorch 1.2's GenericNonGeoClassificationDataModule cannot "
            "read multitemporal images; use --task segmentation or regression for this model"
        )
