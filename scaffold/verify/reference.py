"""The ``features match model`` check: the backbone's features are the model's own tensors.

The shape checks cannot see a feature multiplied by 0, maps with H and W swapped, tokens put on
the grid column by column, the wrong block tapped or a feature cut off the graph. This check holds
the values to an independent reference:

- a plain instance of the person's model, imported and built as the spec says (module, qualname,
  import root, args, the input channels of the benchmark), carrying the backbone's weights (the
  backbone's `.model`, pruned: only its removed modules' tensors may be missing);
- hooks on it at the taps the analysis recorded (the spec, not the generated FEATURES), the model
  called as the spec's ``forward_call`` says, through the analysis's own helpers
  (scaffold.analyse.call), and stopped once every tap has fired;
- its tensors turned into (B, C, H, W) maps by conversions written here, one small function per
  layout (CONVERSIONS), apart from the generated ``_to_images``;
- the weights spread first (SPREAD: fixed noise on every parameter, put back after the check):
  a freshly built model may hold near-identity blocks (LayerScale's 1e-5), whose neighbouring
  taps would look alike, so a feature taken one block off would pass.

The generated FEATURES must name the recorded taps: an entry changed by hand fails even where the
values agree, with the ``update --taps`` command that records it.

Compared at the analysed size and at one more cell of the coarsest reduction in height (a
non-square grid: a swap or a column-major placement changes shapes or values there), through each
way the backbone is read: its ``forward`` (the tensors as the model makes them),
``prepare_features_for_image_model`` (at the analysed size: without the input's size it places
tokens on the analysed grid), ``forward`` with ``image_features=True`` (the factory's backbone) and
timm's ``features_only`` model (BACKBONE_REGISTRY's). No feature is cut off the graph, and each
feature of the factory's backbone, summed and backpropagated alone, gives the input a gradient.
A finding names the feature, its module, the path, the size and what differs, and says when
backbone.py was changed by hand.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from scaffold.errors import one_line
from scaffold.grid import on_grid
from scaffold.spec import BackboneSpec, FeatureSpec
from scaffold.verify.sizes import _size_parameter
from scaffold.verify.types import CheckFailed
from scaffold.write.state import read_pristine

SPREAD = 0.02  # the noise added to each parameter for the check (fixed seed)
RTOL = 1e-4  # float32: the same ops on the same weights; only summation order may differ
ATOL = 1e-5  # times the reference's largest magnitude
Size = tuple[int, int]


class _Captured(BaseException):
    """Raised by the reference's hook that completes the taps: nothing after them runs (a head
    that fits one size only, as the backbone's own early stop)."""


# -- the reference model ----------------------------------------------------------------------
def plain_model(spec: BackboneSpec, in_chans: int, extra: dict[str, Any] | None = None) -> Any:
    """The person's model as the spec says to build it, with `in_chans` input channels and
    `extra` constructor arguments (a size), on the CPU in eval mode."""
    from scaffold.analyse.trace import build_model

    if spec.import_root is not None and spec.import_root not in sys.path:
        sys.path.insert(0, spec.import_root)
    obj: Any = importlib.import_module(spec.module)
    for part in spec.qualname.split("."):
        obj = getattr(obj, part)
    args = dict(spec.args) | (extra or {})
    if spec.in_chans_arg is not None:
        args[spec.in_chans_arg] = in_chans
    return build_model(obj, args, "cpu").eval()


def _plain(spec: BackboneSpec, in_chans: int) -> Any:
    """plain_model, its failure a finding."""
    try:
        return plain_model(spec, in_chans)
    except Exception as exc:
        raise CheckFailed(
            f"a plain {spec.qualname} built as the spec says failed: {one_line(exc)}"
        ) from exc


