"""What the analysis is unsure of: evidence too weak to call a backbone verified.

Each rule returns `Doubt`s (kind, what was seen, the flag that settles it); the ladder's
``doubts`` check fails on any, so such a backbone is "generated, not verified". The rules:

- ``single-tap``: one feature map only, in a model that runs at least DEEP_LAYERS layers with
  weights: no second level was found, so nothing shows where the encoder's stages are.
- ``head-larger``: the modules after the last tap hold more parameters in layers that still work
  on maps (at the last tap's reduction or coarser) than the encoder does: the encoder seems to go
  on past the last tap. A classifier is no doubt however large: layers that read or make a
  per-sample vector (a linear on pooled or flattened features, timm VGG's 7x7 conv to one cell)
  add no feature map; nor is a decoder (maps finer than the last tap, a UNet's).
- ``declared-features``: the model declares its own features (``feature_info``, else
  ``forward_intermediates``; ``get_intermediate_layers``; an ``out_indices`` or ``return_layers``
  constructor parameter) and they disagree with the taps.
- ``input-not-fed`` (rule 12): a declared input is never fed: a constructor list of modality
  names (the image's dict key among them, or names that modules which never run carry) beyond
  what the forward is given; or, while modules with weights never run, a dict key the forward
  looks up that is not there, or a forward parameter that takes a tensor, defaults to None and is
  not given.

A person's ``--taps`` settles the first three: the person chose the features.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from scaffold.analyse.trace import Call, Trace
from scaffold.grid import TokenFrames, classify
from scaffold.spec import Doubt, FeatureSpec, ForwardCall

DEEP_LAYERS = 8  # layers with weights that make a model "deep" for the single-tap rule
SETTLE_TAPS = "--taps MODULE[,MODULE...]"


def _calls(call: Call) -> list[Call]:
    found = [call]
    for child in call.children:
        found += _calls(child)
    return found


def _level(f: FeatureSpec) -> str:
    return f"{f.num_chs} at {f.reduction}"


def _levels(pairs: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{c} at {r}" for c, r in pairs)


NARROWS = 4  # a last layer that divides the channels by this much or more reads as a classifier


def narrowing_end_doubt(
    trace: Trace, features: Sequence[FeatureSpec], out_indices: Sequence[int]
) -> list[Doubt]:
    """``head-like``: the last feature is the output of one layer with weights that narrows the
    channels by NARROWS or more and whose output is what the model returns (a 1x1 conv to the
    classes at the last stage's resolution): a classifier, not the encoder's last map."""
    if not out_indices or trace.model is None or trace.root.returned_id is None:
        return []
    last = features[out_indices[-1]]
    if last.source != "hook" or last.key is not None:
        return []
    calls = [c for c in _calls(trace.root) if c.name == last.module and c.call == last.call]
    if not calls or calls[0].output_id != trace.root.returned_id or not calls[0].inputs:
        return []
    call = calls[0]
    module = trace.model.get_submodule(call.name)
    if not any(True for _ in module.parameters(recurse=True)):
        return []
    read, shape = call.inputs[0][1], call.shape or ()
    if len(read) < 2 or len(shape) < 2 or read[1] < NARROWS * shape[1]:
        return []
    before = [features[i].module for i in out_indices[:-1]]
    return [
        Doubt(
            "head-like",
            f"the last feature `{last.module}` is one layer that narrows {read[1]} channels to "
            f"{shape[1]} and is what the model returns: a classifier rather than the "
            "encoder's last map (which is what enters it)",
            "--taps " + ",".join([*before, f"input of {last.module}"]),
        )
    ]


def tap_doubts(
    trace: Trace,
    features: Sequence[FeatureSpec],
    out_indices: Sequence[int],
    head: Sequence[str],
    full_shape: tuple[int, ...],
    frames: TokenFrames | None = None,
) -> list[Doubt]:
    """``single-tap`` and ``head-larger`` (see the module's docstring)."""
    from scaffold.analyse.walk import Flow

    model = trace.model
    calls = _calls(trace.root)[1:]
    weighted = [c for c in calls if c.is_leaf and c.weighted]
    doubts: list[Doubt] = []
    if len(features) == 1 and len(weighted) >= DEEP_LAYERS:
        f = features[0]
        doubts.append(
            Doubt(
                "single-tap",
                f"one feature map only ({f.module}, {_level(f)}) in a model that runs "
                f"{len(weighted)} layers with weights: no other level was found to tap",
                SETTLE_TAPS,
            )
        )
    if model is None or not head or not out_indices:
        return doubts
    last = max(features[i].reduction for i in out_indices)
    flow = Flow(trace.root, full_shape, frames=frames)
    modules = dict(model.named_modules())

    def own(name: str) -> int:
        return sum(p.numel() for p in modules[name].parameters(recurse=False))

    def under(name: str, tops: Sequence[str]) -> bool:
        return any(name == t or name.startswith(t + ".") for t in tops)

    on_maps: set[str] = set()
    for c in weighted:
        if not under(c.name, head) or c.name not in modules:
            continue
        if flow.vector(c.in_shape) or flow.vector(c.shape):
            continue  # a classifier: reads or makes a per-sample vector
        place = flow.place(c.shape)
        if place is not None and place.reduction < last:
            continue  # a decoder: finer maps than the last tap
        on_maps.add(c.name)
    ran = {"", *(c.name for c in calls)}  # the model's own parameters (a ViT's pos_embed) too
    encoder = sum(own(n) for n in modules if n in ran and not under(n, head))
    head_params = sum(own(n) for n in on_maps)
    if head_params > encoder:
        doubts.append(
            Doubt(
                "head-larger",
                f"the modules after the last tap ({', '.join(head[:4])}) hold {head_params:,} "
                f"parameters in layers that still work on maps ({', '.join(sorted(on_maps)[:3])}"
                f"{', ...' if len(on_maps) > 3 else ''}), more than the encoder's {encoder:,}: "
                "the encoder may go on past the last tap",
                SETTLE_TAPS,
            )
        )
    return doubts


# -- the model's own declaration -------------------------------------------------------------
def agrees(ours: Sequence[tuple[int, int]], theirs: Sequence[tuple[int, int]]) -> bool:
    """Equal, or equal after extra levels at the start that are finer than the declared first
    (a stem the declaration leaves out)."""
    ours, theirs = list(ours), list(theirs)
    if ours == theirs:
        return True
    extra = len(ours) - len(theirs)
    if extra <= 0 or not theirs or ours[extra:] != theirs:
        return False
    return all(r < theirs[0][1] for _, r in ours[:extra])


def declared_doubts(
    trace: Trace,
    features: Sequence[FeatureSpec],
    full_shape: tuple[int, ...],
    forward_call: ForwardCall,
    constructor_args: dict[str, Any],
) -> list[Doubt]:
    """``declared-features``: the model's own declaration of its features against the taps."""
    model = trace.model
    if model is None:
        return []
    ours = [(f.num_chs, f.reduction) for f in features]
    ran = {c.name for c in _calls(trace.root)}
    taps = ", ".join(f"{f.module} ({_level(f)})" for f in features)

    def doubt(what: str, modules: Sequence[str] = ()) -> Doubt:
        usable = [m for m in modules if m and m in ran]
        flag = f"--taps {','.join(usable)}" if usable and len(usable) == len(modules) else ""
        return Doubt(
            "declared-features",
            f"{what}; scaffold taps {taps}",
            flag or SETTLE_TAPS,
        )

    found: list[Doubt] = []
    declared = _feature_info(getattr(model, "feature_info", None))
    if declared is not None:
        theirs = [(c, r) for _, c, r in declared]
        # The same modules with the same channels: a reduction that differs is the declaration's
        # (written for another patch size, say); the tensors measured are the model's.
        same = [m for m, _, _ in declared] == [f.module for f in features] and [
            c for c, _ in theirs
        ] == [c for c, _ in ours]
        if not same and not agrees(ours, theirs):
            listed = ", ".join(f"{m or '(the model)'} ({c} at {r})" for m, c, r in declared)
            modules = [m for m, _, _ in declared]
            found.append(doubt(f"the model's feature_info declares {listed}", modules))
    elif forward_call.plain:
        for method, whole in (("forward_intermediates", True), ("get_intermediate_layers", False)):
            maps = _declared_maps(model, method, full_shape, trace.device)
            if not maps:
                continue
            if (whole and not agrees(ours, maps)) or (not whole and not set(maps) <= set(ours)):
                found.append(doubt(f"the model's {method} gives {_levels(maps)}"))
                break
    for name, value in constructor_args.items():
        if name == "out_indices" and _ints(value) and len(value) > len(features):
            found.append(doubt(f"the model declares {len(value)} levels ({name}={list(value)})"))
        if name == "return_layers" and isinstance(value, dict) and value:
            names = [str(k) for k in value]
            if not set(names) <= {f.module for f in features}:
                found.append(doubt(f"the model returns the layers {', '.join(names)}", names))
    return found


def _ints(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _feature_info(info: Any) -> list[tuple[str, int, int]] | None:
    """(module, num_chs, reduction) of a feature_info (a list of dicts, or timm's FeatureInfo
    whose items are such dicts); None when there is none that reads so."""
    if info is None or isinstance(info, (str, bytes)):
        return None
    items = getattr(info, "info", info)
    try:
        found = [(str(i.get("module", "")), int(i["num_chs"]), int(i["reduction"])) for i in items]
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return found or None


def _declared_maps(
    model: Any, method: str, full_shape: tuple[int, ...], device: str
) -> list[tuple[int, int]]:
    """(num_chs, reduction) of the maps the model's own `method` returns on an input of
    `full_shape` ([] when it has none, raises, or returns no map)."""
    import torch

    fn = getattr(model, method, None)
    if not callable(fn):
        return []
    kwargs: dict[str, Any] = {}
    try:
        if "intermediates_only" in inspect.signature(fn).parameters:
            kwargs["intermediates_only"] = True
    except (TypeError, ValueError):
        pass
    try:
        with torch.no_grad():
            out = fn(torch.randn(*full_shape, device=device), **kwargs)
    except Exception:
        return []
    if isinstance(out, torch.Tensor):
        out = [out]
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list):
        out = out[1]  # (final features, intermediates)
    maps = []
    for item in out if isinstance(out, (list, tuple)) else []:
        place = classify(tuple(item.shape), full_shape) if isinstance(item, torch.Tensor) else None
        if place is not None and sum(d > 1 for d in item.shape[1:]) > 1:
            maps.append((place.num_chs, place.reduction))
    return maps


# -- rule 12: declared inputs that are never fed ---------------------------------------------
def unreached(trace: Trace, shape: tuple[int, ...]) -> list[str]:
    """The top-most modules with weights (of their own, or inside them) that never run and
    whose weights no operation of the forward reads (an attention may call ``F.linear`` on its
    ``qkv`` layer's weight without calling the layer), on an input of `shape` (batch included)."""
    model = trace.model
    if model is None:
        return []
    ran = {c.name for c in _calls(trace.root)}
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or name in ran or any(name.startswith(f + ".") for f in found):
            continue
        if any(r.startswith(name + ".") for r in ran):
            continue  # a container whose parts ran
        if any(p.ndim >= 2 for p in module.parameters()):
            found.append(name)
    if not found:
        return []
    read = _weights_read(trace, shape)
    modules = dict(model.named_modules())
    return [n for n in found if not any(id(p) in read for p in modules[n].parameters())]


def _weights_read(trace: Trace, shape: tuple[int, ...]) -> set[int]:
    """The ids of the parameters that the operations of one forward read."""
    import torch
    from torch.overrides import TorchFunctionMode

    read: set[int] = set()

    def note(value: Any) -> None:
        if isinstance(value, torch.nn.Parameter):
            read.add(id(value))
        elif isinstance(value, (list, tuple)):
            for item in value:
                note(item)
        elif isinstance(value, dict):
            for item in value.values():
                note(item)

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            note(args)
            note(kwargs or {})
            return func(*args, **(kwargs or {}))

    model = trace.model
    assert model is not None
    x = torch.randn(*shape, device=trace.device)
    try:
        with torch.no_grad(), Reads():
            trace.call(model, x) if trace.call is not None else model(x)
    except Exception:
        pass  # the reads up to there count
    return read


def input_doubts(
    trace: Trace,
    forward_call: ForwardCall,
    constructor: dict[str, Any],
    shape: tuple[int, ...],
    asked: Sequence[str] = (),
) -> list[Doubt]:
    """``input-not-fed``: the inputs the model declares that the traced forward never got, on an
    input of `shape` (batch included).

    `constructor`: the constructor's arguments with their defaults (a list of names chooses the
    inputs, ``modalities=["S2L2A", "S1GRD"]``); `asked`: the keys the forward looked up in its
    dict argument that were not there."""
    model = trace.model
    if model is None:
        return []
    idle = unreached(trace, shape)
    image_param, _, image_key = forward_call.image.partition(".")
    fed_keys = (
        {image_key}
        | {k.partition(".")[2] for k in forward_call.args if k.startswith(image_param + ".")}
        | {m for m, _ in forward_call.modalities}
    )
    idle_text = f"; {', '.join(idle[:4])} never run{'s' if len(idle) == 1 else ''}" if idle else ""
    doubts: list[Doubt] = []
    said: set[str] = set()
    for param, value in constructor.items():
        if not (isinstance(value, (list, tuple)) and len(value) > 1):
            continue
        if not all(isinstance(v, str) for v in value):
            continue
        if image_key and image_key in value:  # the dict's keys are these names
            unfed = [v for v in value if v not in fed_keys]
        else:  # names that the modules which never run carry (embed.S1GRD, sar_encoder)
            unfed = [v for v in value if any(v.lower() in n.lower() for n in idle)]
        fed = [v for v in value if v not in unfed]
        if not unfed or not fed:
            continue
        said |= set(unfed)
        where = f"{image_param}[{image_key!r}]" if image_key else "the image"
        # the dict's keys: naming each one's bands feeds them all
        feed = (
            "; or name each one's bands to feed them all, --bands '"
            + ";".join(f"{v}=..." for v in value)
            + "'"
            if image_key
            else ""
        )
        doubts.append(
            Doubt(
                "input-not-fed",
                f"the model declares {param}={list(value)} but only {where} is fed "
                f"({', '.join(unfed)} never is{idle_text}){feed}",
                f"--arg {param}={fed}",
            )
        )
    missing = [k for k in asked if k not in said]
    if missing and idle:
        doubts.append(
            Doubt(
                "input-not-fed",
                f"the forward looks up {', '.join(repr(k) for k in missing)} in "
                f"{image_param}, which are never fed ({idle_text[2:]})",
            )
        )
    image, params = _tensor_params(model, forward_call)
    alternative = _fed_the_image(model, idle, image)
    for p in params if idle and not alternative else ():
        doubts.append(
            Doubt(
                "input-not-fed",
                f"the forward's input {p} is never fed (the image goes to {image}{idle_text})",
                "" if "." in forward_call.image else f"--bands '{image}=...;{p}=...'",
            )
        )
    return doubts


def _fed_the_image(model: Any, idle: Sequence[str], image: str) -> bool:
    """Every call of a module that never runs, in the model class's source, also passes the image
    (``self.embed_other(x, language_embed=...)``): those modules are another path for the same
    image (another input mode), not the modules of an input that is never fed."""
    import ast
    import textwrap

    tops = {name.split(".")[0] for name in idle}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(type(model))))
    except (OSError, TypeError, SyntaxError):
        return False
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
        and node.func.attr in tops
    ]

    def passes_image(call: ast.Call) -> bool:
        values = [*call.args, *(k.value for k in call.keywords)]
        return any(isinstance(v, ast.Name) and v.id == image for v in values)

    return bool(calls) and all(passes_image(c) for c in calls)


