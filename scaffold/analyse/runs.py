"""Runs of blocks and branches: repeated blocks at one resolution (a ViT's blocks, a
stream of a two-stream model) and which of them are the features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scaffold.analyse.taps import feature, hooked, item_why, parent_name
from scaffold.analyse.trace import Call, Key
from scaffold.analyse.walk import Flow
from scaffold.grid import Grids, Placement, TokenFrames
from scaffold.spec import FeatureSpec

Stream = Literal["input", "hook"]  # what enters a call, or what it returns


@dataclass(frozen=True, eq=False)
class _Run:
    """Sibling calls of the same kind of module (each a different module) whose item `key` (None:
    the first tensor) is a map at `reduction`: a ViT's blocks, or one branch of blocks that
    return several maps."""

    calls: tuple[Call, ...]
    key: Key
    reduction: int
    places: tuple[Placement, ...]
    # Blocks whose members are called one by one (see `_units`): what flows on after block i is
    # what enters calls[i] ("input", a forward pre-hook) or what calls[i] returns ("hook").
    sources: tuple[Stream, ...] = ()
    label: str = ""  # the container of the blocks, when not the calls' parent

    def taps(self, why: str) -> list[FeatureSpec]:
        if self.sources:
            return [
                feature(p, c.name, shape, source=src, call=c.call, why=_stream_why(src, c))
                for c, p, src in zip(self.calls, self.places, self.sources, strict=True)
                if (shape := c.in_shape if src == "input" else c.shape) is not None
            ]
        return [
            hooked(c, p, item_why(why, self.key), self.key)
            for c, p in zip(self.calls, self.places, strict=True)
        ]


def _stream_why(source: str, call: Call) -> str:
    what = f"what enters {call.name}" if source == "input" else f"what {call.name} returns"
    return (
        f"the stream after a block whose members are called one by one and summed in Python: {what}"
    )


def _units(call: Call, flow: Flow) -> tuple[_Run, set[int]] | None:
    """A run of blocks whose members the forward calls one by one (a ModuleList([attention,
    feed-forward]) per block, looped over and summed with a Python `+`): consecutive children of
    `call` that are the members of one container each, never called itself, two or more
    members of the same kinds in every block. A member's output is then a sub-layer's delta,
    not the stream: what flows on after block i is what enters the next block's first member,
    and after the last block what enters the next module (or what `call` returns). The run, and
    the ids of the member calls it covers; None when there is none."""
    groups: list[list[Call]] = []
    for child in call.children:
        if groups and parent_name(groups[-1][-1].name) == parent_name(child.name):
            groups[-1].append(child)
        else:
            groups.append([child])
    best: list[list[Call]] = []
    i = 0
    while i < len(groups):
        j = i
        kinds = [c.type_name for c in groups[i]]
        outer = parent_name(parent_name(groups[i][0].name))
        while (
            j < len(groups)
            and len(groups[j]) >= 2
            and [c.type_name for c in groups[j]] == kinds
            and parent_name(groups[j][0].name) not in ("", call.name)
            and parent_name(parent_name(groups[j][0].name)) == outer
        ):
            j += 1
        if j - i >= 2 and j - i > len(best):
            best = groups[i:j]
        i = max(j, i + 1)
    if not best:
        return None
    members = [c for group in best for c in group]
    if len({c.name for c in members}) != len(members):
        return None  # one module called twice: not a run of different blocks
    after = call.children[call.children.index(members[-1]) + 1 :]
    taps: list[tuple[Call, Stream]] = [(group[0], "input") for group in best[1:]]
    taps.append((after[0], "input") if after else (call, "hook"))
    places = []
    for tap, source in taps:
        shape = tap.in_shape if source == "input" else tap.shape
        place = flow.place(shape)
        if place is None or flow.vector(shape):
            return None
        places.append(place)
    if len({p.reduction for p in places}) != 1:
        return None
    calls, sources = zip(*taps, strict=True)
    label = parent_name(parent_name(best[0][0].name))
    run = _Run(calls, None, places[0].reduction, tuple(places), sources, label)
    return run, {id(c) for c in members}


def block_runs(
    root: Call,
    full_shape: tuple[int, ...],
    frames: TokenFrames | None = None,
    grids: Grids | None = None,
) -> list[_Run]:
    """Every run of two or more sibling calls of the same kind of module (each a different
    module) at one reduction, however the forward calls them (a loop over a ModuleList with extra
    arguments such as rotary embeddings or a relative position bias, or a Sequential).

    A block that returns several maps counts once per item, and a run of such blocks follows an
    item only when the run's last block passes it on (a later call outside it reads it): the aux
    map that the last block drops is not a stream, the tokens it hands to the norm are."""
    flow = Flow(root, full_shape, frames=frames, grids=grids)
    found: list[_Run] = []

    def visit(call: Call) -> None:
        runs: dict[tuple[str, Key, int], list[tuple[Call, Placement]]] = {}
        units = _units(call, flow)
        if units is not None:
            found.append(units[0])
        for child in call.children:
            if child.is_leaf or (units is not None and id(child) in units[1]):
                continue
            for key, place in flow.maps(child):
                run = runs.setdefault((child.type_name, key, place.reduction), [])
                if all(c.name != child.name for c, _ in run):
                    run.append((child, place))
        for (_, key, reduction), run in runs.items():
            last = run[-1][0]
            if len(run) >= 2 and (len(last.outputs) <= 1 or key in flow.passed_on(last)):
                calls, places = zip(*run, strict=True)
                found.append(_Run(tuple(calls), key, reduction, tuple(places)))
        for child in call.children:
            visit(child)

    visit(root)
    return found


def _longest_run(runs: list[_Run], reduction: int) -> _Run | None:
    """The longest run at `reduction` (the first when several are as long)."""
    return max((r for r in runs if r.reduction == reduction), key=_run_length, default=None)


def run_label(runs: list[_Run], reduction: int) -> str:
    best = _longest_run(runs, reduction)
    return "" if best is None else best.label or parent_name(best.calls[0].name)


def repeated_blocks(runs: list[_Run], reduction: int) -> list[FeatureSpec]:
    """The taps of the longest run at `reduction` (the first when several are as long)."""
    best = _longest_run(runs, reduction)
    if best is None:
        return []
    parent = best.label or parent_name(best.calls[0].name) or "the model"
    return best.taps(
        f"one of {len(best.calls)} repeated blocks of {parent} (one resolution only, as timm's ViTs)"
    )


def _run_length(run: _Run) -> int:
    return len(run.calls)


def streams(runs: list[_Run]) -> list[_Run]:
    """Branches side by side: the runs over the same blocks that follow different items (blocks
    that return one map per branch and pass each on), when the model has no other run of blocks
    outside those blocks (no pyramid of stages before or after them). Empty when there are none."""
    groups: dict[tuple[int, ...], list[_Run]] = {}
    for run in runs:
        groups.setdefault(tuple(id(c) for c in run.calls), []).append(run)
    branches = [g for g in groups.values() if len({r.key for r in g}) >= 2]
    if not branches:
        return []
    best = max(branches, key=lambda g: len(g[0].calls))
    blocks = best[0].calls
    for run in runs:
        if any(run is b for b in best):
            continue
        if not all(_inside(c, blocks) for c in run.calls):
            return []
    return best


def _inside(call: Call, blocks: tuple[Call, ...]) -> bool:
    node: Call | None = call.parent
    while node is not None:
        if any(node is b for b in blocks):
            return True
        node = node.parent
    return False
