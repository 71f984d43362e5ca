# scaffold runtime 1: owned by scaffold, copied verbatim into each generated package.
# `scaffold update` replaces this folder (it never merges it): a hand edit here is kept
# aside as <file>.orig-<version> and reported. Change behaviour in backbone.py instead,
# by overriding methods of the subclass there.
"""What goes into the model's forward, and reaching a tensor in what comes out.

Shared with scaffold's analysis, which measured the call these functions make.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# The forms a forward argument takes: "value" as given, "tensor" as a tensor on the
# image's device, "batched" as that tensor repeated over the batch.
FORMS = ("value", "tensor", "batched")
# Random draws that FixedNoise turns into an increasing ramp (in place: filled with it).
RAMPED = frozenset({"rand", "rand_like", "randn", "randn_like", "randperm"})
RAMPED_IN_PLACE = frozenset({"uniform_", "normal_"})


def as_form(value: Any, form: str, x: torch.Tensor) -> Any:
    """`value` as given ("value"), as a tensor on the image's device ("tensor") or that
    tensor repeated over the batch ("batched")."""
    if form == "value":
        return value
    tensor = torch.as_tensor(value, device=x.device)
    if form == "batched":
        tensor = tensor.unsqueeze(0).repeat(x.shape[0], *([1] * tensor.ndim))
    return tensor


def place(kwargs: dict[str, Any], key: str, value: Any) -> str:
    """Put `value` at `key` of the forward's keyword arguments ("param", or
    "param.item": an item of a dict parameter); return the parameter."""
    param, _, item = key.partition(".")
    if item:
        kwargs.setdefault(param, {})[item] = value
    else:
        kwargs[param] = value
    return param


Images = torch.Tensor | Mapping[str, torch.Tensor]


def first_image(x: Images) -> torch.Tensor:
    """The image `x`, or the first of a dict of images by modality."""
    return next(iter(x.values())) if isinstance(x, Mapping) else x


def image_grid(x: Images) -> tuple[int, int]:
    """(H, W) of the input (the modalities of a dict share a grid)."""
    image = first_image(x)
    return (image.shape[-2], image.shape[-1])


def split_modalities(x: Images, modalities: Sequence[tuple[str, int]]) -> Images:
    """The image as a dict of images by modality: a tensor holds the `modalities`
    ((name, channels), ...) stacked along its channel axis (1), in that order. A dict of
    some of them, or any image of a model without modalities, is returned as it is."""
    if not modalities:
        return x
    if isinstance(x, Mapping):  # some of them, by name (a dataset may hold only some)
        unknown = [name for name in x if name not in dict(modalities)]
        if unknown:
            raise ValueError(
                f"images of {', '.join(unknown)}, which is none of the modalities "
                + ", ".join(name for name, _ in modalities)
            )
        return x
    sizes = [channels for _, channels in modalities]
    if x.shape[1] != sum(sizes):
        raise ValueError(
            f"an image of {x.shape[1]} channels for the modalities "
            + ", ".join(f"{name} ({channels})" for name, channels in modalities)
        )
    parts = torch.split(x, sizes, dim=1)
    return {name: part for (name, _), part in zip(modalities, parts, strict=True)}


def forward_inputs(
    x: Images,
    image: str,
    image_positional: bool,
    args: Mapping[str, Any],
    forms: Mapping[str, str],
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of one forward call on the image `x`: the
    image at `image`, each of `args` in its form (`forms`, default "value"). A dict of
    images by modality goes in by those names: items of the image's dict parameter
    ("param.key"), or parameters of their own."""
    kwargs: dict[str, Any] = {}
    first = first_image(x)
    for key, value in args.items():
        place(kwargs, key, as_form(value, forms.get(key, "value"), first))
    if not isinstance(x, Mapping):
        param = place(kwargs, image, x)
    else:
        param, _, item = image.partition(".")
        for name, one in x.items():
            place(kwargs, f"{param}.{name}" if item else name, one)
    if image_positional and param in kwargs:
        return [kwargs.pop(param)], kwargs
    return [], kwargs


def resample_frames(value: Sequence[Any], frames: int) -> list[Any]:
    """Per-frame values for `frames` frames: as given when there are that many, else
    resampled linearly over the frames, first and last kept (integers stay integers,
    rounded)."""
    if len(value) == frames:
        return list(value)
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if len(value) == 1:
        out = tensor.expand(frames, *tensor.shape[1:])
    else:
        flat = tensor.reshape(len(value), -1).T[None]  # 1, values per frame, frames
        out = torch.nn.functional.interpolate(
            flat, frames, mode="linear", align_corners=True
        )
        out = out[0].T.reshape(frames, *tensor.shape[1:])
    if not torch.as_tensor(value).is_floating_point():
        return list(out.round().long().tolist())
    return list(out.tolist())


def ramp_like(t: torch.Tensor) -> torch.Tensor:
    """Values increasing along the last dimension, in (0, 1) for floats, 0..n-1 for
    integers: ``argsort`` of them is the identity."""
    n = t.shape[-1] if t.ndim else 1
    if t.is_floating_point():
        ramp = torch.arange(1, n + 1, device=t.device, dtype=t.dtype) / (n + 1)
    else:
        ramp = torch.arange(n, device=t.device, dtype=t.dtype)
    return ramp.expand(t.shape).clone()


class FixedNoise(TorchFunctionMode):
    """While active, torch.rand/randn(_like) and randperm return values that increase
    along the last dimension, and Tensor.uniform_/normal_ fill them in: ``argsort`` of
    such noise is the identity, so a token shuffle keeps the grid order. Other random
    draws (dropout) are kept."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if isinstance(out, torch.Tensor) and name in RAMPED:
            return ramp_like(out)
        if isinstance(out, torch.Tensor) and name in RAMPED_IN_PLACE:
            with torch.no_grad():
                out.copy_(ramp_like(out))
        return out


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor of a module's output, depth first through tuples, lists and
    dicts (None: it holds none)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def item_at(output: Any, key: Any) -> Any:
    """Item `key` of a module's output (an index of a tuple or list, a dict's key, or a
    tuple of them: a path into nested lists and dicts); its first tensor when `key` is
    None."""
    if key is None:
        return first_tensor(output)
    for step in key if isinstance(key, tuple) else (key,):
        output = output[step]
    return output
