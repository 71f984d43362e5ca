"""Choosing the feature taps from a traced forward pass.

A tensor is a feature map when its shape shows the input's spatial grid at some reduction r:
(B, C, H/r, W/r) is NCHW, (B, H/r, W/r, C) NHWC, (B, [prefix +] H/r * W/r, C) NLC tokens,
(B, C, T', H/r, W/r) NCTHW and (B, T', H/r, W/r, C) NTHWC.

Stages are found on the call tree, not on the flat list of hook events (where the last output at
a resolution is often a layer inside the next stage's first block). Starting at the model, a call
is opened up when its children span several resolutions: three or more, or two where a composite
child (a block, not a single layer) works at a resolution other than the call's own output.
A ResNet opens at the top only (its stages keep their blocks closed); a Swin whose stages end in
patch merging opens each stage, so a stage's tap is its last block, before the merge. The tap of
a level is the last call at that level in the opened sequence.

A model whose forward already returns several feature maps (a list, tuple or dict) is taken at
its word: the taps are the items it returns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from scaffold.analysis.trace import BATCH, Call, Trace
from scaffold.spec import FeatureSpec

MAX_PREFIX_TOKENS = 8  # class token plus register tokens
DEFAULT_NUM_OUT = 4


@dataclass(frozen=True)
class Placement:
    """Where a tensor's shape puts it on the input grid."""

    layout: str
    num_chs: int
    reduction: int
    grid: tuple[int, int]
    num_frames: int | None = None
    prefix_tokens: int = 0


def classify(shape: tuple[int, ...] | None, input_shape: tuple[int, ...]) -> Placement | None:
    """The layout, channels and reduction of a tensor of `shape` for an input of `input_shape`
    (batch included), or None when it is not a feature map (pooled vectors, logits, masks...)."""
    if shape is None or len(shape) < 3 or shape[0] != input_shape[0]:
        return None
    height, width = input_shape[-2], input_shape[-1]
    frames = input_shape[2] if len(input_shape) == 5 else None
    dims = shape[1:]
    if len(dims) == 3:  # NCHW, NHWC
        r = match_grid(dims[1], dims[2], height, width)
        if r is not None:
            return Placement("NCHW", dims[0], r, (dims[1], dims[2]))
        r = match_grid(dims[0], dims[1], height, width)
        if r is not None:
            return Placement("NHWC", dims[2], r, (dims[0], dims[1]))
        return None
    if len(dims) == 2:  # NLC tokens
        return _classify_tokens(dims[0], dims[1], height, width)
    if len(dims) == 4 and frames is not None:  # NCTHW, NTHWC
        r = match_grid(dims[2], dims[3], height, width)
        if r is not None and dims[1] <= frames:
            return Placement("NCTHW", dims[0], r, (dims[2], dims[3]), num_frames=dims[1])
        r = match_grid(dims[1], dims[2], height, width)
        if r is not None and dims[0] <= frames:
            return Placement("NTHWC", dims[3], r, (dims[1], dims[2]), num_frames=dims[0])
    return None


