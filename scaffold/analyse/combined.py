"""Outputs combined in Python: one module run on several inputs (a siamese encoder on two
images, an encoder on each frame) whose outputs the forward combines with functions (a
difference, a concatenation, a weighted sum) before the next module reads them. What flows on
is the combination, not one call's output: the tap moves to it (what enters the module that
reads it), or the analysis refuses when no module reads it whole."""

from __future__ import annotations

import dataclasses

from scaffold.analyse.trace import Call
from scaffold.analyse.walk import Flow
from scaffold.errors import ScaffoldError
from scaffold.spec import FeatureSpec


def combined_taps(root: Call, flow: Flow, taps: list[FeatureSpec]) -> list[FeatureSpec]:
    """`taps` with each tap on one call's output that the forward combines with the output of
    another call of the same module moved to the combination."""
    calls: dict[str, list[Call]] = {}
    stack = [root]
    while stack:
        call = stack.pop()
        stack.extend(call.children)
        calls.setdefault(call.name, []).append(call)
    found: list[FeatureSpec] = []
    for tap in taps:
        moved = _combined(flow, calls.get(tap.module, []), tap) if tap.source == "hook" else None
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


def _combined(flow: Flow, calls: list[Call], tap: FeatureSpec) -> FeatureSpec | None:
    own = next((c for c in calls if c.call == tap.call), None)
    if own is None or len(calls) < 2:
        return None
    tid = _item_id(own, tap.key)
    others = {_item_id(c, tap.key) for c in calls if c is not own} - {None}
    made = _first_combination(flow, tid, others)
    if made is None:
        return None
    # Follow what is made of the combination alone (abs of a difference) to the module that reads it.
    while True:
        reader = next((c for c in flow.consumers.get(made, ()) if c.input_id == made), None)
        if reader is not None:
            break
        after = [m for m in flow.readers.get(made, ()) if flow.made_from[m] == (made,)]
        if len(after) != 1:
            raise ScaffoldError(
                f"the outputs of {tap.module} (calls {tap.call} and others) are combined in "
                f"Python into a {flow.shapes[made]} tensor that no module reads as its first "
                "argument: scaffold cannot tap that combination (pass --taps)"
            )
        made = after[0]
    place = flow.place(flow.shapes[made])
    if place is None:
        return None
    why = (
        f"what enters {reader.name}: the outputs of {tap.module}'s {len(calls)} calls, "
        "combined in Python (the combination flows on, not one call's output)"
    )
    return dataclasses.replace(
        tap,
        module=reader.name,
        source="input",
        call=reader.call,
        key=None,
        num_chs=place.num_chs,
        reduction=place.reduction,
        layout=place.layout,
        shape=(1, *flow.shapes[made][1:]),
        grid=place.grid,
        why=why,
        after=(),
    )


def _first_combination(flow: Flow, tid: int | None, others: set[int | None]) -> int | None:
    """The first tensor made by functions of `tid` that is also made of one of `others`."""
    queue = [tid] if tid is not None else []
    seen: set[int] = set()
    while queue:
        current = queue.pop(0)
        for made in flow.readers.get(current, ()):
            if made in seen:
                continue
            seen.add(made)
            if _sources(flow, made) & others:
                return made
            queue.append(made)
    return None


def _sources(flow: Flow, tid: int) -> set[int]:
    """The tensors `tid` was made of by functions, back to those no function made."""
    found: set[int] = set()
    stack, seen = [tid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        read = flow.made_from.get(current)
        if read is None:
            found.add(current)
        else:
            stack.extend(read)
    return found
