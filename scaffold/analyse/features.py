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

from scaffold.analyse.trace import BATCH, Call, Trace
from scaffold.grid import MAX_PREFIX_TOKENS, Placement, TokenFrames, classify, classify_tokens
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
    for n1, n2 in _changed_token_counts(first, second):
        frames = _frames_of(n1, n2, t1, other_frames, height, width, min_step)
        if frames is not None:
            found.setdefault(frames, set()).add(n1)
    if not found:
        return None
    frames = max(found, key=lambda f: (len(found[f]), f))
    return TokenFrames(frames, frozenset(found[frames]))


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
            if cells < 1 or not 0 <= prefix <= MAX_PREFIX_TOKENS:
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
) -> Selection:
    """The candidate feature maps in forward order, and the default selection.

    `cells`: the ids of the tensors that are one cell at this size but the grid of the same
    reduction at a larger one (see `grown_cells`): a level, not a pooled vector. `frames`: the
    token tensors measured to hold frames (see `token_frames`)."""
    full_shape = (BATCH, *input_shape)
    returned = _returned_features(trace, full_shape, frames)
    if len(returned) >= 2:
        return Selection(tuple(returned), _default_out_indices(returned), ())
    walk = _stage_features(trace.root, full_shape, cells, frames)
    features = walk.taps
    notes: list[str] = []
    levels = sorted({f.reduction for f in features})
    if levels:
        # One resolution only, or only the coarsest level holds repeated blocks (the finer levels
        # are a stem: a hybrid ViT): that level's taps are its blocks, as timm does for ViTs.
        runs = _block_runs(trace.root, full_shape, frames)
        branches = _streams(runs)
        blocks = _repeated_blocks(runs, levels[-1])
        stem_only = all(len(_repeated_blocks(runs, r)) < 2 for r in levels[:-1])
        last = [f for f in features if f.reduction == levels[-1]]
        if branches:
            # branches side by side: each branch's taps are its blocks, as timm does for ViTs;
            # a finer level before them is a stem, and the branches sort by reduction (stable)
            finest = min(r.reduction for r in branches)
            parent = _parent_name(branches[0].calls[0].name) or "the model"
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
                f"'{_run_label(runs, levels[-1])}', as timm does for ViTs"
            )
    if walk.head:
        notes.append("left out as the head: " + _listed(walk.head))
    if walk.inner:
        notes.append("left out as layers inside a level change: " + _listed(walk.inner))
    return Selection(tuple(features), _default_out_indices(features), tuple(notes))


def one_cell_layers(trace: Trace, input_shape: tuple[int, ...]) -> list[Call]:
    """The layers with weights of their own (a strided conv) that turn a larger map into a
    single cell. Whether that cell is a global reduction (the head) or a level that a small
    input happens to shrink to one cell, only a second, larger input size tells."""
    flow = _Flow(trace.root, (BATCH, *input_shape))
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
    trace: Trace, input_shape: tuple[int, ...], larger: Trace, larger_shape: tuple[int, ...]
) -> frozenset[int]:
    """The ids of the tensors of `trace` that are one cell at `input_shape` and, when the same
    call runs at `larger_shape`, a grid of more than one cell at the same reduction, and that a
    layer with weights made that way (a strided conv, then its norm and activation, and the
    blocks that return them). A global pool gives one cell at every size and stays the head; so
    do a pool without weights of its own and a conv whose kernel covers the whole map (VGG's
    first classifier layer: 7x7 to 1x1 at 224, 14x14 to 8x8 at 448, not one reduction)."""
    flow = _Flow(trace.root, (BATCH, *input_shape))
    other = _Flow(larger.root, (BATCH, *larger_shape))
    at_larger = {(c.name, c.call): c for c in _post_order(larger.root)}
    cells: set[int] = set()
    for call in _post_order(trace.root):  # children first: leaves in forward order
        if call.parent is None or call.output_id is None or not _one_cell(flow, call.shape):
            continue
        twin = at_larger.get((call.name, call.call))
        there, here = other.place(twin.shape) if twin else None, flow.place(call.shape)
        if there is None or here is None or other.vector(twin.shape):
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


def _one_cell(flow: _Flow, shape: tuple[int, ...] | None) -> bool:
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


