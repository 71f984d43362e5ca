# scaffold runtime 1: owned by scaffold, copied verbatim into each generated package.
# `scaffold update` replaces this folder (it never merges it): a hand edit here is kept
# aside as <file>.orig-<version> and reported. Change behaviour in backbone.py instead,
# by overriding methods of the subclass there.
"""Fitting a checkpoint of the bare model to a backbone (``model.*`` keys): timm's
``pretrained_filter_fn`` of a generated registration.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

# Key prefixes that wrappers add around a model's own keys (DataParallel, Lightning).
WRAPPER_PREFIXES = ("module.", "model.", "encoder.", "backbone.")
# Keys of classification heads: a backbone does not load them.
HEAD_PREFIXES = ("head.", "heads.", "fc.", "classifier.")

_logger = logging.getLogger(__name__)


def checkpoint_filter(
    state_dict: Mapping[str, Any],
    model: nn.Module,
    first_conv: str | None = None,
    first_conv_3d: str | None = None,
    pretrained_bands: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """Fit a checkpoint of the bare model to the keys of the backbone `model`.

    Wrapper prefixes are stripped where that makes more keys match, the keys of the
    modules the backbone was built without (its ``removed_modules``: a head, a decoder)
    are dropped and logged, head keys are dropped (a head the model keeps keeps its
    initial weights), and the first layer (`first_conv`, ``model.``-prefixed, or the 3D
    `first_conv_3d`, relative to the model) is chosen by band name for a backbone built
    with ``bands`` (select_band_weights against `pretrained_bands`), else a 3D first
    convolution is adapted to in_chans.
    """
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    own = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
    keys = dict(state_dict)
    improved = True
    while improved:
        improved = False
        for prefix in WRAPPER_PREFIXES:
            stripped = {
                k.removeprefix(prefix): v
                for k, v in keys.items()
                if k.startswith(prefix)
            }
            if len(stripped.keys() & own.keys()) > len(keys.keys() & own.keys()):
                keys, improved = stripped, True
    removed = tuple(f"{m}." for m in getattr(model, "removed_modules", ()))
    dropped = [k for k in keys if f"model.{k}".startswith(removed)]
    if dropped:
        _logger.info(
            "dropped %d checkpoint tensors of modules the backbone does not hold (%s)",
            len(dropped),
            ", ".join(m.rstrip(".") for m in removed),
        )
    out = {
        f"model.{k}": v
        for k, v in keys.items()
        if not k.startswith(HEAD_PREFIXES) and not f"model.{k}".startswith(removed)
    }
    for k, v in own.items():
        if k.startswith(HEAD_PREFIXES):
            out[f"model.{k}"] = v
    # The first layer for the backbone's own bands, by name (a task's `backbone_bands`).
    bands = getattr(model, "bands", None)
    first = first_conv.removeprefix("model.") if first_conv else first_conv_3d
    if pretrained_bands and bands is not None and first is not None:
        key = f"{first}.weight"
        if f"model.{key}" in out:
            weight, loaded, new = select_band_weights(
                out[f"model.{key}"], own[key], bands, pretrained_bands
            )
            out[f"model.{key}"] = weight
            # What was loaded, for the band-weights check (a plain attribute).
            object.__setattr__(model, "band_weights", {"loaded": loaded, "new": new})
            (_logger.warning if new else _logger.info)(
                "%s: bands %s loaded from the checkpoint; new (initialised): %s",
                first,
                ", ".join(loaded) or "none",
                ", ".join(new) or "none",
            )
    elif first_conv_3d is not None and f"model.{first_conv_3d}.weight" in out:
        key = f"{first_conv_3d}.weight"
        out[f"model.{key}"] = adapt_channels(out[f"model.{key}"], own[key].shape[1])
    return out


def select_band_weights(
    weight: torch.Tensor,
    initial: torch.Tensor,
    bands: Sequence[str],
    pretrained_bands: Sequence[str],
) -> tuple[torch.Tensor, list[str], list[str]]:
    """The first layer's weight for `bands`, by name: the checkpoint's input channel of
    each band it was trained on (`pretrained_bands`), the layer's initial channel for a
    band it was not (new). Returns the weight and the loaded and new bands."""
    if weight.shape[1] != len(pretrained_bands):
        raise ValueError(
            f"the checkpoint's first layer reads {weight.shape[1]} input channels, "
            f"PRETRAINED_BANDS names {len(pretrained_bands)} bands"
        )
    columns: list[torch.Tensor] = []
    loaded: list[str] = []
    new: list[str] = []
    for i, band in enumerate(bands):
        if band in pretrained_bands:
            columns.append(weight[:, list(pretrained_bands).index(band)])
            loaded.append(band)
        else:
            columns.append(initial[:, i].to(weight.dtype))
            new.append(band)
    return torch.stack(columns, dim=1), loaded, new


def adapt_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Repeat or cut input channels, scaled so activations keep their size (as timm
    does)."""
    have = weight.shape[1]
    if have == in_chans:
        return weight
    repeat = -(-in_chans // have)
    tiled = weight.repeat(1, repeat, *([1] * (weight.ndim - 2)))
    return tiled[:, :in_chans] * (have / in_chans)
