"""The three-way merge of `update`: per file, the last generated content (the base, from the state),
what is on disk (the person's, perhaps edited) and the new render; and the atomic write of one file.

Nothing here knows what the files are: any file of the output folder is planned the same way.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scaffold.errors import ScaffoldError
from scaffold.write.names import WRITE_TEMP_SUFFIX

Action = Literal["unchanged", "updated", "merged", "conflict", "added", "kept-deleted", "removed"]


WRITTEN: tuple[Action, ...] = (
    "updated",
    "merged",
    "conflict",
    "added",
)  # plan actions that write the new content


UNTOUCHED: tuple[Action, ...] = (
    "unchanged",
    "kept-deleted",
)  # plan actions that leave the disk as it is


@dataclass
class FilePlan:
    rel: str
    action: Action
    new: bytes | None  # the content to write; None: delete (or leave deleted)
    old: bytes | None  # what is on disk now


def is_write_temp(name: str, files: set[str]) -> bool:
    """`write_atomic`'s temporary name for one of `files` (a person's ``.NAME.backup`` is not)."""
    match = re.fullmatch(rf"\.(.+)\.[a-z0-9_]{{8}}{re.escape(WRITE_TEMP_SUFFIX)}", name)
    return match is not None and match.group(1) in files


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
    chunks: list[str] = []
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=WRITE_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        if path.exists():
            shutil.copymode(path, tmp)
        else:  # a script (iterate2/trial.py, run as a program) is executable
            os.chmod(tmp, 0o755 if content.startswith(b"#!") else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