def _feature(
    place: Placement,
    module: str,
    shape: tuple[int, ...],
    source: str = "hook",
    call: int = 0,
    key: int | str | None = None,
    why: str = "",
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
        why=why,
    )


def _hooked(
    call: Call, place: Placement, why: str = "", key: int | str | None = None
) -> FeatureSpec:
    """The tap on `call`'s output: its first tensor, or item `key` of what it returns."""
    shape = call.shape if key is None else _item_shape(call, key)
    assert shape is not None
    return _feature(place, call.name, shape, call=call.call, key=key, why=why)


def _item_shape(call: Call, key: int | str) -> tuple[int, ...] | None:
    return next(
        (s for (_, s), k in zip(call.outputs, call.output_keys, strict=True) if k == key), None
    )


def _key_of(call: Call, tid: int | None) -> int | str | None:
    """How a hook on `call` finds tensor `tid` in its output: None when it is the first tensor
    (what a hook sees first), else the key (index or dict key) of the item that holds it."""
    if tid is None or tid == call.output_id:
        return None
    return next(
        (k for (t, _), k in zip(call.outputs, call.output_keys, strict=True) if t == tid), None
    )


def _returns(call: Call, tid: int | None) -> bool:
    """`call` returns tensor `tid`, as its output or as an item of it."""
    return tid is not None and (tid == call.output_id or any(t == tid for t, _ in call.outputs))


def _returned_features(
    trace: Trace, full_shape: tuple[int, ...], frames: TokenFrames | None = None
) -> list[FeatureSpec]:
    found: list[FeatureSpec] = []
    for item in trace.outputs:
        place = classify(item.shape, full_shape, frames)
        if place is None or item.key is None:
            continue
        name = item.module.name if item.module is not None else f"output[{item.key!r}]"
        why = f"item {item.key!r} of what forward returns"
        found.append(_feature(place, name, item.shape, source="output", key=item.key, why=why))
    # timm's FeatureInfo wants non-decreasing reductions: fine to coarse, stable within a level.
    return sorted(found, key=lambda f: f.reduction)


