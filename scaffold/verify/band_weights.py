"""The band-weights check (with ``--weights`` and ``--bands``): the first layer of each task's
backbone holds the checkpoint's weights of that task's bands, chosen by name
(``registration.select_band_weights``).

A task of the YAML that names its bands (``backbone_bands``) builds its backbone with
``pretrained=True`` as TerraTorch would; its first layer must equal the checkpoint's, input
channel by input channel, for every band the checkpoint was trained on, and the other bands are
named as new (initialised). Nothing about bands is left unsaid.
"""

from __future__ import annotations

import importlib
from typing import Any

from scaffold.errors import one_line
from scaffold.verify.types import CheckFailed


def first_layer_key(registration: Any) -> str | None:
    """The first layer's weight key in the backbone (``model.<layer>.weight``), or None."""
    if registration.FIRST_CONV:
        return f"{registration.FIRST_CONV}.weight"
    if registration.FIRST_CONV_3D:
        return f"model.{registration.FIRST_CONV_3D}.weight"
    return None


def check_band_weights(context: Any) -> str:
    """One part per task with bands: which first-layer bands were loaded and which are new.
    CheckFailed when a loaded band's channel is not the checkpoint's, or when the package no
    longer says which bands its checkpoint holds."""
    import timm
    import torch

    name = context.name
    weights = context.state.options.weights
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckFailed(f"{weights}: cannot load it: {one_line(exc)}") from exc
    registration = importlib.import_module(f"{name}.registration")
    pretrained = tuple(getattr(registration, "PRETRAINED_BANDS", ()))
    if not pretrained:
        raise CheckFailed(
            f"{name}.registration.PRETRAINED_BANDS is empty: the first layer cannot be loaded "
            f"by band name (--bands {','.join(context.state.options.bands)} was recorded)"
        )
    key = first_layer_key(registration)
    # The checkpoint as checkpoint_filter_fn fits it to a backbone of the analysed bands.
    state_dict = registration.checkpoint_filter_fn(checkpoint, timm.create_model(name))
    if key is None or key not in state_dict:
        raise CheckFailed(f"the checkpoint has no first layer {key or '(none analysed)'}")
    source = state_dict[key]
    lines = []
    for task, model_args in context.task_model_args():
        bands = model_args.get("backbone_bands")
        if not bands:
            continue
        try:
            model = timm.create_model(name, pretrained=True, in_chans=len(bands), bands=bands)
        except Exception as exc:
            raise CheckFailed(
                f"task {task}: timm.create_model(pretrained=True, bands={bands}) failed: "
                f"{one_line(exc)}"
            ) from exc
        weight = model.state_dict()[key]
        for i, band in enumerate(bands):
            if band in pretrained:
                want = source[:, pretrained.index(band)]
                if not torch.equal(weight[:, i], want.to(weight.dtype)):
                    raise CheckFailed(
                        f"task {task}: the first layer's channel {i} ({band}) is not the "
                        "checkpoint's weights of that band"
                    )
        loaded = [b for b in bands if b in pretrained]
        new = [b for b in bands if b not in pretrained]
        what = f"loaded {', '.join(loaded) or 'none'}" + (
            f"; new (initialised) {', '.join(new)}" if new else ""
        )
        lines.append(f"{task}: first layer {what}")
    if not lines:
        return f"no task names its bands: each loads the first layer as it is ({key})"
    return "; ".join(lines)
