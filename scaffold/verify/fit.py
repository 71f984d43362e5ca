"""The ``fit configs`` check: each ``fit/<task>.yaml`` is what ``terratorch fit --config`` takes.

Checked as the real run meets it: its settings first (epochs and batch limits by the benchmark
check's rules, `verify/shorten.py`; the package folder and the data paths it names exist; the
folders it writes can be created), then the package imported from ``custom_modules_path`` as
``terratorch fit`` imports it, then TerraTorch's own CLI (``build_lightning_cli``, a
LightningCLI) parses the file and builds what it names (the trainer, the task with its model,
the datamodule), and one training batch of the real data goes through the task's model
(forward only, on the CPU). A key the parser rejects, a class it cannot import, a model the
factory cannot build, or a model that does not take the data (``backbone_in_chans`` against the
data's channels) is a finding that names the file.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaffold.errors import one_line
from scaffold.verify.shorten import PATH_KEY, trainer_problems
from scaffold.verify.storage import storage_problem
from scaffold.verify.types import CheckFailed, read_config
from scaffold.write.names import FIT_DIR, output_folder

STOPS = "terratorch fit stops on it"
# model_args that say how many channels the input has.
CHANNEL_KEYS = ("backbone_in_chans", "in_channels")
# What TerraTorch's tasks take from a batch as targets, not as model inputs.
BATCH_TARGETS = ("image", "mask", "label", "filename")


def fit_files(state) -> list[str]:
    return sorted(
        rel for rel in state.files if rel.startswith(f"{FIT_DIR}/") and rel.endswith(".yaml")
    )


def check_fit(context) -> str:
    files = fit_files(context.state)
    for rel in files:
        check_fit_file(context.directory / rel)
    return (
        f"terratorch fit parses and builds {', '.join(files)}; one training batch of each "
        "task's data runs through its model"
    )


def check_fit_file(path: Path) -> str:
    """`path` as ``terratorch fit --config PATH`` meets it: its settings, the package it
    imports, what it builds, and one training batch of its data through the task's model."""
    config = read_config(path)
    # From the output folder, as `terratorch fit` runs (its paths are relative to it).
    with contextlib.chdir(output_folder(path)):
        problems = setting_problems(config)
        if problems:
            raise CheckFailed(f"{path}: {'; '.join(problems)}")
        _import_custom_modules(path, config.get("custom_modules_path"))
        return _one_batch(path, _build(path), config)


def setting_problems(config: dict[str, Any]) -> list[str]:
    """What `terratorch fit` would stop on, or train nothing with, among the config's values:
    the trainer's epochs and batch limits (the benchmark's rules), the paths it reads (the
    package, the datamodule's data) and the folders it writes (relative ones from the working
    directory, as the real run reads them)."""
    problems = []
    modules = config.get("custom_modules_path")
    if modules is not None and not Path(str(modules)).is_dir():
        problems.append(f"custom_modules_path: {modules} is not a folder: {STOPS}")
    trainer = config.get("trainer")
    if isinstance(trainer, dict):
        problems += trainer_problems(trainer, "trainer", iterate=False)
        problems += _writes(trainer)
    data = config.get("data")
    init_args = data.get("init_args") if isinstance(data, dict) else None
    for key, value in (init_args or {}).items():
        named = PATH_KEY.search(str(key)) and isinstance(value, str) and value
        if named and not Path(value).exists():  # a relative one: from the working directory
            problems.append(f"data.init_args.{key}: {value} does not exist: {STOPS}")
    return problems


def _writes(trainer: dict[str, Any]) -> list[str]:
    """The folders Lightning creates for the run: its root, and each logger's ``save_dir``."""
    found = [("trainer.default_root_dir", trainer.get("default_root_dir"))]
    loggers = trainer.get("logger")
    for i, logger in enumerate(loggers if isinstance(loggers, list) else [loggers]):
        args = logger.get("init_args") if isinstance(logger, dict) else None
        if isinstance(args, dict):
            at = f"[{i}]" if isinstance(loggers, list) else ""
            found.append((f"trainer.logger{at}.init_args.save_dir", args.get("save_dir")))
    return [p for key, value in found if (p := storage_problem(key, value))]


