# scaffold runtime 1: owned by scaffold, copied verbatim into each generated package.
# `scaffold update` replaces this folder (it never merges it): a hand edit here is kept
# aside as <file>.orig-<version> and reported. Change behaviour in backbone.py instead,
# by overriding methods of the subclass there.
"""ScaffoldBackbone: a person's model as a timm/TerraTorch multi-scale backbone.

A generated backbone.py subclasses it and binds the model's constants (``constants``).
The model is built from its own class (``self.model``), without the modules that run
only after the last feature it returns (a classifier head, a decoder: each feature's
``after``): the backbone holds what its forward runs, so every trainable parameter gets
a gradient (Lightning's DDP needs that) and the state dict has no head keys. Forward
hooks, registered once at construction, collect the features during the model's own
forward, so nothing in the model's code changes.

Nothing of one forward is kept on the module: the hooks are stateless functions that
put what they see into the capture of the forward that runs now, found by the hooked
module itself (a DataParallel replica's modules are its own, so replicas running at once
in threads each fill their own capture), and that capture is dropped when the forward
returns. The forward ends once the last feature it needs is captured: the hook (or the
stand-in of a removed module) raises ForwardDone, a BaseException that ``_run`` catches
and that never leaves the backbone. It is needed because what follows the last feature
may be Python in the model's own forward (a loop over blocks, a reshape of a removed
decoder's output), which no pruning can remove; torch.compile traces it (fullgraph).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from timm.models import FeatureInfo

# Written for timm 1.0.x, which does not export it from timm.models.
from timm.models._features import feature_take_indices
from torch import nn

from .inputs import (
    FixedNoise,
    Images,
    first_image,
    forward_inputs,
    image_grid,
    item_at,
    resample_frames,
    split_modalities,
)
from .layouts import (
    GROUP_REDUCTIONS,
    TEMPORAL_REDUCTIONS,
    Feature,
    GroupReduction,
    TemporalReduction,
    feature_info,
    to_image,
)


@dataclass(frozen=True)
class ForwardCall:
    """How the model's forward is called, as scaffold measured it (see backbone.py)."""

    image_arg: str
    image_positional: bool
    args: Mapping[str, Any]
    forms: Mapping[str, str]
    per_band_args: tuple[str, ...] = ()
    per_frame_args: tuple[str, ...] = ()
    fixed_noise: bool = False
    # ((name, channels), ...): a tensor image holds these modalities stacked along its
    # channels; each goes in by its name (a dict of them goes in as it is).
    modalities: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class BackboneConstants:
    """What a generated backbone.py states of its model (its constants, by name)."""

    model_module: str
    model_name: str
    model_import_root: str | None
    model_args: Mapping[str, Any]
    in_chans_arg: str | None
    in_chans: int
    input_size: tuple[int, int]
    num_frames: int | None
    input_layout: str
    features: Sequence[Feature]
    out_indices: tuple[int, ...]
    frozen: tuple[str, ...] = ()
    forward_call: ForwardCall | None = None
    # The folder a relative model_import_root is relative to (the package's).
    package_dir: str | None = field(default=None, compare=False)


def import_root(constants: BackboneConstants) -> str | None:
    """The folder to put on sys.path for the model: a relative root is relative to the
    package's folder, wherever the package has been moved with the model."""
    root = constants.model_import_root
    if root is None or constants.package_dir is None or Path(root).is_absolute():
        return root
    return str((Path(constants.package_dir) / root).resolve())


def load_model_class(constants: BackboneConstants) -> Any:
    """The class or builder function that makes the model, imported from its module."""
    root = import_root(constants)
    if root is not None and root not in sys.path:
        sys.path.insert(0, root)
    # A module that parses the command line when imported (a training script) sees no
    # options, not those of the program that builds the backbone (terratorch's).
    argv, sys.argv = sys.argv, [constants.model_module]
    try:
        return getattr(
            importlib.import_module(constants.model_module), constants.model_name
        )
    finally:
        sys.argv = argv


class ForwardDone(BaseException):
    """Ends a forward once every feature it needs is captured: raised by the hook that
    completes them or by a removed module's stand-in, caught by ScaffoldBackbone._run.
    A BaseException, so that an ``except Exception`` in the model's own forward lets it
    through. Its argument names the module it was raised at."""

    def __str__(self) -> str:
        return (
            f"the forward ended at {self.args[0]}: the backbone holds the model up to "
            "its last feature (build it with prune=False for the whole model)"
        )