class _Flow:
    """The data flow of a trace: where each call's input and continuing output sit on the grid.

    A call consumes every tensor it is given (its arguments, and the items of a tuple, list or
    dict argument); it produces its output, or each item of a tuple, list or dict it returns.
    A call's input is the tensor that flows into it: of several maps on the grid among its
    arguments (a cell that reads the outputs of the two cells before it), the one that appeared
    last in the forward pass; the others are skip inputs from earlier in the network."""

    def __init__(
        self,
        root: Call,
        full_shape: tuple[int, ...],
        cells: frozenset[int] = frozenset(),
        frames: TokenFrames | None = None,
    ) -> None:
        self.full_shape = full_shape
        self.cells = cells  # ids of one-cell maps that are a level (see `grown_cells`)
        self.frames = frames
        self.consumers: dict[int, list[Call]] = {}
        self.producer: dict[int, Call] = {}  # outermost call that returns the tensor
        self.order: dict[int, int] = {}  # id(call) -> position in forward order
        self.seen: dict[int, int] = {}  # id(tensor) -> when it first appeared (hook events)
        self.main: dict[int, tuple[int | None, tuple[int, ...] | None]] = {}  # id(call) -> input
        self._index(root)

    def _index(self, call: Call) -> None:
        self.order[id(call)] = len(self.order)
        given = [call.input_id] if call.input_id is not None else []
        for tid in dict.fromkeys([*given, *(t for t, _ in call.inputs)]):
            self.seen.setdefault(tid, len(self.seen))
            self.consumers.setdefault(tid, []).append(call)
        for child in call.children:
            self._index(child)
            for tid in dict.fromkeys([child.output_id, *(t for t, _ in child.outputs)]):
                if tid is not None:
                    self.producer[tid] = child  # the parent, indexed later, wins
        for tid, _ in call.outputs:
            self.seen.setdefault(tid, len(self.seen))

    def input_id(self, call: Call) -> int | None:
        return self._main_input(call)[0]

    def in_shape(self, call: Call) -> tuple[int, ...] | None:
        return self._main_input(call)[1]

    def skip_inputs(self, call: Call) -> set[int]:
        """The ids of the call's other tensor arguments: maps from earlier in the network."""
        return {tid for tid, _ in call.inputs if tid != self.input_id(call)}

    def _main_input(self, call: Call) -> tuple[int | None, tuple[int, ...] | None]:
        if id(call) not in self.main:
            maps = [
                (t, s)
                for t, s in call.inputs
                if self.place(s) is not None and not self.vector(s, t)
            ]
            ids = {t for t, _ in maps}
            if len(ids) < 2:
                self.main[id(call)] = (call.input_id, call.in_shape)
            else:
                self.main[id(call)] = max(maps, key=lambda m: self.seen[m[0]])
        return self.main[id(call)]

    def place(self, shape: tuple[int, ...] | None) -> Placement | None:
        return classify(shape, self.full_shape, self.frames)

    def out(self, call: Call) -> tuple[int | None, Placement | None]:
        """The tensor that continues from `call` and its placement: of a tuple-returning block,
        the first map on the grid that a later call consumes (else the first map, else the
        first item)."""
        if len(call.outputs) > 1:
            maps = [(tid, self.place(s)) for tid, s in call.outputs if not self.vector(s, tid)]
            maps = [(tid, p) for tid, p in maps if p is not None]
            for tid, place in maps:
                if any(self._after(c, call) for c in self.consumers.get(tid, ())):
                    return tid, place
            if maps:
                return maps[0]
        return call.output_id, self.place(call.shape)

    def maps(self, call: Call) -> list[tuple[int | str | None, Placement]]:
        """Every map on the grid that `call` returns, as (key for `_hooked`, placement): its
        output, or each item of a tuple, list or dict (key None for the first tensor, which is
        what a hook sees first)."""
        found: list[tuple[int | str | None, Placement]] = []
        for tid, shape in call.outputs or [(call.output_id, call.shape)]:
            place = self.place(shape)
            if place is not None and not self.vector(shape, tid):
                found.append((_key_of(call, tid), place))
        return found

    def passed_on(self, call: Call) -> list[int | str | None]:
        """The keys of the maps that continue from a call that returns several tensors: those a
        later call outside it reads, else the one `out` picks."""
        keys = [
            _key_of(call, tid)
            for tid, shape in call.outputs
            if self.place(shape) is not None
            and not self.vector(shape, tid)
            and any(self._after(c, call) for c in self.consumers.get(tid, ()))
        ]
        return keys or [_key_of(call, self.out(call)[0])]

    def vector(self, shape: tuple[int, ...] | None, tid: int | None = None) -> bool:
        """A per-sample vector: (B, C), (B, C, 1, 1), (B, 1, C)... at most one dimension > 1;
        not tensor `tid` when it is a one-cell map that is a level (`cells`)."""
        return (
            shape is not None
            and (tid is None or tid not in self.cells)
            and shape[0] == self.full_shape[0]
            and sum(d > 1 for d in shape[1:]) <= 1
        )

    def _after(self, consumer: Call, call: Call) -> bool:
        node: Call | None = consumer
        while node is not None:  # a consumer inside the call itself does not count
            if node is call:
                return False
            node = node.parent
        return self.order[id(consumer)] > self.order[id(call)]

    def inp(self, call: Call) -> Placement | None:
        return self.place(self.in_shape(call))

    def pooled(self, call: Call) -> bool:
        """The call turns a map into a vector (or a 1x1 grid): the classifier's global pool."""
        pin = self.inp(call)
        if pin is None or self.vector(self.in_shape(call), self.input_id(call)):
            return False
        return self.vector(call.shape, call.output_id)

    def level(self, call: Call) -> int | None:
        tid, place = self.out(call)
        shape = next((s for t, s in call.outputs if t == tid), call.shape)
        return None if place is None or self.vector(shape, tid) else place.reduction


