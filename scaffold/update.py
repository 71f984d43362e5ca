"""`scaffold update`: re-analyse the model, re-render, and merge three ways with the hand edits.

For each generated file: base is the pristine copy of the last generation (``.scaffold/pristine``),
ours the file on disk, theirs the new render. ``git merge-file`` does the merge; a conflict leaves
the standard markers in the file and is reported. A file the person deleted stays deleted. When
nothing changed, nothing is written at all.

The new contents are computed in full before anything is written; the writes then replace each
file atomically (write beside it, ``os.replace``), with Ctrl-C held back until they are done, and
the state is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.errors import ScaffoldError
from scaffold.progress import status
from scaffold.state import (
    PRISTINE_DIR,
    STATE_DIR,
    STATE_FILE,
    State,
    locked,
    read_pristine,
    read_state,
)

WRITTEN = ("updated", "merged", "conflict", "added")  # plan actions that write the new content
UNTOUCHED = ("unchanged", "kept-deleted")  # plan actions that leave the disk as it is


@dataclass
class FilePlan:
    rel: str
    action: str  # "unchanged", "updated", "merged", "conflict", "added", "kept-deleted", "removed"
    new: bytes | None  # the content to write; None: delete (or leave deleted)
    old: bytes | None  # what is on disk now


@dataclass
class UpdateResult:
    out: Path
    backbone: str
    benchmark_config: Path
    input_shape: tuple[int, ...]
    plans: list[FilePlan] = field(default_factory=list)
    diff: str = ""
    data_rewritten: bool = False

    @property
    def changes(self) -> list[tuple[str, str]]:
        return [(p.rel, p.action) for p in self.plans if p.action != "unchanged"]

    @property
    def conflicts(self) -> list[str]:
        return [p.rel for p in self.plans if p.action == "conflict"]

    def to_dict(self) -> dict[str, Any]:
        written = [p.rel for p in self.plans if p.action in WRITTEN]
        return {
            "backbone": self.backbone,
            "package": str(self.out / self.backbone),
            "benchmark_config": str(self.benchmark_config),
            "input_shape": list(self.input_shape),
            "files": [str(self.out / rel) for rel in written],
            "changes": [{"file": rel, "action": action} for rel, action in self.changes],
            "conflicts": [str(self.out / rel) for rel in self.conflicts],
            "data_rewritten": self.data_rewritten,
        }


def update_dir(
    directory: Path,
    dry_run: bool = False,
    progress=None,
    forward_args: dict[str, Any] | None = None,
    image_arg: str | None = None,
) -> UpdateResult:
    """Re-analyse, re-render and merge; `forward_args` and `image_arg` change the recorded ones."""
    from scaffold.analysis import analyse
    from scaffold.render import CONFIG_FILE, RenderOptions, check_task, render_to_temp

    out = Path(directory).resolve()
    state = read_state(out)
    options = state.options
    if forward_args or image_arg:
        options = dataclasses.replace(
            options,
            forward_args={**options.forward_args, **(forward_args or {})},
            image_arg=image_arg or options.image_arg,
        )
    with locked(out):
        with status(progress, f"analysing {options.target}"):
            spec = analyse(
                options.target,
                options.args,
                options.input_shape,
                options.forward_args,
                options.image_arg,
            )
        check_task(spec, options.task)
        render_options = RenderOptions(
            name=options.name or "",
            out=out,
            task=options.task,
            target=options.target,
            weights=options.weights,
        )
        tmp, files = render_to_temp(spec, render_options)
        try:
            theirs = {rel: (tmp / rel).read_bytes() for rel in files}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        plans = [
            plan_file(out, rel, read_pristine(out, rel), theirs.get(rel))
            for rel in sorted(set(state.files) | set(theirs))
        ]
        new_state = State(__version__, options, spec, tuple(sorted(theirs)))
        result = UpdateResult(
            out=out,
            backbone=options.name or "",
            benchmark_config=out / CONFIG_FILE,
            input_shape=tuple(spec.input_shape),
            plans=plans,
        )
        data_changed = _data_key(state) != _data_key(new_state)
        if dry_run:
            result.diff = unified_diff(plans)
            return result
        state_changed = (out / STATE_DIR / STATE_FILE).read_text(encoding="utf-8") != (
            new_state.to_json()
        )
        if not state_changed and all(p.action in UNTOUCHED for p in plans):
            return result  # nothing to do: not a single file is touched
        with status(progress, "writing"), _interrupts_deferred():
            if data_changed:
                _rewrite_data(out, spec, options.task)
                result.data_rewritten = True
            for plan in plans:
                if plan.action in WRITTEN:
                    assert plan.new is not None
                    write_atomic(out / plan.rel, plan.new)
                elif plan.action == "removed":
                    (out / plan.rel).unlink(missing_ok=True)
            for rel, content in theirs.items():
                if read_pristine(out, rel) != content:
                    write_atomic(out / STATE_DIR / PRISTINE_DIR / rel, content)
            for rel in set(state.files) - set(theirs):
                (out / STATE_DIR / PRISTINE_DIR / rel).unlink(missing_ok=True)
            if state_changed:
                write_atomic(out / STATE_DIR / STATE_FILE, new_state.to_json().encode())
    return result


def plan_file(out: Path, rel: str, base: bytes | None, theirs: bytes | None) -> FilePlan:
    """What to do with one file, given the last pristine render, the disk and the new render."""
    path = out / rel
    ours = path.read_bytes() if path.is_file() else None
    if theirs is None:  # the new render no longer has this file
        if ours is not None and ours == base:
            return FilePlan(rel, "removed", None, ours)
        return FilePlan(rel, "unchanged", ours, ours)
    if ours is None:
        if base is None:
            return FilePlan(rel, "added", theirs, None)
        return FilePlan(rel, "kept-deleted", None, None)  # the person deleted it
    if theirs == base or ours == theirs:
        return FilePlan(rel, "unchanged", ours, ours)
    if ours == base:
        return FilePlan(rel, "updated", theirs, ours)
    merged, conflicts = merge3(ours, base or b"", theirs)
    return FilePlan(rel, "conflict" if conflicts else "merged", merged, ours)


def merge3(ours: bytes, base: bytes, theirs: bytes) -> tuple[bytes, int]:
    """git merge-file: (merged content, number of conflicts)."""
    with tempfile.TemporaryDirectory(prefix="scaffold-merge-") as tmp:
        paths = []
        for name, content in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / name
            path.write_bytes(content)
            paths.append(str(path))
        try:
            done = subprocess.run(
                [
                    "git",
                    "merge-file",
                    "-p",
                    "-L",
                    "yours (on disk)",
                    "-L",
                    "last generated",
                    "-L",
                    "regenerated",
                    *paths,
                ],
                capture_output=True,
            )
        except FileNotFoundError as exc:
            raise ScaffoldError(
                "`scaffold update` merges with `git merge-file`: install git"
            ) from exc
    if done.returncode < 0 or done.returncode > 127:
        raise RuntimeError(f"git merge-file failed: {done.stderr.decode(errors='replace')}")
    return done.stdout, done.returncode


def unified_diff(plans: list[FilePlan]) -> str:
    chunks = []
    for plan in plans:
        if plan.action in UNTOUCHED:
            continue
        old = (plan.old or b"").decode(errors="replace").splitlines(keepends=True)
        new = (plan.new or b"").decode(errors="replace").splitlines(keepends=True)
        chunks.extend(difflib.unified_diff(old, new, f"a/{plan.rel}", f"b/{plan.rel}"))
    return "".join(chunks)


def write_atomic(path: Path, content: bytes) -> None:
    """Write beside the target, then rename over it: the file is either old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _data_key(state: State) -> tuple[Any, ...]:
    spec = state.spec
    return (spec.in_chans, spec.num_frames, tuple(spec.img_size), state.options.task)


def _rewrite_data(out: Path, spec, task: str) -> None:
    """The smoke dataset follows the model's bands, frames and size: write it anew, then swap."""
    from scaffold.render import DATA_DIR, NUM_CLASSES
    from scaffold.smoke import write_smoke_dataset

    fresh = Path(tempfile.mkdtemp(prefix=f".{DATA_DIR}.", dir=out))
    write_smoke_dataset(fresh, spec.in_chans, spec.num_frames, spec.img_size, task, NUM_CLASSES)
    old = out / DATA_DIR
    if old.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{DATA_DIR}-old.", dir=out))
        old.rename(trash / DATA_DIR)
        fresh.rename(old)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        fresh.rename(old)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT until the block ends, so Ctrl-C cannot stop the writes half way."""
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt
