"""Choosing the feature taps from a traced forward pass.

A tensor is a feature map when its shape shows the input's spatial grid at some reduction r:
(B, C, H/r, W/r) is NCHW, (B, H/r, W/r, C) NHWC, (B, [prefix +] H/r * W/r, C) NLC tokens,
(B, C, T', H/r, W/r) NCTHW and (B, T', H/r, W/r, C) NTHWC. Tokens of a temporal input whose
count changes with the input's frames (measured on a second trace at another frame count, see
`token_frames`) are (B, [prefix +] T' * H/r * W/r, C), NTLC: T' frames of one grid, time first.

Stages are found on the call tree, not on the flat list of hook events (where the last output at
a resolution is often a layer inside the next stage's first block). Starting at the model, a call
is opened up when its children span several resolutions: three or more, or two where a composite
child (a block, not a single layer) works at a resolution other than the call's own output.
A ResNet opens at the top only (its stages keep their blocks closed); a Swin whose stages end in
patch merging opens each stage, so a stage's tap is its last block, before the merge. The tap of
a level is the last call at that level in the opened sequence. Several stages at one level are a
tap each: in the opened sequence, a stage (a call holding a chain of two or more blocks of one
kind, a block holding a group of layers that is not a single layer) followed directly by a
sibling stage of the same output shape is a tap too. Blocks that hold only single layers (an
inverted residual, parallel conv branches) or stages of other widths stay one tap per level.

A call's input is the map that flows into it: when it reads several maps (a cell that reads the
outputs of the two cells before it), the one that appeared last in the forward pass; the others
are skip inputs, which neither place the call nor open it.

A model whose forward already returns several feature maps (a list, tuple or dict) is taken at
its word: the taps are the items it returns.

A call consumes every tensor it is given and produces each item of a tuple, list or dict it
returns; a tap can be such an item (the hook takes `key` of the module's output). Of a block that
returns several maps, the map that continues is followed: the one a later call reads, and in a
run of such blocks the item that the run's last block passes on (an aux map it drops is not a
stream). When one level is a run of repeated blocks (a ViT's), its taps are those blocks, each at
the item that continues (TNT's patch tokens). When one run of blocks passes on several items
(branches side by side, CrossViT's) and the model has no other run of blocks outside it, each
branch's taps are its blocks at its item, sorted by reduction (branch by branch).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaffold.analyse.combined import combined_taps
from scaffold.analyse.runs import block_runs, repeated_blocks, run_label, streams
from scaffold.analyse.taps import (
    feature,
    parent_name,
)
from scaffold.analyse.trace import BATCH, Call, Trace
from scaffold.analyse.walk import Flow, stage_features
from scaffold.grid import MAX_PREFIX_TOKENS, Grids, TokenFrames, classify, classify_tokens
from scaffold.spec import FeatureSpec

DEFAULT_NUM_OUT = 4


def token_frames(
    first: Trace, second: Trace, input_shape: tuple[int, ...], other_frames: int, min_step: int = 1
) -> TokenFrames | None:
    """The frames that token tensors hold, from two traces of one forward at the frame counts
    of `input_shape` (C, T, H, W, without batch) and `other_frames`: a token tensor whose count
    changes between them is prefix + F(T) * h * w, with F(T) = T / k frames of tokens (k frames
    per temporal patch, floor or ceil; the smallest k from `min_step` that fits), the same
    prefix at both counts and h x w a grid of the input. The frames most token tensors agree on
    win. None when no token count changes with the frames."""
    t1, (height, width) = input_shape[1], input_shape[-2:]
    found: dict[int, set[int]] = {}
    vectors: set[int] = set()  # one vector per frame: counts that follow the frames one by one
    for n1, n2 in _changed_token_counts(first, second):
        frames = _frames_of(n1, n2, t1, other_frames, height, width, min_step)
        if frames is not None:
            found.setdefault(frames, set()).add(n1)
        elif n2 - n1 == other_frames - t1 and 0 <= n1 - t1 <= MAX_PREFIX_TOKENS:
            vectors.add(n1)
    if not found:
        return TokenFrames(0, frozenset(), frozenset(vectors)) if vectors else None
    frames = max(found, key=lambda f: (len(found[f]), f))
    return TokenFrames(frames, frozenset(found[frames]), frozenset(vectors))


def _frames_of(
    n1: int, n2: int, t1: int, t2: int, height: int, width: int, min_step: int
) -> int | None:
    """The token frames at `t1` input frames of a tensor of `n1` tokens there and `n2` at `t2`."""
    for step in range(min_step, max(t1, t2) + 1):
        for f1, f2 in ((t1 // step, t2 // step), (-(-t1 // step), -(-t2 // step))):
            if f1 < 1 or f1 == f2 or (n2 - n1) % (f2 - f1):
                continue
            cells = (n2 - n1) // (f2 - f1)
            prefix = n1 - f1 * cells
            # one cell per frame is a vector per frame (a day-of-year embedding), not a map
            if cells < 2 or not 0 <= prefix <= MAX_PREFIX_TOKENS:
                continue
            place = classify_tokens(cells, 1, height, width)
            if place is not None and place.prefix_tokens == 0:
                return f1
    return None


def _changed_token_counts(first: Trace, second: Trace) -> set[tuple[int, int]]:
    """(count in `first`, count in `second`) of each token tensor (B, N, C) whose count differs
    between the two traces: the same module's same call and item, or the same returned item."""

    def shapes(trace: Trace) -> dict[tuple[str, int, int], tuple[int, ...]]:
        found: dict[tuple[str, int, int], tuple[int, ...]] = {}
        stack = [trace.root]
        while stack:
            call = stack.pop()
            stack.extend(call.children)
            items = [s for _, s in call.outputs] or ([call.shape] if call.shape else [])
            for i, shape in enumerate(items):
                found[(call.name, call.call, i)] = shape
        for i, item in enumerate(trace.outputs):
            found[("", -1, i)] = item.shape
        return found

    a, b = shapes(first), shapes(second)
    return {
        (s[1], b[k][1])
        for k, s in a.items()
        if k in b
        and len(s) == 3
        and len(b[k]) == 3
        and s[0] == b[k][0]
        and s[2] == b[k][2]
        and s[1] != b[k][1]
    }