def _should_open(flow: _Flow, call: Call) -> bool:
    """Open a call up when the boundary between two levels lies inside it.

    Its children span three levels or more (a container of stages), or it goes from one level to
    the next and, before the child that changes the level, children that are blocks (not single
    layers) did work at the first level and kept its shape (a stage ending in a patch merging).
    A block that downsamples after an expansion or a transition whose conv halves the channels
    before pooling stays closed: the tap is what enters it. Children that read one of the call's
    skip inputs (a map from an earlier level) are not counted: a cell that reads the two cells
    before it stays closed."""
    if not call.children:
        return False
    lv_in = flow.inp(call)
    skips = flow.skip_inputs(call)
    children = [c for c in call.children if flow.input_id(c) not in skips]
    levels = {lv for lv in map(flow.level, children) if lv is not None}
    if lv_in is not None:
        levels.add(lv_in.reduction)
    if len(levels) >= 3:
        return True
    own = flow.level(call)
    if len(levels) != 2 or lv_in is None or own is None or own == lv_in.reduction:
        return False
    boundary = next((c for c in children if flow.level(c) not in (None, lv_in.reduction)), None)
    if boundary is None or flow.input_id(boundary) in (None, flow.input_id(call)):
        return False
    made_by = next(
        (c for c in children if flow.out(c)[0] == flow.input_id(boundary) and not c.is_leaf),
        None,
    )
    return made_by is not None and flow.in_shape(boundary) == flow.in_shape(call)


def _opened(flow: _Flow, call: Call) -> list[Call]:
    seq: list[Call] = []
    for child in call.children:
        seq.extend(_opened(flow, child) if _should_open(flow, child) else [child])
    return seq


@dataclass
class _Walk:
    taps: list[FeatureSpec]
    head: list[str]  # modules left out as the classifier head
    inner: list[str]  # modules left out as layers inside a level boundary


def _single_layer(call: Call, flow: _Flow) -> bool:
    """Every convolution or linear inside the call that works on the grid reads the call's own
    input (a conv with its norm and activation, parallel branches), rather than another's output."""
    if call.is_leaf:
        return True
    stack = list(call.children)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        on_grid = flow.place(node.shape) is not None and not flow.vector(node.shape, node.output_id)
        if node.weighted and on_grid and flow.input_id(node) != flow.input_id(call):
            return False
    return True


def _block(call: Call, flow: _Flow) -> bool:
    """A block: a call that holds a group of layers that is not a single layer itself (an
    attention, an MLP, a separable conv), not only single layers (a residual conv stack)."""
    if _single_layer(call, flow):
        return False
    stack = list(call.children)
    while stack:
        node = stack.pop()
        if not _single_layer(node, flow):
            return True
        stack.extend(node.children)
    return False


def _stage(call: Call, flow: _Flow) -> bool:
    """A stage: a call that holds (at any depth) a chain of two or more blocks of the same kind,
    each reading what the one before it made."""
    stack = [call]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        for a, b in zip(node.children, node.children[1:], strict=False):
            if (
                a.type_name == b.type_name
                and flow.out(a)[0] == flow.input_id(b)
                and _block(a, flow)
                and _block(b, flow)
            ):
                return True
    return False


def _sibling_stages(flow: _Flow, first: Call, second: Call) -> bool:
    """Two calls of one parent, one after the other at one level, that are each a stage and
    give the same shape: timm lists every stage, even several at one reduction."""
    return (
        first.parent is second.parent
        and first.output_id is not None
        and flow.out(first)[0] == first.output_id
        and first.shape == second.shape
        and _stage(first, flow)
        and _stage(second, flow)
    )


