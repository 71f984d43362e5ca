"""Outputs combined in Python: one module run on several inputs (a siamese encoder on two
images, an encoder on each frame) whose outputs the forward combines with functions (a
difference, a concatenation, a weighted sum) before the next module reads them, or a tapped
output that flows on only through such a combination with another module's output (a sum of
two modules' outputs written in the forward). What flows on is the combination, not one
operand: the tap moves to it (what enters the module that reads it), or the analysis refuses
when no module reads it whole at its grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Set
from typing import Literal

from scaffold.analyse.trace import Call
from scaffold.analyse.walk import Flow
from scaffold.errors import ScaffoldError
from scaffold.spec import FeatureSpec


def combined_taps(root: Call, flow: Flow, taps: list[FeatureSpec]) -> list[FeatureSpec]:
    """`taps` with each tap on one call's output that the forward combines with the output of
    another call of the same module, or that flows on only through a combination with another
    module's output, moved to the combination."""
    calls: dict[str, list[Call]] = {}
    stack = [root]
    while stack:
        call = stack.pop()
        stack.extend(call.children)
        calls.setdefault(call.name, []).append(call)
    found: list[FeatureSpec] = []
    for tap in taps:
        moved = (
            _combined(flow, calls.get(tap.module, []), tap, root.returned_id)
            if tap.source == "hook"
            else None
        )
        if moved is None:
            found.append(tap)
        elif all(
            (f.module, f.call, f.source) != (moved.module, moved.call, "input") for f in found
        ):
            found.append(moved)
    return found


def _item_id(call: Call, key: int | str | tuple | None) -> int | None:
    if key is None:
        return call.output_id
    return next(
        (t for (t, _), k in zip(call.outputs, call.output_keys, strict=True) if k == key), None
    )


def _combined(
    flow: Flow, calls: list[Call], tap: FeatureSpec, returned: int | None = None
) -> FeatureSpec | None:
    own = next((c for c in calls if c.call == tap.call), None)
    if own is None:
        return None
    tid = _item_id(own, tap.key)
    others = {_item_id(c, tap.key) for c in calls if c is not own} - {None}
    what = f"the outputs of {tap.module}'s {len(calls)} calls"
    made = _first_combination(flow, tid, others, own) if others else None
    if made is None and tid is not None and not _read_by_a_module(flow, own, tid):
        # it flows on only through functions: combined with another module's output?
        outputs = set(flow.producer) - {tid}
        made = _first_combination(flow, tid, outputs, own)
        what = f"the output of {tap.module} and another module's output"
    if made is None:
        return None
    grid = flow.place(flow.shapes[made])
    # Follow what is made of the combination alone (abs of a difference), on its grid, to the
    # module that reads it.
    combination = made
    while True:
        here = flow.place(flow.shapes.get(made))
        if here is None or grid is None or here.reduction != grid.reduction:
            reader = None  # off the combination's grid (pooled): no module reads it whole
            break
        if flow.vector(flow.shapes.get(made), made):
            reader = None
            break
        combination = made
        reader = next((c for c in flow.consumers.get(made, ()) if c.input_id == made), None)
        after = [m for m in flow.readers.get(made, ()) if flow.made_from[m] == (made,)]
        if reader is not None or len(after) != 1:
            break
        made = after[0]
    if reader is None and returned is not None and combination == returned:
        # The combination is what the model returns (a residual stream after its last block):
        # the feature is the model's output.
        why = f"what forward returns: {what}, combined in Python (the combination flows on)"
        return _moved(flow, tap, combination, why, module="output", source="output", call=0)
    if reader is None:
        shape = "x".join(map(str, flow.shapes[combination][1:]))
        raise ScaffoldError(
            f"{what} are combined in Python (after {tap.module}, call {tap.call}) into a "
            f"{shape} map that no module reads as its first argument: scaffold does not tap "
            "one operand of it (pass --taps)"
        )
    why = (
        f"what enters {reader.name}: {what}, combined in Python (the combination flows on, "
        "not one operand)"
    )
    return _moved(flow, tap, made, why, module=reader.name, source="input", call=reader.call)


def _moved(
    flow: Flow,
    tap: FeatureSpec,
    tensor: int,
    why: str,
    module: str,
    source: Literal["input", "output"],
    call: int,
) -> FeatureSpec | None:
    """`tap` moved to the combination `tensor` (None: it is no feature map), taken at `module`'s
    `source` ("input": what enters its call `call`; "output": what the forward returns)."""
    place = flow.place(flow.shapes[tensor])
    if place is None:
        return None
    return dataclasses.replace(
        tap,
        module=module,
        source=source,
        call=call,
        key=None,
        num_chs=place.num_chs,
        reduction=place.reduction,
        layout=place.layout,
        shape=(1, *flow.shapes[tensor][1:]),
        grid=place.grid,
        why=why,
        after=(),
    )


def _read_by_a_module(flow: Flow, own: Call, tid: int) -> bool:
    """A module call outside `own`, later in the forward, reads tensor `tid` itself."""
    return any(flow.after(c, own) for c in flow.consumers.get(tid, ()))


def _first_combination(
    flow: Flow, tid: int | None, others: Set[int | None], own: Call
) -> int | None:
    """The first tensor made by functions of `tid` that is also made of one of `others`, after
    `own` (the call that returns `tid`) returned: not inside it."""
    queue = [tid] if tid is not None else []
    seen: set[int] = set()
    while queue:
        current = queue.pop(0)
        for made in flow.readers.get(current, ()):
            if made in seen:
                continue
            seen.add(made)
            if _inside(flow.made_in.get(made), own):
                continue
            if _sources(flow, made) & others:
                return made
            queue.append(made)
    return None


def _sources(flow: Flow, tid: int) -> set[int]:
    """The tensors `tid` was made of by functions, back to module outputs (or to tensors no
    function made: the input, parameters)."""
    found: set[int] = set()
    stack, seen = list(flow.made_from.get(tid, ())), {tid}
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        read = flow.made_from.get(current)
        if read is None or current in flow.producer:
            found.add(current)
        else:
            stack.extend(read)
    return found


def _inside(call: Call | None, own: Call) -> bool:
    while call is not None:
        if call is own:
            return True
        call = call.parent
    return False
