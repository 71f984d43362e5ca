"""`BackboneSpec`: the one data contract between analysis, rendering and verification.

Rendering and verification read only a spec (and the generated files), never the analysis internals.
A spec round-trips through JSON; `scaffold inspect --json` prints exactly `BackboneSpec.to_json()`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from scaffold.errors import ScaffoldError

# NTLC: tokens of a temporal input, (B, prefix + T * h * w + suffix, C): `num_frames` frames of
# h x w tokens each, time first (as a 3-D patch embedding flattens them), between
# `prefix_tokens` and `suffix_tokens`. NLC: (B, prefix + groups * h * w + suffix, C).
Layout = Literal["NCHW", "NHWC", "NLC", "NCTHW", "NTHWC", "NTLC"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
TEMPORAL_LAYOUTS: tuple[Layout, ...] = ("NCTHW", "NTHWC", "NTLC")

SPEC_VERSION = 1  # the newest spec this scaffold reads (and the one it writes)


class _ReadsAsJson(Mapping[str, Any]):
    """A typed part of the spec that also reads as the JSON mapping it is written as
    (``call["args"]``, ``call == {...}``), so JSON readers and the typed code agree."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)
class Param(_ReadsAsJson):
    """A constructor parameter as the source writes it (default and annotation as source text)."""

    name: str
    default: str | None = None
    annotation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "default": self.default, "annotation": self.annotation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Param:
        return cls(data["name"], data.get("default"), data.get("annotation"))


ArgForm = Literal["value", "tensor", "batched"]
# The order of the axes in which a temporal model's forward takes its series: TerraTorch's
# (B, C, T, H, W), or time before channels, (B, T, C, H, W).
InputLayout = Literal["BCTHW", "BTCHW"]


@dataclass(frozen=True, eq=False)
class ForwardCall(_ReadsAsJson):
    """How the forward is called (see scaffold.analyse.call); the default is ``model(x)``, whose
    JSON is ``{}``.

    - `image`: the parameter (or ``param.key``) that receives the image;
    - `image_positional`: the image is passed as the first positional argument;
    - `args`: ``{name or param.key: value}``, the other arguments, YAML values;
    - `forms`: how each argument is passed: as given, as a tensor, as a tensor repeated over the
      batch;
    - `per_band`: the arguments that hold one value per input band;
    - `fixed_noise`: random draws return a fixed ramp during the forward;
    - `per_frame`: the arguments that hold one value per input frame (day of year, acquisition
      dates): their length follows the frames, never the bands;
    - `modalities`: ``((name, channels), ...)``: the image is several modalities stacked along
      its channel axis, in this order; each goes in by its name (an item of the image's dict
      parameter, or a parameter of its own), the image's own `image` among them.
    """

    image: str = "x"
    image_positional: bool = True
    args: dict[str, Any] = field(default_factory=dict)
    forms: dict[str, ArgForm] = field(default_factory=dict)
    per_band: tuple[str, ...] = ()
    fixed_noise: bool = False
    per_frame: tuple[str, ...] = ()
    modalities: tuple[tuple[str, int], ...] = ()

    @property
    def plain(self) -> bool:
        """Called as ``model(x)``: nothing to record."""
        return (
            self.image_positional
            and "." not in self.image
            and not self.args
            and not self.fixed_noise
            and not self.modalities
        )

    def to_dict(self) -> dict[str, Any]:
        if self.plain:
            return {}
        data = {
            "image": self.image,
            "image_positional": self.image_positional,
            "args": dict(self.args),
            "forms": dict(self.forms),
            "per_band": list(self.per_band),
            "fixed_noise": self.fixed_noise,
        }
        if self.per_frame:  # written only where there are some: older readers are not surprised
            data["per_frame"] = list(self.per_frame)
        if self.modalities:
            data["modalities"] = [[name, channels] for name, channels in self.modalities]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForwardCall:
        if not data:
            return cls()
        return cls(
            image=data["image"],
            image_positional=data["image_positional"],
            args=dict(data["args"]),
            forms=dict(data["forms"]),
            per_band=tuple(data["per_band"]),
            fixed_noise=data["fixed_noise"],
            per_frame=tuple(data.get("per_frame", ())),
            modalities=tuple((str(n), int(c)) for n, c in data.get("modalities", ())),
        )