@dataclass(frozen=True)
class Selection:
    features: tuple[FeatureSpec, ...]
    out_indices: tuple[int, ...]
    notes: tuple[str, ...]


def select_features(
    trace: Trace,
    input_shape: tuple[int, ...],
    cells: frozenset[int] = frozenset(),
    frames: TokenFrames | None = None,
    grids: Grids | None = None,
) -> Selection:
    """The candidate feature maps in forward order, and the default selection.

    `cells`: the ids of the tensors that are one cell at this size but the grid of the same
    reduction at a larger one (see `grown_cells`): a level, not a pooled vector. `frames`: the
    token tensors measured to hold frames (see `token_frames`). `grids`: the token layouts and
    the reductions measured on the model (scaffold.analyse.tokens, scaffold.analyse.grids)."""
    full_shape = (BATCH, *input_shape)
    returned = _returned_features(trace, full_shape, frames, grids)
    if len(returned) >= 2:
        return Selection(tuple(returned), _default_out_indices(returned), ())
    walk = stage_features(
        trace.root, full_shape, cells, frames, trace.made_from, trace.shapes, grids
    )
    flow = Flow(
        trace.root, full_shape, cells, frames, trace.made_from, trace.shapes, grids, trace.made_in
    )
    features = combined_taps(trace.root, flow, walk.taps)
    combined = {t.module for t in walk.taps if t not in features}
    # the other calls of a module whose outputs are combined are not the head
    walk.head = [n for n in walk.head if not any(n == m or n.startswith(m + ".") for m in combined)]
    notes: list[str] = []
    levels = sorted({f.reduction for f in features})
    if levels:
        # One resolution only, or only the coarsest level holds repeated blocks (the finer levels
        # are a stem: a hybrid ViT): that level's taps are its blocks, as timm does for ViTs.
        runs = block_runs(trace.root, full_shape, frames, grids)
        branches = streams(runs)
        blocks = repeated_blocks(runs, levels[-1])
        stem_only = all(len(repeated_blocks(runs, r)) < 2 for r in levels[:-1])
        last = [f for f in features if f.reduction == levels[-1]]
        if branches:
            # branches side by side: each branch's taps are its blocks, as timm does for ViTs;
            # a finer level before them is a stem, and the branches sort by reduction (stable)
            finest = min(r.reduction for r in branches)
            parent = parent_name(branches[0].calls[0].name) or "the model"
            why = f"one of the {len(branches[0].calls)} blocks of {parent}, branch by branch"
            taps = [t for r in branches for t in r.taps(why)]
            features = sorted(
                [f for f in features if f.reduction < finest] + taps, key=lambda f: f.reduction
            )
            notes.append(
                f"the blocks of '{parent}' return {len(branches)} maps that each continue "
                "(branches side by side): each branch's taps are its blocks"
            )
            walk.head = [n for n in walk.head if not any(t.module == n for t in taps)]
        elif stem_only and len(blocks) > len(last):
            features = [f for f in features if f.reduction < levels[-1]] + blocks
            where = "one resolution only" if len(levels) == 1 else "the finer levels are a stem"
            notes.append(
                f"{where}: the taps at reduction {levels[-1]} are the {len(blocks)} blocks of "
                f"'{run_label(runs, levels[-1])}', as timm does for ViTs"
            )
    if walk.head:
        notes.append("left out as the head: " + _listed(walk.head))
    if walk.inner:
        notes.append("left out as layers inside a level change: " + _listed(walk.inner))
    return Selection(tuple(features), _default_out_indices(features), tuple(notes))


