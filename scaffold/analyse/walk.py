"""The stage walk: down the module tree in forward order, opening a module while its children
work at more than one resolution, to find the tensor that flows on from each level to the next."""

from __future__ import annotations

from dataclasses import dataclass

from scaffold.analyse.taps import hooked, key_of, returns
from scaffold.analyse.trace import Call, Key
from scaffold.grid import Grids, Placement, TokenFrames, classify
from scaffold.spec import FeatureSpec


class Flow:
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
        made_from: dict[int, tuple[int, ...]] | None = None,
        shapes: dict[int, tuple[int, ...]] | None = None,
        grids: Grids | None = None,
        made_in: dict[int, Call] | None = None,
    ) -> None:
        self.full_shape = full_shape
        self.made_in = made_in or {}
        # Tensors made by functions between module calls (see Trace.made_from): what each
        # tensor was made of, and the tensors made of it.
        self.made_from = made_from or {}
        self.shapes = shapes or {}
        self.readers: dict[int, list[int]] = {}
        for made, read in self.made_from.items():
            for tid in read:
                self.readers.setdefault(tid, []).append(made)
        self.cells = cells  # ids of one-cell maps that are a level (see `grown_cells`)
        self.frames = frames
        self.grids = grids  # token layouts and reductions measured on the model
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
            for made in dict.fromkeys([child.output_id, *(t for t, _ in child.outputs)]):
                if made is not None:
                    self.producer[made] = child  # the parent, indexed later, wins
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
        return classify(shape, self.full_shape, self.frames, self.grids)

    def out(self, call: Call) -> tuple[int | None, Placement | None]:
        """The tensor that continues from `call` and its placement: of a tuple-returning block,
        the first map on the grid that a later call consumes (else the first map, else the
        first item)."""
        if len(call.outputs) > 1:
            maps = [(tid, self.place(s)) for tid, s in call.outputs if not self.vector(s, tid)]
            maps = [(tid, p) for tid, p in maps if p is not None]
            for tid, place in maps:
                if any(self.after(c, call) for c in self.consumers.get(tid, ())):
                    return tid, place
            if maps:
                return maps[0]
        return call.output_id, self.place(call.shape)

    def maps(self, call: Call) -> list[tuple[Key, Placement]]:
        """Every map on the grid that `call` returns, as (key for `hooked`, placement): its
        output, or each item of a tuple, list or dict (key None for the first tensor, which is
        what a hook sees first)."""
        found: list[tuple[Key, Placement]] = []
        items: list[tuple[int | None, tuple[int, ...] | None]] = [*call.outputs]
        for tid, shape in items or [(call.output_id, call.shape)]:
            place = self.place(shape)
            if place is not None and not self.vector(shape, tid):
                found.append((key_of(call, tid), place))
        return found

    def passed_on(self, call: Call) -> list[Key]:
        """The keys of the maps that continue from a call that returns several tensors: those a
        later call outside it reads, else the one `out` picks."""
        keys = [
            key_of(call, tid)
            for tid, shape in call.outputs
            if self.place(shape) is not None
            and not self.vector(shape, tid)
            and any(self.after(c, call) for c in self.consumers.get(tid, ()))
        ]
        return keys or [key_of(call, self.out(call)[0])]

    def vector(self, shape: tuple[int, ...] | None, tid: int | None = None) -> bool:
        """A per-sample vector: (B, C), (B, C, 1, 1), (B, 1, C)... at most one dimension > 1;
        not tensor `tid` when it is a one-cell map that is a level (`cells`)."""
        return (
            shape is not None
            and (tid is None or tid not in self.cells)
            and shape[0] == self.full_shape[0]
            and sum(d > 1 for d in shape[1:]) <= 1
        )

    def after(self, consumer: Call, call: Call) -> bool:
        node: Call | None = consumer
        while node is not None:  # a consumer inside the call itself does not count
            if node is call:
                return False
            node = node.parent
        return self.order[id(consumer)] > self.order[id(call)]

    def resized(self, tid: int | None, place: Placement) -> bool:
        """Tensor `tid` (a map at `place`) is resized to a finer grid by functions that read
        it alone (F.interpolate): a map of its channels at a finer reduction is made of it."""
        stack = [tid] if tid is not None else []
        while stack:
            for made in self.readers.get(stack.pop(), ()):
                if len(self.made_from[made]) != 1:
                    continue  # combined with another tensor: no longer this map alone
                other = self.place(self.shapes[made])
                if other is not None and other.num_chs == place.num_chs:
                    if other.reduction < place.reduction:
                        return True
                    stack.append(made)
        return False

    def own_output(self, call: Call, level: int) -> tuple[Key, Placement] | None:
        """A call that returns its own output at `level` (the level of its input) and, as
        another item, the map the next call reads at a coarser level (a stage that merges its
        tokens for the next stage itself): the key and placement of that output; else None."""
        if len(call.outputs) < 2:
            return None
        tid, place = self.out(call)
        if place is None or place.reduction <= level:
            return None
        return next(
            (
                (key_of(call, t), p)
                for t, s in call.outputs
                if t != tid
                and (p := self.place(s)) is not None
                and p.reduction == level
                and not self.vector(s, t)
            ),
            None,
        )

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


def _should_open(flow: Flow, call: Call) -> bool:
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
    if lv_in is not None and flow.own_output(call, lv_in.reduction) is not None:
        return False  # a stage that returns its output and the next stage's input: a level
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


def _opened(flow: Flow, call: Call) -> list[Call]:
    seq: list[Call] = []
    for child in call.children:
        seq.extend(_opened(flow, child) if _should_open(flow, child) else [child])
    return seq