class Removed(nn.Module):
    """Stands where a module was removed (see prune_intermediate_layers): the forward
    has captured every feature it needs when it gets here, so it ends there."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise ForwardDone(self.name)

    def extra_repr(self) -> str:
        return f"removed: {self.name}"


@dataclass
class Capture:
    """What the hooks saw during one forward: each slot's outputs (what enters the
    module, for an "input" slot), per call; `needed`: the calls that complete the
    features (None: the forward runs to its end)."""

    seen: dict[str, list[Any]]
    needed: dict[str, int] | None


# The capture of each forward that runs now, by hooked module: a dict per backbone,
# shared by its hooks and its replicas, empty between forwards.
Captures = dict[nn.Module, Capture]


def keep(captures: Captures, slot: str, module: nn.Module, value: Any) -> None:
    """Keep what a hook saw in the capture of the forward running `module` (none: a
    call of the model outside the backbone's forward); end that forward once every
    feature it needs is there."""
    capture = captures.get(module)
    if capture is None or slot not in capture.seen:
        return
    capture.seen[slot].append(value)
    needed = capture.needed
    if needed is not None and all(len(capture.seen[s]) >= n for s, n in needed.items()):
        raise ForwardDone(slot)


def on_output(
    captures: Captures, slot: str, module: nn.Module, args: Any, output: Any
) -> None:
    keep(captures, slot, module, output)


def on_input(
    captures: Captures, slot: str, module: nn.Module, args: Any, kwargs: Any
) -> None:
    keep(captures, slot, module, (args, kwargs))


def take_indices(n: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's feature_take_indices: `indices` of n features made positive (an int k: the
    last k; None: all)."""
    given = indices if indices is None or isinstance(indices, int) else list(indices)
    return list(feature_take_indices(n, given)[0])


def slot_of(f: Feature) -> str:
    """Where feature `f` is captured: its module, or "module:input" for what enters
    it."""
    return f"{f['module']}:input" if f["source"] == "input" else str(f["module"])


def within(name: str, modules: Sequence[str]) -> bool:
    """`name` is one of `modules` or inside one of them."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def removable(features: Sequence[Feature]) -> list[str]:
    """The top-most modules that run only after every one of `features`: none when one
    of them is the model's output (that needs the whole forward)."""
    if not features or any(f["source"] == "output" for f in features):
        return []
    found = [
        m
        for f in features
        for m in f.get("after", [])
        if all(within(m, g.get("after", [])) for g in features)
    ]
    found = list(dict.fromkeys(found))
    return [m for m in found if not any(m.startswith(o + ".") for o in found)]


class ScaffoldBackbone(nn.Module):
    """A model as a multi-scale backbone; a subclass sets ``constants``.

    Args:
        in_chans: input channels (bands), passed to the model as its in_chans_arg.
        out_indices: which features ``forward`` returns (negative indices count from
            the end; an int n means the last n).
        temporal_reduction: how temporal features become images: "mean", "max", the
            "last" frame, or "stack" the frames into channels, frame by frame
            (``(t c)``, as TerraTorch's temporal ViTs do: T times the channels).
        group_reduction: how the token grids of several patch embeddings (groups of
            bands) become images: "concat" their channels, group after group, or
            their "mean".
        image_features: return (B, C, H, W) maps from ``forward`` (the TerraTorch
            factory does).
        prune: build the model without the modules that run only after the last of
            out_indices (False: keep the whole model; timm's features_only wrapper
            prunes it for its own out_indices).
        bands: the input bands by name, in order (one per channel): the pretrained
            first layer is loaded for these bands (registration.PRETRAINED_BANDS).
        forward_args: the forward's other arguments, over the measured ones (a model
            whose forward takes only the image takes none).
        **model_args: constructor arguments for the model, over its model_args.
    """

    constants: ClassVar[BackboneConstants]

    def __init__(
        self,
        in_chans: int | None = None,
        out_indices: int | Sequence[int] | None = None,
        temporal_reduction: TemporalReduction = "mean",
        group_reduction: GroupReduction = "concat",
        image_features: bool = False,
        prune: bool = True,
        bands: Sequence[str] | None = None,
        forward_args: Mapping[str, Any] | None = None,
        **model_args: Any,
    ) -> None:
        super().__init__()
        c = self.constants
        in_chans = c.in_chans if in_chans is None else in_chans
        if temporal_reduction not in TEMPORAL_REDUCTIONS:
            raise ValueError(f"temporal_reduction must be one of {TEMPORAL_REDUCTIONS}")
        if group_reduction not in GROUP_REDUCTIONS:
            raise ValueError(f"group_reduction must be one of {GROUP_REDUCTIONS}")
        call = c.forward_call
        if call is None and forward_args:
            raise ValueError(f"{c.model_name}'s forward takes no other arguments")
        args = {**c.model_args, **model_args}
        if c.in_chans_arg is not None:
            args[c.in_chans_arg] = in_chans
        elif in_chans != c.in_chans and not (call and call.per_band_args):
            raise ValueError(
                f"{c.model_name} takes {c.in_chans} input channels, not {in_chans}"
            )
        self.model = load_model_class(c)(**args)
        for name, param in self.model.named_parameters():
            if name in c.frozen:
                param.requires_grad_(False)
        self.forward_args: dict[str, Any] = {
            **(call.args if call else {}),
            **(forward_args or {}),
        }
        for name in call.per_band_args if call else ():
            if len(self.forward_args[name]) != in_chans:
                raise ValueError(
                    f"forward_args[{name!r}] has {len(self.forward_args[name])} values "
                    f"for {in_chans} input channels: give one per band"
                )
        if bands is not None and len(bands) != in_chans:
            raise ValueError(f"bands names {len(bands)} bands for {in_chans} channels")
        self.in_chans = in_chans
        self.bands: tuple[str, ...] | None = tuple(bands) if bands is not None else None
        indices = c.out_indices if out_indices is None else out_indices
        self.out_indices: tuple[int, ...] = tuple(
            take_indices(len(c.features), indices)
        )
        self.temporal_reduction = temporal_reduction
        self.group_reduction = group_reduction
        self.image_features = image_features
        self.feature_info = FeatureInfo(
            [feature_info(f, temporal_reduction, group_reduction) for f in c.features],
            self.out_indices,
        )
        self.out_channels: list[int] = self.feature_info.channels()
        # The modules removed from the model (names under this module), see prune.
        self.removed_modules: tuple[str, ...] = ()
        # Shared by the hooks (registered once, here) and by replicas of this module.
        self._captures: Captures = {}
        slots = (slot_of(f) for f in c.features if f["source"] != "output")
        for slot in dict.fromkeys(slots):
            self._hook(slot)
        if prune:
            self.prune_intermediate_layers(self.out_indices)

    def forward(self, x: Images) -> list[torch.Tensor]:
        _, features = self._run(x, self.out_indices, stop_early=True)
        if self.image_features:
            return self._to_images(features, self.out_indices, image_grid(x))
        return features

    def prepare_features_for_image_model(
        self, features: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Features from ``forward`` as (B, C, H, W) maps (tokens go back on a grid of
        the analysed input's aspect ratio)."""
        if self.image_features:
            return features
        return self._to_images(features, self.out_indices)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[Any, list[torch.Tensor]]:
        """timm's feature protocol: (B, C, H, W) maps of the features at `indices`.

        ``stop_early`` (or ``intermediates_only``, which needs nothing after the last
        feature) stops the forward once the last of them is captured; the first item
        returned is then that feature as the model made it, else the model's own
        output (the last feature when the modules after it were removed). ``norm`` is
        accepted for timm and ignored: the features are what the model computes.
        """
        take = take_indices(len(self.constants.features), indices)
        output, features = self._run(x, take, stop_early or intermediates_only)
        images = self._to_images(features, tuple(take), image_grid(x))
        if str(getattr(output_fmt, "value", output_fmt)) == "NHWC":
            images = [f.permute(0, 2, 3, 1) for f in images]
        return images if intermediates_only else (output, images)

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """timm's pruning protocol: remove the modules that run only after every one of
        the features at `indices` (their `after`); return the indices, made positive.

        A removed module is replaced by one that ends the forward when it is reached
        (by then every feature wanted is captured). ``prune_norm`` and ``prune_head``
        are accepted for timm: what runs after the features goes whatever they say.
        """
        features = self.constants.features
        take = take_indices(len(features), indices)
        for i in take:
            self._check_available(i)
        for name in removable([features[i] for i in take]):
            parent, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent), child, Removed(name))
            self.removed_modules += (name,)
            # What enters the removed module may be a feature: hook its stand-in.
            for slot in dict.fromkeys(slot_of(f) for f in features):
                if slot == f"{name}:input":
                    self._hook(slot)
        return list(take)

    # -- internals -----------------------------------------------------------------
    def _check_available(self, i: int) -> None:
        """Feature i is still computed: no module it needs was removed."""
        f = self.constants.features[i]
        removed = self.removed_modules
        if not removed:
            return
        after = f.get("after", [])
        if f["source"] != "output" and all(within(m, after) for m in removed):
            return
        raise ValueError(
            f"feature {i} ({f['module']}) needs modules this backbone was built "
            f"without ({', '.join(self.removed_modules)}): build it with out_indices "
            f"that include {i}"
        )

    def _hook(self, slot: str) -> None:
        """Register the hook that fills `slot`: a forward hook on the module, or for an
        "input" slot a forward pre-hook that keeps its arguments (the feature is their
        first tensor: a stream the forward sums in Python between two submodules). A
        removed module's output is never made; what enters it still is (its stand-in
        gets the pre-hook)."""
        name, _, what = slot.partition(":")
        module = self.get_submodule(name)
        if what == "input":
            hook = partial(on_input, self._captures, slot)
            module.register_forward_pre_hook(hook, with_kwargs=True)
        elif not within(name, self.removed_modules):
            module.register_forward_hook(partial(on_output, self._captures, slot))

    def _run(
        self, x: Images, indices: Sequence[int], stop_early: bool = False
    ) -> tuple[Any, list[torch.Tensor]]:
        """Run the model once; collect the features at `indices` from the hooks and
        from its output.

        With `stop_early` the forward ends as soon as every hooked feature is captured,
        and the first item returned is the last feature of the module captured last. A
        feature taken from the model's output needs the whole forward. A removed module
        ends the forward too.
        """
        for i in indices:
            self._check_available(i)
        wanted = [self.constants.features[i] for i in indices]
        # Calls each hooked module must make before its features are all there.
        needed: dict[str, int] = {}
        for f in wanted:
            if f["source"] != "output":
                needed[slot_of(f)] = max(needed.get(slot_of(f), 0), f["call"] + 1)
        # A last call (-1) is known only once the forward has run: no stop before.
        stop = stop_early and all(
            f["source"] != "output" and f["call"] >= 0 for f in wanted
        )
        capture = Capture({slot: [] for slot in needed}, needed if stop else None)
        # This module's own submodules: a replica's are its own.
        hooked = [self.get_submodule(slot.partition(":")[0]) for slot in needed]
        for module in hooked:
            self._captures[module] = capture
        stopped_at: str | None = None
        try:
            output = self._call_model(x)
        except ForwardDone as done:
            output, stopped_at = None, str(done.args[0])
        finally:
            for module in hooked:
                self._captures.pop(module, None)
        features = []
        for f in wanted:
            if f["source"] == "output":
                features.append(item_at(output, f.get("key")))
                continue
            seen = capture.seen[slot_of(f)]
            if not -len(seen) <= f["call"] < len(seen):
                raise RuntimeError(
                    f"{f['module']} ran {len(seen)} times in this forward; "
                    f"the backbone wants call {f['call']}"
                )
            feature = item_at(seen[f["call"]], f.get("key"))
            features.append(feature)
            if slot_of(f) == stopped_at:
                output = feature
        if stopped_at is not None and output is None:  # stopped by a removed module
            output = features[-1] if features else None
        return output, features

    def _call_model(self, x: Images) -> Any:
        """Call the model on the image `x` (with its other forward arguments)."""
        c = self.constants
        call = c.forward_call
        x = self._model_layout(split_modalities(x, call.modalities) if call else x)
        if call is None:
            return self.model(x)
        given: dict[str, Any] = {}
        first = first_image(x)
        for key, value in self.forward_args.items():
            # Per-frame values for the input's frames (axis 1 after a swap).
            if key in call.per_frame_args and first.ndim == 5:
                frames = first.shape[1 if c.input_layout == "BTCHW" else 2]
                value = resample_frames(value, frames)
            given[key] = value
        args, kwargs = forward_inputs(
            x, call.image_arg, call.image_positional, given, call.forms
        )
        if call.fixed_noise:
            with FixedNoise():
                return self.model(*args, **kwargs)
        return self.model(*args, **kwargs)

    def _model_layout(self, x: Images) -> Images:
        """The input as the model takes it: (B, C, T, H, W) -> (B, T, C, H, W) for a
        time-first model; each image of a dict of modalities alike."""
        if isinstance(x, Mapping):
            return {name: self._time_first(image) for name, image in x.items()}
        return self._time_first(x)

    def _time_first(self, x: torch.Tensor) -> torch.Tensor:
        if self.constants.input_layout == "BTCHW" and x.ndim == 5:
            return x.transpose(1, 2)
        return x

    def _to_images(
        self,
        features: list[torch.Tensor],
        indices: Sequence[int],
        size: tuple[int, int] | None = None,
    ) -> list[torch.Tensor]:
        """(B, C, H, W) maps; tokens go on the grid of an input of `size` (None: of the
        analysed input's aspect ratio)."""
        c = self.constants
        return [
            to_image(
                x,
                c.features[i],
                size,
                c.input_size,
                self.temporal_reduction,
                self.group_reduction,
            )
            for x, i in zip(features, indices, strict=True)
        ]