def _import_custom_modules(path: Path, modules: Any) -> None:
    """Import the package as ``terratorch fit`` does before anything else (LightningCLI given
    no subcommand never reads the key): from `modules`, never a same-named one imported
    earlier from elsewhere."""
    if not modules:
        return
    package = Path(str(modules)).resolve()
    module = sys.modules.get(package.name)
    if module is None:
        from terratorch.cli_tools import import_custom_modules

        try:
            import_custom_modules(str(package))  # absolute: no "." left on sys.path
        except Exception as exc:
            raise CheckFailed(f"{path}: custom_modules_path: {modules}: {one_line(exc)}") from exc
        module = sys.modules.get(package.name)
    where = Path(getattr(module, "__file__", None) or "").resolve().parent
    if where != package:
        raise CheckFailed(
            f"{path}: custom_modules_path: {modules}: this process holds '{package.name}' "
            f"from {where}, so the check cannot build what the real run builds"
        )


def _build(path: Path):
    """TerraTorch's LightningCLI for `path`, built (trainer, task model, datamodule), not run."""
    from terratorch.cli_tools import build_lightning_cli

    errors = io.StringIO()
    try:
        # LightningCLI prints (the seed, a parser's usage); --json keeps stdout for itself.
        with (
            contextlib.redirect_stdout(sys.stderr),
            contextlib.redirect_stderr(errors),
            _argv_of_its_own(),
        ):
            return build_lightning_cli(args=["--config", str(path)], run=False)
    except SystemExit as exc:  # the parser's own exit, its message on stderr
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        message = lines[-1].strip() if lines else f"exit {exc.code}"
        raise CheckFailed(f"terratorch fit rejects {path}: {message}") from exc
    except Exception as exc:
        raise CheckFailed(f"terratorch fit cannot build {path}: {one_line(exc)}") from exc


def _one_batch(path: Path, cli, config: dict[str, Any]) -> str:
    """The datamodule's first training batch (its batch size, no worker processes, on the
    CPU), through the task's model: forward only, in eval mode."""
    import torch

    datamodule, task = cli.datamodule, cli.model
    if datamodule is None:
        raise CheckFailed(f"{path}: names no datamodule (`data`): terratorch fit has no data")
    if isinstance(getattr(datamodule, "num_workers", None), int):
        datamodule.num_workers = 0  # one batch: no worker processes
    try:
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
    except StopIteration:
        raise CheckFailed(f"{path}: the datamodule's training data is empty") from None
    except Exception as exc:
        raise CheckFailed(
            f"{path}: the datamodule gives no training batch: {one_line(exc)}"
        ) from exc
    # As torchgeo's on_after_batch_transfer does while training: the datamodule's augmentation
    # (its normalisation) on the whole batch.
    aug = getattr(datamodule, "train_aug", None) or getattr(datamodule, "aug", None)
    if callable(aug):
        batch = aug(batch)
    if not isinstance(batch, dict) or "image" not in batch:
        raise CheckFailed(f"{path}: the datamodule's batch has no `image` for the task")
    image = batch["image"]
    shape = "x".join(map(str, image.shape)) if isinstance(image, torch.Tensor) else "a mapping"
    model_args = ((config.get("model") or {}).get("init_args") or {}).get("model_args") or {}
    if isinstance(image, torch.Tensor) and image.dim() >= 4:  # (B, C, H, W) or (B, C, T, H, W)
        for key in CHANNEL_KEYS:
            value = model_args.get(key)
            if isinstance(value, int) and value != image.shape[1]:
                raise CheckFailed(
                    f"{path}: model.init_args.model_args.{key} is {value}, but the data's "
                    f"training batch has {image.shape[1]} channels (image {shape})"
                )
    rest = {k: v for k, v in batch.items() if k not in BATCH_TARGETS}
    task.eval()
    try:
        with torch.no_grad():
            task(image, **rest)
    except Exception as exc:
        raise CheckFailed(
            f"{path}: the task's model fails on a training batch of the data (image {shape}): "
            f"{one_line(exc)}"
        ) from exc
    return f"one training batch (image {shape}) through the task's model"


@contextlib.contextmanager
def _argv_of_its_own() -> Iterator[None]:
    """LightningCLI given `args` warns when ``sys.argv`` holds arguments too (scaffold's own):
    it parses as ``terratorch fit --config FILE`` would, with nothing else on the line."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