@dataclass
class _Walk:
    taps: list[FeatureSpec]
    head: list[str]  # modules left out as the classifier head
    inner: list[str]  # modules left out as layers inside a level boundary


def _single_layer(call: Call, flow: Flow) -> bool:
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


def _block(call: Call, flow: Flow) -> bool:
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


def _stage(call: Call, flow: Flow) -> bool:
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


def _sibling_stages(flow: Flow, first: Call, second: Call) -> bool:
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


def stage_features(
    root: Call,
    full_shape: tuple[int, ...],
    cells: frozenset[int] = frozenset(),
    frames: TokenFrames | None = None,
    made_from: dict[int, tuple[int, ...]] | None = None,
    shapes: dict[int, tuple[int, ...]] | None = None,
    grids: Grids | None = None,
) -> _Walk:
    """Walk the opened calls in forward order. A level's feature is the tensor that flows on: the
    input of the first call that leaves the level (or, when a function changed it in between, the
    last output at the level). The walk ends at the head: the first call that pools the current
    map to a vector or a 1x1 grid (or works on such a vector), or when the resolution goes back up.
    A 1x1 map in `cells` (one cell here, a level's grid at a larger size) is a level."""
    flow = Flow(root, full_shape, cells, frames, made_from, shapes, grids)
    seq = _opened(flow, root)
    taps: list[FeatureSpec] = []
    inner: list[str] = []
    current: Placement | None = None
    last: tuple[Call, int | None, Placement] | None = None  # last output at the current level
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
            producer = next((c for c in before if returns(c, tid)), None)
            producer = producer or flow.producer.get(tid)
        key = key_of(producer, tid) if producer is not None else None
        if producer is None or producer.shape is None:
            at_level = [
                c
                for c in seq[:upto]
                if flow.level(c) == current.reduction and flow.out(c)[0] == c.output_id
            ]
            producer = at_level[-1] if at_level else last[0]
            # the map that continues from it (an item, for a stage that returns several)
            out_tid, out_place = flow.out(producer)
            place = out_place or current
            made = f"{why}; that tensor is made by a function, not a module"
            why = f"last module output at reduction {current.reduction} ({why if tid is None else made})"
            key = key_of(producer, out_tid)
        assert place is not None  # a producer is found for a placed tensor; `current` is set
        taps.append(hooked(producer, place, why, key))

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
                taps.append(hooked(last[0], last[2], why))
            current, last = pout, (call, tid, pout)
            continue
        if pout.reduction < current.reduction:
            head_at = i  # the resolution goes back up: a decoder follows, the encoder ends here
            decoder = True
            break
        if _side_branch(flow, seq, i, current):
            continue
        own = flow.own_output(call, current.reduction)
        if own is not None:  # its own output at this level is the feature; the other item goes on
            why = (
                f"{'the first item' if own[0] is None else f'item {own[0]!r}'} of what "
                f"{call.name} returns: its output at reduction "
                f"{current.reduction}, beside the map the next level reads"
            )
            taps.append(hooked(call, own[1], why, own[0]))
            current, last, entered = pout, (call, tid, pout), i
            continue
        reason = f"what enters {call.name}, the first module at reduction {pout.reduction}"
        close(flow.input_id(call), pin, reason, i)
        inner += _inner_layers(call, flow, current.reduction)
        current, last, entered = pout, (call, tid, pout), i
    head = seq[head_at:]
    to_classes = _layer_resized(flow, seq, entered, head_at, current, decoder)
    if current is not None and last is not None and to_classes is not None:
        layer = seq[to_classes]
        why = f"what enters {layer.name}, a layer whose output is only resized (to the classes)"
        close(flow.input_id(layer), flow.inp(layer), why, to_classes)
        head = seq[to_classes:]
    elif current is not None and last is not None:
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


def _layer_resized(
    flow: Flow, seq: list[Call], entered: int, head_at: int, current: Placement | None, up: bool
) -> int | None:
    """A single layer that ends the encoder and whose output is then only resized to a finer
    grid, by a function (F.interpolate) or by the module where the resolution goes back up
    (`up`): a layer to the class count of a segmentation head. Its index in `seq`, else None."""
    j = head_at - 1
    if current is None or j <= entered:
        return None
    layer = seq[j]
    pin, (tid, pout) = flow.inp(layer), flow.out(layer)
    if not (layer.is_leaf and layer.weighted) or pin is None or pout is None:
        return None
    if pin.reduction != current.reduction or pout.reduction != current.reduction:
        return None
    if up and head_at < len(seq) and flow.input_id(seq[head_at]) == tid:
        _, after = flow.out(seq[head_at])
        if after is not None and after.num_chs == pout.num_chs:
            return j
    return j if flow.resized(tid, pout) else None


def _starts_head(flow: Flow, seq: list[Call], i: int, current: Placement) -> bool:
    """The call pools the current map to a vector, or reads a vector of the batch (a class
    token, a pooled feature): the classifier's head begins here. What runs after it (a second,
    token-wise head) is head too."""
    call = seq[i]
    return flow.pooled(call) or flow.vector(flow.in_shape(call), flow.input_id(call))


def _side_branch(flow: Flow, seq: list[Call], i: int, current: Placement) -> bool:
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
    flow: Flow, seq: list[Call], entered: int, head_at: int, current: Placement
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
    flow: Flow, seq: list[Call], entered: int, head_at: int, current: Placement
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


def _widening_tail(flow: Flow, call: Call, current: Placement) -> bool:
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


def _inner_layers(call: Call, flow: Flow, reduction: int) -> list[str]:
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