def load_backbone_weights(reference: Any, backbone: Any) -> int:
    """Copy the weights of the backbone's model (``backbone.model``) into `reference`: every
    tensor the backbone holds must be one of the reference's, of its shape; the reference's
    tensors the backbone lacks must lie in a module the backbone removed. Returns the count."""
    model = getattr(backbone, "model", None)
    if model is None or not hasattr(model, "state_dict"):
        raise CheckFailed("the backbone holds no `model` (the person's model) to compare with")
    removed = [m.removeprefix("model.") for m in getattr(backbone, "removed_modules", ())]
    state = model.state_dict()
    try:
        result = reference.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs
        raise CheckFailed(
            f"the backbone's model does not fit a plain instance of the model: {one_line(exc)}"
        ) from exc
    missing = [
        k for k in result.missing_keys if not any(k == m or k.startswith(m + ".") for m in removed)
    ]
    problems = []
    if result.unexpected_keys:
        names = ", ".join(result.unexpected_keys[:3])
        problems.append(
            f"it holds {len(result.unexpected_keys)} tensors a plain model lacks ({names})"
        )
    if missing:
        problems.append(
            f"it lacks {len(missing)} outside its removed modules ({', '.join(missing[:3])})"
        )
    if problems:
        raise CheckFailed(
            "the backbone's model is not the model the spec builds: " + "; ".join(problems)
        )
    return len(state)


def capture(reference: Any, spec: BackboneSpec, taps: list[FeatureSpec], x: Any) -> list[Any]:
    """The tensors at `taps` in one forward of `reference` on `x`, called as the spec says
    (forward arguments, their forms, fixed noise): hooks, or pre-hooks for ``source: input``,
    keep the recorded call; the model's output gives ``source: output``."""
    import torch

    from scaffold.analyse.call import CallPlan, Invoker
    from scaffold.runtime.inputs import first_tensor

    call = spec.forward_call
    plan = CallPlan(
        call.image,
        call.image_positional,
        dict(call.args),
        tuple(call.per_band),
        modalities=call.modalities,
    )
    # (a time-first model gets the series with time before channels, as the backbone gives it)
    invoker = Invoker(
        plan, dict(call.forms), fixed_noise=call.fixed_noise, layout=spec.input_layout
    )
    slots = {(f.module, f.source == "input") for f in taps if f.source != "output"}
    needed = {
        s: 1 + max(f.call for f in taps if (f.module, f.source == "input") == s) for s in slots
    }
    seen: dict[tuple[str, bool], list[Any]] = {s: [] for s in slots}
    # A tap on a module's last call (-1: one call per frame) is known only at the forward's end.
    stop = all(f.source != "output" and f.call >= 0 for f in taps)

    def keep(slot: tuple[str, bool], value: Any) -> None:
        seen[slot].append(value)
        if stop and all(len(seen[s]) >= n for s, n in needed.items()):
            raise _Captured

    handles = []
    for name, is_input in slots:
        module = reference.get_submodule(name)
        if is_input:
            hook = lambda m, a, k, s=(name, True): keep(s, (a, k))  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            hook = lambda m, a, o, s=(name, False): keep(s, o)  # noqa: E731
            handles.append(module.register_forward_hook(hook))
    output = None
    try:
        torch.manual_seed(0)
        output = invoker(reference, x)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for f in taps:
        if f.source == "output":
            found.append(first_tensor(output) if f.key is None else _at(output, f.key))
            continue
        calls = seen[(f.module, f.source == "input")]
        value = calls[f.call] if -len(calls) <= f.call < len(calls) else None
        found.append(first_tensor(value) if f.key is None else _at(value, f.key))
    return found


def _at(value: Any, key: Any) -> Any:
    for step in key if isinstance(key, tuple) else (key,):
        value = value[step]
    return value


# -- layout conversions: a tensor of the model -> (B, C, H, W) --------------------------------
def _nchw(t: Any, f: FeatureSpec, size: Size, reduce: str) -> Any:
    return t


def _nhwc(t: Any, f: FeatureSpec, size: Size, reduce: str) -> Any:
    return t.permute(0, 3, 1, 2)


def _grid_part(t: Any, f: FeatureSpec) -> Any:
    """The tokens on the grid: without `prefix_tokens` before them and `suffix_tokens` after."""
    return t[:, f.prefix_tokens : t.shape[1] - getattr(f, "suffix_tokens", 0)]


