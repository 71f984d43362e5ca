"""Reductions and token grids: where a tensor's shape puts it on the input's grid.

Read by the analysis (which tensors are features) and by verify (whether the features stay on
their grids at another input size) alike, so that both read a grid by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PREFIX_TOKENS = 8  # class token plus register tokens


@dataclass(frozen=True)
class Placement:
    """Where a tensor's shape puts it on the input grid."""

    layout: str
    num_chs: int
    reduction: int
    grid: tuple[int, int]
    num_frames: int | None = None
    prefix_tokens: int = 0


@dataclass(frozen=True)
class TokenFrames:
    """Token tensors measured to hold frames: the traced forward's token tensors of `counts`
    tokens each are prefix + `frames` * h * w (time first), as a second frame count showed."""

    frames: int
    counts: frozenset[int]
    # Token counts that are one vector per frame (a day-of-year embedding, (B, T, C)): their
    # count follows the frames one by one, so they are no map of the grid.
    per_frame: frozenset[int] = frozenset()


def classify(
    shape: tuple[int, ...] | None,
    input_shape: tuple[int, ...],
    token_frames: TokenFrames | None = None,
) -> Placement | None:
    """The layout, channels and reduction of a tensor of `shape` for an input of `input_shape`
    (batch included), or None when it is not a feature map (pooled vectors, logits, masks...).
    Tokens of a count that `token_frames` measured as temporal are read as its frames first."""
    if shape is None or len(shape) < 3 or shape[0] != input_shape[0]:
        return None
    height, width = input_shape[-2], input_shape[-1]
    frames = input_shape[2] if len(input_shape) == 5 else None
    dims = shape[1:]
    if len(dims) == 2 and token_frames is not None and dims[0] in token_frames.per_frame:
        return None
    if len(dims) == 2 and token_frames is not None and dims[0] in token_frames.counts:
        place = _classify_frame_tokens(dims[0], dims[1], height, width, token_frames.frames)
        if place is not None:
            return place
    if len(dims) == 3:  # NCHW, NHWC
        r = match_grid(dims[1], dims[2], height, width)
        if r is not None:
            return Placement("NCHW", dims[0], r, (dims[1], dims[2]))
        r = match_grid(dims[0], dims[1], height, width)
        if r is not None:
            return Placement("NHWC", dims[2], r, (dims[0], dims[1]))
        return None
    if len(dims) == 2:  # NLC tokens
        return classify_tokens(dims[0], dims[1], height, width)
    if len(dims) == 4 and frames is not None:  # NCTHW, NTHWC
        r = match_grid(dims[2], dims[3], height, width)
        if r is not None and dims[1] <= frames:
            return Placement("NCTHW", dims[0], r, (dims[2], dims[3]), num_frames=dims[1])
        r = match_grid(dims[1], dims[2], height, width)
        if r is not None and dims[0] <= frames:
            return Placement("NTHWC", dims[3], r, (dims[1], dims[2]), num_frames=dims[0])
    return None


VALID_LOSS = 4  # grid cells that unpadded ("valid") convolutions and pools may lose


def match_grid(h: int, w: int, height: int, width: int) -> int | None:
    """The reduction r for which (h, w) is the grid of (height, width), if any.

    Reductions are stride products: powers of two first, where the grid is the floor or ceil of
    the input over r, or up to VALID_LOSS cells fewer (a 299-pixel input through unpadded layers
    gives 73, 35, 17, 8 at 4, 8, 16, 32); then any other reduction with an exact floor or ceil grid
    (a patch of 14 or 12 pixels)."""
    if h <= 0 or w <= 0 or h > height or w > width:
        return None
    powers = [1 << k for k in range(max(height, width).bit_length())]
    for r in powers:
        if _fits(h, height, r, 0) and _fits(w, width, r, 0):
            return r
    for r in powers:  # square kernels lose as many cells in both directions
        lost = height // r - h
        if (
            lost == width // r - w
            and _fits(h, height, r, VALID_LOSS)
            and _fits(w, width, r, VALID_LOSS)
        ):
            return r
    for r in range(3, max(height, width) + 1):
        if _fits(h, height, r, 0) and _fits(w, width, r, 0):
            return r
    return None


def on_grid(n: int, size: int, r: int) -> bool:
    """`n` cells are the grid of `size` pixels at reduction `r`: the floor or ceil of size / r, or
    up to VALID_LOSS cells fewer (unpadded layers), as the analysis reads grids."""
    return _fits(n, size, r, VALID_LOSS)


def _fits(n: int, size: int, r: int, loss: int) -> bool:
    """n is the floor or ceil of size / r, or (losing at most `loss` cells to valid padding, and
    still covering three quarters of the input) a few cells fewer."""
    if n in (size // r, -(-size // r)):
        return True
    return loss > 0 and size // r - loss <= n < size // r and 4 * n * r >= 3 * size


def classify_tokens(n: int, c: int, height: int, width: int) -> Placement | None:
    """Tokens on a grid, after `prefix` class/register tokens. Powers of two first, then any
    reduction that divides the input exactly; a floor or ceil grid is accepted without prefix
    tokens (16 tokens of a 224-pixel input are 4x4 at 64, not 56), and with them only when no
    other grid fits (fewer false hits)."""
    for prefix in range(MAX_PREFIX_TOKENS + 1):  # no prefix first, then a class token, ...
        size = min(height, width)
        powers = [1 << k for k in range(size.bit_length())]
        others = [r for r in range(3, size + 1) if r & (r - 1)]
        for r in powers + others:
            if height % r == 0 and width % r == 0:
                grids = [(height // r, width // r)]
            elif prefix == 0 and r in powers:
                grids = [(height // r, width // r), (-(-height // r), -(-width // r))]
            else:
                continue
            for h, w in grids:
                if h * w + prefix == n:
                    return Placement("NLC", c, r, (h, w), prefix_tokens=prefix)
        if prefix == 0:
            for r in others:
                for h, w in ((height // r, width // r), (-(-height // r), -(-width // r))):
                    if h * w == n:
                        return Placement("NLC", c, r, (h, w))
    # Last, a floor or ceil grid after prefix tokens, when no exact grid fits any count: an
    # image resized inside the model (14x14 patches of 16 pixels and a class token: 197 tokens
    # of a 240-pixel input scaled to 224, reduction 17).
    for prefix in range(1, MAX_PREFIX_TOKENS + 1):
        size = min(height, width)
        for r in range(2, size + 1):
            for h, w in ((height // r, width // r), (-(-height // r), -(-width // r))):
                if h >= 2 and w >= 2 and h * w + prefix == n:
                    return Placement("NLC", c, r, (h, w), prefix_tokens=prefix)
    return None


def _classify_frame_tokens(
    n: int, c: int, height: int, width: int, frames: int
) -> Placement | None:
    """`n` tokens as `prefix` class/register tokens and then `frames` frames of one grid each."""
    for prefix in range(MAX_PREFIX_TOKENS + 1):
        if n <= prefix or (n - prefix) % frames:
            continue
        place = classify_tokens((n - prefix) // frames, c, height, width)
        if place is not None and place.prefix_tokens == 0:
            return Placement(
                "NTLC", c, place.reduction, place.grid, num_frames=frames, prefix_tokens=prefix
            )
    return None
