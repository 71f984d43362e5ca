"""What runs after the last feature: the head that the generated backbone never calls.

The backbone's forward ends once its last feature is captured (see the generated backbone.py), so
every module call that starts after that tap's call has finished is skipped: a classifier, a
decoder, a final norm. They are listed top-most first: a skipped container is named, not its parts.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaffold.analyse.trace import Call, Trace
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


def removable_after(trace: Trace, features: Sequence[FeatureSpec]) -> tuple[tuple[str, ...], ...]:
    """For each feature, the top-most modules that the backbone can drop when that feature is
    the last one it returns: every call of the module, and of each module inside it, starts
    after the feature is taken (a hooked output when its call ends, what enters a call when it
    starts). A module that also runs earlier (one activation
    shared by the encoder and the head) stays. Empty for a feature of the model's output.
    """
    start: dict[tuple[str, int], int] = {}
    end: dict[tuple[str, int], int] = {}
    calls: dict[tuple[str, int], Call] = {}
    # The first time each module (or a module inside it) starts: modules are named by dotted
    # paths, so "a.b" counts for "a" too.
    first_start: dict[str, int] = {}
    clock = 0

    def visit(call: Call) -> None:
        nonlocal clock
        start[(call.name, call.call)] = clock
        calls[(call.name, call.call)] = call
        clock += 1
        for child in call.children:
            visit(child)
        end[(call.name, call.call)] = clock
        clock += 1

    visit(trace.root)
    for (name, _), at in start.items():
        parts = name.split(".") if name else []
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            first_start[prefix] = min(first_start.get(prefix, at), at)

    found: list[tuple[str, ...]] = []
    for f in features:
        key = (f.module, f.call)
        if f.source == "output" or key not in calls:
            found.append(())
            continue
        # A hooked output is there when its call ends; what enters a call ("input"), when
        # it starts: then that module itself runs after the feature, unless it ran before.
        taken = end[key] if f.source == "hook" else start[key]
        node: Call | None = calls[key]
        after: list[str] = []
        if f.source == "input" and first_start[calls[key].name] >= taken:
            after.append(calls[key].name)
        while node is not None and node.parent is not None:
            siblings = node.parent.children
            later = siblings[next(i for i, c in enumerate(siblings) if c is node) + 1 :]
            after += [c.name for c in later if first_start[c.name] > taken]
            node = node.parent
        found.append(tuple(dict.fromkeys(after)))
    return tuple(found)
