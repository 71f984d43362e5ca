"""The ``tracks`` check: a frozen task's encoder really stays as it is while the task trains, and a
full fine-tuning task's encoder really learns.

For the first ``fit/<task>.yaml`` of each track (render/tracks.py names the frozen ones
``<task>_frozen``), TerraTorch's own CLI builds the task as ``terratorch fit`` would (so
``freeze_backbone`` acts as it does in the real run), and Lightning trains it for one step on
one real training batch (the task's own optimizer, on the CPU, no validation, nothing written).
The encoder's parameters are compared with a snapshot taken before: on the frozen track none may
change and the rest of the model must (else nothing trained); on the full track some must.
Buffers (BatchNorm's running statistics) are not parameters: a frozen encoder's that moved are
said, not failed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

from scaffold.errors import one_line
from scaffold.render.tracks import FROZEN, FULL_FT, track_of
from scaffold.verify.fit import _build, _import_custom_modules, fit_files
from scaffold.verify.types import CheckFailed, read_config
from scaffold.write.names import output_folder


def tracked_files(state) -> dict[str, str]:
    """The first fit config of each track (track -> relative path), when a frozen one exists."""
    found: dict[str, str] = {}
    for rel in fit_files(state):
        found.setdefault(track_of(Path(rel).stem)[1], rel)
    return found if FROZEN in found else {}


def check_tracks(context) -> str:
    said = []
    for track, rel in sorted(tracked_files(context.state).items()):
        said.append(f"{rel}: {check_track(context.directory / rel, track)}")
    return "; ".join(said)


def check_track(path: Path, track: str) -> str:
    """One training step of the task `path` names; what its encoder's parameters did, checked
    against `track`."""

    config = read_config(path)
    # From the output folder, as `terratorch fit` runs (its paths are relative to it).
    with contextlib.chdir(output_folder(path)):
        return _check_track(path, track, config)


def _check_track(path: Path, track: str, config: dict) -> str:
    import torch

    _import_custom_modules(path, config.get("custom_modules_path"))
    cli = _build(path)
    task, datamodule = cli.model, cli.datamodule
    encoder = getattr(getattr(task, "model", None), "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise CheckFailed(f"{path}: the task's model has no `encoder` to compare")
    if isinstance(getattr(datamodule, "num_workers", None), int):
        datamodule.num_workers = 0
    before = _snapshot(task)
    buffers = {n: b.detach().clone() for n, b in encoder.named_buffers()}
    _one_step(path, task, datamodule)
    after = dict(task.named_parameters())
    prefix = _prefix(task, encoder)
    changed = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    enc_total = sum(1 for n in before if n.startswith(prefix))
    enc_changed = sum(1 for n in changed if n.startswith(prefix))
    rest_changed = len(changed) - enc_changed
    if track == FROZEN:
        if enc_changed:
            names = sorted(n for n in changed if n.startswith(prefix))[:4]
            raise CheckFailed(
                f"{path}: the frozen track's encoder changed in one training step "
                f"({enc_changed} of {enc_total} tensors, e.g. {', '.join(names)}): "
                "freeze_backbone did not freeze it"
            )
        if not rest_changed:
            raise CheckFailed(f"{path}: one training step changed no parameter at all")
        moved = [n for n, b in encoder.named_buffers() if not torch.equal(buffers[n], b)]
        note = f" ({len(moved)} buffers of it, running statistics, moved)" if moved else ""
        return (
            f"frozen: all {enc_total} encoder tensors unchanged after a training step, "
            f"{rest_changed} others changed{note}"
        )
    if not enc_changed:
        raise CheckFailed(
            f"{path}: the {FULL_FT} track's encoder did not change in a training step "
            f"(none of its {enc_total} tensors): it does not train"
        )
    return f"{FULL_FT}: {enc_changed} of {enc_total} encoder tensors changed after a training step"


def _snapshot(task) -> dict:
    return {n: p.detach().clone() for n, p in task.named_parameters()}


def _prefix(task, encoder) -> str:
    for name, module in task.named_modules():
        if module is encoder:
            return f"{name}."
    raise CheckFailed("the task's encoder is not among its modules")


def _one_step(path: Path, task, datamodule) -> None:
    """Lightning's own training loop for one batch: the task's optimizer, CPU, nothing kept."""
    from lightning.pytorch import Trainer

    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        limit_train_batches=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    quiet = io.StringIO()
    chatter = logging.getLogger("lightning.pytorch")  # its "GPU available" lines, its tips
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr), contextlib.redirect_stderr(quiet):
            trainer.fit(task, datamodule=datamodule)
    except Exception as exc:
        raise CheckFailed(f"{path}: one training step failed: {one_line(exc)}") from exc
    finally:
        chatter.setLevel(level)
