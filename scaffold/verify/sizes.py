"""The ``sizes`` check: the features at the analysed input size, at twice its height and width,
at the tile size of each dataset given with ``--data`` and, for a temporal input, at twice its
frames (tokens read as the wrong number of frames, or frames read as one grid, fail there).

A dataset's tiles are rarely the size the model was analysed at. The generated backbone stops
after its last feature, so a head that only fits one size (a flatten into a fixed linear) does not
matter; an encoder that only runs at one size (a fixed positional embedding) does, and the finding
names the module that raised, found from a stack kept by forward hooks.

At each size both ways of reading the features run: timm's ``features_only`` model (what
TerraTorch's BACKBONE_REGISTRY builds) and the backbone's own ``forward`` with
``prepare_features_for_image_model``. Each feature must lie on the expected grid of its reduction r,
floor or ceil of H/r by floor or ceil of W/r (or the few cells fewer that unpadded layers lose, as
the analysis reads grids), with the channels feature_info lists.

A model whose constructor takes the input size (``img_size`` and the like, as timm's ViTs do) and
refuses the larger input as built is built again for it: the size is then the person's choice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaffold.data import read_datasets
from scaffold.errors import one_line
from scaffold.grid import VALID_LOSS, on_grid
from scaffold.verify.types import CheckFailed
from scaffold.write.names import STATE_DIR

SCALE = 2  # the second size: this many times the analysed height and width


class _Located(Exception):
    """The model raised at an input size; `where` names the module that was running."""

    def __init__(self, module: str | None, where: str, cause: BaseException) -> None:
        super().__init__(f"{where} raised {one_line(cause)}")
        self.module = module
        self.cause = cause


def check_sizes(context: Any) -> str:
    """Run the backbone at the analysed size, at SCALE times it and at the tile size of each
    dataset of ``--data``; each feature on its grid."""
    import timm

    spec = context.state.spec
    name = context.name
    analysed = tuple(spec.img_size)
    sizes = _sizes(context, analysed)
    built_for: str | None = None
    try:
        models = (context.built(features_only=True), context.built())
    except Exception as exc:
        raise CheckFailed(f"timm.create_model({name!r}) failed: {one_line(exc)}") from exc
    for size, what in sizes.items():
        try:
            _check_at(models, context, size)
        except _Located as exc:
            if size == analysed:
                raise CheckFailed(f"at the analysed {_hw(size)} {exc}") from exc.cause
            retry = ""
            size_arg = _size_parameter(name)
            if size_arg is not None:
                kwargs = {size_arg: size[0] if size[0] == size[1] else list(size)}
                try:
                    _check_at(_build(timm, name, context.channel_kwargs() | kwargs), context, size)
                    built_for = f"{size_arg}={kwargs[size_arg]}"
                    continue
                except _Located as again:
                    retry = f" (built with {size_arg}={kwargs[size_arg]}: {again})"
            chans = context.in_chans
            needs = f"`{exc.module}` needs" if exc.module else "it needs"
            frames = f"{spec.num_frames}," if spec.temporal else ""
            raise CheckFailed(
                f"at {_hw(size)} ({what}) {exc}{retry}: "
                f"{needs} the analysed size {_hw(analysed)}; "
                f"analyse at the size of your data with --input-shape {chans},{frames}H,W"
            ) from exc.cause
    built = f" (built with {built_for})" if built_for else ""
    shown = [_hw(size) for size in sizes]
    if spec.temporal:
        shown.append(_check_frames(models, context, analysed, SCALE * spec.num_frames))
    listed = ", ".join(shown[:-1]) + f" and {shown[-1]}"
    return f"{len(spec.out_indices)} features on their grids at {listed}{built}"


def _check_frames(models: tuple[Any, Any], context: Any, size: tuple[int, int], frames: int) -> str:
    """The features at `frames` frames, at the analysed size: a temporal layout read wrongly
    (token frames taken for one grid, or the wrong count of frames) does not fit there. A model
    that only runs at its own frame count is said to, and not checked."""
    try:
        _check_at(models, context, size, frames)
    except _Located as exc:
        if exc.module is None:  # the backbone's own reshaping, not the person's model
            raise CheckFailed(
                f"at {frames} frames {exc}: the features' layout does not follow the frames"
            ) from exc.cause
        return f"{_hw(size)} (not at {frames} frames: the model refuses them, {exc})"
    return f"{_hw(size)} with {frames} frames"


def _sizes(context: Any, analysed: tuple[int, int]) -> dict[tuple[int, int], str]:
    """The sizes to check, each with what it is: the analysed size, SCALE times it, and the
    tile size of each dataset the YAML's tasks read (recorded by ``--data``)."""

    sizes = {analysed: "the analysed size"}
    sizes[(SCALE * analysed[0], SCALE * analysed[1])] = f"twice the analysed {_hw(analysed)}"
    for dataset in read_datasets(context.directory / STATE_DIR):
        tile = (int(dataset.size[0]), int(dataset.size[1]))
        sizes.setdefault(tile, f"the tiles of {dataset.name}")
    return sizes


