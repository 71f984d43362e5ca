"""An update's journal: what lets the next run undo an update that was killed half way.

`update` computes every new content first. Before it replaces anything it writes
``DIR/.scaffold/journal.json`` (atomically): for each file it will write or remove, the content on
disk before (stored as a merge base is: compressed, with its sha256) and the sha256 of the new
content; for the smoke data, the folders beside ``data/`` that hold the new files until they move
in and the replaced ones until the update is complete. The journal goes once state.json is
written. A run killed in between (kill -9, a crash, the power) leaves it, and the next `update` or
`verify` rolls that update back to where it started, state.json included:

- a file that holds the new content gets its old content back (or goes, if it was new);
- a file that still holds the old content stays;
- a file that holds neither was changed by the person after the kill: it stays as they left it,
  and is named;
- the smoke files that moved into ``data/`` move out, the replaced ones move back; the person's
  own files in ``data/`` are never moved at all.

Each step looks at the disk first, so a rollback killed half way is finished by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scaffold.errors import ScaffoldError
from scaffold.write.merge import write_atomic
from scaffold.write.names import DATA_DIR, JOURNAL_FILE, STATE_DIR
from scaffold.write.state import decode_base, encode_base


@dataclass(frozen=True)
class DataSwap:
    """The smoke data replaced file by file. `new` and `old` are folders in DIR holding files at
    their DIR-relative paths (``data/train/...``): the new files wait in `new`, the replaced ones
    go to `old` (all of them, before the first new one moves in) and stay there until the
    update is complete."""

    new: str
    old: str
    new_files: tuple[str, ...]
    old_files: tuple[str, ...]


@dataclass
class RolledBack:
    """What the rollback of an interrupted update did: the files (and ``data/``) it restored,
    and those it kept because the person changed them after the interruption."""

    restored: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def journal_path(out: Path) -> Path:
    return out / STATE_DIR / JOURNAL_FILE


def _sha256(content: bytes | None) -> str | None:
    return None if content is None else hashlib.sha256(content).hexdigest()


def begin(out: Path, changes: dict[str, tuple[bytes | None, bytes | None]], data: DataSwap | None):
    """Record the update about to be written: `changes` maps each file (relative to DIR) to its
    (old, new) content, None meaning absent."""
    files = {
        rel: {"old": None if old is None else encode_base(old), "new_sha256": _sha256(new)}
        for rel, (old, new) in sorted(changes.items())
    }
    journal = {"files": files, "data": asdict(data) if data else None}
    write_atomic(journal_path(out), (json.dumps(journal, indent=1) + "\n").encode())


def finish(out: Path, data: DataSwap | None) -> None:
    """The update is complete (state.json written): the journal goes, then the replaced data."""
    journal_path(out).unlink(missing_ok=True)
    if data is not None:
        shutil.rmtree(out / data.old, ignore_errors=True)


def swap_data(out: Path, swap: DataSwap) -> None:
    """Move the old smoke files out of ``data/`` into `swap.old`, then the new ones in."""
    for rel in swap.old_files:
        if (out / rel).is_file():
            _move(out / rel, out / swap.old / rel)
            remove_empty_parents(out / rel, out / DATA_DIR)
    for rel in swap.new_files:
        _move(out / swap.new / rel, out / rel)
    shutil.rmtree(out / swap.new, ignore_errors=True)


def roll_back(out: Path) -> RolledBack | None:
    """Undo the update the journal records (None: there is none), then remove the journal."""
    path = journal_path(out)
    if not path.is_file():
        return None
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        files: dict = journal["files"]
        data = DataSwap(**journal["data"]) if journal.get("data") else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScaffoldError(
            f"{path}: the journal of an interrupted update cannot be read ({exc}); the files it "
            f"lists may hold that update's content: check {out} (or restore it from a backup), "
            "then delete the journal"
        ) from exc
    done = RolledBack()
    for rel, entry in files.items():
        target = out / rel
        current = target.read_bytes() if target.is_file() else None
        old = None if entry["old"] is None else decode_base(entry["old"])
        if entry["old"] is not None and old is None:
            raise ScaffoldError(f"{path}: the old content of {rel} is damaged; cannot roll back")
        if current == old:
            continue  # never written (or already restored)
        if _sha256(current) != entry["new_sha256"]:
            done.kept.append(rel)  # the person's: changed after the interruption
        elif old is None:
            target.unlink()
            done.restored.append(rel)
        else:
            write_atomic(target, old)
            done.restored.append(rel)
    if data is not None and _roll_back_data(out, data):
        done.restored.append(f"{DATA_DIR}/")
    path.unlink()
    if data is not None:
        shutil.rmtree(out / data.new, ignore_errors=True)
        shutil.rmtree(out / data.old, ignore_errors=True)
    return done


def _roll_back_data(out: Path, swap: DataSwap) -> bool:
    """Move the new smoke files that reached ``data/`` back out, and the old ones back in;
    True when anything moved. (A new file not waiting in `swap.new` is in ``data/``: every old
    one left ``data/`` before the first new one came in, so nothing old is taken for new.)"""
    moved = False
    for rel in swap.new_files:
        if not (out / swap.new / rel).exists() and (out / rel).is_file():
            _move(out / rel, out / swap.new / rel)
            moved = True
    for rel in swap.old_files:
        if (out / swap.old / rel).is_file():
            _move(out / swap.old / rel, out / rel)
            moved = True
    for rel in swap.new_files:
        remove_empty_parents(out / rel, out / DATA_DIR)
    return moved


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)  # ordinary folders (umask)
    os.replace(source, target)


def remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove the folders above `path` up to `stop` (excluded) while they are empty."""
    for parent in path.parents:
        if parent == stop or not parent.is_relative_to(stop):
            return
        try:
            parent.rmdir()
        except OSError:  # not empty (a file of the person's, or another split): stays
            return


def say_rolled_back(progress, done: RolledBack) -> None:
    """Tell the person what the rollback did, and which files it left as they are."""
    if progress is None:
        return
    restored = ", ".join(done.restored) or "nothing needed restoring"
    progress.print(
        f"rolled back an interrupted update: {restored}", highlight=False, soft_wrap=True
    )
    for rel in done.kept:
        progress.print(
            f"kept {rel}: changed after the interrupted update, so it stays as you left it "
            "(it may hold part of that update)",
            highlight=False,
            soft_wrap=True,
        )
