"""Inferring the input a model expects: channels, frames and image size.

Each is looked up, in order, in the arguments the person gave, on the built model (``model.in_chans``,
``model.patch_embed.img_size``), in the defaults of the builder's and the class's signatures, and
finally in the model's first convolution (its ``in_channels``; a ``Conv3d`` means a temporal input).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

CHANNEL_PARAMS = (
    "in_chans",
    "in_channels",
    "num_channels",
    "input_channels",
    "n_channels",
    "in_ch",
    "num_bands",
    "bands",
)
SIZE_PARAMS = ("img_size", "image_size", "input_size", "img_res")
FRAME_PARAMS = ("num_frames", "frames", "n_frames", "num_timesteps", "time_steps", "temporal_size")

DEFAULT_CHANNELS = 3
DEFAULT_FRAMES = 4
# Sizes tried in turn when the model names none: small first (fast on the CPU), then ImageNet's.
DEFAULT_SIZES = (64, 224)


@dataclass(frozen=True)
class InputGuess:
    shapes: tuple[tuple[int, ...], ...]  # candidates without batch: (C, H, W) or (C, T, H, W)
    in_chans_arg: str | None  # constructor parameter for the channels
    size_arg: str | None
    frames_arg: str | None


def parameter_names(obj: Any, model: nn.Module) -> list[str]:
    names: list[str] = []
    for fn in (obj, type(model)):
        with contextlib.suppress(TypeError, ValueError):
            names += [p for p in inspect.signature(fn).parameters if p not in names]
    return names


def _default_of(obj: Any, model: nn.Module, name: str) -> Any:
    for fn in (obj, type(model)):
        try:
            param = inspect.signature(fn).parameters.get(name)
        except (TypeError, ValueError):
            continue
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return None


def _lookup(
    obj: Any,
    model: nn.Module,
    args: dict[str, Any],
    names: tuple[str, ...],
    accept: Callable[[Any], bool] | None = None,
):
    """(parameter name or None, value or None) for the first of `names` that has a value (one
    that `accept` takes, when given: a default of None is taken too, unless the parameter is
    annotated as a list)."""
    params = parameter_names(obj, model)
    places = [model, getattr(model, "patch_embed", None)]
    ok = accept or (lambda value: True)
    for name in names:
        if name in args and ok(args[name]):
            return name, args[name]
    for name in names:
        for place in places:
            value = getattr(place, name, None) if place is not None else None
            if isinstance(value, (int, tuple, list)) and not isinstance(value, bool) and ok(value):
                return (name if name in params else None), value
    for name in names:
        if name in params:
            default = _default_of(obj, model, name)
            if (
                accept is None
                or accept(default)
                or (default is None and not _listed(obj, model, name))
            ):
                return name, default
    return None, None


def _is_count(value: Any) -> bool:
    """A channel count: a positive integer (a list of band names is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_band_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0


def _listed(obj: Any, model: nn.Module, name: str) -> bool:
    """The parameter `name` is annotated as a list or sequence (of band names, say)."""
    for fn in (obj, type(model)):
        try:
            param = inspect.signature(fn).parameters.get(name)
        except (TypeError, ValueError):
            continue
        if param is not None and param.annotation is not inspect.Parameter.empty:
            text = str(param.annotation).lower()
            return any(word in text for word in ("list", "sequence", "tuple"))
    return False


def _channels(
    obj: Any, model: nn.Module, args: dict[str, Any], conv: nn.Module | None
) -> tuple[str | None, int]:
    """The constructor parameter that counts the input channels and their number. Only an
    integer-valued parameter is a count; a list of band names (``bands=["blue", ...]``) is a
    band list: its length gives the channels, and it is passed on as it is (no parameter to
    set). Else the first convolution's input channels, else DEFAULT_CHANNELS."""
    chans_arg, chans = _lookup(obj, model, args, CHANNEL_PARAMS, accept=_is_count)
    if _is_count(chans):
        return chans_arg, chans
    if chans_arg is None:
        _, bands = _lookup(obj, model, args, CHANNEL_PARAMS, accept=_is_band_list)
        if _is_band_list(bands):
            return None, len(bands)
    return chans_arg, conv.in_channels if conv is not None else DEFAULT_CHANNELS  # type: ignore[return-value]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d | nn.Conv3d] | None:
    """The model's first convolution (in registration order) and its qualified name."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return name, module
    return None


def _as_hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) >= 2
        and all(isinstance(v, int) for v in value)
    ):
        return int(value[-2]), int(value[-1])
    return None


def guess_input(obj: Any, model: nn.Module, args: dict[str, Any]) -> InputGuess:
    found = first_conv(model)
    conv = found[1] if found else None
    chans_arg, chans = _channels(obj, model, args, conv)
    frames_arg, frames = _lookup(obj, model, args, FRAME_PARAMS)
    temporal = frames_arg is not None or isinstance(conv, nn.Conv3d)
    if not (isinstance(frames, int) and frames > 0):
        kernel_t = conv.kernel_size[0] if isinstance(conv, nn.Conv3d) else 1
        frames = max(DEFAULT_FRAMES, 2 * kernel_t)
    size_arg, size = _lookup(obj, model, args, SIZE_PARAMS)
    hw = _as_hw(size)
    sizes = [hw] if hw else [(s, s) for s in DEFAULT_SIZES]
    # A Conv3d's input channels count images' bands only when time is its depth: one that runs
    # over the bands of a single image (a per-band patch embedding) reads 1.
    chans_2d = chans
    if isinstance(conv, nn.Conv3d) and chans_arg is None and chans == conv.in_channels:
        chans_2d = DEFAULT_CHANNELS if chans == 1 else chans
    images = tuple((chans_2d, h, w) for h, w in sizes)
    series = tuple((chans, frames, h, w) for h, w in sizes)
    if temporal and frames == 1:  # one frame: a single image first, as such models take it
        shapes = images + series
    else:
        # The other kind is tried when the forward refuses the guess: a Conv3d over the bands of
        # a 4-D input, or a model that takes a time series without a frames parameter.
        shapes = series + images if temporal else images + series
    return InputGuess(shapes, chans_arg, size_arg, frames_arg if temporal else None)
