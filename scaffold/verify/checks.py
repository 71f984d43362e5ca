"""The fast rungs of the ladder: import, timm's feature rules, the factory, the weights.

Each check returns a one-line summary or raises CheckFailed with a finding that names the thing:
"feature 2 (`model.stages.2`) has 96 channels, feature_info says 97", not a stack trace.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from scaffold.errors import one_line
from scaffold.verify.types import CheckFailed, read_config
from scaffold.write.names import CONFIG_FILE, names_for
from scaffold.write.state import State

BATCH = 2
FORWARD_ARGS_KEY = "backbone_forward_args"  # per-task forward arguments in the YAML
# terratorch-iterate task types -> the task names TerraTorch factories are called with.
FACTORY_TASKS = {
    "segmentation": "segmentation",
    "classification": "classification",
    "multilabel_classification": "classification",
    "regression": "regression",
}


@dataclass
class Context:
    directory: Path
    state: State
    config_path: Path
    # timm's models of the backbone, built once per ladder: each build pays the model's own
    # constructor, which can be slow. Key: features_only.
    _built: dict[bool, Any] = field(default_factory=dict, repr=False)
    # The first task's model from the config's factory, built once per ladder.
    _task_model: tuple[Any, str] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, directory: Path, state: State) -> Context:
        return cls(directory, state, directory / CONFIG_FILE)

    @property
    def name(self) -> str:
        return self.state.options.name or ""

    def built(self, features_only: bool = False) -> Any:
        """``timm.create_model(NAME[, features_only=True])`` in eval mode, built on first use
        (the import check drops any earlier build), for the YAML's input channels."""
        import timm

        if features_only not in self._built:
            kwargs = self.channel_kwargs() | ({"features_only": True} if features_only else {})
            self._built[features_only] = timm.create_model(self.name, **kwargs).eval()
        return self._built[features_only]

    def task_model_args(self) -> list[tuple[str, dict[str, Any]]]:
        """(task name, model_args) for each task of the YAML: the defaults, then the task's own
        (their ``backbone_forward_args`` merged key by key)."""
        config = self.config()
        defaults = config.get("defaults", {}).get("terratorch_task", {}).get("model_args", {})
        defaults = defaults or {}
        found = []
        for task in config.get("tasks") or [{}]:
            own = (task.get("terratorch_task") or {}).get("model_args", {}) or {}
            merged = {**defaults, **own}
            if FORWARD_ARGS_KEY in defaults and FORWARD_ARGS_KEY in own:
                merged[FORWARD_ARGS_KEY] = {**defaults[FORWARD_ARGS_KEY], **own[FORWARD_ARGS_KEY]}
            found.append((str(task.get("name", "?")), merged))
        return found

    @cached_property
    def in_chans(self) -> int:
        """The input channels the first task's benchmark runs with: its ``backbone_in_chans``
        (the data's bands with ``--data``), else the analysed ones. The factory check and the
        fast checks use it, so that they test the backbone the benchmark builds. Read from the
        YAML once per ladder."""
        try:
            value = self.task_model_args()[0][1].get("backbone_in_chans")
        except (CheckFailed, AttributeError, IndexError):
            value = None
        return value if isinstance(value, int) and value > 0 else self.state.spec.in_chans

    def channel_kwargs(self) -> dict[str, Any]:
        """``{"in_chans": N}`` when the benchmark's channels are not the analysed ones."""
        chans = self.in_chans
        return {} if chans == self.state.spec.in_chans else {"in_chans": chans}

    def example_input(
        self,
        channels: int | None = None,
        size: tuple[int, int] | None = None,
        frames: int | None = None,
    ):
        """A random batch of the traced input's shape, with `channels` (default: the
        benchmark's, `in_chans`), the spatial `size` and, for a temporal input, the number
        of `frames` when given."""
        import torch

        torch.manual_seed(0)
        shape = list(self.state.spec.input_shape[1:])
        shape[0] = channels or self.in_chans
        if size is not None:
            shape[-2:] = size
        if frames is not None and len(shape) == 4:
            shape[1] = frames
        return torch.rand(BATCH, *shape)

    # -- 1. import ------------------------------------------------------------------------------
    def check_import(self) -> str:
        import timm
        from terratorch.registry import BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY

        package = self.directory / self.name
        if not (package / "__init__.py").is_file():
            raise CheckFailed(f"{package}/__init__.py is missing")
        # A fresh import, so that edits made since an earlier import in this process count.
        for mod in [m for m in sys.modules if m == self.name or m.startswith(self.name + ".")]:
            del sys.modules[mod]
        self._built.clear()  # models of an earlier import are not this package's
        self._task_model = None
        if str(self.directory) in sys.path:  # first, so that no other copy shadows it
            sys.path.remove(str(self.directory))
        sys.path.insert(0, str(self.directory))
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Overwriting")
                module = importlib.import_module(self.name)
        except Exception as exc:
            raise CheckFailed(
                f"importing {package} failed{_where_in(package, exc)}: {one_line(exc)}"
            ) from exc
        where = Path(module.__file__ or "").resolve().parent
        if where != package.resolve():
            raise CheckFailed(f"'{self.name}' was imported from {where}, not from {package}")
        if self.name not in timm.list_models():
            raise CheckFailed(f"after the import timm does not know '{self.name}'")
        if self.name not in BACKBONE_REGISTRY:
            raise CheckFailed(f"TerraTorch's BACKBONE_REGISTRY does not find '{self.name}'")
        factory = self.config_factory()
        if factory not in MODEL_FACTORY_REGISTRY:
            raise CheckFailed(f"MODEL_FACTORY_REGISTRY has no factory '{factory}'")
        return f"'{self.name}' in timm and BACKBONE_REGISTRY, '{factory}' in MODEL_FACTORY_REGISTRY"

    # -- 2. timm's feature rules ----------------------------------------------------------------
    def check_features(self) -> str:
        import torch

        x = self.example_input()
        height, width = x.shape[-2:]
        try:
            model = self.built(features_only=True)
        except Exception as exc:
            raise CheckFailed(
                f"timm.create_model(features_only=True) failed: {one_line(exc)}"
            ) from exc
        info = model.feature_info
        with torch.no_grad():
            outs = _call(model, x, "the features_only model")
        _feature_rules(outs, info.channels(), info.reduction(), info.module_name(), height, width)

        try:
            backbone = self.built()
        except Exception as exc:
            raise CheckFailed(f"timm.create_model() failed: {one_line(exc)}") from exc
        with torch.no_grad():
            raw = _call(backbone, x, "the backbone's forward")
            if not isinstance(raw, (list, tuple)):
                raise CheckFailed(
                    f"the backbone's forward returns {type(raw).__name__}, not a list"
                )
            if len(raw) != len(backbone.out_channels):
                raise CheckFailed(
                    f"the backbone's forward returns {len(raw)} features, "
                    f"out_channels and feature_info list {len(backbone.out_channels)}"
                )
            images = backbone.prepare_features_for_image_model(list(raw))
        names = backbone.feature_info.module_name()
        reductions = backbone.feature_info.reduction()
        _feature_rules(images, backbone.out_channels, reductions, names, height, width)
        shapes = ", ".join("x".join(map(str, o.shape[1:])) for o in outs)
        return f"{len(outs)} features for a {tuple(x.shape)} input: {shapes}"

    # -- 3. the factory -------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return read_config(self.config_path)

    def config_factory(self) -> str:
        defaults = self.config().get("defaults", {}).get("terratorch_task", {})
        factory: str = defaults.get("model_factory", names_for(self.name).factory_class)
        return factory

    def task_model_inputs(self) -> tuple[str, dict[str, Any]]:
        """The factory's task name and the model_args of the config's first task."""
        config = self.config()
        task_cfg = (config.get("tasks") or [{}])[0]
        task_type = task_cfg.get("type", self.state.options.task)
        task = FACTORY_TASKS.get(task_type, task_type)
        model_args = {
            **config.get("defaults", {}).get("terratorch_task", {}).get("model_args", {}),
            **(task_cfg.get("terratorch_task") or {}).get("model_args", {}),
        }
        return task, model_args

    def task_model(self) -> tuple[Any, str]:
        """The first task's model as the config's factory builds it (once per ladder), and the
        task's name."""
        from terratorch.registry import MODEL_FACTORY_REGISTRY

        if self._task_model is not None:
            return self._task_model
        task, model_args = self.task_model_inputs()
        factory_name = self.config_factory()
        try:
            factory = MODEL_FACTORY_REGISTRY.build(factory_name)
            self._task_model = factory.build_model(task, **model_args), task
            return self._task_model
        except Exception as exc:
            raise CheckFailed(
                f"{factory_name}.build_model({task!r}) raised {one_line(exc)}"
            ) from exc

    def check_factory(self) -> str:
        task, model_args = self.task_model_inputs()
        factory_name = self.config_factory()
        model, _ = self.task_model()
        x = self.example_input(model_args.get("backbone_in_chans"))
        model.train()
        try:
            output = model(x).output
            output.float().mean().backward()
        except Exception as exc:
            raise CheckFailed(
                f"forward/backward of the {task} model raised {one_line(exc)}"
            ) from exc
        expected = _expected_output(task, model_args, x.shape)
        if tuple(output.shape) != expected:
            raise CheckFailed(
                f"the {task} model returns {tuple(output.shape)}, expected {expected}"
            )
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or not all(bool(g.isfinite().all()) for g in grads):
            raise CheckFailed("backward gave no finite gradients")
        return f"{factory_name} builds the {task} model; output {tuple(output.shape)}, backward ok"

    # -- 4. weights -----------------------------------------------------------------------------
    def check_weights(self) -> str:
        import timm
        import torch

        weights = self.state.options.weights
        assert weights is not None
        try:
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckFailed(f"{weights}: cannot load it: {one_line(exc)}") from exc
        registration = importlib.import_module(f"{self.name}.registration")
        model = timm.create_model(self.name)
        state_dict = registration.checkpoint_filter_fn(checkpoint, model)
        own = model.state_dict()
        missing = sorted(own.keys() - state_dict.keys())
        unexpected = sorted(state_dict.keys() - own.keys())
        wrong = sorted(
            k
            for k in own.keys() & state_dict.keys()
            if tuple(own[k].shape) != tuple(state_dict[k].shape)
        )
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing from the checkpoint: {_names(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
        if wrong:
            shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]
            problems.append(f"{len(wrong)} with other shapes: {_names(shapes)}")
        if problems:
            raise CheckFailed(f"{weights.name} does not fit: " + "; ".join(problems))
        try:
            timm.create_model(self.name, pretrained=True)
        except Exception as exc:
            raise CheckFailed(
                f"timm.create_model(pretrained=True) failed: {one_line(exc)}"
            ) from exc
        loaded = f"{len(state_dict)} tensors from {weights.name} load (timm, pretrained=True)"
        tensors = checkpoint
        for key in ("state_dict", "model", "model_state_dict"):  # as checkpoint_filter_fn
            if isinstance(tensors.get(key), dict):
                tensors = tensors[key]
        dropped = len(tensors) - len(state_dict)
        removed = getattr(model, "removed_modules", ())
        if dropped > 0 and removed:
            loaded += f"; {dropped} dropped: the backbone does not hold {', '.join(removed)}"
        return loaded


def _call(model, x, what: str):
    try:
        return model(x)
    except Exception as exc:
        raise CheckFailed(f"{what} raised {one_line(exc)}") from exc


def _feature_rules(outs, channels, reductions, names, height: int, width: int) -> None:
    """timm's own tests for features_only models (tests/test_models.py)."""
    if len(outs) != len(channels):
        raise CheckFailed(f"{len(outs)} features returned, feature_info lists {len(channels)}")
    for i, (o, c, r, n) in enumerate(zip(outs, channels, reductions, names, strict=True)):
        if o.ndim != 4:
            raise CheckFailed(f"feature {i} (`{n}`) has shape {tuple(o.shape)}, not (B, C, H, W)")
        if o.shape[1] != c:
            raise CheckFailed(
                f"feature {i} (`{n}`) has {o.shape[1]} channels, feature_info says {c}"
            )
        limit = (math.ceil(height / r) + 1, math.ceil(width / r) + 1)
        if o.shape[-2] > limit[0] or o.shape[-1] > limit[1]:
            raise CheckFailed(
                f"feature {i} (`{n}`) is {o.shape[-2]}x{o.shape[-1]}, more than "
                f"{limit[0]}x{limit[1]} for reduction {r} of a {height}x{width} input"
            )
        if not bool(o.isfinite().all()):
            raise CheckFailed(f"feature {i} (`{n}`) has NaN or infinite values")
    if any(b < a for a, b in zip(reductions, reductions[1:], strict=False)):
        raise CheckFailed(f"reductions {list(reductions)} decrease")


def _expected_output(task: str, model_args: dict[str, Any], input_shape) -> tuple[int, ...]:
    batch, height, width = input_shape[0], input_shape[-2], input_shape[-1]
    if task == "classification":
        return (batch, model_args.get("num_classes", 0))
    if task == "regression":
        return (batch, height, width)
    return (batch, model_args.get("num_classes", 0), height, width)


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _where_in(package: Path, exc: BaseException) -> str:
    """ " at FILE:LINE" for the last frame of the traceback inside the generated `package` (the
    generated line that failed), or "" when none is."""
    found = ""
    root = package.resolve()
    tb = exc.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename)
        if path.is_relative_to(root):
            found = f" at {path.relative_to(root.parent)}:{tb.tb_lineno}"
        tb = tb.tb_next
    if not found and isinstance(exc, SyntaxError) and exc.filename:
        path = Path(exc.filename).resolve()
        if path.is_relative_to(root):
            found = f" at {path.relative_to(root.parent)}:{exc.lineno}"
    return found