def _stage_features(
    root: Call,
    full_shape: tuple[int, ...],
    cells: frozenset[int] = frozenset(),
    frames: TokenFrames | None = None,
) -> _Walk:
    """Walk the opened calls in forward order. A level's feature is the tensor that flows on: the
    input of the first call that leaves the level (or, when a function changed it in between, the
    last output at the level). The walk ends at the head: the first call that pools the current
    map to a vector or a 1x1 grid (or works on such a vector), or when the resolution goes back up.
    A 1x1 map in `cells` (one cell here, a level's grid at a larger size) is a level."""
    flow = _Flow(root, full_shape, cells, frames)
    seq = _opened(flow, root)
    taps: list[FeatureSpec] = []
    inner: list[str] = []
    current: Placement | None = None
    last: tuple[Call, int, Placement] | None = None  # last output at the current level
    entered = 0  # index in seq of the call that entered the current level
    head_at = len(seq)
    decoder = False

    def close(tid: int | None, place: Placement | None, why: str, upto: int) -> None:
        """Record the tap of the current level: tensor `tid` when a module produced it."""
        assert current is not None and last is not None
        producer = None
        if tid is not None and place is not None and place.reduction == current.reduction:
            before = reversed(seq[:upto])
            # the module that returned the tensor, as its output or an item of it
            producer = next((c for c in before if _returns(c, tid)), None)
            producer = producer or flow.producer.get(tid)
        key = _key_of(producer, tid) if producer is not None else None
        if producer is None or producer.shape is None:
            at_level = [
                c
                for c in seq[:upto]
                if flow.level(c) == current.reduction and flow.out(c)[0] == c.output_id
            ]
            producer = at_level[-1] if at_level else last[0]
            place = flow.place(producer.shape) or current
            made = f"{why}; that tensor is made by a function, not a module"
            why = f"last module output at reduction {current.reduction} ({why if tid is None else made})"
            key = None
        taps.append(_hooked(producer, place, why, key))

    for i, call in enumerate(seq):
        pin = flow.inp(call)
        tid, pout = flow.out(call)
        if current is not None and _starts_head(flow, seq, i, current):
            head_at = i
            break
        if pout is None or flow.level(call) is None:
            continue  # off the grid: position embeddings, attention biases, masks, pooled vectors
        if current is None or pout.reduction == current.reduction:
            if current is None:
                entered = i
            elif (
                last is not None and last[0] is seq[i - 1] and _sibling_stages(flow, last[0], call)
            ):
                why = f"a stage followed by another stage at reduction {current.reduction}"
                taps.append(_hooked(last[0], last[2], why))
            current, last = pout, (call, tid, pout)
            continue
        if pout.reduction < current.reduction:
            head_at = i  # the resolution goes back up: a decoder follows, the encoder ends here
            decoder = True
            break
        if _side_branch(flow, seq, i, current):
            continue
        reason = f"what enters {call.name}, the first module at reduction {pout.reduction}"
        close(flow.input_id(call), pin, reason, i)
        inner += _inner_layers(call, flow, current.reduction)
        current, last, entered = pout, (call, tid, pout), i
    head = seq[head_at:]
    if current is not None and last is not None:
        if decoder:  # what enters a decoder mixes levels: the level's last output is the tap
            close(None, None, f"the resolution goes back up at {seq[head_at].name}", head_at)
        else:
            tid, place, why, upto = _before_head(flow, seq, entered, head_at, current)
            close(tid, place, why, upto)
            head = seq[min(upto, head_at) :]  # with a layer that widens for the head only
    # timm's FeatureInfo wants non-decreasing reductions: drop a level that goes back up.
    kept: list[FeatureSpec] = []
    for tap in taps:
        if not kept or tap.reduction >= kept[-1].reduction:
            kept.append(tap)
    return _Walk(kept, _names(head), inner)


def _starts_head(flow: _Flow, seq: list[Call], i: int, current: Placement) -> bool:
    """The call pools the current map to a vector, or reads a vector of the batch (a class
    token, a pooled feature): the classifier's head begins here. What runs after it (a second,
    token-wise head) is head too."""
    call = seq[i]
    return flow.pooled(call) or flow.vector(flow.in_shape(call), flow.input_id(call))


def _side_branch(flow: _Flow, seq: list[Call], i: int, current: Placement) -> bool:
    """A call that reaches a coarser level while a later call still reads a map of the current
    level, and after that the encoder goes on from the current level to a coarser one (a later
    call reads a map of the current level and gives a coarser one): a branch (a global-context
    block that pools the map for the attention's queries), not the next level. At the end of
    the encoder the same return to a finer level is a neck (a multi-scale fusion, an FPN that
    reads every level): not a branch, since nothing after it leaves the finer level again."""
    readers = [
        j
        for j in range(i + 1, len(seq))
        if (pin := flow.inp(seq[j])) is not None
        and not flow.vector(flow.in_shape(seq[j]), flow.input_id(seq[j]))
        and pin.reduction == current.reduction
    ]
    if not readers:
        return False
    return any(
        (lv := flow.level(c)) is not None
        and lv > current.reduction
        and (pin := flow.inp(c)) is not None
        and pin.reduction == current.reduction
        for c in seq[readers[0] + 1 :]
    )


