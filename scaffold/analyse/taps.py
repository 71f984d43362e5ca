"""A tap: the tensor of one call of a submodule that a feature reads (its output, an item of it,
or its input), and the FeatureSpec it makes."""

from __future__ import annotations

from typing import Literal

from scaffold.analyse.trace import Call, Key
from scaffold.grid import Placement
from scaffold.spec import FeatureSpec


def feature(
    place: Placement,
    module: str,
    shape: tuple[int, ...],
    source: Literal["hook", "input", "output"] = "hook",
    call: int = 0,
    key: Key = None,
    why: str = "",
) -> FeatureSpec:
    return FeatureSpec(
        module=module,
        num_chs=place.num_chs,
        reduction=place.reduction,
        layout=place.layout,
        shape=(1, *shape[1:]),  # per sample, as the spec's input_shape
        grid=place.grid,
        source=source,
        call=call,
        key=key,
        num_frames=place.num_frames,
        prefix_tokens=place.prefix_tokens,
        suffix_tokens=place.suffix_tokens,
        groups=place.groups,
        why=why,
    )


def hooked(call: Call, place: Placement, why: str = "", key: Key = None) -> FeatureSpec:
    """The tap on `call`'s output: its first tensor, or item `key` of what it returns."""
    shape = call.shape if key is None else item_shape(call, key)
    assert shape is not None
    return feature(place, call.name, shape, call=call.call, key=key, why=why)


def item_shape(call: Call, key: Key) -> tuple[int, ...] | None:
    return next(
        (s for (_, s), k in zip(call.outputs, call.output_keys, strict=True) if k == key), None
    )


def key_of(call: Call, tid: int | None) -> Key:
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


def item_why(why: str, key: Key) -> str:
    return why if key is None else f"{why}; item {key!r} of what it returns, the map that continues"


def parent_name(name: str) -> str:
    return name.rpartition(".")[0]
