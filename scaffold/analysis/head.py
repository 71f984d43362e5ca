"""What runs after the last feature: the head that the generated backbone never calls.

The backbone's forward ends once its last feature is captured (see the generated backbone.py), so
every module call that starts after that tap's call has finished is skipped: a classifier, a
decoder, a final norm. They are listed top-most first: a skipped container is named, not its parts.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaffold.analysis.trace import Call, Trace
from scaffold.spec import FeatureSpec


def head_modules(
    trace: Trace, features: Sequence[FeatureSpec], out_indices: Sequence[int]
) -> tuple[str, ...]:
    """The top-most modules that run after the last of FEATURES[out_indices] in forward order.

    Empty when a selected feature is an item of the model's output (the whole forward runs) or
    when a tap is not in the trace.
    """
    selected = [features[i] for i in out_indices]
    if not selected or any(f.source == "output" for f in selected):
        return ()
    events: dict[tuple[str, str, int], int] = {}  # (start | end, module, call) -> when
    calls: dict[tuple[str, int], Call] = {}

    def visit(call: Call) -> None:  # in the order in which calls start and end
        events[("start", call.name, call.call)] = len(events)
        for child in call.children:
            visit(child)
        events[("end", call.name, call.call)] = len(events)
        calls[(call.name, call.call)] = call

    visit(trace.root)
    # A hooked output is there when its call ends; what enters a call, before the call starts.
    taps = [("start" if f.source == "input" else "end", f.module, f.call) for f in selected]
    if any(t not in events for t in taps):
        return ()
    tap = max(taps, key=events.__getitem__)
    last = calls[tap[1:]]
    # Whatever starts after `last` ends: the later siblings of `last` and of each of its parents
    # (and `last` itself when the tap is what enters it).
    after: list[str] = [last.name] if tap[0] == "start" else []
    node: Call | None = last
    while node is not None and node.parent is not None:
        siblings = node.parent.children
        later = siblings[next(i for i, c in enumerate(siblings) if c is node) + 1 :]
        after += [c.name for c in later]
        node = node.parent
    return tuple(dict.fromkeys(after))
