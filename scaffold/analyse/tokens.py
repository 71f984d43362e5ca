"""Where tokens sit: measured on the model by perturbing its input, never assumed from a count.

A token tensor (B, N, C) holds grid tokens (one per cell of each patch embedding's grid) and
extra tokens (a class token, register tokens) that may come before the grid tokens, after them,
or both. Before the first layer that mixes tokens (attention), a grid token depends on the
pixels of its own cell only and an extra token on no pixel at all. So, at the first tensor of
each token count in the forward (what enters the first block, usually), one forward of a batch
shows it:

- an input replaced by another changes the grid tokens and leaves the extra tokens as they are;
- a single pixel changed at each corner of the image changes the tokens of the cell that holds
  it, one per group of bands embedded apart (a ViT with one patch embedding per group of bands
  concatenates the groups' tokens: G x h x w), and no other token outside that cell's
  neighbours (an overlapping convolution stem reaches them).

The grid (and the groups) whose corner cells are exactly where the corner pixels landed is
the reading; the token order it gives is prefix, then group after group rows first, then
suffix. The forward stops as soon as every token count has been seen, so the blocks after that
do not run. A model traced on the meta device (no values) is measured on a copy whose modules
get CPU weights (random, the values do not matter) as each one is first called, up to
MAX_MATERIALIZED of them: a 600M-parameter ViT costs its patch embedding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from scaffold.analyse.trace import BATCH, Trace
from scaffold.grid import TokenLayout, match_grid, token_grids
from scaffold.runtime.inputs import first_tensor

BUMP = 10.0  # what a probe adds to a pixel: far above the changes of rounding
MAX_MATERIALIZED = 30_000_000  # parameters a meta-traced model's copy may get on the CPU
MAX_AT_ONCE = 60_000_000  # a meta-traced model this small gets all its weights before the probe


@dataclass(frozen=True)
class Measured:
    """The token layouts measured, by token count, and the counts whose tensors could not be
    read (a layer mixed the tokens before the first tensor of that count, or no grid fits)."""

    layouts: dict[int, TokenLayout]
    unread: frozenset[int]


class _Seen(BaseException):
    """Ends the probe forward once every token count has been seen (a BaseException, so that
    an ``except Exception`` in the model's forward lets it through)."""


def token_counts(trace: Trace) -> set[int]:
    """The counts of the token tensors (B, N, C) that the traced forward made or passed."""
    counts: set[int] = set()
    stack = [trace.root]
    while stack:
        call = stack.pop()
        stack.extend(call.children)
        shapes = [s for _, s in call.outputs] + [s for _, s in call.inputs]
        shapes += [s for s in (call.shape, call.in_shape) if s is not None]
        for s in shapes:
            if len(s) == 3 and s[0] == BATCH and s[1] >= 2 and s[2] >= 2:
                counts.add(s[1])
    return counts


def measure_tokens(trace: Trace, input_shape: tuple[int, ...]) -> Measured | None:
    """The layouts of the token tensors of `trace` (an input of `input_shape`, without batch),
    measured on the model; None when they cannot be (the probe forward raised before any
    token tensor)."""
    counts = token_counts(trace)
    if not counts or trace.model is None or trace.device not in ("cpu", "meta"):
        return None
    probes = _probes(input_shape)
    try:
        seen = _first_tensors(trace, probes, counts)
    except Exception:  # the forward refuses a larger batch: nothing measured
        return None
    if not seen:
        return None
    layouts: dict[int, TokenLayout] = {}
    unread: set[int] = set()
    height, width = input_shape[-2:]
    for n, tokens in seen.items():
        layout = _read(tokens, height, width, input_shape[0], len(input_shape) == 3)
        if layout is None:
            unread.add(n)
        else:
            layouts[n] = layout
    return Measured(layouts, frozenset(unread | (counts - set(seen))))


def _probes(input_shape: tuple[int, ...]) -> torch.Tensor:
    """The batch: an input, another input, and the first with one pixel changed (every band,
    every frame) at each corner: top left, top right, bottom left, bottom right."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(*input_shape, generator=gen)
    other = torch.randn(*input_shape, generator=gen)
    height, width = input_shape[-2:]
    batch = [base, other]
    for i, j in _corners(height, width):
        probe = base.clone()
        # the corner's 2x2 pixels (inside the corner cell at any reduction from 2 on): a
        # patch embedding may weigh its outermost row or column by nothing
        probe[..., max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2] += BUMP
        batch.append(probe)
    return torch.stack(batch)


def _corners(height: int, width: int) -> list[tuple[int, int]]:
    return [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)]


def _first_tensors(trace: Trace, x: torch.Tensor, counts: set[int]) -> dict[int, torch.Tensor]:
    """The first token tensor of each count in `counts` that the forward of batch `x` passes
    to a module or gets from one, in the order of the hooks."""
    model = trace.model
    assert model is not None
    on_meta = trace.device == "meta"
    if on_meta:  # a copy that gets weights on the CPU as its modules run
        model = copy.deepcopy(model)
        if sum(p.numel() for p in model.parameters()) <= MAX_AT_ONCE:
            # small enough to give every weight at once: a forward that reads a module's weights
            # without calling it (a generated kernel) finds them on the CPU too
            for module in model.modules():
                _materialize(module)
    batch = x.shape[0]
    seen: dict[int, torch.Tensor] = {}
    made = [0]  # parameters given CPU weights so far

    def keep(value: Any) -> None:
        tensor = first_tensor(value)
        if tensor is None or tensor.ndim != 3 or tensor.shape[0] != batch:
            return
        n = tensor.shape[1]
        if n in counts and n not in seen:
            seen[n] = tensor.detach().clone()
            if len(seen) == len(counts):
                raise _Seen

    def enter(module: nn.Module, args: Any) -> None:
        if on_meta:
            made[0] += _materialize(module)
            if made[0] > MAX_MATERIALIZED:
                raise _Seen  # what was seen by then is what is measured
        keep(args)

    handles = [model.register_forward_pre_hook(lambda m, a: enter(m, ()))]
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(lambda m, a, out: keep(out)))
    try:
        model.eval()
        with torch.no_grad():
            if trace.call is not None:
                trace.call(model, x)
            else:
                model(x)
    except _Seen:
        pass
    except Exception:  # raised past what it had seen (a module given no weights): keep that
        if not seen:
            raise
    finally:
        for h in handles:
            h.remove()
    return seen


def _materialize(module: nn.Module) -> int:
    """Give the module's own meta parameters and buffers CPU values (parameters small random
    ones, float buffers ones, others zeros); how many values it made."""
    gen = torch.Generator().manual_seed(len(module._parameters))
    count = 0
    for name, param in list(module._parameters.items()):
        if param is not None and param.is_meta:
            value = torch.empty(param.shape, dtype=param.dtype)
            if value.is_floating_point():
                value.normal_(0.0, 0.02, generator=gen)
            else:
                value.zero_()
            module._parameters[name] = nn.Parameter(value, requires_grad=False)
            count += value.numel()
    for name, buffer in list(module._buffers.items()):
        if buffer is not None and buffer.is_meta:
            value = torch.empty(buffer.shape, dtype=buffer.dtype)
            module._buffers[name] = value.fill_(1) if value.is_floating_point() else value.zero_()
            count += value.numel()
    return count


def _changed(tokens: torch.Tensor, k: int) -> set[int]:
    """The token positions where batch item `k` differs from item 0."""
    diff = (tokens[k] - tokens[0]).abs().amax(dim=-1)
    peak = float(diff.max())
    # Relative to the largest change: a pixel near a patch's edge may move its token by little
    # (a generated kernel small there), yet far more than rounding moves the others.
    if peak <= 1e-7 * (1.0 + float(tokens[0].abs().max())):
        return set()
    return {int(i) for i in torch.nonzero(diff > 1e-2 * peak).flatten()}


def _read(
    tokens: torch.Tensor, height: int, width: int, in_chans: int, image: bool
) -> TokenLayout | None:
    """The layout of the tokens of the probe batch (see `_probes`), or None when it cannot be
    read: extra tokens in the middle, or tokens that a layer mixed already."""
    n = tokens.shape[1]
    grid_pos = sorted(_changed(tokens, 1))
    if not grid_pos:
        return None
    first, last = grid_pos[0], grid_pos[-1]
    if last - first + 1 != len(grid_pos):
        return None  # extra tokens between grid tokens: not prefix and suffix
    prefix, suffix = first, n - 1 - last
    probes = [_changed(tokens, k) for k in range(2, tokens.shape[0])]
    if any(len(s) * 2 > len(grid_pos) for s in probes):
        return None  # one pixel reached most tokens: mixed already
    if not image:
        return TokenLayout(prefix, suffix)
    for groups, r, grid in _candidates(len(grid_pos), height, width, in_chans):
        if all(
            _fits(s, prefix, groups, grid, cell)
            for s, cell in zip(probes, _cells(height, width, r, grid), strict=True)
        ):
            return TokenLayout(prefix, suffix, groups, r, grid)
    return None


def _candidates(
    m: int, height: int, width: int, in_chans: int
) -> list[tuple[int, int, tuple[int, int]]]:
    """(groups, reduction, grid) with groups x grid cells = `m` grid tokens: one group first,
    then more (at most one per input band); per grid the reduction `match_grid` reads."""
    found = []
    for groups in range(1, in_chans + 1):
        if m % groups:
            continue
        grids = dict.fromkeys(g for _, g in token_grids(m // groups, height, width))
        for grid in grids:
            r = match_grid(*grid, height, width)
            if r is not None and grid[0] * grid[1] >= 2:
                found.append((groups, r, grid))
    return found


def _cells(height: int, width: int, r: int, grid: tuple[int, int]) -> list[tuple[int, int] | None]:
    """The cell of each corner pixel on a grid at reduction `r` (None: a cell a floor grid
    leaves out)."""
    cells: list[tuple[int, int] | None] = []
    for i, j in _corners(height, width):
        ci, cj = i // r, j // r
        cells.append((ci, cj) if ci < grid[0] and cj < grid[1] else None)
    return cells


def _fits(
    changed: set[int],
    prefix: int,
    groups: int,
    grid: tuple[int, int],
    cell: tuple[int, int] | None,
) -> bool:
    """A corner probe changed the tokens of its cell in every group, and no token other than
    those of that cell's neighbours (in any group)."""
    h, w = grid
    cells = h * w

    def at(g: int, i: int, j: int) -> int:
        return prefix + g * cells + i * w + j

    if cell is None:
        return not changed
    ci, cj = cell
    if not all(at(g, ci, cj) in changed for g in range(groups)):
        return False
    near = {
        at(g, i, j)
        for g in range(groups)
        for i in range(max(ci - 1, 0), min(ci + 2, h))
        for j in range(max(cj - 1, 0), min(cj + 2, w))
    }
    return changed <= near


def describe(layout: TokenLayout, n: int) -> str:
    """How the tokens of a count were read, for the notes."""
    parts = []
    if layout.prefix:
        parts.append(f"{layout.prefix} extra token(s) first")
    if layout.grid is not None:
        h, w = layout.grid
        grids = f"{layout.groups} groups of {h}x{w}" if layout.groups > 1 else f"a {h}x{w} grid"
        parts.append(f"{grids} at reduction {layout.reduction}")
    else:
        parts.append(f"{n - layout.prefix - layout.suffix} grid tokens")
    if layout.suffix:
        parts.append(f"{layout.suffix} extra token(s) last")
    return f"{n} tokens: " + ", then ".join(parts)
