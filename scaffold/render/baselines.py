"""Baselines: reference backbones benchmarked under the very same tasks, budget and search space.

A baseline config is *derived* from the rendered ``benchmark.yaml``: `baseline_config` takes the
main config as a dict and returns the baseline's, which differs only in the backbone keys
(``model_factory``, ``backbone``, ``backbone_*``, ``necks``) and in ``experiment_name``. Everything
else (tasks, datamodules, trainer settings, search space, trial count, storage) is copied, so the
numbers are comparable, and `scaffold update` keeps the files in step like any generated file.

The necks a baseline needs are not guessed from its name: `scaffold.analyse.baselines` probes
the backbone itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from scaffold import __version__
from scaffold.analyse.baselines import Baseline, probe_backbone
from scaffold.errors import ScaffoldError
from scaffold.render.dump import dump
from scaffold.write.names import CONFIG_FILE, baseline_config_file

FACTORY = "EncoderDecoderFactory"
# backbone_* arguments that describe the data, not the backbone: a baseline keeps them.
DATA_BACKBONE_ARGS = ("backbone_in_chans",)


def experiment_name(main: str, name: str) -> str:
    """``<main>-vs-<name>``. Not ``<main>_...``: terratorch-iterate's --repeat globs
    ``<experiment>_*`` for its result files, which would then pick up a baseline's."""
    return f"{main}-vs-{name}"


def check_names(names: tuple[str, ...] | list[str], own: str | None = None) -> None:
    """Every name is a backbone TerraTorch builds by name (ScaffoldError otherwise)."""
    if not names:
        return
    from terratorch.registry import BACKBONE_REGISTRY

    for name in names:
        if own is not None and name == own:
            raise ScaffoldError(f"--baseline {name!r} is the backbone being benchmarked")
        if not name or name not in BACKBONE_REGISTRY:
            raise ScaffoldError(
                f"--baseline {name!r}: TerraTorch's BACKBONE_REGISTRY does not know it (a timm "
                "name such as resnet18, or a TerraTorch name such as terratorch_prithvi_eo_v2_300)"
            )


# -- deriving the config -------------------------------------------------------------------------
def baseline_config(main: dict[str, Any], baseline: Baseline) -> dict[str, Any]:
    """The main benchmark config with `baseline` as the backbone; nothing else changes."""
    config = copy.deepcopy(main)
    config["experiment_name"] = experiment_name(str(main["experiment_name"]), baseline.name)
    defaults = config.setdefault("defaults", {})
    task_defaults = defaults.setdefault("terratorch_task", {})
    _swap_backbone(task_defaults, baseline, defaults=True)
    for task in config.get("tasks") or []:
        if isinstance(task, dict) and isinstance(task.get("terratorch_task"), dict):
            _swap_backbone(task["terratorch_task"], baseline, defaults=False)
    return config


def _swap_backbone(terratorch_task: dict[str, Any], baseline: Baseline, defaults: bool) -> None:
    """Replace the backbone keys of one ``terratorch_task`` (the defaults' or a task's)."""
    if defaults or "model_factory" in terratorch_task:
        terratorch_task["model_factory"] = FACTORY
    model_args = terratorch_task.get("model_args")
    if model_args is None and not defaults:
        return
    model_args = {} if model_args is None else model_args
    kept = {
        key: value
        for key, value in model_args.items()
        if key in DATA_BACKBONE_ARGS or not _is_backbone_key(key)
    }
    if defaults or "backbone" in model_args:
        kept["backbone"] = baseline.name
    if defaults or "backbone_pretrained" in model_args:
        kept["backbone_pretrained"] = baseline.pretrained
    if defaults:
        kept |= copy.deepcopy(baseline.model_args)
    if baseline.necks and (defaults or "necks" in model_args):
        kept["necks"] = copy.deepcopy(baseline.necks)
    # The main config's key order first, the baseline's own keys after.
    ordered = {k: kept[k] for k in model_args if k in kept}
    ordered |= {k: v for k, v in kept.items() if k not in ordered}
    terratorch_task["model_args"] = ordered


def _is_backbone_key(key: str) -> bool:
    return key in ("backbone", "necks") or key.startswith("backbone_")


def baseline_yaml(main: Any, baseline: Baseline, header: str) -> str:
    """The baseline's YAML file: a comment that says what it is, then the derived config."""
    if not isinstance(main, dict) or "experiment_name" not in main:
        raise ScaffoldError("benchmark.yaml: not a terratorch-iterate config (no experiment_name)")
    config = baseline_config(main, baseline)
    lines = [
        header,
        f"# Baseline `{baseline.name}` for the benchmark in ../benchmark.yaml: the same tasks,",
        "# datamodules, trainer settings, search space and trials; only the backbone differs",
        f"# (TerraTorch's {FACTORY}, with the necks this backbone's outputs need). Run it from",
        "# the folder of benchmark.yaml (paths are relative to that folder, as there):",
        (
            f"#   MLFLOW_ALLOW_FILE_STORE=true terratorch iterate --hpo --config "
            f"{baseline_config_file(baseline.name)}"
        ),
        *(f"# {note}" for note in baseline.notes),
    ]
    return "\n".join(lines) + "\n" + dump(config) + "\n"


def baseline_texts(
    main_text: str, names: tuple[str, ...], input_shape: tuple[int, ...]
) -> dict[str, bytes]:
    """``{"baselines/<name>.yaml": content}``, derived from the main config's text."""

    try:
        main = yaml.safe_load(main_text)
    except yaml.YAMLError as exc:
        raise ScaffoldError(f"benchmark.yaml: not valid YAML ({str(exc).splitlines()[0]})") from exc
    header = (
        f"# Generated by scaffold {__version__} from benchmark.yaml. "
        "Edit freely: `scaffold update` keeps hand edits."
    )
    return {
        baseline_config_file(name): baseline_yaml(
            main, probe_backbone(name, input_shape), header
        ).encode()
        for name in names
    }


def write_baselines(dest: Path, names: tuple[str, ...], input_shape: tuple[int, ...]) -> None:
    """Write ``baselines/<name>.yaml`` into the rendered folder `dest`, from its benchmark.yaml."""

    if not names:
        return
    main_text = (dest / CONFIG_FILE).read_text(encoding="utf-8")
    for rel, content in baseline_texts(main_text, names, input_shape).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
