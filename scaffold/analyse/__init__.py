"""The analyse stage: TARGET -> BackboneSpec (static analysis, a traced forward, the feature taps)."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from scaffold.analyse.frozen import (
    frozen_doubt,
    frozen_modules,
    removed_modules,
    unreached_parameters,
    unused_input_doubt,
)
from scaffold.errors import ScaffoldError
from scaffold.grid import Grids, TokenFrames
from scaffold.spec import BackboneSpec, Doubt, FeatureSpec, Param

if TYPE_CHECKING:
    from scaffold.resolve.static import ModuleClass
    from scaffold.resolve.target import ResolvedTarget


def analyse_model(
    resolved: ResolvedTarget,
    source: ModuleClass | None,
    args: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    forward_args: dict[str, Any] | None = None,
    image_arg: str | None = None,
    taps: tuple[str, ...] | None = None,
    modalities: tuple[tuple[str, int], ...] = (),
) -> BackboneSpec:
    """Build the resolved model with `args`, trace it and describe its features.

    `source` is what the resolve stage read of the class's source (its constructor's parameters,
    the hooks it defines), None when there is none. `input_shape` is (C, H, W) or (C, T, H, W)
    without batch; when None it is inferred. `forward_args` and `image_arg`: how the forward is
    called (see scaffold.analyse.call). `taps`: the features the person named (``--taps``), in
    place of those the analysis would choose. `modalities`: ``((name, channels), ...)``, the
    model's inputs by modality (``--bands`` named per modality): the traced image is all of them
    stacked, and each goes in by its name, so every check sees every modality fed.
    """
    from torch import nn

    from scaffold.analyse.call import ArgumentsUnplaced, per_band_shapes, trace_called
    from scaffold.analyse.features import select_features
    from scaffold.analyse.frames import per_frame_taps
    from scaffold.analyse.head import head_modules, removable_after
    from scaffold.analyse.inputs import first_conv, guess_input
    from scaffold.analyse.trace import BATCH, ForwardFailed, construct

    args = dict(args or {})
    obj, name = resolved.obj, resolved.name
    model, device = construct(obj, args)
    guess = guess_input(obj, model, args)
    notes: list[str] = []
    if input_shape is not None:
        changed = _follow_input_shape(args, guess, input_shape)
        if changed:
            notes.append("set from --input-shape: " + ", ".join(f"{k}={args[k]}" for k in changed))
            model, device = construct(obj, args)
        shapes: tuple[tuple[int, ...], ...] = (input_shape,)
        stacked = sum(c for _, c in modalities)
        if modalities and input_shape[0] != stacked:
            raise ScaffoldError(
                f"--input-shape {','.join(map(str, input_shape))}: {input_shape[0]} channels, "
                f"and --bands names {stacked} over its modalities"
            )
    elif modalities:  # the modalities' channels, stacked, on the guessed grid (and frames)
        stacked = sum(c for _, c in modalities)
        shapes = tuple(dict.fromkeys((stacked, *s[1:]) for s in guess.shapes))
    else:
        shapes = guess.shapes
        if guess.in_chans_arg is None:
            conv = first_conv(model)
            frames = shapes[0][1] if len(shapes[0]) == 4 else None
            shapes = per_band_shapes(
                shapes, forward_args or {}, conv[1].in_channels if conv else None, frames
            )

    _check_forward(model, name)
    failures: list[tuple[tuple[int, ...], ForwardFailed]] = []
    layout, axis = "BCTHW", None
    for shape in shapes:
        try:
            if len(shape) == 4:  # a time series: which axis is time is measured
                axis = _time_axis(
                    obj, args, model, device, shape, forward_args, image_arg, guess, modalities
                )
                (trace, forward_call, call_notes), layout = axis.traced, axis.layout
                call_notes = [*call_notes, axis.note]
            else:
                trace, forward_call, call_notes = trace_called(
                    obj,
                    args,
                    model,
                    device,
                    shape,
                    dict(forward_args or {}),
                    image_arg,
                    modalities=modalities,
                )
            break
        except ForwardFailed as exc:
            failures.append((shape, exc))
    else:
        shape, failed = failures[0]
        hint = (
            "" if input_shape else "; pass --input-shape C,H,W (or C,T,H,W) if it expects another"
        )
        gpu = next((f for _, f in failures if _needs_gpu(f.cause)), None)
        if gpu is not None:
            raise ScaffoldError(
                f"{name}: forward needs a GPU ({gpu}), but scaffold traces the model on the CPU "
                "or the meta device: put tensors on the input's device (x.device) rather than "
                "calling .cuda()"
            ) from gpu.cause
        if isinstance(failed.cause, ArgumentsUnplaced):
            raise ScaffoldError(f"{name}: on an input of shape {(BATCH, *shape)}, {failed.cause}")
        missing = _missing_input_hint(failed.cause, args, obj, model)
        raise ScaffoldError(
            f"{name}: forward raised on an input of shape {(BATCH, *shape)}: {failed}{missing or hint}"
        ) from failed.cause

    if not trace.outputs:
        raise ScaffoldError(f"{name}: forward returned {trace.output_kind} with no tensor in it")
    frames = None
    if len(shape) == 4:
        known = {axis.other_frames: axis.other} if axis is not None and axis.other else {}
        frames, frame_notes = _measure_frames(
            obj,
            args,
            model,
            device,
            shape,
            trace,
            forward_args,
            image_arg,
            layout,
            known,
            modalities,
        )
        call_notes = [*call_notes, *frame_notes]
    larger = _larger_trace(trace, shape)
    grids, grid_notes, grid_doubts = _measure_grids(trace, shape, frames, larger)
    call_notes = [*call_notes, *grid_notes]
    cells = _grown_cells(trace, shape, larger, grids)
    if taps:
        from scaffold.analyse.features import Selection
        from scaffold.analyse.requested import requested_features

        chosen = requested_features(
            trace, trace.model or model, taps, (BATCH, *shape), cells, frames
        )
        note = "the taps are those --taps names: " + ", ".join(taps)
        selection = Selection(chosen, tuple(range(len(chosen))), (note,))
    else:
        selection = select_features(trace, shape, cells=cells, frames=frames, grids=grids)
    if not selection.features:
        raise ScaffoldError(
            f"{name}: no output of any submodule is a feature map of the {shape[-2]}x{shape[-1]} "
            "input (NCHW, NHWC, tokens, NCTHW or NTHWC); pass --input-shape if the input is wrong"
        )

    has: set[str] = set()
    constructor: tuple[Param, ...] = ()
    if source is not None:
        has = set(source.has)
        constructor = tuple(Param(p.name, p.default, p.annotation) for p in source.init_params)
    has |= {h for h in ("feature_info", "forward_intermediates") if hasattr(model, h)}
    if hasattr(model, "prepare_features_for_image_model"):
        has.add("prepare_features_for_image_model")

    features = tuple(
        dataclasses.replace(f, after=after, why=_group_why(f))
        for f, after in zip(
            selection.features, removable_after(trace, selection.features), strict=True
        )
    )
    if axis is not None:  # a module called once per frame is tapped at its last call
        features, frame_notes = per_frame_taps(
            features, trace, axis.other, shape[1], axis.other_frames
        )
        call_notes = [*call_notes, *frame_notes]
    grid_doubts += _assumed_positions(features, grids, trace.device)
    conv = first_conv(model)
    notes += [f"the class already has {h}" for h in sorted(has)]
    removed = removed_modules(features, selection.out_indices)
    reach = unreached_parameters(trace, features, removed, 2 if layout == "BTCHW" else 1)
    frozen = reach.parameters
    doubt = frozen_doubt(trace.model, frozen, features) if frozen else None
    if not taps:  # the person's own taps are theirs to judge
        grid_doubts += [d for d in [unused_input_doubt(reach.channels, shape[0], features)] if d]
    if frozen:
        notes.append(
            f"frozen: {len(frozen)} parameter tensors get no gradient from the features for "
            f"this input ({frozen_modules(trace.model, frozen)}); the backbone sets "
            "requires_grad=False on them"
        )
    head = head_modules(trace, selection.features, selection.out_indices)
    doubts = _doubts(
        trace, obj, args, (BATCH, *shape), selection, head, forward_call, frames, bool(taps)
    )
    return BackboneSpec(
        target=resolved.target,
        module=resolved.module,
        qualname=name,
        kind=resolved.kind,
        import_root=str(resolved.import_root) if resolved.import_root else None,
        source_file=str(resolved.source_file) if resolved.source_file else None,
        args=args,
        input_shape=(1, *shape),
        in_chans_arg=_channels_arg(obj, args, guess.in_chans_arg, shape[0]),
        features=features,
        out_indices=selection.out_indices,
        output_kind=trace.output_kind,
        traced_on=trace.device,
        num_params=sum(p.numel() for p in model.parameters()),
        constructor=constructor,
        first_conv=conv[0] if conv else None,
        first_conv_3d=conv is not None and isinstance(conv[1], nn.Conv3d),
        has_feature_info="feature_info" in has,
        has_prepare_features="prepare_features_for_image_model" in has,
        has_forward_intermediates="forward_intermediates" in has,
        notes=(*notes, *call_notes, *selection.notes),
        head_modules=head,
        forward_call=forward_call,
        doubts=(
            *doubts,
            *grid_doubts,
            *((axis.doubt,) if axis is not None and axis.doubt is not None else ()),
            *((doubt,) if doubt is not None else ()),
        ),
        input_layout=layout,  # type: ignore[arg-type]
        frozen=frozen,
    )


def _doubts(
    trace: Any,
    obj: Any,
    args: dict[str, Any],
    full_shape: tuple[int, ...],
    selection: Any,
    head: tuple[str, ...],
    forward_call: Any,
    frames: Any,
    taps_given: bool,
) -> tuple[Doubt, ...]:
    """What the analysis is unsure of (see scaffold.analyse.doubts); the tap doubts only when
    the analysis chose the taps (a person's --taps settles them)."""
    from scaffold.analyse.doubts import (
        asked_keys,
        declared_doubts,
        input_doubts,
        narrowing_end_doubt,
        tap_doubts,
    )
    from scaffold.analyse.inputs import _default_of as default_of
    from scaffold.analyse.inputs import parameter_names

    found = []
    model = trace.model
    constructor = {}
    if model is not None:
        for param in parameter_names(obj, model):
            constructor[param] = args[param] if param in args else default_of(obj, model, param)
    if not taps_given:
        found += tap_doubts(
            trace, selection.features, selection.out_indices, head, full_shape, frames
        )
        found += declared_doubts(trace, selection.features, full_shape, forward_call, constructor)
        found += narrowing_end_doubt(trace, selection.features, selection.out_indices)
    asked = asked_keys(trace, forward_call, full_shape)
    found += input_doubts(trace, forward_call, constructor, full_shape, asked)
    return tuple(found)


LARGER = 2  # the second input size, for one-cell maps: this many times the height and width


def _larger_trace(trace: Any, shape: tuple[int, ...]) -> Any:
    """A function that traces the forward once, when first asked, at LARGER times the height
    and width: (the calls up to where that forward raises, or None; the larger shape)."""
    from scaffold.analyse.trace import trace_forward

    larger = (*shape[:-2], shape[-2] * LARGER, shape[-1] * LARGER)
    done: list[Any] = []

    def again() -> tuple[Any, tuple[int, ...]]:
        if not done:
            try:
                found = trace_forward(trace.model, larger, trace.device, trace.call, partial=True)
            except Exception:  # building the input itself failed: no second size
                found = None
            done.append(found if trace.model is not None else None)
        return done[0], larger

    return again


def _measure_grids(
    trace: Any, shape: tuple[int, ...], frames: Any, larger: Any
) -> tuple[Any, list[str], list[Any]]:
    """What the shapes alone cannot say: where the tokens sit (measured by perturbing the input,
    scaffold.analyse.tokens) and the reduction of a grid that two reductions explain (decided
    at a second size, scaffold.analyse.grids). (Grids, notes, doubts.)"""
    from scaffold.analyse.grids import decide_reductions
    from scaffold.analyse.tokens import describe, measure_tokens

    measured = measure_tokens(trace, shape)
    layouts = dict(measured.layouts) if measured is not None else {}
    notes = [
        "token positions measured by changing the input: " + describe(layout, n)
        for n, layout in sorted(layouts.items())
        if layout.prefix or layout.suffix or layout.groups > 1
    ]
    grids = Grids(tokens=layouts)
    reductions, grid_notes, doubts = decide_reductions(trace, shape, larger, frames, grids)
    return Grids(tokens=layouts, reductions=reductions), notes + grid_notes, doubts


def _group_why(f: FeatureSpec) -> str:
    """The why of a feature of tokens of several patch embeddings: how they become a map."""
    if f.groups <= 1:
        return f.why
    h, w = f.grid
    chs = f.num_chs // f.groups
    return (
        f"{f.why}; its tokens are {f.groups} groups of {h}x{w} (one patch embedding each), "
        f"concatenated along channels: {f.groups} x {chs} = {f.num_chs}"
    )


def _assumed_positions(features: Any, grids: Any, device: str) -> list[Any]:
    """A doubt where tokens were read with extra tokens whose positions were not measured (a
    count read as a class token first, say): they may come after the grid tokens as well."""
    for f in features:
        extra = f.prefix_tokens + f.suffix_tokens
        if f.layout not in ("NLC", "NTLC") or not extra or f.shape[1] in grids.tokens:
            continue
        where = "traced on the meta device" if device != "cpu" else "no grid fits the probes"
        return [
            Doubt(
                "token-positions",
                f"the {f.shape[1]} tokens of {f.module} were read as {f.prefix_tokens} extra "
                f"token(s) before the grid tokens and {f.suffix_tokens} after them, assumed: "
                f"their positions could not be measured ({where})",
                "",
            )
        ]
    return []


def _grown_cells(trace: Any, shape: tuple[int, ...], larger: Any, grids: Any) -> frozenset[int]:
    """The one-cell maps of `trace` that are a level, not a global reduction: where a layer with
    weights (a strided conv) turns a larger map into one cell, the forward runs again at LARGER
    times the height and width, and a map that is then more than one cell is a level (a global
    pool gives one cell at every size). The calls up to where the larger forward raises count (a
    head that flattens one cell into a fixed linear runs at one size only); a model that raises
    before that layer leaves the analysed size to decide."""
    from scaffold.analyse.features import grown_cells, one_cell_layers

    if trace.model is None or not one_cell_layers(trace, shape, grids):
        return frozenset()
    again, size = larger()
    if again is None:
        return frozenset()
    return grown_cells(trace, shape, again, size, grids)


def _time_axis(
    obj: Any,
    args: dict[str, Any],
    model: Any,
    device: str,
    shape: tuple[int, ...],
    forward_args: dict[str, Any] | None,
    image_arg: str | None,
    guess: Any,
    modalities: tuple[tuple[str, int], ...] = (),
) -> Any:
    """Which axis of a (C, T, H, W) series the model takes as time (scaffold.analyse.frames). At
    the second frame count a model whose constructor takes the frames is built for them."""
    from scaffold.analyse.call import trace_called
    from scaffold.analyse.frames import find_time_axis
    from scaffold.analyse.trace import construct

    def run(at: tuple[int, ...], layout: str, built: Any = None) -> Any:
        on, where = built or (model, device)
        given = dict(forward_args or {})
        return trace_called(
            obj,
            args,
            on,
            where,
            at,
            given,
            image_arg,
            layout,
            shape[1],
            compare=at == shape,
            modalities=modalities,
        )

    run_other = None
    if guess.frames_arg is not None:
        rebuilt: list[Any] = []

        def run_other(at: tuple[int, ...], layout: str) -> Any:
            if not rebuilt:
                rebuilt.append(construct(obj, {**args, guess.frames_arg: at[1]}))
            return run(at, layout, rebuilt[0])

    return find_time_axis(run, shape, run_other)


def _measure_frames(
    obj: Any,
    args: dict[str, Any],
    model: Any,
    device: str,
    shape: tuple[int, ...],
    trace: Any,
    forward_args: dict[str, Any] | None,
    image_arg: str | None,
    layout: str = "BCTHW",
    known: dict[int, Any] | None = None,
    modalities: tuple[tuple[str, int], ...] = (),
) -> tuple[Any, list[str]]:
    """Which token tensors of a temporal input hold frames, as grids are measured by reductions:
    the forward is traced again at one frame more (a count that grows by one grid is frames of
    that grid) and, when no token count changes there, at twice the frames (temporal patches of
    several frames). `known`: traces at other frame counts already made (the time axis's).
    (TokenFrames or None, notes for the person.)"""
    from scaffold.analyse.call import trace_called
    from scaffold.analyse.features import token_frames
    from scaffold.analyse.trace import ForwardFailed

    stack, tokens = [trace.root], False
    while stack and not tokens:
        call = stack.pop()
        stack.extend(call.children)
        tokens = any(len(s) == 3 for _, s in call.outputs) or len(call.shape or ()) == 3
    if not tokens:
        return None, []
    t = shape[1]
    min_step, tried = 1, []
    vectors: frozenset[int] = frozenset()  # counts of one vector per frame
    for other in (t + 1, 2 * t):
        tried.append(str(other))
        try:
            second = (known or {}).get(other) or trace_called(
                obj,
                args,
                model,
                device,
                (shape[0], other, *shape[2:]),
                dict(forward_args or {}),
                image_arg,
                layout,
                t,
                compare=False,
                modalities=modalities,
            )[0]
        except ForwardFailed:
            continue
        found = token_frames(trace, second, shape, other, min_step)
        if found is not None and found.counts:
            found = TokenFrames(found.frames, found.counts, found.per_frame | vectors)
            return found, [
                (
                    f"token tensors hold {found.frames} frame(s) of the {t}-frame input (their "
                    f"counts at {t} and {other} frames): read as frames of a grid (NTLC)"
                )
            ]
        if found is not None:
            vectors |= found.per_frame
        min_step = 2  # one frame more changed no count: temporal patches of several frames
    if vectors:  # only vectors per frame (a day-of-year embedding): no frame grids
        return TokenFrames(0, frozenset(), vectors), [
            (
                f"token tensors of {', '.join(map(str, sorted(vectors)))} tokens hold one vector per "
                "frame (their counts follow the frames): not maps"
            )
        ]
    return None, [
        (
            f"no token count changed with the frames ({t} and {' or '.join(tried)} tried): token "
            "tensors are read as one grid"
        )
    ]


def _check_forward(model: Any, name: str) -> None:
    """A model whose class does not implement `forward` (nn.Module's placeholder) cannot be
    traced: say so, and name the forward-like methods it has."""
    from torch import nn

    if "forward" in vars(model) or type(model).forward is not nn.Module.forward:
        return
    others = sorted(m for m in dir(type(model)) if m.startswith("forward_"))
    has = f"; it has {', '.join(others)}" if others else ""
    raise ScaffoldError(
        f"{name} does not implement forward (nn.Module's placeholder raises NotImplementedError)"
        f"{has}: target a builder that sets a forward, or a subclass that defines one"
    )


# Errors that say a value the forward needed was never made: an input it was not given.
_MISSING = re.compile(
    r"referenced before assignment|cannot access local variable|NoneType|is not defined"
)


def _missing_input_hint(exc: BaseException, args: dict[str, Any], obj: Any, model: Any) -> str:
    """When the forward failed for want of an input (a local never assigned, a None used), the
    constructor parameters that choose the inputs: those whose value is a list (``modalities``),
    as given or by default. "" when the error is another or there are none."""
    from scaffold.analyse.inputs import _default_of as default_of
    from scaffold.analyse.inputs import parameter_names

    if not isinstance(exc, (UnboundLocalError, NameError, TypeError, AttributeError)):
        return ""
    if not _MISSING.search(str(exc)):
        return ""
    chosen = []
    for param in parameter_names(obj, model):
        value = args[param] if param in args else default_of(obj, model, param)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            chosen.append(f"{param}={list(value)}")
    if not chosen:
        return ""
    return (
        "; the forward seems to miss an input it was not given: the constructor chooses its "
        f"inputs with {', '.join(chosen)} (pass --arg to keep only the input the image goes to)"
    )


def _needs_gpu(raised: BaseException) -> bool:
    """The forward asked for CUDA (`.cuda()`, `device="cuda"`) where there is none, or mixed a
    CUDA tensor with the traced input."""
    seen: set[int] = set()
    exc: BaseException | None = raised
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if re.search(r"\bCUDA\b|NVIDIA driver|\bcuda(:\d+)?\b", str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _channels_arg(obj: Any, args: dict[str, Any], arg: str | None, channels: int) -> str | None:
    """`arg` when it sets the input's channels: the model was built with it at the traced input's
    `channels`. A value that differs (a siamese net's ``in_chans=3`` per date of a 6-channel
    input, one modality's channels of a stacked input) means it counts something else: None,
    so the backbone never builds the model with the input's channels there."""
    import inspect

    if arg is None:
        return None
    value = args.get(arg)
    if arg not in args:
        try:
            value = inspect.signature(obj).parameters[arg].default
        except (TypeError, ValueError, KeyError):
            return arg
    if isinstance(value, int) and not isinstance(value, bool) and value != channels:
        return None
    return arg


def _follow_input_shape(args: dict[str, Any], guess, input_shape: tuple[int, ...]) -> list[str]:
    """Pass an --input-shape that differs from the model's defaults to its constructor, where the
    constructor has a parameter for it and the person did not set that parameter already."""
    default = guess.shapes[0]
    changed: list[str] = []
    pairs: list[tuple[str | None, Any, Any]] = [(guess.in_chans_arg, input_shape[0], default[0])]
    if len(input_shape) == 4 and len(default) == 4:
        pairs.append((guess.frames_arg, input_shape[1], default[1]))
    h, w = input_shape[-2:]
    if guess.size_arg is not None and (h, w) != tuple(default[-2:]):
        pairs.append((guess.size_arg, h if h == w else [h, w], None))
    for arg, value, was in pairs:
        if arg is not None and arg not in args and value != was:
            args[arg] = value
            changed.append(arg)
    return changed