def match_grid(h: int, w: int, height: int, width: int) -> int | None:
    """The reduction r for which (h, w) is the (floor or ceil) grid of (height, width), if any."""
    if h <= 0 or w <= 0 or h > height or w > width:
        return None
    r = round(height / h)
    if r < 1:
        return None
    if h in (height // r, -(-height // r)) and w in (width // r, -(-width // r)):
        return r
    return None


def _classify_tokens(n: int, c: int, height: int, width: int) -> Placement | None:
    """Tokens on a grid, after `prefix` class/register tokens. A reduction that divides the input
    exactly wins; a floor or ceil grid is accepted only without prefix tokens (fewer false hits)."""
    for prefix in range(MAX_PREFIX_TOKENS + 1):  # no prefix first, then a class token, ...
        exact = [
            r
            for r in range(1, min(height, width) + 1)
            if height % r == 0 and width % r == 0 and (height // r) * (width // r) + prefix == n
        ]
        if exact:
            r = exact[0]
            return Placement("NLC", c, r, (height // r, width // r), prefix_tokens=prefix)
        if prefix == 0:
            for r in range(1, min(height, width) + 1):
                for h, w in ((height // r, width // r), (-(-height // r), -(-width // r))):
                    if h * w == n:
                        return Placement("NLC", c, r, (h, w))
    return None


@dataclass(frozen=True)
class Selection:
    features: tuple[FeatureSpec, ...]
    out_indices: tuple[int, ...]
    notes: tuple[str, ...]


def select_features(trace: Trace, input_shape: tuple[int, ...]) -> Selection:
    """The candidate feature maps in forward order, and the default selection."""
    full_shape = (BATCH, *input_shape)
    returned = _returned_features(trace, full_shape)
    if len(returned) >= 2:
        return Selection(tuple(returned), _default_out_indices(returned), ())
    features = _stage_features(trace.root, full_shape)
    notes: tuple[str, ...] = ()
    if len({f.reduction for f in features}) == 1:
        blocks = _repeated_blocks(trace.root, full_shape, features[0].reduction)
        if len(blocks) > len(features):
            features = blocks
            notes = (
                f"one resolution only: the taps are the {len(blocks)} blocks of "
                f"'{_parent_name(blocks[0].module)}', as timm does for ViTs",
            )
    return Selection(tuple(features), _default_out_indices(features), notes)


def _feature(
    place: Placement,
    module: str,
    shape: tuple[int, ...],
    source: str = "hook",
    call: int = 0,
    key: int | str | None = None,
) -> FeatureSpec:
    return FeatureSpec(
        module=module,
        num_chs=place.num_chs,
        reduction=place.reduction,
        layout=place.layout,
        shape=(1, *shape[1:]),  # per sample, as the spec's input_shape
        grid=place.grid,
        source=source,  # type: ignore[arg-type]
        call=call,
        key=key,
        num_frames=place.num_frames,
        prefix_tokens=place.prefix_tokens,
    )


def _hooked(call: Call, place: Placement) -> FeatureSpec:
    assert call.shape is not None
    return _feature(place, call.name, call.shape, call=call.call)


def _returned_features(trace: Trace, full_shape: tuple[int, ...]) -> list[FeatureSpec]:
    found: list[FeatureSpec] = []
    for item in trace.outputs:
        place = classify(item.shape, full_shape)
        if place is None or item.key is None:
            continue
        name = item.module.name if item.module is not None else f"output[{item.key!r}]"
        found.append(_feature(place, name, item.shape, source="output", key=item.key))
    # timm's FeatureInfo wants non-decreasing reductions: fine to coarse, stable within a level.
    return sorted(found, key=lambda f: f.reduction)


def _stage_features(root: Call, full_shape: tuple[int, ...]) -> list[FeatureSpec]:
    def level(call: Call) -> int | None:
        place = classify(call.shape, full_shape)
        return place.reduction if place else None

    def should_open(call: Call) -> bool:
        if not call.children:
            return False
        levels = {lv for lv in map(level, call.children) if lv is not None}
        if len(levels) >= 3:
            return True
        own = level(call)
        return len(levels) == 2 and any(
            not c.is_leaf and level(c) is not None and level(c) != own for c in call.children
        )

    def opened(call: Call) -> list[Call]:
        seq: list[Call] = []
        for child in call.children:
            seq.extend(opened(child) if should_open(child) else [child])
        return seq

    spatial = [(c, classify(c.shape, full_shape)) for c in opened(root)]
    spatial = [(c, p) for c, p in spatial if p is not None and not _global_pool(c, p)]
    taps: list[FeatureSpec] = []
    for i, (call, place) in enumerate(spatial):
        last_of_level = i + 1 == len(spatial) or spatial[i + 1][1].reduction != place.reduction
        if not last_of_level:
            continue
        if taps and place.reduction < taps[-1].reduction:
            break  # the resolution goes back up: a decoder follows, the encoder ends here
        taps.append(_hooked(call, place))
    return taps


def _global_pool(call: Call, place: Placement) -> bool:
    """A pooling layer that leaves one pixel is the classifier's global pool, not a stage."""
    return place.grid == (1, 1) and "Pool" in call.type_name


def _repeated_blocks(root: Call, full_shape: tuple[int, ...], reduction: int) -> list[FeatureSpec]:
    """The longest run of sibling calls with the same kind of module at `reduction` (ViT blocks)."""
    best: list[tuple[Call, Placement]] = []

    def visit(call: Call) -> None:
        nonlocal best
        placed = [(c, classify(c.shape, full_shape)) for c in call.children if not c.is_leaf]
        at_level = [(c, p) for c, p in placed if p is not None and p.reduction == reduction]
        # Consecutive calls of one kind: a patch embedding called beside the blocks (blocks in a
        # ModuleList run as the model's own children) is not one of them.
        for _, group in itertools.groupby(at_level, key=lambda cp: cp[0].type_name):
            run = list(group)
            if len(run) > len(best) and len({c.name for c, _ in run}) == len(run):
                best = run
        for child in call.children:
            visit(child)

    visit(root)
    return [_hooked(c, p) for c, p in best] if len(best) >= 2 else []


def _parent_name(name: str) -> str:
    return name.rpartition(".")[0]


def _default_out_indices(features: list[FeatureSpec] | tuple[FeatureSpec, ...]) -> tuple[int, ...]:
    """Up to four: the last four levels of a pyramid, evenly spaced blocks of a one-level model."""
    n = len(features)
    if n <= DEFAULT_NUM_OUT:
        return tuple(range(n))
    if len({f.reduction for f in features}) == 1:
        return tuple(round((i + 1) * n / DEFAULT_NUM_OUT) - 1 for i in range(DEFAULT_NUM_OUT))
    return tuple(range(n - DEFAULT_NUM_OUT, n))
