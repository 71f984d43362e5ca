# scaffold runtime 1: owned by scaffold, copied verbatim into each generated package.
# `scaffold update` replaces this folder (it never merges it): a hand edit here is kept
# aside as <file>.orig-<version> and reported. Change behaviour in backbone.py instead,
# by overriding methods of the subclass there.
"""Features as (B, C, H, W) maps: channels-last maps, tokens (with class, register or
extra tokens, one grid per group of bands), temporal maps and tokens of frames.

A feature is described by its FEATURES entry (see backbone.py of a generated package):
``layout`` is one of LAYOUTS; tokens have ``prefix_tokens``/``suffix_tokens`` and
``groups``; temporal features ``num_frames``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

Feature = dict[str, Any]
TemporalReduction = Literal["mean", "max", "last", "stack"]
TEMPORAL_REDUCTIONS = ("mean", "max", "last", "stack")
GroupReduction = Literal["concat", "mean"]
GROUP_REDUCTIONS = ("concat", "mean")
LAYOUTS = ("NCHW", "NHWC", "NLC", "NCTHW", "NTHWC", "NTLC")
TEMPORAL_LAYOUTS = ("NCTHW", "NTHWC", "NTLC")


def to_image(
    x: torch.Tensor,
    f: Feature,
    size: tuple[int, int] | None,
    input_size: tuple[int, int],
    temporal_reduction: str = "mean",
    group_reduction: str = "concat",
) -> torch.Tensor:
    """Feature `x` (described by `f`) as a (B, C, H, W) map. Tokens go on the grid of
    an input of `size` (None: the input's size is not known; the grid of the analysed
    `input_size`'s aspect ratio, and for frames the frames measured in `f`)."""
    height, width = size or input_size
    layout = f["layout"]
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    elif layout == "NLC":
        x = grid_tokens(x, f)
        groups = f.get("groups", 1)
        h, w = token_grid(x.shape[1] // groups, height, width, f["reduction"], not size)
        # (B, groups * h * w, C) -> (B, groups, C, h, w): each group rows first
        x = x.reshape(x.shape[0], groups, h, w, x.shape[2]).permute(0, 1, 4, 2, 3)
        x = join_groups(x, group_reduction)
    elif layout == "NTLC":
        x = grid_tokens(x, f)
        frames = f.get("num_frames") if size is None else None
        t, h, w = frame_grid(x.shape[1], height, width, f["reduction"], frames)
        x = x.reshape(x.shape[0], t, h, w, x.shape[2]).permute(0, 4, 1, 2, 3)
        x = reduce_time(x, temporal_reduction)
    elif layout in ("NCTHW", "NTHWC"):
        if layout == "NTHWC":
            x = x.permute(0, 4, 1, 2, 3)
        x = reduce_time(x, temporal_reduction)
    elif layout != "NCHW":
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    return x.contiguous()


def join_groups(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, G, C, H, W) -> (B, C, H, W) by `reduction`; "concat" gives (B, G * C, H, W),
    group 0's channels first."""
    if reduction == "mean":
        return x.mean(dim=1)
    return x.flatten(1, 2)


def reduce_time(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, H, W) by `reduction`; "stack" gives (B, T * C, H, W),
    frame 0's channels first."""
    if reduction == "mean":
        return x.mean(dim=2)
    if reduction == "max":
        return x.amax(dim=2)
    if reduction == "stack":
        return x.transpose(1, 2).flatten(1, 2)
    return x[:, :, -1]


def grid_tokens(x: torch.Tensor, f: Feature) -> torch.Tensor:
    """The grid tokens of feature `f`: without its extra tokens (class, register),
    `prefix_tokens` before them and `suffix_tokens` after them."""
    return x[:, f.get("prefix_tokens", 0) : x.shape[1] - f.get("suffix_tokens", 0)]


def _grids(height: int, width: int, reduction: int) -> list[tuple[int, int]]:
    """The token grids of a height x width input at `reduction`: floor and ceiling."""
    return [
        (height // reduction, width // reduction),
        (math.ceil(height / reduction), math.ceil(width / reduction)),
    ]


def token_grid(
    n: int, height: int, width: int, reduction: int, any_size: bool = False
) -> tuple[int, int]:
    """The (h, w) grid of `n` tokens for an input of height x width at `reduction`;
    failing that, with `any_size` (the input's size is not known), the grid of n cells
    closest to that input's aspect ratio."""
    for h, w in _grids(height, width, reduction):
        if h * w == n:
            return h, w
    if any_size:
        pairs = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
        return min(
            pairs, key=lambda hw: abs(math.log(hw[0] * width / (hw[1] * height)))
        )
    raise ValueError(
        f"{n} tokens do not fit a {height}x{width} input at reduction {reduction}"
    )


def frame_grid(
    n: int, height: int, width: int, reduction: int, frames: int | None = None
) -> tuple[int, int, int]:
    """The (frames, h, w) of `n` tokens that are frames of the grid of a height x width
    input at `reduction`. Given `frames` (the input's size is not known: height x width
    is the analysed one), a count that is that many frames of a grid of the analysed
    shape at another size is read so (a larger input); else frames of the analysed grid
    (more frames)."""
    grids = _grids(height, width, reduction)
    if frames and n % frames == 0 and all(n != frames * h * w for h, w in grids):
        cells, (h0, w0) = n // frames, grids[0]
        h = round(math.sqrt(cells * h0 / w0)) if h0 and w0 else 0
        if h and cells % h == 0 and (cells // h) * h0 == h * w0:
            return frames, h, cells // h
    for h, w in grids:
        if h * w > 0 and n % (h * w) == 0:
            return n // (h * w), h, w
    raise ValueError(
        f"{n} tokens are not frames of the token grid of a {height}x{width} input at "
        f"reduction {reduction}"
    )


def feature_info(
    f: Feature, temporal_reduction: str = "mean", group_reduction: str = "concat"
) -> dict[str, Any]:
    """timm's FeatureInfo entry for feature `f`: frames stacked into channels multiply
    them; the mean of token groups has one group's channels."""
    info = {k: f[k] for k in ("module", "num_chs", "reduction")}
    if temporal_reduction == "stack" and f["layout"] in TEMPORAL_LAYOUTS:
        info["num_chs"] *= f.get("num_frames") or 1
    if group_reduction == "mean":
        info["num_chs"] //= f.get("groups", 1)
    return info