def _tensor_params(model: Any, forward_call: ForwardCall) -> tuple[str, list[str]]:
    """The image's parameter, and the forward parameters other than it that take a tensor
    (annotated so, or not annotated), default to None and are not given."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return forward_call.image, []
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    image_param = forward_call.image.partition(".")[0]
    if forward_call.plain and named:  # model(x): the first parameter takes the image
        image_param = named[0].name
    given = {k.partition(".")[0] for k in forward_call.args}
    found = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in given:
            continue
        if p.name == image_param or p.default is not None:
            continue
        note = p.annotation
        text = note if isinstance(note, str) else getattr(note, "__name__", str(note))
        if note is p.empty or "Tensor" in str(text) or "Tensor" in str(note):
            found.append(p.name)
    return image_param, found


class _Asking(dict):
    """A dict that records the keys looked up in it that it does not hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[str] = []

    def _note(self, key: Any) -> None:
        if key not in dict.keys(self) and key not in self.asked:
            self.asked.append(key)

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key: Any) -> bool:
        self._note(key)
        return super().__contains__(key)


def asked_keys(trace: Trace, forward_call: ForwardCall, shape: tuple[int, ...]) -> list[str]:
    """The keys the forward looks up in the dict that holds the image and does not find there
    ([] when the image is not an item of a dict, or the call raises)."""
    import torch

    from scaffold.analyse.call import CallPlan, forward_inputs

    model = trace.model
    if model is None or "." not in forward_call.image:
        return []
    plan = CallPlan(
        forward_call.image,
        forward_call.image_positional,
        dict(forward_call.args),
        modalities=forward_call.modalities,
    )
    x = torch.randn(*shape, device=trace.device)
    args, kwargs = forward_inputs(plan, dict(forward_call.forms), x)
    param = forward_call.image.partition(".")[0]
    asking = _Asking(args.pop(0) if forward_call.image_positional else kwargs.pop(param))
    if forward_call.image_positional:
        args.insert(0, asking)
    else:
        kwargs[param] = asking
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception:
        pass  # the keys asked up to there count
    return [str(k) for k in asking.asked]
