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
"""

from __future__ import annotations

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


def _fits(n: int, size: int, r: int, loss: int) -> bool:
    """n is the floor or ceil of size / r, or (losing at most `loss` cells to valid padding, and
    still covering three quarters of the input) a few cells fewer."""
    if n in (size // r, -(-size // r)):
        return True
    return loss > 0 and size // r - loss <= n < size // r and 4 * n * r >= 3 * size


def _classify_tokens(n: int, c: int, height: int, width: int) -> Placement | None:
    """Tokens on a grid, after `prefix` class/register tokens. Powers of two first, then any
    reduction that divides the input exactly; a floor or ceil grid is accepted only without
    prefix tokens (fewer false hits): 16 tokens of a 224-pixel input are 4x4 at 64, not 56."""
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
    walk = _stage_features(trace.root, full_shape)
    features = walk.taps
    notes: list[str] = []
    levels = sorted({f.reduction for f in features})
    if levels:
        # One resolution only, or only the coarsest level holds repeated blocks (the finer levels
        # are a stem: a hybrid ViT): that level's taps are its blocks, as timm does for ViTs.
        blocks = _repeated_blocks(trace.root, full_shape, levels[-1])
        stem_only = all(len(_repeated_blocks(trace.root, full_shape, r)) < 2 for r in levels[:-1])
        last = [f for f in features if f.reduction == levels[-1]]
        if stem_only and len(blocks) > len(last):
            features = [f for f in features if f.reduction < levels[-1]] + blocks
            where = "one resolution only" if len(levels) == 1 else "the finer levels are a stem"
            notes.append(
                f"{where}: the taps at reduction {levels[-1]} are the {len(blocks)} blocks of "
                f"'{_parent_name(blocks[0].module)}', as timm does for ViTs"
            )
    if walk.head:
        notes.append("left out as the head: " + _listed(walk.head))
    if walk.inner:
        notes.append("left out as layers inside a level change: " + _listed(walk.inner))
    return Selection(tuple(features), _default_out_indices(features), tuple(notes))


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


def _hooked(call: Call, place: Placement, why: str = "") -> FeatureSpec:
    assert call.shape is not None
    return _feature(place, call.name, call.shape, call=call.call, why=why)


def _returned_features(trace: Trace, full_shape: tuple[int, ...]) -> list[FeatureSpec]:
    found: list[FeatureSpec] = []
    for item in trace.outputs:
        place = classify(item.shape, full_shape)
        if place is None or item.key is None:
            continue
        name = item.module.name if item.module is not None else f"output[{item.key!r}]"
        why = f"item {item.key!r} of what forward returns"
        found.append(_feature(place, name, item.shape, source="output", key=item.key, why=why))
    # timm's FeatureInfo wants non-decreasing reductions: fine to coarse, stable within a level.
    return sorted(found, key=lambda f: f.reduction)


class _Flow:
    """The data flow of a trace: where each call's input and continuing output sit on the grid.

    A call's input is the tensor that flows into it: of several maps on the grid among its
    arguments (a cell that reads the outputs of the two cells before it), the one that appeared
    last in the forward pass; the others are skip inputs from earlier in the network."""

    def __init__(self, root: Call, full_shape: tuple[int, ...]) -> None:
        self.full_shape = full_shape
        self.consumers: dict[int, list[Call]] = {}
        self.producer: dict[int, Call] = {}  # outermost call whose (first) output is the tensor
        self.order: dict[int, int] = {}  # id(call) -> position in forward order
        self.seen: dict[int, int] = {}  # id(tensor) -> when it first appeared (hook events)
        self.main: dict[int, tuple[int | None, tuple[int, ...] | None]] = {}  # id(call) -> input
        self._index(root)

    def _index(self, call: Call) -> None:
        self.order[id(call)] = len(self.order)
        for tid, _ in call.inputs:
            self.seen.setdefault(tid, len(self.seen))
            readers = self.consumers.setdefault(tid, [])
            if not readers or readers[-1] is not call:
                readers.append(call)
        for child in call.children:
            self._index(child)
            if child.output_id is not None:
                self.producer[child.output_id] = child  # the parent, indexed later, wins
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
                (t, s) for t, s in call.inputs if self.place(s) is not None and not self.vector(s)
            ]
            ids = {t for t, _ in maps}
            if len(ids) < 2:
                self.main[id(call)] = (call.input_id, call.in_shape)
            else:
                self.main[id(call)] = max(maps, key=lambda m: self.seen[m[0]])
        return self.main[id(call)]

    def place(self, shape: tuple[int, ...] | None) -> Placement | None:
        return classify(shape, self.full_shape)

    def out(self, call: Call) -> tuple[int | None, Placement | None]:
        """The tensor that continues from `call` and its placement: of a tuple-returning block,
        the first map on the grid that a later call consumes (else the first map, else the
        first item)."""
        if len(call.outputs) > 1:
            maps = [(tid, self.place(s)) for tid, s in call.outputs if not self.vector(s)]
            maps = [(tid, p) for tid, p in maps if p is not None]
            for tid, place in maps:
                if any(self._after(c, call) for c in self.consumers.get(tid, ())):
                    return tid, place
            if maps:
                return maps[0]
        return call.output_id, self.place(call.shape)

    def vector(self, shape: tuple[int, ...] | None) -> bool:
        """A per-sample vector: (B, C), (B, C, 1, 1), (B, 1, C)... at most one dimension > 1."""
        return (
            shape is not None
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
        if pin is None or self.vector(self.in_shape(call)):
            return False
        return self.vector(call.shape)

    def level(self, call: Call) -> int | None:
        tid, place = self.out(call)
        shape = next((s for t, s in call.outputs if t == tid), call.shape)
        return None if place is None or self.vector(shape) else place.reduction


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
        on_grid = flow.place(node.shape) is not None and not flow.vector(node.shape)
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


def _stage_features(root: Call, full_shape: tuple[int, ...]) -> _Walk:
    """Walk the opened calls in forward order. A level's feature is the tensor that flows on: the
    input of the first call that leaves the level (or, when a function changed it in between, the
    last output at the level). The walk ends at the head: the first call that pools the current
    map to a vector or a 1x1 grid (or works on such a vector), or when the resolution goes back up."""
    flow = _Flow(root, full_shape)
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
            # a forward hook sees a module's first output tensor: the tap must be that one
            producer = next((c for c in before if c.output_id == tid), None)
            producer = producer or flow.producer.get(tid)
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
        taps.append(_hooked(producer, place, why))

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
    return flow.pooled(call) or flow.vector(flow.in_shape(call))


def _side_branch(flow: _Flow, seq: list[Call], i: int, current: Placement) -> bool:
    """A call that reaches a coarser level while a later call still reads a map of the current
    level, and the encoder goes on to coarser levels after that: a branch (a global-context
    block that pools the map for the attention's queries), not the next level. At the end of
    the encoder the same return to a finer level is a neck (a multi-scale fusion): not a branch."""
    readers = [
        j
        for j in range(i + 1, len(seq))
        if (pin := flow.inp(seq[j])) is not None
        and not flow.vector(flow.in_shape(seq[j]))
        and pin.reduction == current.reduction
    ]
    if not readers:
        return False
    after = seq[readers[0] + 1 :]
    return any((lv := flow.level(c)) is not None and lv > current.reduction for c in after)


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
        tail = seq[head_at - 1]
        if start == head_at and head_at - 1 > entered and _widening_tail(flow, tail, current):
            start = head_at - 1
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


def _repeated_blocks(root: Call, full_shape: tuple[int, ...], reduction: int) -> list[FeatureSpec]:
    """The longest run of sibling calls of the same kind of module (each a different module) at
    `reduction`: a ViT's blocks, however the forward calls them (a loop over a ModuleList with
    extra arguments such as rotary embeddings or a relative position bias, or a Sequential)."""
    flow = _Flow(root, full_shape)
    best: list[tuple[Call, Placement]] = []

    def visit(call: Call) -> None:
        nonlocal best
        runs: dict[str, list[tuple[Call, Placement]]] = {}
        for child in call.children:
            tid, place = flow.out(child)
            if child.is_leaf or place is None or place.reduction != reduction:
                continue
            if tid != child.output_id:
                continue  # the map that continues is not the first output a hook would see
            run = runs.setdefault(child.type_name, [])
            if all(c.name != child.name for c, _ in run):
                run.append((child, place))
        for run in runs.values():
            if len(run) > len(best):
                best = run
        for child in call.children:
            visit(child)

    visit(root)
    if len(best) < 2:
        return []
    parent = _parent_name(best[0][0].name) or "the model"
    why = f"one of {len(best)} repeated blocks of {parent} (one resolution only, as timm's ViTs)"
    return [_hooked(c, p, why) for c, p in best]


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
