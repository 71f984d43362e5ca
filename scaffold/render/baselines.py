"""Baselines: reference backbones benchmarked under the very same tasks, budget and search space.

A baseline config is *derived* from the rendered ``benchmark.yaml``: `baseline_config` takes the
main config as a dict and returns the baseline's, which differs only in the backbone keys
(``model_factory``, ``backbone``, ``backbone_*``, ``necks``) and in ``experiment_name``. Everything
else (tasks, datamodules, trainer settings, search space, trial count, storage) is copied, so the
numbers are comparable, and `scaffold update` keeps the files in step like any generated file.

The necks a baseline needs are not guessed from its name: `probe_backbone` builds it through
TerraTorch's BACKBONE_REGISTRY on the meta device (shapes only, no weights) and looks at what its
forward returns for the benchmark's input: a pyramid of (B, C, H, W) maps needs none; (B, H, W, C)
maps are permuted; one resolution (a ViT's tokens) is selected, reshaped and made a pyramid.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaffold import __version__
from scaffold.errors import ScaffoldError, one_line
from scaffold.render.dump import dump
from scaffold.write.names import CONFIG_FILE, baseline_config_file

FACTORY = "EncoderDecoderFactory"
# backbone_* arguments that describe the data, not the backbone: a baseline keeps them.
DATA_BACKBONE_ARGS = ("backbone_in_chans",)
PYRAMID_INPUTS = 4  # LearnedInterpolateToPyramidal takes exactly four maps


@dataclass(frozen=True)
class Baseline:
    """What a baseline backbone needs in the config, found by building it."""

    name: str
    necks: list[dict[str, Any]] = field(default_factory=list)
    pretrained: bool = False
    model_args: dict[str, Any] = field(default_factory=dict)  # extra backbone_* arguments
    notes: tuple[str, ...] = ()


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
        f"# (TerraTorch's {FACTORY}, with the necks this backbone's outputs need). Run it with:",
        f"#   terratorch iterate --hpo --config {baseline_config_file(baseline.name)}",
        "# custom_modules_path stays: importing that package lets MLflow use its file store.",
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


# -- building the backbone to see what it needs --------------------------------------------------
@functools.cache  # `update` derives the configs twice; a build is the same each time
def probe_backbone(name: str, input_shape: tuple[int, ...]) -> Baseline:
    """Build `name` as TerraTorch would (meta device: shapes only) and derive its necks.

    `input_shape` is the benchmark's input with the batch dimension, (B, C, H, W) or
    (B, C, T, H, W).
    """
    import torch
    from terratorch.registry import BACKBONE_REGISTRY

    in_chans = int(input_shape[1])
    size = tuple(int(s) for s in input_shape[-2:])
    model_args: dict[str, Any] = {}
    # As given; a timm ViT told the image size; a TerraTorch backbone told its bands (it reads
    # the channel count from `bands`, not `in_chans`).
    attempts: list[dict[str, Any]] = [
        {},
        {"img_size": list(size)},
        {"bands": list(range(in_chans))},
    ]
    last_error: Exception | None = None
    for extra in attempts:
        try:
            with torch.device("meta"):
                model = BACKBONE_REGISTRY.build(name, pretrained=False, in_chans=in_chans, **extra)
                model.eval()
                with torch.no_grad():
                    outputs = model(torch.zeros(1, *input_shape[1:]))
        except Exception as exc:  # a ViT built for another size raises here; try the next way
            last_error = exc
            continue
        model_args = {f"backbone_{k}": v for k, v in extra.items()}
        break
    else:
        raise ScaffoldError(
            f"--baseline {name}: TerraTorch cannot build it for the benchmark's input "
            f"{tuple(input_shape[1:])} ({one_line(last_error) if last_error else 'no error'})"
        )
    if isinstance(outputs, torch.Tensor) or not isinstance(outputs, (list, tuple)):
        raise ScaffoldError(f"--baseline {name}: its forward returns no list of feature maps")
    channels = list(getattr(model, "out_channels", []))
    necks = necks_for(name, [tuple(o.shape) for o in outputs], channels, size)
    pretrained, notes = _pretrained_offline(name, in_chans, extra)
    return Baseline(name, necks, pretrained, model_args, notes)


def necks_for(
    name: str, shapes: list[tuple[int, ...]], channels: list[int], size: tuple[int, int]
) -> list[dict[str, Any]]:
    """The TerraTorch necks that turn these backbone outputs into a pyramid of (B, C, H, W)."""
    if not shapes or len(channels) != len(shapes):
        raise ScaffoldError(
            f"--baseline {name}: {len(shapes)} outputs but out_channels {channels}: "
            "TerraTorch cannot wire a decoder to it"
        )
    necks: list[dict[str, Any]] = []
    if all(len(s) == 3 for s in shapes):  # tokens (B, N, C)
        grids = {_token_grid(name, s[1]) for s in shapes}
        if len(grids) != 1:
            raise ScaffoldError(f"--baseline {name}: token outputs of different lengths {shapes}")
        prefix = grids.pop()
        spatial = [1] * len(shapes)  # one resolution
        reshape = {"name": "ReshapeTokensToImage", "remove_cls_token": prefix == 1}
    elif all(len(s) == 4 for s in shapes):
        if all(s[1] == c for s, c in zip(shapes, channels, strict=True)):
            pass
        elif all(s[3] == c for s, c in zip(shapes, channels, strict=True)):
            necks.append({"name": "PermuteDims", "new_order": [0, 3, 1, 2]})  # NHWC
            shapes = [(s[0], s[3], s[1], s[2]) for s in shapes]
        else:
            raise ScaffoldError(
                f"--baseline {name}: outputs {shapes} do not carry out_channels {channels}"
            )
        spatial = [s[-1] for s in shapes]
        reshape = None
    else:
        raise ScaffoldError(
            f"--baseline {name}: outputs {shapes}: only (B, C, H, W), (B, H, W, C) and "
            "(B, N, C) tokens can be wired to TerraTorch's decoders"
        )
    if len(set(spatial)) > 1:
        return necks  # a pyramid already
    # One resolution (a ViT): four maps spread over the depth, laid out as images, then a
    # learned pyramid; fewer than four get an interpolated one.
    count = len(shapes)
    if count > PYRAMID_INPUTS:
        indices = [round((i + 1) * count / PYRAMID_INPUTS) - 1 for i in range(PYRAMID_INPUTS)]
        necks.append({"name": "SelectIndices", "indices": indices})
    if reshape is not None:
        necks.append(reshape)
    if count >= PYRAMID_INPUTS:
        necks.append({"name": "LearnedInterpolateToPyramidal"})
    else:
        necks.append({"name": "InterpolateToPyramidal"})
    return necks


def _token_grid(name: str, tokens: int) -> int:
    """How many prefix tokens (0 or 1: a class token) leave a square grid of patches."""
    for prefix in (0, 1):
        side = math.isqrt(tokens - prefix)
        if tokens - prefix > 0 and side * side == tokens - prefix:
            return prefix
    raise ScaffoldError(
        f"--baseline {name}: {tokens} tokens are no square grid (with or without a class "
        "token); TerraTorch's ReshapeTokensToImage cannot lay them out"
    )


def _pretrained_offline(name: str, in_chans: int, extra: dict[str, Any]) -> tuple[bool, tuple]:
    """Whether TerraTorch builds `name` with pretrained weights without downloading them."""
    import huggingface_hub.constants as hub
    import torch
    from terratorch.registry import BACKBONE_REGISTRY

    saved = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True  # read at call time: no download, only what is cached
    try:
        with torch.device("meta"):
            BACKBONE_REGISTRY.build(name, pretrained=True, in_chans=in_chans, **extra)
    except Exception as exc:
        note = (
            f"backbone_pretrained: false: TerraTorch cannot build {name} with pretrained weights "
            f"offline here (it would download them, or has none: {one_line(exc)[:160]}). Set it "
            "to true where they can be downloaded, to benchmark the pretrained backbone."
        )
        return False, tuple(_wrap(note))
    finally:
        hub.HF_HUB_OFFLINE = saved
    return True, ()


def _wrap(text: str, width: int = 96) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width)


def configs_of(directory: Path, names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(baseline name, its config path) for each baseline recorded for DIR."""
    return [(name, directory / baseline_config_file(name)) for name in names]


def summary(directory: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """What each baseline config on disk says: its file, experiment and whether pretrained."""
    found = []
    for name, path in configs_of(directory, names):
        entry: dict[str, Any] = {"name": name, "config": str(path)}
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            model_args = config["defaults"]["terratorch_task"]["model_args"]
            entry["experiment_name"] = config["experiment_name"]
            entry["backbone_pretrained"] = bool(model_args.get("backbone_pretrained"))
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            entry["missing"] = True  # deleted or unreadable: the person's choice, reported
        found.append(entry)
    return found