def one_cell_layers(
    trace: Trace, input_shape: tuple[int, ...], grids: Grids | None = None
) -> list[Call]:
    """The layers with weights of their own (a strided conv) that turn a larger map into a
    single cell. Whether that cell is a global reduction (the head) or a level that a small
    input happens to shrink to one cell, only a second, larger input size tells."""
    flow = Flow(trace.root, (BATCH, *input_shape), grids=grids)
    return [
        call
        for call in _post_order(trace.root)
        if call.is_leaf
        and call.weighted
        and _one_cell(flow, call.shape)
        and flow.inp(call) is not None
        and not flow.vector(flow.in_shape(call))
    ]


def grown_cells(
    trace: Trace,
    input_shape: tuple[int, ...],
    larger: Trace,
    larger_shape: tuple[int, ...],
    grids: Grids | None = None,
) -> frozenset[int]:
    """The ids of the tensors of `trace` that are one cell at `input_shape` and, when the same
    call runs at `larger_shape`, a grid of more than one cell at the same reduction, and that a
    layer with weights made that way (a strided conv, then its norm and activation, and the
    blocks that return them). A global pool gives one cell at every size and stays the head; so
    do a pool without weights of its own and a conv whose kernel covers the whole map (VGG's
    first classifier layer: 7x7 to 1x1 at 224, 14x14 to 8x8 at 448, not one reduction)."""
    flow = Flow(trace.root, (BATCH, *input_shape), grids=grids)
    other = Flow(larger.root, (BATCH, *larger_shape))
    at_larger = {(c.name, c.call): c for c in _post_order(larger.root)}
    cells: set[int] = set()
    for call in _post_order(trace.root):  # children first: leaves in forward order
        if call.parent is None or call.output_id is None or not _one_cell(flow, call.shape):
            continue
        twin = at_larger.get((call.name, call.call))
        there, here = other.place(twin.shape) if twin else None, flow.place(call.shape)
        if twin is None or there is None or here is None or other.vector(twin.shape):
            continue
        if there.reduction != here.reduction:  # not a level's grid at both sizes
            continue
        if call.is_leaf:
            made = call.weighted and not flow.vector(flow.in_shape(call))
            grows = made or flow.input_id(call) in cells
        else:
            grows = any(c.output_id in cells for c in _post_order(call) if c is not call)
        if grows and flow.place(flow.in_shape(call)) is not None:
            cells.add(call.output_id)
    return frozenset(cells)


def _one_cell(flow: Flow, shape: tuple[int, ...] | None) -> bool:
    """A map on the grid that is a single cell (B, C, 1, 1): a vector by its shape."""
    return flow.place(shape) is not None and flow.vector(shape)


def _post_order(call: Call) -> list[Call]:
    found: list[Call] = []
    for child in call.children:
        found += _post_order(child)
    return [*found, call]


def _listed(names: list[str], most: int = 6) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _returned_features(
    trace: Trace,
    full_shape: tuple[int, ...],
    frames: TokenFrames | None = None,
    grids: Grids | None = None,
) -> list[FeatureSpec]:
    found: list[FeatureSpec] = []
    for item in trace.outputs:
        place = classify(item.shape, full_shape, frames, grids)
        if place is None or item.key is None:
            continue
        name = item.module.name if item.module is not None else f"output[{item.key!r}]"
        why = f"item {item.key!r} of what forward returns"
        found.append(feature(place, name, item.shape, source="output", key=item.key, why=why))
    # timm's FeatureInfo wants non-decreasing reductions: fine to coarse, stable within a level.
    return sorted(found, key=lambda f: f.reduction)


def _default_out_indices(features: list[FeatureSpec] | tuple[FeatureSpec, ...]) -> tuple[int, ...]:
    """Up to four: the last four levels of a pyramid, or evenly spaced blocks of the last level
    when it is a run of blocks (a ViT's, a hybrid's)."""
    n = len(features)
    if n <= DEFAULT_NUM_OUT:
        return tuple(range(n))
    blocks = sum(f.reduction == features[-1].reduction for f in features)
    if blocks >= DEFAULT_NUM_OUT:  # the blocks of one level (a ViT's): evenly spaced
        first = n - blocks
        steps = range(DEFAULT_NUM_OUT)
        return tuple(first + round((i + 1) * blocks / DEFAULT_NUM_OUT) - 1 for i in steps)
    return tuple(range(n - DEFAULT_NUM_OUT, n))
