"""The frames of a temporal input: which axis of the model's input is time, and the modules that
run once per frame.

TerraTorch gives a time series as (B, C, T, H, W); many encoders take (B, T, C, H, W). A forward
that happens to run on one order proves nothing (a model that reads the channels as frames runs
when the counts are swapped), so the time axis is measured: with C != T, each order is traced,
and the one taken is confirmed at a second frame count (T changed, C kept). Where only one order
runs and no second frame count does, the axis is found by elimination: a doubt.

A module called once per frame (a recurrent cell in a Python loop over the frames) makes as many
calls as the input has frames: its tap is its last call, counted from the end, so that the
backbone reads the right call at any frame count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaffold.analyse.trace import Call, ForwardFailed, Trace
from scaffold.spec import Doubt, FeatureSpec

LAYOUTS = ("BCTHW", "BTCHW")
TIME_AXIS_FLAG = "--input-shape C,T,H,W"

# run(shape, layout) -> (trace, forward_call, notes); raises ForwardFailed.
Run = Callable[[tuple[int, ...], str], tuple[Trace, Any, list[str]]]


@dataclass
class TimeAxis:
    traced: tuple[Trace, Any, list[str]]  # the trace at the analysed shape, in `layout`
    layout: str
    doubt: Doubt | None
    note: str
    other: Trace | None  # the trace at `other_frames` frames in `layout`, when it ran
    other_frames: int


def other_frames(shape: tuple[int, ...]) -> int:
    """The second frame count: one more, or two when one more is the channel count."""
    c, t = shape[0], shape[1]
    return t + 1 if t + 1 != c else t + 2


def find_time_axis(run: Run, shape: tuple[int, ...], run_other: Run | None = None) -> TimeAxis:
    """Which order of (C, T) the forward takes a (C, T, H, W) series in (see the module's doc).
    `run_other` traces at the second frame count (a model rebuilt for those frames); `run` when
    None. Raises the ForwardFailed of TerraTorch's order when neither order runs."""
    c, t = shape[0], shape[1]
    t2 = other_frames(shape)
    second = (c, t2, *shape[2:])
    results: dict[str, Any] = {}

    def attempt(at: tuple[int, ...], layout: str, runner: Run) -> Any:
        try:
            return runner(at, layout)
        except ForwardFailed as exc:
            return exc

    results["BCTHW"] = attempt(shape, "BCTHW", run)
    if c != t:
        results["BTCHW"] = attempt(shape, "BTCHW", run)
    ran = [lay for lay in LAYOUTS if lay in results and not isinstance(results[lay], ForwardFailed)]
    if c == t and ran:
        ran = list(LAYOUTS)  # the same shapes either way: only another frame count tells
    if not ran:
        raise results["BCTHW"]
    again = {lay: attempt(second, lay, run_other or run) for lay in ran}
    ok = [lay for lay in ran if not isinstance(again[lay], ForwardFailed)]
    counts = f"{c} channels and {t} frames, then {t2} frames"
    doubt = None
    if len(ok) == 1:
        layout = ok[0]
        note = f"time axis measured: the forward takes the series as {_named(layout)} ({counts})"
    elif len(ran) == 1:
        layout = ran[0]
        note = f"time axis found by elimination: {_named(layout)}"
        doubt = Doubt(
            "time-axis",
            f"the time axis was found by elimination: the forward takes {c} channels and {t} "
            f"frames only as {_named(layout)}, and refuses {t2} frames, so no second frame count "
            "confirmed which axis is time",
            TIME_AXIS_FLAG,
        )
    else:
        layout = "BCTHW"
        note = f"time axis not measured: read as {_named(layout)}"
        what = "either order alike" if ok else f"no other frame count ({t2} refused)"
        doubt = Doubt(
            "time-axis",
            f"the time axis could not be measured: the forward takes {what} with {counts}; read "
            f"as {_named(layout)}",
            TIME_AXIS_FLAG,
        )
    traced = results.get(layout)
    if traced is None:  # C == T: the second order was not traced at the analysed shape
        traced = run(shape, layout)
    other = again.get(layout)
    other_trace = None if other is None or isinstance(other, ForwardFailed) else other[0]
    return TimeAxis(traced, layout, doubt, note, other_trace, t2)


def _named(layout: str) -> str:
    return "(B, C, T, H, W)" if layout == "BCTHW" else "(B, T, C, H, W), time before channels"


def per_frame_taps(
    features: tuple[FeatureSpec, ...], trace: Trace, other: Trace | None, frames: int, t2: int
) -> tuple[tuple[FeatureSpec, ...], list[str]]:
    """Taps on a module whose number of calls follows the frames (traced at `frames` and at
    `t2` frames): what flows on is its last call, recorded from the end (call -1), never a
    fixed call (the 4th of 5 frames is a middle one at 8 frames)."""
    if other is None:
        return features, []
    here, there = _call_counts(trace.root), _call_counts(other.root)
    notes: list[str] = []
    found = []
    for f in features:
        n = here.get(f.module, 0)
        if f.source != "output" and n > 1 and there.get(f.module, n) != n:
            why = (
                f"the last of the calls of {f.module}, which runs once per frame ({n} calls at "
                f"{frames} frames, {there[f.module]} at {t2}): what flows on"
            )
            if f.call not in (-1, n - 1):
                notes.append(
                    f"{f.module} runs once per frame: tapped at its last call, not call {f.call}"
                )
            f = dataclasses.replace(f, call=-1, why=why)
        found.append(f)
    return tuple(found), notes


def _call_counts(root: Call) -> dict[str, int]:
    counts: dict[str, int] = {}
    stack = [root]
    while stack:
        call = stack.pop()
        stack.extend(call.children)
        counts[call.name] = max(counts.get(call.name, 0), call.call + 1)
    return counts
