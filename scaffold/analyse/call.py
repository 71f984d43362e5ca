"""How the model's forward is called: where the image goes, the other arguments, and their forms.

Foundation models rarely have ``forward(x)``: one wants the wavelengths of the bands, another a
dict with the image and per-band ids, another a named modality, an MAE a mask ratio. The person names
the arguments (``--forward-arg NAME=VALUE``, ``PARAM.KEY=VALUE`` for an item of a dict parameter)
and where the image goes (``--image-arg NAME`` or ``PARAM.KEY``; default the first parameter).

The form each argument takes is found by trying the value as given, as a tensor, as a tensor
repeated over the batch. Where the combinations are few (MAX_COMBINATIONS) all are tried, fewest
changed forms first, whatever the order of the flags; else each argument's form is searched on
its own, the others held: the form with which the forward gets furthest (counted in torch calls
before it raises) is kept, until the forward runs. When none runs, the arguments whose form
changes the failure without getting past it are named as the ones that could not be placed.

A temporal model may take its series as (B, T, C, H, W): the image is then passed with its time
and channel axes swapped (`layout`, see scaffold.analyse.frames). An argument that holds one value
per frame (a list as long as the frames, not as the bands: day of year) is per-frame: at another
frame count it is resampled to that many frames.

Masking and randomness: a forward parameter whose name says mask and whose default is a ratio
above 0 (``mask_ratio=0.75``) is set to 0 unless the person gave it. A forward that still draws
random numbers in eval mode (an MAE shuffles its tokens even when it keeps them all) is called
with *fixed noise*: every continuous random draw returns an increasing ramp, so a shuffle by
``argsort(noise)`` keeps the grid order and the features are the same on every call.

The spec records all this in ``BackboneSpec.forward_call``, a `ForwardCall` (its JSON is ``{}``
for ``model(x)``):

- ``image``: the parameter (or ``param.key``) that receives the image;
- ``image_positional``: the image is passed as the first positional argument;
- ``args``: ``{name or param.key: value}``, the other arguments, YAML values;
- ``forms``: ``{name or param.key: "value" | "tensor" | "batched"}``;
- ``per_band``: the arguments that hold one value per input band;
- ``fixed_noise``: random draws return a fixed ramp during the forward;
- ``per_frame``: the arguments that hold one value per input frame.
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from scaffold.errors import ScaffoldError, one_line
from scaffold.runtime.inputs import (
    RAMPED,
    RAMPED_IN_PLACE,
    Images,
    ramp_like,
    resample_frames,
    split_modalities,
)
from scaffold.runtime.inputs import forward_inputs as runtime_forward_inputs
from scaffold.spec import ArgForm, ForwardCall

if TYPE_CHECKING:
    from scaffold.analyse.trace import Trace

FORMS: tuple[ArgForm, ...] = ("value", "tensor", "batched")
SEEDS = (1, 2)  # random states of the two calls compared for determinism
MAX_COMBINATIONS = 27  # forms tried per call (3 arguments that may each take 3 forms)
# A forward parameter that switches masking: "mask" in its name, a ratio above 0 as default.
MASK_NAME = re.compile(r"mask", re.IGNORECASE)

# Functions that draw random numbers, by their torch name.
RANDOM_FUNCTIONS = frozenset(
    {
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
        "bernoulli",
        "bernoulli_",
        "multinomial",
        "normal",
        "normal_",
        "uniform_",
        "random_",
        "exponential_",
        "geometric_",
        "cauchy_",
        "log_normal_",
        "poisson",
    }
)
# The draws fixed noise replaces (continuous noise and permutations: what token shuffles use)
# are the runtime's RAMPED and RAMPED_IN_PLACE: the generated backbone fixes the same ones.


# -- the plan: which argument gets what -------------------------------------------------------
@dataclass
class CallPlan:
    image: str  # parameter, or "param.key"
    image_positional: bool
    args: dict[str, Any]  # name or "param.key" -> value
    per_band: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    per_frame: tuple[str, ...] = ()
    # ((name, channels), ...): the image is these modalities stacked along its channels
    modalities: tuple[tuple[str, int], ...] = ()

    @property
    def trivial(self) -> bool:
        return (
            self.image_positional
            and "." not in self.image
            and not self.args
            and not self.modalities
        )


def plan_call(
    model: nn.Module,
    forward_args: dict[str, Any],
    image_arg: str | None,
    in_chans: int,
    frames: int | None = None,
    modalities: tuple[tuple[str, int], ...] = (),
) -> CallPlan:
    """Check the options against the forward's signature; switch masking off. `frames`: the
    frames of a temporal input the arguments were given for (a list that long is per-frame).
    `modalities`: the model's inputs by name with their channels (the image is them stacked):
    the image's place names one of them, and the others go beside it (items of its dict, or
    parameters of their own)."""
    owner = f"{type(model).__name__}.forward"
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    by_name = {p.name: p for p in named}
    takes = ", ".join(p.name for p in named) or "nothing"

    def known(key: str, what: str) -> None:
        param = key.split(".")[0]
        if param not in by_name and not takes_kwargs:
            raise ScaffoldError(
                f"{what} {key}: {owner} has no parameter {param} (it takes: {takes})"
            )

    if image_arg is None:
        if not named:
            if modalities:
                raise ScaffoldError(
                    f"{owner} takes no named parameters: pass --image-arg with the place of "
                    f"{modalities[0][0]} (NAME, or PARAM.{modalities[0][0]} in a dict)"
                )
            if forward_args:
                raise ScaffoldError(f"{owner} takes no named parameters; pass --image-arg NAME")
            return CallPlan(image="x", image_positional=True, args={})
        image_arg = named[0].name
        if modalities and image_arg not in {m for m, _ in modalities}:
            # the modalities are parameters of their own, or items of the first one's dict
            own = all(m in by_name for m, _ in modalities)
            image_arg = modalities[0][0] if own else f"{image_arg}.{modalities[0][0]}"
    known(image_arg, "--image-arg")
    image_param = image_arg.split(".")[0]
    _check_modalities(image_arg, modalities, known, set(by_name) - {image_param})

    args: dict[str, Any] = {}
    for key, value in forward_args.items():
        known(key, "--forward-arg")
        if key == image_arg:
            raise ScaffoldError(f"--forward-arg {key}: that parameter receives the image")
        if key == image_param:
            if "." not in image_arg or not isinstance(value, dict):
                raise ScaffoldError(
                    f"--forward-arg {key}: that parameter receives the image (as {image_arg}); "
                    f"give its other items as {key}.KEY=VALUE"
                )
            args.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            args[key] = value
    for key in args:
        param = key.split(".")[0]
        if "." in key and param in args:
            raise ScaffoldError(f"--forward-arg {key}: {param} is given whole too")

    notes: list[str] = []
    fed = {image_param} | ({m for m, _ in modalities} if "." not in image_arg else set())
    for p in named:
        if p.name in fed or p.name in args or any(k.startswith(p.name + ".") for k in args):
            continue
        if p.default is p.empty:
            if p.kind is p.POSITIONAL_ONLY:
                raise ScaffoldError(f"{owner} needs the positional parameter {p.name}")
            raise ScaffoldError(
                f"{owner} needs {p.name}, which has no default: "
                f"pass --forward-arg {p.name}=VALUE (VALUE is YAML)"
            )
        default = p.default
        if (
            MASK_NAME.search(p.name)
            and isinstance(default, (int, float))
            and not isinstance(default, bool)
            and 0 < default <= 1
        ):
            args[p.name] = 0.0
            notes.append(
                f"masking off: forward argument {p.name}=0.0 (its default {default} drops "
                "tokens at random); the generated backbone passes it on every call"
            )
    first = named[0] if named else None
    positional = (
        first is not None
        and first.name == image_param
        and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
    )
    per_frame = tuple(k for k, v in args.items() if _per_frame(v, frames, in_chans))
    per_band = tuple(k for k, v in args.items() if k not in per_frame and _per_band(v, in_chans))
    return CallPlan(image_arg, positional, args, per_band, notes, per_frame, modalities)


def _check_modalities(
    image_arg: str,
    modalities: tuple[tuple[str, int], ...],
    known: Callable[[str, str], None],
    others: set[str],
) -> None:
    """The image's place must be one of the modalities' (``x.S2`` or ``s2``); each other
    modality then goes to the same dict parameter, or to a parameter of its own name. A
    modality named as another parameter (`others`) while the image goes into a dict is a
    ScaffoldError: both places cannot be served."""
    if not modalities:
        return
    param, _, item = image_arg.partition(".")
    names = [m for m, _ in modalities]
    apart = [m for m in names if item and m in others]
    if apart:
        raise ScaffoldError(
            f"--bands names {', '.join(apart)}, a parameter of the forward of its own, while "
            f"the image goes into {param}'s dict ({image_arg}): the modalities go all into one "
            "dict or all to parameters of their names"
        )
    if (item or param) not in names:
        where = f"{param}.{names[0]}" if item else names[0]
        raise ScaffoldError(
            f"--bands names the modalities {', '.join(names)}; the image goes to {image_arg}, "
            f"which is none of them: pass --image-arg {where}"
        )
    if not item:
        for name in names:
            known(name, "--bands modality")


def per_band_shapes(
    shapes: tuple[tuple[int, ...], ...],
    forward_args: dict[str, Any],
    first_layer_chans: int | None = None,
    frames: int | None = None,
) -> tuple[tuple[int, ...], ...]:
    """For a model without a channel parameter: forward arguments that list numbers (one per
    band, such as wavelengths) give the channel count, tried before the guessed one. Whatever
    the order of the flags: the count the model's first layer reads (`first_layer_chans`) when
    a list has that length, else the length most lists agree on (the longest of a tie: a
    4-item metadata list beside 13 wavelengths and 13 bandwidths does not count the bands).
    A list as long as the `frames` of a temporal input (day of year) is per-frame: it counts
    no bands."""
    counts = [
        len(v)
        for v in forward_args.values()
        if isinstance(v, list)
        and len(v) > 1
        and len(v) != frames
        and all(isinstance(i, (int, float)) for i in v)
    ]
    if not counts:
        return shapes
    if first_layer_chans in counts:
        chans = first_layer_chans
    else:
        chans = max(set(counts), key=lambda n: (counts.count(n), n))
    widened = tuple((chans, *shape[1:]) for shape in shapes if shape[0] != chans)
    return widened + shapes


def _per_band(value: Any, in_chans: int) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == in_chans
        and in_chans > 1
        and all(isinstance(v, (int, float, list, tuple)) for v in value)
    )


def _per_frame(value: Any, frames: int | None, in_chans: int) -> bool:
    """A list as long as the input's frames (and not as its bands): one value per frame."""
    return (
        frames is not None
        and frames != in_chans
        and isinstance(value, (list, tuple))
        and len(value) == frames
        and all(isinstance(v, (int, float, list, tuple)) for v in value)
    )


