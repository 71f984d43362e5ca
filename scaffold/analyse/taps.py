"""A tap: the tensor of one call of a submodule that a feature reads (its output, an item of it,
or its input), and the FeatureSpec it makes."""

from __future__ import annotations

from typing import Any

from scaffold.analyse.trace import Call, Trace
from scaffold.grid import Placement, TokenFrames
from scaffold.spec import FeatureSpec


def feature(
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


def hooked(
    call: Call, place: Placement, why: str = "", key: int | str | None = None
) -> FeatureSpec:
    """The tap on `call`'s output: its first tensor, or item `key` of what it returns."""
    shape = call.shape if key is None else item_shape(call, key)
    assert shape is not None
    return feature(place, call.name, shape, call=call.call, key=key, why=why)


def item_shape(call: Call, key: int | str) -> tuple[int, ...] | None:
    return next(
        (s for (_, s), k in zip(call.outputs, call.output_keys, strict=True) if k == key), None
    )


def key_of(call: Call, tid: int | None) -> int | str | None:
    """How a hook on `call` finds tensor `tid` in its output: None when it is the first tensor
    (what a hook sees first), else the key (index or dict key) of the item that holds it."""
    if tid is None or tid == call.output_id:
        return None
    return next(
        (k for (t, _), k in zip(call.outputs, call.output_keys, strict=True) if t == tid), None
    )


def returns(call: Call, tid: int | None) -> bool:
    """`call` returns tensor `tid`, as its output or as an item of it."""
    return tid is not None and (tid == call.output_id or any(t == tid for t, _ in call.outputs))


def item_why(why: str, key: int | str | None) -> str:
    return why if key is None else f"{why}; item {key!r} of what it returns, the map that continues"


def parent_name(name: str) -> str:
    return name.rpartition(".")[0]


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
    from scaffold.analyse.walk import Flow
    from scaffold.errors import ScaffoldError
    from scaffold.resolve.target import parse_tap

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
