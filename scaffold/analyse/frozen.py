"""Parameters the input never reaches: measured by a backward pass from the features.

A foundation model often keeps modules its forward does not use for a given input (a second
modality's patch embedding, a position embedding it replaces by its own, a final norm nothing
calls). They get no gradient, and Lightning's DDP stops on a trainable parameter without one:
the generated backbone freezes them at construction (its weights still load).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from scaffold.spec import Doubt, FeatureSpec

MOSTLY = 0.5  # above this share of the model's parameters frozen, the taps are doubtful


class Reach(NamedTuple):
    """What a backward pass from the features reaches: the trainable parameters it leaves
    without a gradient, and the input channels (on the model's channel axis) it never reaches."""

    parameters: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()


def unreached_parameters(
    trace: Any, features: Sequence[FeatureSpec], removed: Sequence[str], channel_axis: int = 1
) -> Reach:
    """The trainable parameters of the traced model that get no gradient when every feature
    (the sum of them all) is backpropagated, for the traced input and forward call, leaving
    out those inside `removed` (modules the backbone is built without); and the input channels
    whose gradient is zero everywhere. Empty when the forward and backward cannot run with
    gradients (the meta device: shapes only)."""
    import torch

    from scaffold.analyse.trace import BATCH
    from scaffold.runtime.inputs import first_tensor

    model = trace.model
    if model is None or trace.root.in_shape is None:
        return Reach()
    kept: list[Any] = []
    handles = []

    def item(value: Any, key: Any) -> Any:
        if key is None:
            return first_tensor(value)
        for step in key if isinstance(key, tuple) else (key,):
            value = value[step]
        return value

    calls: dict[tuple[str, str], int] = {}
    for f in features:
        if f.source == "output":
            continue
        module = model.get_submodule(f.module)

        def on_output(mod, args, out, f=f) -> None:
            seen = calls.get((f.module, "out"), 0)
            calls[(f.module, "out")] = seen + 1
            if seen == f.call:
                kept.append(item(out, f.key))

        def on_input(mod, args, kwargs, f=f) -> None:
            seen = calls.get((f.module, "in"), 0)
            calls[(f.module, "in")] = seen + 1
            if seen == f.call:
                kept.append(first_tensor([args, kwargs]))

        if f.source == "input":
            handles.append(module.register_forward_pre_hook(on_input, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(on_output))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for _, p in params:
        p.grad = None
    try:
        x = torch.randn(BATCH, *trace.root.in_shape[1:], device=trace.device)
        x.requires_grad_(trace.device != "meta")
        model.eval()
        with torch.enable_grad():
            output = trace.call(model, x) if trace.call is not None else model(x)
            for f in features:
                if f.source == "output":
                    kept.append(item(output, f.key))
            total = sum(
                t.float().sum() for t in kept if isinstance(t, torch.Tensor) and t.requires_grad
            )
            if not isinstance(total, torch.Tensor):
                return Reach()
            total.backward()
    except Exception:  # a forward that cannot run with gradients: nothing is measured
        return Reach()
    finally:
        for h in handles:
            h.remove()
    inside = tuple(m + "." for m in removed)
    found = tuple(n for n, p in params if p.grad is None and not n.startswith(inside))
    for _, p in params:
        p.grad = None
    dead: tuple[int, ...] = ()
    if x.grad is not None and x.ndim > channel_axis:
        other = tuple(d for d in range(x.ndim) if d != channel_axis)
        dead = tuple(int(c) for c in torch.nonzero(x.grad.abs().sum(dim=other) == 0).flatten())
    return Reach(found, dead)


def unused_input_doubt(
    channels: Sequence[int], in_chans: int, features: Sequence[FeatureSpec]
) -> Doubt | None:
    """A doubt when some input channels reach no feature: the taps miss the part of the model
    that reads them (the other image of a siamese net, a second modality's bands)."""
    if not channels or len(channels) >= in_chans:
        return None
    return Doubt(
        kind="input-unused",
        message=(
            f"input channels {_ranges(channels)} of {in_chans} reach no feature (nothing the "
            "backbone returns depends on them): the taps miss the part of the model that reads "
            "them"
        ),
        flag="--taps MODULE,...",
    )


def _ranges(channels: Sequence[int]) -> str:
    """0, 1, 2, 3, 7 -> "0-3, 7"."""
    spans: list[list[int]] = []
    for c in sorted(channels):
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def removed_modules(features: Sequence[FeatureSpec], out_indices: Sequence[int]) -> tuple[str, ...]:
    """The modules a backbone returning FEATURES[out_indices] is built without (what runs
    after all of them), as the generated backbone's `_removable` finds them."""
    wanted = [features[i] for i in out_indices]
    if not wanted or any(f.source == "output" for f in wanted):
        return ()

    def within(name: str, modules: Sequence[str]) -> bool:
        return any(name == m or name.startswith(m + ".") for m in modules)

    return tuple(
        dict.fromkeys(m for f in wanted for m in f.after if all(within(m, g.after) for g in wanted))
    )


def frozen_modules(model: Any, frozen: Sequence[str], most: int = 6) -> str:
    """The top-most modules all of whose parameters are in `frozen`, then the frozen
    parameters of modules that also have others, as one line."""
    dead = set(frozen)
    whole = [
        name
        for name, module in model.named_modules()
        if name
        and (own := [f"{name}.{p}" for p, _ in module.named_parameters()])
        and all(p in dead for p in own)
    ]
    top = [m for m in whole if not any(m.startswith(o + ".") for o in whole)]
    rest = [p for p in frozen if not any(p.startswith(m + ".") for m in top)]
    names = top + rest
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def frozen_doubt(
    model: Any, frozen: Sequence[str], features: Sequence[FeatureSpec]
) -> Doubt | None:
    """A doubt when the frozen parameters are most of the model's: the taps likely miss what
    the model computes."""
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    total, dead = sum(sizes.values()), sum(sizes.get(n, 0) for n in frozen)
    if not total or dead <= MOSTLY * total:
        return None
    shown = frozen_modules(model, frozen, most=4)
    taps = ",".join(dict.fromkeys(f.module for f in features))
    return Doubt(
        kind="mostly-frozen",
        message=(
            f"{dead} of the model's {total} parameters get no gradient from the features "
            f"({shown}): the features may not be what the model computes"
        ),
        flag=f"--taps {taps}",
    )