def form_options(plan: CallPlan) -> dict[str, tuple[ArgForm, ...]]:
    """The forms each argument may take; None, strings, booleans and dicts stay as given."""
    return {k: ("value",) if _only_as_given(v) else FORMS for k, v in plan.args.items()}


def form_choices(plan: CallPlan) -> Iterator[dict[str, ArgForm]]:
    """Every combination of forms, the fewest changed from "as given" first (the order of the
    arguments decides nothing but ties)."""
    options = form_options(plan)
    combos = sorted(
        itertools.product(*options.values()), key=lambda c: sum(f != "value" for f in c)
    )
    for combo in combos:
        yield dict(zip(options, combo, strict=True))


def _only_as_given(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, dict)):
        return True
    try:
        torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return True
    return False


# -- calling ------------------------------------------------------------------------------------
def forward_inputs(
    plan: CallPlan, forms: dict[str, ArgForm], x: Images
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of one forward call on the image `x` (the runtime's
    own plumbing: the generated backbone calls the model the same way; a tensor holding several
    modalities is split into them first)."""
    images = split_modalities(x, plan.modalities)
    return runtime_forward_inputs(images, plan.image, plan.image_positional, plan.args, forms)


class RandomDraws(TorchFunctionMode):
    """Count the random draws made while active; with `fixed`, continuous draws and permutations
    return an increasing ramp along their last dimension (``argsort`` of it is the identity)."""

    def __init__(self, fixed: bool = False) -> None:
        super().__init__()
        self.fixed = fixed
        self.draws: dict[str, int] = {}
        self.calls = 0  # torch functions called: how far a forward got

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        out = func(*args, **kwargs)
        self.calls += 1
        if name in RANDOM_FUNCTIONS:
            self.draws[name] = self.draws.get(name, 0) + 1
            if self.fixed and isinstance(out, torch.Tensor):
                if name in RAMPED:
                    return ramp_like(out)
                if name in RAMPED_IN_PLACE:
                    with torch.no_grad():
                        out.copy_(ramp_like(out))
        return out


@dataclass
class Invoker:
    """Calls a model on an image as the plan and `forms` say; counts the random draws. A
    "BTCHW" `layout`: the (B, C, T, H, W) image is passed with time before channels."""

    plan: CallPlan
    forms: dict[str, ArgForm]
    fixed_noise: bool = False
    draws: dict[str, int] = field(default_factory=dict)
    layout: str = "BCTHW"
    reached: int = 0  # torch functions the last call ran (how far it got when it raised)

    def __call__(self, model: nn.Module, x: torch.Tensor) -> Any:
        images = split_modalities(x, self.plan.modalities)
        if self.layout == "BTCHW":
            images = _time_first(images)
        args, kwargs = forward_inputs(self.plan, self.forms, images)
        mode = RandomDraws(self.fixed_noise)
        try:
            with mode:
                output = model(*args, **kwargs)
        finally:
            self.reached = mode.calls
        for name, count in mode.draws.items():
            self.draws[name] = self.draws.get(name, 0) + count
        return output


def _time_first(images: Images) -> Images:
    """(B, C, T, H, W) -> (B, T, C, H, W), each image of a dict alike."""
    if isinstance(images, torch.Tensor):
        return images.transpose(1, 2) if images.ndim == 5 else images
    return {k: v.transpose(1, 2) if v.ndim == 5 else v for k, v in images.items()}


class ArgumentsUnplaced(Exception):
    """No form of the forward arguments `names` lets the forward run (raised from its error:
    the one of the form that got furthest)."""

    def __init__(self, names: list[str], cause: BaseException) -> None:
        super().__init__(
            f"the forward argument {', '.join(names)} could not be placed in any form (as "
            f"given, as a tensor, as a tensor repeated over the batch): check its value; the "
            f"forward raised {one_line(cause)}"
        )
        self.names = names


@dataclass
class _Attempt:
    invoker: Invoker
    output: torch.Tensor | None
    error: Exception | None
    reached: int


def resolve_invoker(
    model: nn.Module, plan: CallPlan, x: torch.Tensor, layout: str = "BCTHW"
) -> tuple[Invoker, torch.Tensor | None]:
    """A combination of forms the forward accepts (eval mode, no grad), and the first tensor of
    that call's output. All combinations where they are few, else each argument's form on its
    own (see the module's doc). When none runs: ArgumentsUnplaced naming the arguments that
    could not be placed, or the forward's own error when no argument's form changes it."""
    from scaffold.runtime.inputs import first_tensor

    model.eval()
    options = form_options(plan)
    tried: dict[tuple[str, ...], _Attempt] = {}

    def attempt(forms: dict[str, ArgForm]) -> _Attempt:
        key = tuple(forms.values())
        if key not in tried:
            invoker = Invoker(plan, forms, layout=layout)
            try:
                torch.manual_seed(SEEDS[0])
                with torch.no_grad():
                    output = first_tensor(invoker(model, x))
                tried[key] = _Attempt(invoker, output, None, invoker.reached)
            except Exception as exc:
                tried[key] = _Attempt(invoker, None, exc, invoker.reached)
        return tried[key]

    if math.prod(len(o) for o in options.values()) <= MAX_COMBINATIONS:
        for forms in form_choices(plan):
            if (done := attempt(forms)).error is None:
                return done.invoker, done.output
        best = max(tried.values(), key=lambda a: a.reached)  # the first that got furthest
    else:
        best = attempt({k: "value" for k in options})
        for _ in options:  # a pass per argument at most: each pass places one more
            improved = False
            for key, choices in options.items():
                for form in choices:
                    trial = attempt({**best.invoker.forms, key: form})
                    if trial.error is None:
                        return trial.invoker, trial.output
                    if trial.reached > best.reached:
                        best, improved = trial, True
            if not improved:
                break
    assert best.error is not None
    unplaced, telling = _unplaced(options, best, attempt)
    if unplaced:
        raise ArgumentsUnplaced(unplaced, telling) from telling
    raise best.error


def _unplaced(
    options: dict[str, tuple[ArgForm, ...]], best: _Attempt, attempt
) -> tuple[list[str], Exception]:
    """The arguments at the failure of `best`: every other form of theirs fails no earlier but
    otherwise (another error), so the forward reads them there and no form fits. An argument
    whose other forms fail earlier is placed (read before, rightly); one whose forms change
    nothing is not read yet. Also the error of their form that got furthest (the last form of
    a tie: a tensor says more of a wrong length than a list does)."""
    found, telling = [], best
    for key, forms in options.items():
        others = [
            attempt({**best.invoker.forms, key: f}) for f in forms if f != best.invoker.forms[key]
        ]
        if (
            others
            and all(o.error is not None and o.reached >= best.reached for o in others)
            and any(o.reached != best.reached or str(o.error) != str(best.error) for o in others)
        ):
            found.append(key)
            telling = max([telling, *others][::-1], key=lambda a: a.reached)
    assert telling.error is not None
    return found, telling.error


def trace_called(
    obj: Any,
    args: dict[str, Any],
    model: nn.Module,
    device: str,
    shape: tuple[int, ...],
    forward_args: dict[str, Any],
    image_arg: str | None,
    layout: str = "BCTHW",
    given_frames: int | None = None,
    compare: bool = True,
    modalities: tuple[tuple[str, int], ...] = (),
) -> tuple[Trace, ForwardCall, list[str]]:
    """Find how the forward is called on a (B, *shape) image, switch masking and random draws
    off, and trace it: (the Trace, the spec's forward_call, notes for the person).

    `layout`: how a temporal model takes the series (see Invoker); `given_frames`: the frames
    the forward arguments were given for, when `shape` has others (per-frame arguments are
    resampled to its frames); `compare`: call it twice more to see that it is deterministic
    (a probe at another frame count need not); `modalities`: the image is several modalities
    stacked (see plan_call).

    Raises ForwardFailed when the forward rejects every form (on the meta device, the model is
    built on the CPU and tried again first), ScaffoldError when the options do not fit it."""
    from scaffold.analyse.trace import (
        BATCH,
        SMALL_MODEL_PARAMS,
        ForwardFailed,
        build_model,
        run_trace,
    )
    from scaffold.runtime.inputs import first_tensor

    frames = shape[1] if len(shape) == 4 else None
    plan = plan_call(model, forward_args, image_arg, shape[0], given_frames or frames, modalities)
    if frames is not None:
        plan.args.update({k: resample_frames(plan.args[k], frames) for k in plan.per_frame})
    x = torch.randn(BATCH, *shape, device=device)
    try:
        invoker, output = resolve_invoker(model, plan, x, layout)
    except Exception as exc:
        if device != "meta":
            raise ForwardFailed(exc) from exc
        try:
            model, device = build_model(obj, args, "cpu"), "cpu"
        except ScaffoldError:
            raise
        except Exception as build_exc:
            raise ForwardFailed(exc) from build_exc
        x = torch.randn(BATCH, *shape)
        try:
            invoker, output = resolve_invoker(model, plan, x, layout)
        except Exception as cpu_exc:
            raise ForwardFailed(cpu_exc) from cpu_exc
    notes = list(plan.notes)
    if not plan.trivial:
        notes.append(f"the forward is called as {describe_call(plan, invoker.forms)}")
    if invoker.draws:
        notes.append(
            f"the forward draws random numbers in eval mode ({describe_draws(invoker.draws)}); "
            "traced, and generated, with fixed noise (FIXED_NOISE): those draws return an "
            "increasing ramp, so tokens keep their grid order and the features are the same on "
            "every call"
        )
        invoker = Invoker(plan, invoker.forms, fixed_noise=True, layout=layout)
        output = None
    trace = run_trace(obj, args, model, device, shape, call=invoker)
    small = sum(p.numel() for p in model.parameters()) <= SMALL_MODEL_PARAMS
    if compare and trace.device == "cpu" and device == "cpu" and small:
        if output is None:  # the call with fixed noise, under the first seed
            torch.manual_seed(SEEDS[0])
            with torch.no_grad():
                output = first_tensor(invoker(model, x))
        if outputs_differ(model, invoker, x, output):
            notes.append(
                "the forward gives different outputs for the same input in eval mode, with "
                "masking and random draws off: its features are not deterministic"
            )
    return trace, forward_call_spec(plan, invoker), notes


def outputs_differ(
    model: nn.Module, invoker: Invoker, x: torch.Tensor, first: torch.Tensor | None
) -> bool:
    """Does a call with another random state differ from `first`, the output of a call on the
    same input `x` under the seed SEEDS[0]?"""
    from scaffold.runtime.inputs import first_tensor

    torch.manual_seed(SEEDS[1])
    with torch.no_grad():
        second = first_tensor(invoker(model, x))
    if first is None or second is None:
        return False
    return first.shape != second.shape or not torch.allclose(
        first, second, rtol=1e-4, atol=1e-5, equal_nan=True
    )


def forward_call_spec(plan: CallPlan, invoker: Invoker) -> ForwardCall:
    """The spec's ``forward_call`` (the default one: the model is called as ``model(x)``)."""
    if plan.trivial and not invoker.fixed_noise:
        return ForwardCall()
    return ForwardCall(
        image=plan.image,
        image_positional=plan.image_positional,
        args=dict(plan.args),
        forms=dict(invoker.forms),
        per_band=tuple(plan.per_band),
        fixed_noise=invoker.fixed_noise,
        per_frame=tuple(plan.per_frame),
        modalities=tuple(plan.modalities),
    )


def describe_call(plan: CallPlan, forms: dict[str, ArgForm]) -> str:
    """``forward(x, wavelengths=tensor([...]))``-like text for a person."""
    shown = {"value": "{}", "tensor": "tensor({})", "batched": "tensor({}) repeated over the batch"}
    items: dict[str, list[str]] = {}
    image_param, _, image_key = plan.image.partition(".")
    for key, value in plan.args.items():
        param, _, item = key.partition(".")
        text = shown[forms.get(key, "value")].format(value)
        items.setdefault(param, []).append(f"{item!r}: {text}" if item else text)
    image = f"{image_key!r}: image" if image_key else "image"
    items.setdefault(image_param, []).insert(0, image)
    start = 0
    for name, channels in plan.modalities:  # each modality: its channels of the stacked image
        text = f"image[:, {start}:{start + channels}]"
        start += channels
        if image_key:
            place = items[image_param]
            at = 0 if name == image_key else len(place)
            place[at : at + (name == image_key)] = [f"{name!r}: {text}"]
        elif name == image_param:
            items[image_param][0] = text
        else:
            items.setdefault(name, []).append(text)
    parts: list[str] = []
    for param, texts in items.items():
        value = (
            "{" + ", ".join(texts) + "}" if "." in plan.image and param == image_param else texts[0]
        )
        if any(k.startswith(param + ".") for k in plan.args) and param != image_param:
            value = "{" + ", ".join(texts) + "}"
        if param == image_param and plan.image_positional:
            parts.insert(0, value)
        else:
            parts.append(f"{param}={value}")
    return f"forward({', '.join(parts)})"


def describe_draws(draws: dict[str, int]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in sorted(draws.items()))