def _nlc(t: Any, f: FeatureSpec, size: Size, reduce: str) -> Any:
    """Grid tokens, row by row on the grid of `size` at the reduction; with `groups` (one patch
    embedding per group of bands), group after group, joined along channels, group 0 first."""
    tokens = _grid_part(t, f)
    groups = getattr(f, "groups", 1) or 1
    if tokens.shape[1] % groups:
        raise CheckFailed(f"{tokens.shape[1]} tokens of `{f.module}` are not {groups} groups")
    h, w = token_grid(tokens.shape[1] // groups, size, f.reduction)
    batch, channels = t.shape[0], t.shape[2]
    per_group = tokens.reshape(batch, groups, h * w, channels).transpose(2, 3)
    return per_group.reshape(batch, groups * channels, h, w)


def _ntlc(t: Any, f: FeatureSpec, size: Size, reduce: str) -> Any:
    """Grid tokens: frames of the grid, time first, each row by row."""
    tokens = _grid_part(t, f)
    frames = f.num_frames or 1
    if tokens.shape[1] % frames:
        raise CheckFailed(f"{tokens.shape[1]} tokens of `{f.module}` are not {frames} frames")
    h, w = token_grid(tokens.shape[1] // frames, size, f.reduction)
    grid = tokens.reshape(t.shape[0], frames, h, w, t.shape[2]).permute(0, 4, 1, 2, 3)
    return reduce_time(grid, reduce)


def _ncthw(t: Any, f: FeatureSpec, size: Size, reduce: str) -> Any:
    return reduce_time(t, reduce)


def _nthwc(t: Any, f: FeatureSpec, size: Size, reduce: str) -> Any:
    return reduce_time(t.permute(0, 4, 1, 2, 3), reduce)


Conversion = Callable[[Any, FeatureSpec, Size, str], Any]
CONVERSIONS: dict[str, Conversion] = {
    "NCHW": _nchw,
    "NHWC": _nhwc,
    "NLC": _nlc,
    "NTLC": _ntlc,
    "NCTHW": _ncthw,
    "NTHWC": _nthwc,
}


def token_grid(n: int, size: Size, reduction: int) -> tuple[int, int]:
    """The (h, w) grid of `n` tokens of an input of `size` at `reduction`, as the analysis reads
    grids (scaffold.grid): floor, then ceil, then a few cells fewer."""
    height, width = size
    hs = [h for h in range(height, 0, -1) if on_grid(h, height, reduction)]
    ws = [w for w in range(width, 0, -1) if on_grid(w, width, reduction)]
    first = [
        (height // reduction, width // reduction),
        (-(-height // reduction), -(-width // reduction)),
    ]
    for h, w in first + [(h, w) for h in hs for w in ws]:
        if h * w == n:
            return h, w
    raise CheckFailed(
        f"{n} tokens fit no grid of a {size[0]}x{size[1]} input at reduction {reduction}"
    )


def reduce_time(t: Any, how: str) -> Any:
    """(B, C, T, H, W) -> (B, C, H, W): the mean, the max, the last frame, or the frames stacked
    into channels frame by frame ((t c), T times the channels)."""
    if how == "max":
        return t.amax(dim=2)
    if how == "last":
        return t[:, :, -1]
    if how == "stack":
        return t.transpose(1, 2).flatten(1, 2)
    return t.mean(dim=2)


# -- the check -----------------------------------------------------------------------------
# A way of reading the backbone: name -> (its features, whether they are (B, C, H, W) maps).
Paths = dict[str, tuple[list[Any], bool]]
FEATURES_ONLY = "timm's features_only model"
IMAGE_FEATURES = "forward with image_features=True"
FORWARD = "the backbone's forward"
TRAINED = IMAGE_FEATURES  # the backbone the benchmark's factory builds and trains


def check_reference(context: Any) -> str:
    """The backbone's features against the plain model's tensors at two sizes; then gradients."""
    import torch

    spec = context.state.spec
    backbone = _built(context)
    indices = list(backbone.out_indices)
    if max(indices, default=-1) >= len(spec.features):
        raise CheckFailed(
            f"the backbone returns features {indices}, the analysis recorded "
            f"{len(spec.features)}" + _edited(context, backbone)
        )
    taps = [spec.features[i] for i in indices]
    how = _temporal_reduction(context)
    analysed = tuple(spec.img_size)
    reference = _plain(spec, context.in_chans)
    features_only = _built(context, features_only=True)
    x = context.example_input().requires_grad_(True)
    with _spread(backbone), _spread(features_only):
        with _settings(backbone, how), _settings(features_only.model, how), torch.enable_grad():
            got = _paths(backbone, x, analysed, prepare=True)
            only = {FEATURES_ONLY: (list(_call(features_only, x, FEATURES_ONLY, analysed)), True)}
        truth = _truth(reference, backbone, spec, taps, x)
        _compare(context, backbone, got, truth, taps, analysed, how)
        truth = _truth(reference, features_only.model, spec, taps, x)  # a model of its own
        _compare(context, backbone, only, truth, taps, analysed, how)
        _gradients(context, backbone, got | only, taps, x)
        other, note = _other_size(context, reference, taps, backbone, how)
    changed = _changed_taps(context, backbone)
    if changed:  # the values agree (neighbouring taps may), the taps do not
        raise CheckFailed(
            f"the backbone's taps are not the analysis's, though their values agree here{changed}"
        )
    shown = f"{_hw(analysed)} and {_hw(other)}" if other else f"{_hw(analysed)} only"
    return (
        f"{len(taps)} features equal the model's own tensors at {shown}{note} (hooks on a plain "
        f"{spec.qualname} with the backbone's weights; forward and image_features=True at "
        f"{'both sizes' if other else 'it'}, prepare_features_for_image_model and timm's "
        f"features_only model at {_hw(analysed)}); each carries a gradient to the input"
    )


def spread(model: Any) -> None:
    """Add fixed noise (SPREAD, seed 0, in name order) to every floating parameter of `model`:
    no block stays a near-identity, so two taps a block apart hold different tensors."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.is_floating_point():
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                param.add_(noise.to(param.device) * SPREAD)


@contextlib.contextmanager
def _spread(model: Any) -> Iterator[None]:
    """`model` spread (see `spread`) for the duration, its own weights put back after (the other
    checks share the built model)."""
    import torch

    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    spread(model)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(saved[name])


def _truth(reference: Any, backbone: Any, spec: BackboneSpec, taps: list[FeatureSpec], x: Any):
    """The reference's tensors at `taps` on `x`, with the weights of `backbone`."""
    import torch

    load_backbone_weights(reference, backbone)
    with torch.no_grad():
        return capture(reference, spec, taps, x.detach().clone())


def _built(context: Any, features_only: bool = False) -> Any:
    try:
        return context.built(features_only)
    except Exception as exc:
        given = ", features_only=True" if features_only else ""
        raise CheckFailed(
            f"timm.create_model({context.name!r}{given}) failed: {one_line(exc)}"
        ) from exc


def _temporal_reduction(context: Any) -> str:
    """The YAML's ``backbone_temporal_reduction`` for the first task, else the default mean."""
    try:
        value = context.task_model_args()[0][1].get("backbone_temporal_reduction")
    except (CheckFailed, AttributeError, IndexError):
        value = None
    return value if isinstance(value, str) else "mean"


@contextlib.contextmanager
def _settings(backbone: Any, how: str, image_features: bool | None = None) -> Iterator[None]:
    """The backbone with `temporal_reduction` (and `image_features`) set for a while, and groups
    of tokens joined along channels (what the reference's conversion does)."""
    saved = backbone.temporal_reduction, backbone.image_features
    groups = getattr(backbone, "group_reduction", None)
    backbone.temporal_reduction = how
    if groups is not None:
        backbone.group_reduction = "concat"
    if image_features is not None:
        backbone.image_features = image_features
    try:
        yield
    finally:
        backbone.temporal_reduction, backbone.image_features = saved
        if groups is not None:
            backbone.group_reduction = groups


def _paths(backbone: Any, x: Any, size: Size, prepare: bool) -> Paths:
    """What each way of reading the backbone returns on `x`."""
    how = backbone.temporal_reduction
    with _settings(backbone, how, image_features=False):
        raw = list(_call(backbone, x, FORWARD, size))
        found = {FORWARD: (raw, False)}
        if prepare:
            maps = backbone.prepare_features_for_image_model(raw)
            found["prepare_features_for_image_model"] = (list(maps), True)
    with _settings(backbone, how, image_features=True):
        found[IMAGE_FEATURES] = (list(_call(backbone, x, IMAGE_FEATURES, size)), True)
    return found


def _call(model: Any, x: Any, what: str, size: Size) -> Any:
    """model(x) on a copy of `x` (a forward may change its input in place); its failure a
    finding."""
    try:
        return model(x.clone())
    except Exception as exc:
        raise CheckFailed(f"at {_hw(size)} {what} raised {one_line(exc)}") from exc


def _compare(
    context: Any,
    backbone: Any,
    got: Paths,
    truth: list[Any],
    taps: list[FeatureSpec],
    size: Size,
    how: str,
) -> None:
    """Each path's features against the reference's tensors (or their maps)."""
    maps = [CONVERSIONS[f.layout](t, f, size, how) for t, f in zip(truth, taps, strict=True)]
    for what, (features, as_maps) in got.items():
        wanted = maps if as_maps else truth
        if len(features) != len(wanted):
            raise CheckFailed(
                f"{what} returns {len(features)} features, the analysis recorded {len(wanted)}"
            )
        for i, (a, b) in enumerate(zip(features, wanted, strict=True)):
            if a is None or b is None:
                raise CheckFailed(f"feature {i} (`{_name(taps[i])}`) of {what} is missing")
            a, b = a.detach().float(), b.detach().float()
            if a.shape == b.shape and _close(a, b):
                continue
            why = _why(a, b, i, truth, wanted, taps, as_maps)
            shape = "" if a.shape == b.shape else f" (shape {tuple(a.shape)}, not {tuple(b.shape)})"
            raise CheckFailed(
                f"feature {i} (`{_name(taps[i])}`) of {what} differs from the model's own tensor "
                f"at {_hw(size)}{shape}: {why}" + _edited(context, backbone)
            )


def _close(a: Any, b: Any) -> bool:
    import torch

    finite = b[b.isfinite()]  # an infinite value must not make every difference small
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=True))


def _why(
    a: Any,
    b: Any,
    i: int,
    truth: list[Any],
    wanted: list[Any],
    taps: list[FeatureSpec],
    maps: bool,
) -> str:
    """What differs: a known mistake when one explains the values, else the largest difference."""
    f = taps[i]
    if a.shape == b.shape:
        diff = f"max |diff| {float((a - b).abs().max()):.3g}"
        if not a.any() and b.any():
            return f"{diff}; all zeros"
    else:
        diff = "another shape"
    if a.ndim >= 2 and a.transpose(-1, -2).shape == b.shape and _close(a.transpose(-1, -2), b):
        return f"{diff}; H and W swapped"
    if maps and f.layout == "NLC" and a.ndim == 4:
        t = truth[i].detach().float()
        batch, chans, (h, w) = t.shape[0], t.shape[2], a.shape[-2:]
        tokens = t[:, f.prefix_tokens :].transpose(1, 2)
        if tokens.shape[-1] == h * w:
            column = tokens.reshape(batch, chans, w, h).transpose(-1, -2)
            if _close(a, column):
                return f"{diff}; the tokens are placed column-major (down each column first)"
        n = f.prefix_tokens
        if n and t.shape[1] - n == h * w:
            last = t[:, :-n].transpose(1, 2).reshape(batch, chans, h, w)
            if _close(a, last):
                return (
                    f"{diff}; the last {n} patch token(s) are dropped instead of the {n} "
                    "class/register token(s)"
                )
    for j, other in enumerate(wanted):
        if j != i and other is not None and other.shape == a.shape and _close(a, other.float()):
            return f"{diff}; it is feature {j}'s tensor (`{_name(taps[j])}`)"
    return diff


def _gradients(context: Any, backbone: Any, got: Paths, taps: list[FeatureSpec], x: Any) -> None:
    """No feature of any path is cut off the graph (a backward per feature of each path would
    cost what a training step costs, per feature); and each feature of the path the benchmark
    trains (image_features=True, the factory's), summed alone, backpropagates a non-zero
    gradient to the input."""
    import torch

    for what, (features, _) in got.items():
        for i, feature in enumerate(features):
            where = f"feature {i} (`{_name(taps[i])}`) of {what}"
            if feature.grad_fn is None:  # detached (or made a leaf again)
                raise CheckFailed(
                    f"{where} carries no gradient (detached)" + _edited(context, backbone)
                )
            if what != TRAINED:
                continue
            grad = torch.autograd.grad(feature.float().sum(), x, retain_graph=True)[0]
            if not bool(grad.any()):
                raise CheckFailed(
                    f"{where} gives the input no gradient (all zeros)" + _edited(context, backbone)
                )


def _other_size(
    context: Any, reference: Any, taps: list[FeatureSpec], backbone: Any, how: str
) -> tuple[Size | None, str]:
    """Compare at a second, non-square size: one more cell of the coarsest reduction in height.
    A model that takes its size in its constructor is built for it (as the ``sizes`` check
    does; one whose size is a single number, at a square size then); one that runs at its
    analysed size only is said to."""
    import timm
    import torch

    spec = context.state.spec
    height, width = spec.img_size
    step = math.lcm(*(f.reduction for f in taps)) if taps else 1
    size = (height + step, width) if height + step != width else (height + 2 * step, width)
    built = ""
    try:
        truth = _truth(reference, backbone, spec, taps, context.example_input(size=size))
    except CheckFailed:
        raise
    except Exception as exc:
        arg = _size_parameter(context.name)
        if arg is None:
            return None, f" (the model does not run at {_hw(size)}: {one_line(exc)})"
        square = (height + step, width + step)
        tries = [(size, list(size))] + ([(square, square[0])] if height == width else [])
        for size, value in tries:
            built = f" (built with {arg}={value})"
            if size == square:  # a size of one number: no non-square size to compare at
                built = f" (built with {arg}={value}; not non-square: {one_line(exc)})"
            try:
                reference = plain_model(spec, context.in_chans, {arg: value})
                kwargs = context.channel_kwargs() | {arg: value}
                backbone = timm.create_model(context.name, **kwargs).eval()
                spread(backbone)  # as the analysed size's (this one is the check's own)
                truth = _truth(reference, backbone, spec, taps, context.example_input(size=size))
                break
            except CheckFailed:
                raise
            except Exception as again:
                exc = again
        else:
            return None, f" (not at {_hw(size)}, even {built.strip(' ()')}: {one_line(exc)})"
    with _settings(backbone, how), torch.no_grad():
        got = _paths(backbone, context.example_input(size=size), size, prepare=False)
    _compare(context, backbone, got, truth, taps, size, how)
    return size, built


# -- findings ------------------------------------------------------------------------------
def _name(f: FeatureSpec) -> str:
    """The feature's module as feature_info names it (`model.` + the person's module)."""
    return f"model.{f.module}" if f.source in ("hook", "input") else f"output {f.key!r}"


def _edited(context: Any, backbone: Any) -> str:
    """What a finding adds when backbone.py was changed by hand: the returned FEATURES entries
    whose tap differs from the analysis's, with the command that records them, or that the file
    was edited."""
    changed = _changed_taps(context, backbone)
    if changed:
        return changed
    edited = _hand_edited(context)
    if edited:
        return f"; {edited} differs from the file scaffold generated: a hand edit changed this"
    return ""


def _changed_taps(context: Any, backbone: Any) -> str:
    """The returned FEATURES entries of backbone.py whose tap differs from the analysis's, with
    the command that records them ("" when none does)."""
    spec = context.state.spec
    features = getattr(sys.modules.get(type(backbone).__module__), "FEATURES", None)
    changed = []
    if isinstance(features, list) and len(features) == len(spec.features):
        for i in backbone.out_indices:
            f, entry = spec.features[i], features[i]
            recorded = {"module": _name(f) if f.source != "output" else f.module}
            recorded |= {"source": f.source, "call": f.call} if f.source != "output" else {}
            for key, value in recorded.items():
                if isinstance(entry, dict) and entry.get(key, value) != value:
                    changed.append(
                        f"FEATURES[{i}] {key} `{entry.get(key)}`, the analysis recorded `{value}`"
                    )
    elif isinstance(features, list):
        changed.append(f"{len(features)} features, the analysis recorded {len(spec.features)}")
    if changed and isinstance(features, list):
        taps = ",".join(
            str(features[i].get("module", "?")).removeprefix("model.") for i in backbone.out_indices
        )
        return (
            f"; FEATURES in backbone.py was changed by hand ({'; '.join(changed)}): if this "
            f"change is deliberate, record the new taps: `scaffold update {context.directory} "
            f"--taps {taps}`"
        )
    return ""


def _hand_edited(context: Any) -> str | None:
    """The first of backbone.py and the runtime's copy (relative to the package) that differs
    from the file scaffold generated."""
    package = context.directory / context.name
    runtime = sorted(p.relative_to(package).as_posix() for p in package.glob("_runtime/*.py"))
    name: str
    for name in ("backbone.py", *runtime):
        if _differs(context, f"{context.name}/{name}"):
            return name
    return None


def _differs(context: Any, rel: str) -> bool:
    try:
        base = read_pristine(context.directory, context.state, rel)
        return base is not None and (context.directory / rel).read_bytes() != base
    except Exception:  # an unreadable base: the finding stands without this note
        return False


def _hw(size: Size) -> str:
    return f"{size[0]}x{size[1]}"
