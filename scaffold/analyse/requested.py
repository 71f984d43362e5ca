"""The features a person names with ``--taps``, measured on the trace of the forward."""

from __future__ import annotations

from typing import Any

from scaffold.analyse.taps import feature, item_shape, parent_name
from scaffold.analyse.trace import Call, Trace
from scaffold.analyse.walk import Flow
from scaffold.errors import ScaffoldError
from scaffold.grid import TokenFrames
from scaffold.resolve.target import parse_tap
from scaffold.spec import FeatureSpec


def requested_features(
    trace: Trace,
    model: Any,
    taps: tuple[str, ...],
    full_shape: tuple[int, ...],
    cells: frozenset[int] = frozenset(),
    frames: TokenFrames | None = None,
) -> tuple[FeatureSpec, ...]:
    """The features the person named (``--taps``), measured on the trace (channels, reduction,
    layout), in forward order; a ScaffoldError names a tap that is not a module, never runs, or
    is not a feature map of the input."""
    calls: dict[tuple[str, int], Call] = {}
    order: dict[tuple[str, int, bool], int] = {}  # when each tap is there (input: call start)

    def visit(call: Call) -> None:
        calls[(call.name, call.call)] = call
        order[(call.name, call.call, True)] = len(order)
        for child in call.children:
            visit(child)
        order[(call.name, call.call, False)] = len(order)

    visit(trace.root)
    modules = {name for name, _ in model.named_modules() if name}
    flow = Flow(trace.root, full_shape, cells, frames)
    found: list[tuple[int, FeatureSpec]] = []
    for text in taps:
        tap = parse_tap(text)
        where = f"--taps {text!r}"
        if tap.module not in modules:
            near = sorted(m for m in modules if m.startswith(parent_name(tap.module) or tap.module))
            hint = f" (it has {', '.join(near[:6])}{', ...' if len(near) > 6 else ''})"
            raise ScaffoldError(
                f"{where}: the model has no module {tap.module}{hint if near else ''}"
            )
        call = calls.get((tap.module, tap.call))
        if call is None:
            runs = sum(name == tap.module for name, _ in calls)
            said = "never runs in the forward" if not runs else f"runs {runs} time(s) only"
            raise ScaffoldError(f"{where}: {tap.module} {said}")
        if tap.input:
            shape, tid = call.in_shape, call.input_id
        elif tap.key is None:
            shape, tid = call.shape, call.output_id
        else:
            shape, tid = item_shape(call, tap.key), None
            if shape is None:
                keys = ", ".join(repr(k) for k in call.output_keys) or "none"
                raise ScaffoldError(f"{where}: {tap.module} returns no item {tap.key!r} ({keys})")
        place = flow.place(shape)
        if shape is None or place is None or flow.vector(shape, tid):
            what = "what enters it" if tap.input else "its output"
            raise ScaffoldError(
                f"{where}: {what} ({tuple(shape) if shape else 'no tensor'}) is not a feature map "
                f"of the {full_shape[-2]}x{full_shape[-1]} input (NCHW, NHWC, tokens, NCTHW, NTHWC)"
            )
        spec = feature(
            place,
            tap.module,
            shape,
            source="input" if tap.input else "hook",
            call=tap.call,
            key=tap.key,
            why="named by --taps",
        )
        found.append((order[(tap.module, tap.call, tap.input)], spec))
    return tuple(f for _, f in sorted(found, key=lambda pair: pair[0]))