def _before_head(
    flow: _Flow, seq: list[Call], entered: int, head_at: int, current: Placement
) -> tuple[int | None, Placement | None, str, int]:
    """The last level's feature: what enters the head, or, when a single layer that widens the
    channels runs right before it in the same module (followed only by layers that keep its
    shape: a norm, an activation), what enters that layer (a classifier's 1x1 channel
    expansion). Also the index in `seq` where the head (with that layer) begins."""
    if head_at < len(seq):
        head = seq[head_at]
        start = head_at
        for j in range(head_at - 1, entered, -1):
            call = seq[j]
            pin, (_, pout) = flow.inp(call), flow.out(call)
            if call.parent is not head.parent or pin is None or pout is None:
                break
            if pin.reduction != current.reduction or pout.reduction != current.reduction:
                break
            if pout.num_chs > pin.num_chs and _single_layer(call, flow):
                start = j
            elif pout.num_chs != pin.num_chs:
                break
        if start == head_at:
            start = _widening_tail_start(flow, seq, entered, head_at, current)
        if start < head_at:
            widen = seq[start]
            return (
                flow.input_id(widen),
                flow.inp(widen),
                f"what enters {widen.name}, a layer that widens the channels for the head only",
                start,
            )
        if flow.input_id(head) is not None and flow.inp(head) is not None:
            why = f"what enters the head ({head.name})"
            return flow.input_id(head), flow.inp(head), why, head_at
    last = seq[head_at - 1] if head_at > 0 else None
    if last is not None:
        tid, place = flow.out(last)
        return tid, place, "the last output of the encoder", head_at
    return None, None, "the last output of the encoder", head_at


def _widening_tail_start(
    flow: _Flow, seq: list[Call], entered: int, head_at: int, current: Placement
) -> int:
    """Where a widening layer at the end of a container begins the head (`head_at` when none):
    the last call before the head, or, behind the layers after it that keep its shape (its norm
    and activation as modules of their own), a widening layer that follows a block."""
    j = head_at - 1
    if j <= entered:
        return head_at
    if _widening_tail(flow, seq[j], current):
        return j
    while j - 1 > entered and _keeps_shape(seq[j]) and seq[j].parent is seq[j - 1].parent:
        j -= 1
    call = seq[j]
    siblings = call.parent.children if call.parent is not None else []
    k = next((n for n, c in enumerate(siblings) if c is call), 0)
    after_block = k > 0 and not siblings[k - 1].is_leaf
    if j < head_at - 1 and after_block and _widening_tail(flow, call, current):
        return j
    return head_at


def _keeps_shape(call: Call) -> bool:
    """A layer whose output has its input's shape (a norm, an activation, a dropout)."""
    return call.is_leaf and call.in_shape is not None and call.in_shape == call.shape


def _widening_tail(flow: _Flow, call: Call, current: Placement) -> bool:
    """A single layer that widens the channels at the end of a container of blocks of another
    kind (a conv-norm-act after a stack of bottlenecks): it only feeds the head."""
    pin, (_, pout) = flow.inp(call), flow.out(call)
    if call.parent is None or pin is None or pout is None:
        return False
    if pin.reduction != current.reduction or pout.reduction != current.reduction:
        return False
    siblings = call.parent.children
    k = next((n for n, c in enumerate(siblings) if c is call), 0)
    return (
        k > 0
        and siblings[k - 1].type_name != call.type_name
        and pout.num_chs > pin.num_chs
        and _single_layer(call, flow)
    )


def _inner_layers(call: Call, flow: _Flow, reduction: int) -> list[str]:
    """Layers inside a level-changing call that still work at the finer level: not taps."""
    found: list[str] = []
    stack = list(call.children)
    while stack:
        node = stack.pop(0)
        if node.weighted and flow.level(node) == reduction:
            found.append(node.name)
        stack.extend(node.children)
    return found


def _names(calls: list[Call]) -> list[str]:
    return list(dict.fromkeys(c.name for c in calls if c.name))