def _build(timm: Any, name: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """timm's features_only model and the backbone itself, in eval mode."""
    try:
        features_only = timm.create_model(name, features_only=True, **kwargs).eval()
        backbone = timm.create_model(name, **kwargs).eval()
    except Exception as exc:
        raise _Located(None, f"timm.create_model({name!r})", exc) from exc
    return features_only, backbone


def _check_at(
    models: tuple[Any, Any], context: Any, size: tuple[int, int], frames: int | None = None
) -> None:
    """Both feature paths at one input size (and number of `frames`); _Located when the model
    raises, CheckFailed when a feature is off its grid."""
    import torch

    features_only, backbone = models
    x = context.example_input(size=size, frames=frames)
    with torch.no_grad():
        outs = _located(features_only.model, lambda: features_only(x))
        images = _located(
            backbone, lambda: backbone.prepare_features_for_image_model(list(backbone(x)))
        )
    for what, features, info in (
        ("timm's features_only model", outs, features_only.feature_info),
        ("the backbone's forward", images, backbone.feature_info),
    ):
        _on_grids(features, info.channels(), info.reduction(), info.module_name(), size, what)


def _on_grids(outs, channels, reductions, names, size: tuple[int, int], what: str) -> None:
    height, width = size
    if len(outs) != len(channels):
        raise CheckFailed(
            f"at {_hw(size)} {what} returns {len(outs)} features, "
            f"feature_info lists {len(channels)}"
        )

    for i, (o, c, r, n) in enumerate(zip(outs, channels, reductions, names, strict=True)):
        fits = o.ndim == 4 and on_grid(o.shape[-2], height, r) and on_grid(o.shape[-1], width, r)
        if not fits or o.shape[1] != c:
            hs, ws = _grid(height, r), _grid(width, r)
            expected = f"(B, {c}, {'|'.join(map(str, hs))}, {'|'.join(map(str, ws))})"
            raise CheckFailed(
                f"at {_hw(size)} feature {i} (`{n}`) of {what} has shape {tuple(o.shape)}, expected "
                f"{expected} for reduction {r} (or up to {VALID_LOSS} cells fewer: unpadded layers)"
            )


def _grid(size: int, reduction: int) -> tuple[int, ...]:
    return tuple(dict.fromkeys((size // reduction, -(-size // reduction))))


def _located(root: Any, fn: Callable[[], Any]) -> Any:
    """fn(); when it raises, _Located naming the innermost submodule of `root` that was running.

    The module is read from the traceback's frames (the `self` of each): the stack of calls that
    did not return. Hooks cannot keep that stack here, since the backbone's own early stop leaves
    the calls it interrupted without their closing hook.
    """
    try:
        return fn()
    except Exception as exc:
        raise _Located(*_where(root, exc), exc) from exc


def _where(root: Any, exc: BaseException) -> tuple[str | None, str]:
    """(qualified name, description) of the innermost submodule of `root` in the traceback."""
    names = {id(m): q for q, m in root.named_modules()}
    found: tuple[str, Any, Any] | None = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            found = (names[id(owner)], owner, tb)
        tb = tb.tb_next
    if found is None or not found[0]:
        return None, "the backbone"
    qualified, module, tb = found
    code = tb.tb_frame.f_code
    where = ""
    if "/torch/" not in code.co_filename:  # the person's code: say where
        where = f", {Path(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"
    return qualified, f"`{qualified}` ({type(module).__name__}{where})"


def _size_parameter(name: str) -> str | None:
    """The model constructor's parameter for the input size, if it has one: in its signature,
    or among the arguments it was given (a builder that passes ``**kwargs`` on)."""
    import importlib

    from scaffold.analyse.inputs import SIZE_PARAMS

    try:  # the generated package and the person's model: the import check reports a failure
        backbone = importlib.import_module(f"{name}.backbone")
        model_class = backbone.load_model_class()
    except Exception:
        return None
    try:
        params = inspect.signature(model_class).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin, an odd callable)
        return None
    given = getattr(backbone, "MODEL_ARGS", {})
    return next((p for p in SIZE_PARAMS if p in params or p in given), None)


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
