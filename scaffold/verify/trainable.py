"""The ``trainable`` check: every trainable parameter of the task's model gets a gradient.

Lightning's ``strategy="ddp"`` (``find_unused_parameters=False``, its default) stops at the second
step when a trainable parameter gets no gradient: a head the backbone still holds, a layer added by
hand and never called. The check builds the first task's model through the config's factory, runs
one forward and backward on a real batch of that task (its datamodule's first training batch) and
names the modules whose parameters got none.
"""

from __future__ import annotations

import importlib
from typing import Any

from scaffold.errors import one_line
from scaffold.verify.types import CheckFailed


def check_trainable(context) -> str:
    model, task = context.task_model()
    batch = first_batch(context.config())
    image = batch["image"] if isinstance(batch, dict) else batch[0]
    model.train()
    model.zero_grad(set_to_none=True)
    # several modalities (a GEO-Bench-2 task of a model fed a dict): each one as float
    image = {k: v.float() for k, v in image.items()} if isinstance(image, dict) else image.float()
    try:
        output = model(image).output
        output.float().mean().backward()
    except Exception as exc:
        raise CheckFailed(
            f"forward/backward of the {task} model on a batch of the task raised {one_line(exc)}"
        ) from exc
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    dead = {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}
    if dead:
        modules = modules_without_gradient(model, dead)
        shown = ", ".join(f"`{m}`" if m else "the whole model" for m in modules[:8])
        shown += " ..." if len(modules) > 8 else ""
        raise CheckFailed(
            f"{len(dead)} of {len(trainable)} trainable tensors get no gradient, in {shown}: "
            "Lightning's strategy='ddp' stops at the second step on them; remove what the "
            "forward does not use (or set requires_grad=False)"
        )
    shape = (
        ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in image.items())
        if isinstance(image, dict)
        else "x".join(map(str, image.shape))
    )
    detail = f"all {len(trainable)} trainable tensors get a gradient on a {shape} batch of the task"
    return detail + frozen_detail(model, context.state.spec.frozen)


def frozen_detail(model, frozen: tuple[str, ...]) -> str:
    """What the backbone froze (parameters the input never reaches, FROZEN in backbone.py), as
    found frozen in the task's model; "" when none."""
    names = {n for n, p in model.named_parameters() if not p.requires_grad}
    found = [
        f for f in frozen if any(n == f"model.{f}" or n.endswith(f".model.{f}") for n in names)
    ]
    if not found:
        return ""
    shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    return f"; {len(found)} frozen by the backbone, never reached by the input: {shown}"


def first_batch(config: dict[str, Any]) -> Any:
    """The first training batch of the config's first task, from its own datamodule (with
    the datamodule's batch augmentation, normalisation included, when it has one)."""
    task = (config.get("tasks") or [{}])[0]
    spec = task.get("datamodule") or {}
    class_path = str(spec.get("class_path", ""))
    module, _, name = class_path.rpartition(".")
    datamodule = loader = None
    try:
        cls = getattr(importlib.import_module(module), name)
        datamodule = cls(**(spec.get("init_args") or {}))
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        batch = next(iter(loader))
    except Exception as exc:
        # A reader's error (a worker process's above all) names no sample: find it here.
        dataset = getattr(loader, "dataset", None) or getattr(datamodule, "train_dataset", None)
        broken = broken_sample(dataset) if dataset is not None else None
        raise CheckFailed(
            f"task {task.get('name', '?')!r}: its datamodule {class_path} gave no training batch: "
            + (broken or one_line(exc))
        ) from exc
    aug = getattr(datamodule, "train_aug", None) or getattr(datamodule, "aug", None)
    if callable(aug) and isinstance(batch, dict):
        batch = aug(batch)
    return batch


SCAN_LIMIT = 2000  # samples read one by one, at most, to find the one that breaks a batch


def broken_sample(dataset: Any) -> str | None:
    """The first sample of `dataset` that raises when read in this process, named by its index
    and, where the dataset lists its files, its file: ``sample 3 (path): ValueError: ...``."""
    try:
        count = len(dataset)
    except TypeError:
        return None
    for index in range(min(count, SCAN_LIMIT)):
        try:
            dataset[index]
        except Exception as exc:
            file = sample_file(dataset, index, count)
            return f"training sample {index}{f' ({file})' if file else ''}: {one_line(exc)}"
    return None


def sample_file(dataset: Any, index: int, count: int) -> str | None:
    """The file of sample `index`: from a list of the dataset's with one path (or one (path,
    ...) tuple, as torchvision's ImageFolder keeps) per sample; through a Subset's indices."""
    import os

    inner, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if inner is not None and indices is not None and len(indices) == count:
        return sample_file(inner, int(indices[index]), len(inner))
    for value in getattr(dataset, "__dict__", {}).values():
        if not isinstance(value, (list, tuple)) or len(value) != count:
            continue
        item = value[index]
        if isinstance(item, (list, tuple)) and item:
            item = item[0]
        if isinstance(item, (str, os.PathLike)):
            return str(item)
    return None


def modules_without_gradient(model, dead: set[str]) -> list[str]:
    """The top-most modules all of whose trainable parameters are in `dead` (a parameter of a
    module that also has live ones is named by itself)."""
    all_dead: set[str] = set()
    for name, module in model.named_modules():
        own = [
            f"{name}.{p}" if name else p
            for p, param in module.named_parameters()
            if param.requires_grad
        ]
        if own and all(p in dead for p in own):
            all_dead.add(name)
    top = sorted(
        m for m in all_dead if not any(m.startswith(f"{o}.") or not o for o in all_dead - {m})
    )
    covered = {p for p in dead if any(p.startswith(f"{m}.") or not m for m in top)}
    return top + sorted(dead - covered)
