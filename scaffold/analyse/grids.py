"""Grids that two reductions explain: decided by a second input size, never by one.

A 4x4 map of a 56-pixel input is the ceil grid at reduction 16 and the exact grid at 14 (a
patch-14 ViT). Read at 16 while the tokens after it read at 14, the resolution seems to go
back up and the blocks would be taken for a decoder. Where a map of the traced forward is such
a grid (its reading is a floor or ceil grid, and another reduction gives it exactly), the
forward runs again at a larger size (the calls up to where it raises count), and the reduction
that fits the same tensor at both sizes is the one: powers of two first, as `match_grid` reads
grids, then a reduction that is exact at both sizes. Where the second size cannot tell (the
forward refuses it before that tensor, or both still fit), the grid takes the stride of a layer
that makes it from the image itself (a patch embedding's convolution), else the reduction that
other tensors of the trace give it exactly, else its reading, and the spec records a doubt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from scaffold.analyse.trace import BATCH, Call, Trace
from scaffold.grid import (
    Grids,
    Placement,
    TokenFrames,
    ambiguous,
    classify,
    exact,
    grid_reductions,
    token_grids,
)
from scaffold.spec import Doubt

Key = tuple[str, str, int, int]


def _shapes(trace: Trace) -> Iterator[tuple[Key, tuple[int, ...]]]:
    """Every tensor the trace saw, keyed by where: what each call got and returned."""
    stack: list[Call] = [trace.root]
    while stack:
        call = stack.pop()
        stack.extend(call.children)
        outs = [s for _, s in call.outputs] or ([call.shape] if call.shape else [])
        ins = [s for _, s in call.inputs] or ([call.in_shape] if call.in_shape else [])
        for i, shape in enumerate(outs):
            yield ("out", call.name, call.call, i), shape
        for i, shape in enumerate(ins):
            yield ("in", call.name, call.call, i), shape


def ambiguous_grids(
    trace: Trace,
    input_shape: tuple[int, ...],
    frames: TokenFrames | None = None,
    grids: Grids | None = None,
) -> dict[tuple[int, int], list[tuple[Key, tuple[int, ...], Placement]]]:
    """The grids of more than one cell that two reductions explain, each with the tensors that
    have it (where, shape, placement)."""
    full = (BATCH, *input_shape)
    height, width = input_shape[-2:]
    found: dict[tuple[int, int], list[tuple[Key, tuple[int, ...], Placement]]] = {}
    for key, shape in _shapes(trace):
        place = classify(shape, full, frames, grids)
        if place is None or place.layout not in ("NCHW", "NHWC", "NLC"):
            continue
        h, w = place.grid
        if h * w > 1 and ambiguous(h, w, height, width, place.reduction):
            found.setdefault(place.grid, []).append((key, shape, place))
    return found


def decide_reductions(
    trace: Trace,
    input_shape: tuple[int, ...],
    larger: Callable[[], tuple[Trace | None, tuple[int, ...]]],
    frames: TokenFrames | None = None,
    grids: Grids | None = None,
) -> tuple[dict[tuple[int, int], int], list[str], list[Doubt]]:
    """The reduction of each grid that two reductions explain, by the second size `larger()`
    gives (its trace, None when the forward raised at once, and its input shape); notes and
    doubts for the person."""
    found = ambiguous_grids(trace, input_shape, frames, grids)
    if not found:
        return {}, [], []
    height, width = input_shape[-2:]
    again, larger_shape = larger()
    twins = dict(_shapes(again)) if again is not None else {}
    size2 = (larger_shape[-2], larger_shape[-1])
    decided: dict[tuple[int, int], int] = {}
    notes: list[str] = []
    doubts: list[Doubt] = []
    full = (BATCH, *input_shape)
    for grid, tensors in found.items():
        h, w = grid
        first = grid_reductions(h, w, height, width)
        fit = list(first)
        seen = False
        for key, _, place in tensors:
            if key in twins:
                seen = True
                fit = [r for r in fit if _fits_twin(place, twins[key], size2, r)]
        reading = tensors[0][2].reduction
        exactly = next((c for c in first if exact(h, w, height, width, c)), reading)
        if seen and fit:
            r = _best(fit, grid, (height, width), size2)
            decided[grid] = r
            notes.append(
                f"the {h}x{w} grid of the {height}x{width} input is reduction {reading} or "
                f"{exactly} by its size: read at {r}, which also fits the same tensors at "
                f"{size2[0]}x{size2[1]}"
            )
            continue
        # One size's evidence: the stride of a layer that makes this grid from the image itself
        # (a patch embedding), else the reduction that tensors read without doubt give it.
        others = _strides(trace, tensors, (height, width)) or {
            p.reduction
            for _, s in _shapes(trace)
            if (p := classify(s, full, frames, grids)) is not None
            and p.grid == grid
            and exact(h, w, height, width, p.reduction)
        }
        r = next((c for c in first if c in others), reading)
        decided[grid] = r
        alternative = exactly if r != exactly else reading
        why = (
            f"the forward raised at {size2[0]}x{size2[1]} before these tensors"
            if not seen
            else f"at {size2[0]}x{size2[1]} no reduction fits both sizes"
        )
        doubts.append(
            Doubt(
                "two-grids",
                f"the {h}x{w} grid of the {height}x{width} input is reduction {r} or "
                f"{alternative} and a second size could not tell ({why}); read at {r}",
                "--input-shape C,H,W",
            )
        )
    return decided, notes, doubts


def _strides(
    trace: Trace, tensors: list[tuple[Key, tuple[int, ...], Placement]], size: tuple[int, int]
) -> set[int]:
    """The strides of the layers that return one of `tensors` from an input of the image's
    height and width (a patch embedding's convolution): a stride there is the reduction."""
    if trace.model is None:
        return set()
    calls: dict[tuple[str, int], Call] = {}
    stack = [trace.root]
    while stack:
        call = stack.pop()
        stack.extend(call.children)
        calls[(call.name, call.call)] = call
    found: set[int] = set()
    for (kind, name, index, _), _, _ in tensors:
        out = calls.get((name, index))
        if kind != "out" or out is None or not name or out.in_shape is None:
            continue
        if tuple(out.in_shape[-2:]) != size:
            continue
        stride = getattr(trace.model.get_submodule(name), "stride", None)
        if isinstance(stride, tuple) and len(set(stride)) == 1 and isinstance(stride[0], int):
            found.add(stride[0])
    return found


def _fits_twin(place: Placement, shape: tuple[int, ...], size: tuple[int, int], r: int) -> bool:
    """The tensor of `shape` at an input of `size` is on the grid of reduction `r`, read as
    `place` read its twin (the same layout, extra tokens and groups)."""
    height, width = size
    if place.layout == "NCHW" and len(shape) == 4:
        return r in grid_reductions(shape[2], shape[3], height, width)
    if place.layout == "NHWC" and len(shape) == 4:
        return r in grid_reductions(shape[1], shape[2], height, width)
    if place.layout == "NLC" and len(shape) == 3:
        inner = shape[1] - place.prefix_tokens - place.suffix_tokens
        if inner <= 0 or inner % place.groups:
            return False
        return any(c == r for c, _ in token_grids(inner // place.groups, height, width))
    return False


def _best(
    fit: list[int], grid: tuple[int, int], size: tuple[int, int], size2: tuple[int, int]
) -> int:
    """Of the reductions that fit at both sizes: a power of two first (stride products), then
    one that is exact at both sizes, then the first."""
    powers = [r for r in fit if r & (r - 1) == 0]
    if powers:
        return powers[0]
    for r in fit:
        if exact(*grid, *size, r) and size2[0] % r == 0 and size2[1] % r == 0:
            return r
    return fit[0]
