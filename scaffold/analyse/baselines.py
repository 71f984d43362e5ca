"""A baseline backbone probed: built through TerraTorch's BACKBONE_REGISTRY on the meta device
(shapes only, no weights), what its forward returns for the benchmark's input says which necks
it needs: a pyramid of (B, C, H, W) maps none; (B, H, W, C) maps are permuted; one resolution
(a ViT's tokens) is selected, reshaped and made a pyramid. Nothing is guessed from its name."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from scaffold.errors import ScaffoldError, one_line

PYRAMID_INPUTS = 4  # LearnedInterpolateToPyramidal takes exactly four maps


@dataclass(frozen=True)
class Baseline:
    """What a baseline backbone needs in the config, found by building it."""

    name: str
    necks: list[dict[str, Any]] = field(default_factory=list)
    pretrained: bool = False
    model_args: dict[str, Any] = field(default_factory=dict)  # extra backbone_* arguments
    notes: tuple[str, ...] = ()


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
    size = (int(input_shape[-2]), int(input_shape[-1]))
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
