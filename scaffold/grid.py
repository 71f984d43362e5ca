"""Reductions and token grids: where a tensor's shape puts it on the input's grid.

Read by the analysis (which tensors are features) and by verify (whether the features stay on
their grids at another input size) alike, so that both read a grid by the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from scaffold.spec import Layout

MAX_PREFIX_TOKENS = 8  # class token plus register tokens


@dataclass(frozen=True)
class Placement:
    """Where a tensor's shape puts it on the input grid. Tokens: `prefix_tokens` and
    `suffix_tokens` extra tokens (class, register) before and after `groups` grids of tokens
    (one per patch embedding, group after group); `num_chs` is then the groups' channels
    side by side (groups x the tokens' channels)."""

    layout: Layout
    num_chs: int
    reduction: int
    grid: tuple[int, int]
    num_frames: int | None = None
    prefix_tokens: int = 0
    suffix_tokens: int = 0
    groups: int = 1


@dataclass(frozen=True)
class TokenLayout:
    """Where the grid tokens of the token tensors of one count sit, as measured on the model
    (scaffold.analyse.tokens): `prefix` extra tokens, then `groups` grids of `grid` cells each
    at `reduction` (group after group, rows first), then `suffix` extra tokens. `grid` None:
    only the extra tokens' positions were measured; the count of grid tokens places the grid."""

    prefix: int
    suffix: int
    groups: int = 1
    reduction: int | None = None
    grid: tuple[int, int] | None = None


@dataclass(frozen=True)
class Grids:
    """What the analysis measured beyond one tensor's shape: the token layouts by token count,
    and the reduction of each grid that two reductions explain at the analysed size, decided by
    a second input size (a 4x4 grid of a 56-pixel input is 14 or 16)."""

    tokens: Mapping[int, TokenLayout] = field(default_factory=dict)
    reductions: Mapping[tuple[int, int], int] = field(default_factory=dict)


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
    grids: Grids | None = None,
) -> Placement | None:
    """The layout, channels and reduction of a tensor of `shape` for an input of `input_shape`
    (batch included), or None when it is not a feature map (pooled vectors, logits, masks...).
    Tokens of a count that `token_frames` measured as temporal are read as its frames first;
    `grids`: the token layouts and reductions measured on the model, over the shape's reading."""
    place = _classify(shape, input_shape, token_frames, grids)
    if place is not None and grids is not None and place.grid in grids.reductions:
        place = replace(place, reduction=grids.reductions[place.grid])
    return place


def _classify(
    shape: tuple[int, ...] | None,
    input_shape: tuple[int, ...],
    token_frames: TokenFrames | None,
    grids: Grids | None,
) -> Placement | None:
    if shape is None or len(shape) < 3 or shape[0] != input_shape[0]:
        return None
    height, width = input_shape[-2], input_shape[-1]
    frames = input_shape[2] if len(input_shape) == 5 else None
    dims = shape[1:]
    if len(dims) == 2 and token_frames is not None and dims[0] in token_frames.per_frame:
        return None
    known = grids.tokens.get(dims[0]) if grids is not None and len(dims) == 2 else None
    if len(dims) == 2 and token_frames is not None and dims[0] in token_frames.counts:
        extras = (known.prefix, known.suffix) if known is not None else None
        place = _classify_frame_tokens(dims[0], dims[1], height, width, token_frames.frames, extras)
        if place is not None:
            return place
    if known is not None:
        return measured_tokens(known, dims[0], dims[1], height, width)
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
    n: int,
    c: int,
    height: int,
    width: int,
    frames: int,
    extras: tuple[int, int] | None = None,
) -> Placement | None:
    """`n` tokens as `prefix` class/register tokens and then `frames` frames of one grid each;
    `extras`: the (prefix, suffix) extra tokens measured, else any prefix and no suffix."""
    pairs = [extras] if extras is not None else [(p, 0) for p in range(MAX_PREFIX_TOKENS + 1)]
    for prefix, suffix in pairs:
        inner = n - prefix - suffix
        if inner <= 0 or inner % frames:
            continue
        place = classify_tokens(inner // frames, c, height, width)
        if place is not None and place.prefix_tokens == 0:
            return Placement(
                "NTLC",
                c,
                place.reduction,
                place.grid,
                num_frames=frames,
                prefix_tokens=prefix,
                suffix_tokens=suffix,
            )
    return None


def measured_tokens(
    known: TokenLayout, n: int, c: int, height: int, width: int
) -> Placement | None:
    """`n` tokens of `c` channels read as `known` measured them: its grid, or, where only the
    extra tokens' positions were measured, the grid that the count of the others fits."""
    if known.grid is not None and known.reduction is not None:
        return Placement(
            "NLC",
            c * known.groups,
            known.reduction,
            known.grid,
            prefix_tokens=known.prefix,
            suffix_tokens=known.suffix,
            groups=known.groups,
        )
    inner = n - known.prefix - known.suffix
    place = classify_tokens(inner, c, height, width) if inner > 0 else None
    if place is None or place.prefix_tokens:
        return None
    return replace(place, prefix_tokens=known.prefix, suffix_tokens=known.suffix)


def token_grids(n: int, height: int, width: int) -> list[tuple[int, tuple[int, int]]]:
    """Every (reduction, grid) whose floor or ceil grid of a height x width input has `n`
    cells, reductions from 2 up."""
    found = []
    for r in range(2, min(height, width) + 1):
        for h, w in dict.fromkeys(((height // r, width // r), (-(-height // r), -(-width // r)))):
            if h * w == n:
                found.append((r, (h, w)))
    return found


def grid_reductions(h: int, w: int, height: int, width: int) -> list[int]:
    """Every reduction that explains an h x w grid of a height x width input, in the order
    `match_grid` tries them (powers of two first)."""
    if h <= 0 or w <= 0 or h > height or w > width:
        return []
    powers = [1 << k for k in range(max(height, width).bit_length())]
    found = [r for r in powers if _fits(h, height, r, 0) and _fits(w, width, r, 0)]
    found += [
        r
        for r in powers
        if r not in found
        and height // r - h == width // r - w
        and _fits(h, height, r, VALID_LOSS)
        and _fits(w, width, r, VALID_LOSS)
    ]
    others = range(3, max(height, width) + 1)
    return found + [
        r for r in others if r & (r - 1) and _fits(h, height, r, 0) and _fits(w, width, r, 0)
    ]


def exact(h: int, w: int, height: int, width: int, r: int) -> bool:
    """An h x w grid of a height x width input is exactly the input over `r`."""
    return h * r == height and w * r == width


def ambiguous(h: int, w: int, height: int, width: int, r: int) -> bool:
    """The h x w grid read at reduction `r` (the floor or ceil of the input over r, not exact)
    is also the input over another reduction exactly: two grids explain the size (4x4 of a
    56-pixel input: ceil at 16, exact at 14)."""
    if exact(h, w, height, width, r):
        return False
    return height % h == 0 and width % w == 0 and height // h == width // w
