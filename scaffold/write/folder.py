"""Writing the output folder as a whole: refusing one that is not ours, the temporary folder a run
renders into (locked while the run lives), what killed runs left, moving the result in."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from scaffold.errors import ScaffoldError, check_utf8_path
from scaffold.write.names import STATE_DIR, TEMP_SUFFIX
from scaffold.write.state import is_generated


@contextlib.contextmanager
def os_errors_named(out: Path, label: str | None = None) -> Iterator[None]:
    """A folder that cannot be written is bad input (exit 2), not an internal error."""
    try:
        yield
    except OSError as exc:
        where = label or f"--out {out}"
        raise ScaffoldError(f"{where}: cannot write there ({exc.strerror or exc})") from exc


def out_label(out: Path, given: bool) -> str:
    """How messages name the output folder: as the person's --out, or as the default it is."""
    return f"--out {out}" if given else f"{out} (the default output folder; --out chooses another)"


def check_output_dir(out: Path, label: str | None = None) -> None:
    """`label` names the folder in messages (default: ``--out OUT``)."""
    label = label or f"--out {out}"
    with os_errors_named(out, label):
        _check_output_dir(out, label)


def _check_output_dir(out: Path, label: str) -> None:
    check_utf8_path("the output folder", out)
    if out.exists() and not out.is_dir():
        raise ScaffoldError(f"{label}: exists and is not a directory")
    ancestor = next(p for p in (out, *out.parents) if p.exists())  # "/" at the latest
    if not ancestor.is_dir():
        raise ScaffoldError(f"{label}: cannot write there ({ancestor} is a file)")
    # what a killed run left inside goes once nothing is refused: it does not count here
    if out.is_dir() and set(out.iterdir()) - set(dead_temps(out)):
        if is_generated(out):
            raise ScaffoldError(
                f"{label}: already holds a generated backbone; "
                f"run `scaffold update {shlex.quote(str(out))}`"
            )
        raise ScaffoldError(
            f"{label}: not empty and not made by scaffold; choose an empty or new directory"
        )


def _is_temp_of(out: Path, path: Path) -> bool:
    # the name stays short of the 255-character limit whatever the output's name
    return path.name.startswith(f".{out.name[:64]}.") and path.name.endswith(TEMP_SUFFIX)


def new_temp(out: Path, inside: bool) -> tuple[Path, int]:
    """The temporary folder to render into, beside `out` or `inside` it (the same filesystem
    either way, so the result moves in by renames), and the descriptor that holds its lock
    while this run works in it. It gets its recognisable name only once locked, so that
    `remove_leftovers` never takes a live run's folder for a dead one."""
    parent = out if inside else out.parent
    parent.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix=f".{out.name[:64]}.", dir=parent))
    fd = os.open(made, os.O_RDONLY)
    try:
        # Where folders cannot be locked (some network filesystems), no run's folder counts as
        # dead: `remove_leftovers` cannot lock it either and leaves it.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = made.with_name(made.name + TEMP_SUFFIX)
        made.rename(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
    except BaseException:
        os.close(fd)
        shutil.rmtree(made, ignore_errors=True)
        raise
    return tmp, fd


def dead_temps(out: Path) -> list[Path]:
    """The temporary folders that runs killed while writing `out` left beside it (or in it);
    one that a live run holds locked is not among them. Nothing is removed."""
    found = []
    for folder in (out.parent, out):
        if not folder.is_dir():
            continue
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue  # a folder that cannot be listed is refused where it matters
        for tmp in entries:
            if not _is_temp_of(out, tmp) or not tmp.is_dir() or tmp.is_symlink():
                continue
            try:
                fd = os.open(tmp, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a run is working in it (or it cannot be locked here)
            else:
                found.append(tmp)
            finally:
                os.close(fd)
    return found


def remove_leftovers(out: Path, progress=None) -> list[Path]:
    """Remove what `dead_temps` finds, saying so. Returns those removed."""
    removed = dead_temps(out)
    for tmp in removed:
        shutil.rmtree(tmp, ignore_errors=True)
    say_removed(progress, removed)
    say_older_temps(out, progress)
    return removed


def older_temps(out: Path) -> list[Path]:
    """The temporary folders older versions of scaffold made beside `out` (``.OUT.XXXXXXXX``,
    without the suffix) that a killed run left holding its state. They were never locked, so
    a live run's cannot be told from a dead one's: they are reported, never removed."""
    if not out.parent.is_dir():
        return []
    names = {f".{out.name}.", f".{out.name[:64]}."}
    try:
        entries = sorted(out.parent.iterdir())
    except OSError:
        return []
    return [
        path
        for path in entries
        if any(
            path.name.startswith(prefix) and re.fullmatch(r"[a-z0-9_]{8}", path.name[len(prefix) :])
            for prefix in names
        )
        and not path.is_symlink()
        and (path / STATE_DIR).is_dir()
    ]


def say_older_temps(out: Path, progress) -> None:
    """Mention what `older_temps` finds: the person removes it once no run is writing."""
    if progress is None:
        return
    for path in older_temps(out):
        progress.print(
            f"{path} looks left by an interrupted run of an older scaffold; remove it if no "
            f"scaffold run is writing {out}",
            highlight=False,
            soft_wrap=True,
        )


def say_removed(progress, paths: list[Path], dry_run: bool = False) -> None:
    """Tell the person what scaffold removed (or would) that an interrupted run of it left."""
    if progress is None:
        return
    what = "would remove" if dry_run else "removed"
    for path in paths:
        progress.print(
            f"{what} {path}, left by an interrupted scaffold run", highlight=False, soft_wrap=True
        )


def move_entries_up(tmp: Path) -> None:
    """Move what `tmp` holds into its parent (the empty output folder), the state last, so that
    the folder counts as generated only once it is complete; on an error, take it all back.
    Nothing already there is replaced: another run that filled the folder meanwhile keeps it
    (an ``OSError`` with ``EEXIST`` or ``ENOTEMPTY`` says so)."""
    out = tmp.parent
    with _locked(out):  # two runs filling one empty folder take turns
        _move_entries_up(tmp, out)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # where folders cannot be locked, no turns
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _move_entries_up(tmp: Path, out: Path) -> None:
    others = set(out.iterdir()) - {tmp} - set(dead_temps(out)) - set(_live_temps(out))
    if others:
        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(out))
    entries = sorted(tmp.iterdir(), key=lambda p: p.name == STATE_DIR)
    moved: list[Path] = []
    try:
        for entry in entries:
            _move_no_replace(entry, out / entry.name)
            moved.append(out / entry.name)
        tmp.rmdir()
    except BaseException:
        for path in moved:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _live_temps(out: Path) -> list[Path]:
    """Other runs' temporary folders inside `out` (locked, so not among `dead_temps`)."""
    return [p for p in out.iterdir() if _is_temp_of(out, p) and p.is_dir() and not p.is_symlink()]


def _move_no_replace(source: Path, target: Path) -> None:
    """`rename`, refusing an existing target: a hard link fails on one, as `rename` onto a
    non-empty folder does; an empty folder of the same name is only a race we lose quietly."""
    if source.is_dir() and not source.is_symlink():
        source.rename(target)
        return
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        # a filesystem without hard links: look, then rename (a narrow race, as before)
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from exc
        source.rename(target)
        return
    source.unlink()
