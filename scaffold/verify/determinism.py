"""Checks of how the backbone calls the model: determinism and the per-band forward arguments.

- ``determinism``: in eval mode the same input twice (with different random states between) gives
  the same features, and token features hold every token of the grid. An encoder that masks or
  shuffles tokens at random (MAE pretraining) fails here, before a benchmark trains a decoder on
  random tokens.
- ``forward args``: a forward argument that holds one value per band (wavelengths) has as
  many values as the benchmark's ``backbone_in_chans``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from scaffold.errors import one_line
from scaffold.verify.checks import FORWARD_ARGS_KEY
from scaffold.verify.types import CheckFailed

SEEDS = (1, 2)


def check_determinism(context) -> str:
    """The backbone as timm builds it by default (FORWARD_ARGS) and, when the YAML gives other
    forward arguments, as the benchmark builds it."""
    builds: list[tuple[str, dict[str, Any]]] = [("", {})]
    tasks = context.task_model_args()
    if tasks and tasks[0][1].get(FORWARD_ARGS_KEY):
        given = {"forward_args": tasks[0][1][FORWARD_ARGS_KEY]}
        builds.append((f" (with the YAML's {FORWARD_ARGS_KEY})", given))
    count = 0
    for where, kwargs in builds:
        count = _same_twice(context, kwargs, where)
    return f"{count} features, the same on two eval-mode calls with every token of the grid"


def _same_twice(context, kwargs: dict[str, Any], where: str) -> int:
    import timm
    import torch

    x = context.example_input()
    height, width = x.shape[-2:]
    backbone: Any  # the generated FeatureInfo wrapper: feature_info, out_indices
    try:
        if kwargs:
            kwargs = context.channel_kwargs() | kwargs
            backbone = timm.create_model(context.name, **kwargs).eval()
        else:
            backbone = context.built()
    except Exception as exc:
        raise CheckFailed(
            f"timm.create_model({context.name!r}){where} failed: {one_line(exc)}"
        ) from exc
    runs = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        try:
            with torch.no_grad():
                runs.append([f.detach().clone() for f in backbone(x)])
        except Exception as exc:
            raise CheckFailed(f"the backbone's forward{where} raised {one_line(exc)}") from exc
    names = backbone.feature_info.module_name()
    for i, (a, b) in enumerate(zip(*runs, strict=True)):
        if a.shape != b.shape:
            raise CheckFailed(
                f"not deterministic{where}: in eval mode the same input twice gave features of "
                f"different shapes: feature {i} (`{names[i]}`) was {tuple(a.shape)}, then "
                f"{tuple(b.shape)}: the forward drops tokens at random (masking is on)"
            )
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            worst = (a - b).abs().nan_to_num(nan=math.inf).max().item()
            raise CheckFailed(
                f"not deterministic{where}: in eval mode the same input twice gave different "
                f"features (feature {i}, `{names[i]}`, differs by up to {worst:.3g}): the forward "
                "masks, shuffles or samples at random; switch masking off (a mask ratio of 0 in "
                f"FORWARD_ARGS / {FORWARD_ARGS_KEY}) and keep FIXED_NOISE for a token shuffle"
            )
    features = getattr(sys.modules.get(type(backbone).__module__), "FEATURES", None)
    if features is not None:
        for i, (feature, index) in enumerate(zip(runs[0], backbone.out_indices, strict=True)):
            _all_tokens(feature, features[index], i, names[i], height, width, where)
    return len(runs[0])


def _all_tokens(
    feature, spec: dict[str, Any], i: int, name: str, height: int, width: int, where: str
) -> None:
    """A token feature holds its class/register tokens and one token per grid cell (of each
    frame, for tokens of frames)."""
    if spec.get("layout") not in ("NLC", "NTLC") or feature.ndim != 3:
        return
    r = spec["reduction"]
    prefix = spec.get("prefix_tokens", 0) + spec.get("suffix_tokens", 0)
    frames = (spec.get("num_frames") or 1) if spec["layout"] == "NTLC" else 1
    groups = spec.get("groups", 1)  # one grid per patch embedding (group of bands)
    grids = [(height // r, width // r), (math.ceil(height / r), math.ceil(width / r))]
    if any(feature.shape[1] == prefix + groups * frames * h * w for h, w in grids):
        return
    h, w = grids[0]
    of = f" of each of {frames} frames" if frames > 1 else ""
    of += f" of each of {groups} groups" if groups > 1 else ""
    frames *= groups
    raise CheckFailed(
        f"not deterministic features of the whole image{where}: feature {i} (`{name}`) has "
        f"{feature.shape[1]} tokens where the {h}x{w} grid{of} of the {height}x{width} input at "
        f"reduction {r} and {prefix} extra token(s) make {prefix + frames * h * w}: the forward drops "
        f"tokens (masking is on: set the mask ratio to 0 in FORWARD_ARGS / {FORWARD_ARGS_KEY})"
    )


def check_forward_args(context) -> str:
    """Each per-band forward argument has one value per band of backbone_in_chans."""
    spec = context.state.spec
    per_band = list(spec.forward_call.per_band)
    defaults = spec.forward_call.args
    checked = []
    for task, model_args in context.task_model_args():
        in_chans = model_args.get("backbone_in_chans", spec.in_chans)
        given = model_args.get(FORWARD_ARGS_KEY) or {}
        for name in per_band:
            value = given.get(name, defaults.get(name))
            count = len(value) if isinstance(value, (list, tuple)) else None
            if count != in_chans:
                raise CheckFailed(
                    f"task '{task}': {FORWARD_ARGS_KEY}.{name} has {count} values, "
                    f"backbone_in_chans is {in_chans}: give one {name} value per band"
                )
            checked.append(f"{name} ({count})")
    return f"per-band forward arguments fit backbone_in_chans: {', '.join(checked)}"