@dataclass(frozen=True, eq=False)
class _Run:
    """Sibling calls of the same kind of module (each a different module) whose item `key` (None:
    the first tensor) is a map at `reduction`: a ViT's blocks, or one branch of blocks that
    return several maps."""

    calls: tuple[Call, ...]
    key: int | str | None
    reduction: int
    places: tuple[Placement, ...]
    # Blocks whose members are called one by one (see `_units`): what flows on after block i is
    # what enters calls[i] ("input", a forward pre-hook) or what calls[i] returns ("hook").
    sources: tuple[str, ...] = ()
    label: str = ""  # the container of the blocks, when not the calls' parent

    def taps(self, why: str) -> list[FeatureSpec]:
        if self.sources:
            return [
                _feature(p, c.name, shape, source=src, call=c.call, why=_stream_why(src, c))
                for c, p, src in zip(self.calls, self.places, self.sources, strict=True)
                if (shape := c.in_shape if src == "input" else c.shape) is not None
            ]
        return [
            _hooked(c, p, _item_why(why, self.key), self.key)
            for c, p in zip(self.calls, self.places, strict=True)
        ]


def _stream_why(source: str, call: Call) -> str:
    what = f"what enters {call.name}" if source == "input" else f"what {call.name} returns"
    return (
        f"the stream after a block whose members are called one by one and summed in Python: {what}"
    )


def _units(call: Call, flow: _Flow) -> tuple[_Run, set[int]] | None:
    """A run of blocks whose members the forward calls one by one (a ModuleList([attention,
    feed-forward]) per block, looped over and summed with a Python `+`): consecutive children of
    `call` that are the members of one container each, never called itself, two or more
    members of the same kinds in every block. A member's output is then a sub-layer's delta,
    not the stream: what flows on after block i is what enters the next block's first member,
    and after the last block what enters the next module (or what `call` returns). The run, and
    the ids of the member calls it covers; None when there is none."""
    groups: list[list[Call]] = []
    for child in call.children:
        if groups and _parent_name(groups[-1][-1].name) == _parent_name(child.name):
            groups[-1].append(child)
        else:
            groups.append([child])
    best: list[list[Call]] = []
    i = 0
    while i < len(groups):
        j = i
        kinds = [c.type_name for c in groups[i]]
        outer = _parent_name(_parent_name(groups[i][0].name))
        while (
            j < len(groups)
            and len(groups[j]) >= 2
            and [c.type_name for c in groups[j]] == kinds
            and _parent_name(groups[j][0].name) not in ("", call.name)
            and _parent_name(_parent_name(groups[j][0].name)) == outer
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
    taps: list[tuple[Call, str]] = [(group[0], "input") for group in best[1:]]
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
    label = _parent_name(_parent_name(best[0][0].name))
    run = _Run(calls, None, places[0].reduction, tuple(places), sources, label)
    return run, {id(c) for c in members}


def _block_runs(
    root: Call, full_shape: tuple[int, ...], frames: TokenFrames | None = None
) -> list[_Run]:
    """Every run of two or more sibling calls of the same kind of module (each a different
    module) at one reduction, however the forward calls them (a loop over a ModuleList with extra
    arguments such as rotary embeddings or a relative position bias, or a Sequential).

    A block that returns several maps counts once per item, and a run of such blocks follows an
    item only when the run's last block passes it on (a later call outside it reads it): the aux
    map that the last block drops is not a stream, the tokens it hands to the norm are."""
    flow = _Flow(root, full_shape, frames=frames)
    found: list[_Run] = []

    def visit(call: Call) -> None:
        runs: dict[tuple[str, int | str | None, int], list[tuple[Call, Placement]]] = {}
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


def _run_label(runs: list[_Run], reduction: int) -> str:
    best = _longest_run(runs, reduction)
    return "" if best is None else best.label or _parent_name(best.calls[0].name)


def _repeated_blocks(runs: list[_Run], reduction: int) -> list[FeatureSpec]:
    """The taps of the longest run at `reduction` (the first when several are as long)."""
    best = _longest_run(runs, reduction)
    if best is None:
        return []
    parent = best.label or _parent_name(best.calls[0].name) or "the model"
    return best.taps(
        f"one of {len(best.calls)} repeated blocks of {parent} (one resolution only, as timm's ViTs)"
    )


def _run_length(run: _Run) -> int:
    return len(run.calls)


def _streams(runs: list[_Run]) -> list[_Run]:
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


def _item_why(why: str, key: int | str | None) -> str:
    return why if key is None else f"{why}; item {key!r} of what it returns, the map that continues"


def _parent_name(name: str) -> str:
    return name.rpartition(".")[0]


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