@dataclass(frozen=True)
class Doubt:
    """Evidence the analysis found too weak to call the backbone right (one tap in a deep model,
    a reduction two grids explain, a time axis found by elimination, a declared input never fed,
    ...). A spec with doubts is generated but never "verified": the ladder's ``doubts`` check
    fails with each one until the person settles it.

    - `kind`: a short stable id (``"single-tap"``, ``"time-axis"``, ...), what tests and JSON key on;
    - `message`: one sentence saying what was seen, naming the modules;
    - `flag`: the option that settles it (``--taps stages.3``, ``--input-shape C,T,H,W``).
    """

    kind: str
    message: str
    flag: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "flag": self.flag}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Doubt:
        return cls(str(data["kind"]), str(data["message"]), str(data.get("flag", "")))

    def __str__(self) -> str:
        return f"{self.message} ({self.flag})" if self.flag else self.message


@dataclass(frozen=True)
class FeatureSpec:
    """One feature map the backbone can return, as measured on a forward pass.

    `source` says where the tensor comes from: ``"hook"`` is the output of the submodule `module`
    (its `call`-th call when the module runs several times; item `key` of that output when the
    module returns several tensors, its first tensor when `key` is None), ``"input"`` is what
    enters that call of `module` (its first tensor argument: a forward pre-hook), ``"output"`` is the
    item `key` of what the model's own forward returns. `key` is an index of a tuple or list, or
    a dict's key, or a tuple of them: the path to a tensor in nested lists and dicts (a list of
    dicts).
    """

    module: str
    num_chs: int
    reduction: int
    layout: Layout
    shape: tuple[int, ...]
    grid: tuple[int, int]
    source: Literal["hook", "input", "output"] = "hook"
    call: int = 0
    key: int | str | tuple[int | str, ...] | None = None
    num_frames: int | None = None
    # Tokens (NLC, NTLC): `prefix_tokens` extra tokens (class, register) before the grid tokens
    # and `suffix_tokens` after them, as measured; `groups` grids of tokens side by side (one
    # per patch embedding of a group of bands, group after group), whose channels `num_chs`
    # counts together (groups x the tokens' channels, the groups concatenated).
    prefix_tokens: int = 0
    suffix_tokens: int = 0
    groups: int = 1
    why: str = ""  # why the analysis chose this tensor (shown by `scaffold inspect`)
    # The top-most modules that run only after this feature (a classifier, a decoder): the
    # backbone is built without them when this is the last feature it returns.
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the later stages need to know about a backbone.

    - `target`: what the person typed (``path.py[:Name]`` or ``pkg.module:Name``).
    - `module`, `qualname`, `import_root`: how to import the model (``import_root`` is the folder to
      put on ``sys.path`` first, or ``None`` when the module is importable as installed).
    - `kind`: ``"class"`` or ``"function"`` (a builder such as torchvision's ``resnet50``).
    - `args`: constructor arguments the person gave (``--arg``).
    - `input_shape`: the traced input, batch dimension included: (B, C, H, W) or (B, C, T, H, W).
    - `in_chans_arg`: the constructor parameter that sets the input channels, if there is one.
    - `features`: the candidate feature maps in forward order; `out_indices` selects the default ones.
    - `head_modules`: the top-most modules that run after the last selected feature in forward order
      (a classifier, a decoder): the backbone's forward stops before them, and is built without
      those that run only there (each feature's `after`).
    - `forward_call`: how the forward is called, when not as ``model(x)``.
    - `input_layout`: the order in which a temporal model's forward takes the series: the spec's
      `input_shape` is always TerraTorch's (B, C, T, H, W); "BTCHW": the model wants time before
      channels and the backbone swaps the two axes.
    - `frozen`: parameters no feature's gradient reaches for the traced input (modules the
      forward never calls for it): the generated backbone freezes them (``FROZEN``).
    """

    target: str
    module: str
    qualname: str
    kind: Literal["class", "function"]
    import_root: str | None
    source_file: str | None
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    in_chans_arg: str | None
    features: tuple[FeatureSpec, ...]
    out_indices: tuple[int, ...]
    output_kind: str
    traced_on: str
    num_params: int
    # The class's constructor parameters as written.
    constructor: tuple[Param, ...] = ()
    first_conv: str | None = None  # qualified name of the first convolution, if any
    first_conv_3d: bool = False
    has_feature_info: bool = False
    has_prepare_features: bool = False
    has_forward_intermediates: bool = False
    spec_version: int = SPEC_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)
    head_modules: tuple[str, ...] = ()
    # How the forward is called when not as ``model(x)`` (see scaffold.analyse.call).
    forward_call: ForwardCall = field(default_factory=ForwardCall)
    # What the analysis is unsure of: a spec with doubts is generated, never "verified".
    doubts: tuple[Doubt, ...] = ()
    # The order of the axes of a temporal model's input (see above).
    input_layout: InputLayout = "BCTHW"
    # Parameters (names in the person's model) that get no gradient from the features for the
    # traced input (modules the forward never calls for it): frozen by the generated backbone.
    frozen: tuple[str, ...] = ()

    # -- derived views ------------------------------------------------------------------------
    @property
    def in_chans(self) -> int:
        return self.input_shape[1]

    @property
    def temporal(self) -> bool:
        return len(self.input_shape) == 5

    @property
    def num_frames(self) -> int | None:
        return self.input_shape[2] if self.temporal else None

    @property
    def img_size(self) -> tuple[int, int]:
        return self.input_shape[-2], self.input_shape[-1]

    @property
    def selected(self) -> tuple[FeatureSpec, ...]:
        return tuple(self.features[i] for i in self.out_indices)

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["constructor"] = [p.to_dict() for p in self.constructor]
        data["forward_call"] = self.forward_call.to_dict()
        data["doubts"] = [d.to_dict() for d in self.doubts]
        data["in_chans"] = self.in_chans
        data["num_frames"] = self.num_frames
        data["img_size"] = list(self.img_size)
        jsonable: dict[str, Any] = _jsonable(data)
        return jsonable

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the backbone spec") -> BackboneSpec:
        """The spec `data` holds; `where` names it in the message that refuses a spec of a newer
        scaffold (an older one reads: its missing fields take their defaults)."""
        version = data.get("spec_version", SPEC_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ScaffoldError(f"{where}: spec_version {version!r} is not one scaffold writes")
        if version > SPEC_VERSION:
            raise ScaffoldError(
                f"{where} was written by a newer scaffold (spec_version {version}, this one "
                f"reads {SPEC_VERSION}); upgrade scaffold"
            )
        for f in data["features"]:
            if f["layout"] not in LAYOUTS:
                raise ScaffoldError(f"{where}: unknown feature layout {f['layout']!r}")
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["features"] = tuple(
            FeatureSpec(
                **{
                    **f,
                    "shape": tuple(f["shape"]),
                    "grid": tuple(f["grid"]),
                    "after": tuple(f.get("after", ())),
                    # a path of keys into nested lists and dicts
                    "key": tuple(f["key"]) if isinstance(f.get("key"), list) else f.get("key"),
                }
            )
            for f in data["features"]
        )
        for key in ("input_shape", "out_indices", "notes", "head_modules", "frozen"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        kwargs["constructor"] = tuple(Param.from_dict(p) for p in data.get("constructor", ()))
        kwargs["forward_call"] = ForwardCall.from_dict(data.get("forward_call") or {})
        kwargs["doubts"] = tuple(Doubt.from_dict(d) for d in data.get("doubts") or ())
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> BackboneSpec:
        return cls.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
