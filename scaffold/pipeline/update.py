"""`scaffold update`: re-analyse the model, re-render, and merge three ways with the hand edits.

For each generated file: base is the copy of the last generation kept in ``.scaffold/state.json``
(compressed and hashed: a base that changed is refused), ours the file on disk, theirs the new
render. ``git merge-file`` does the merge; a conflict leaves the standard markers in the file and
is reported, and while a generated file still holds markers a further update refuses to run. A
file the person deleted stays deleted. When nothing changed, nothing is written at all.

The smoke dataset under ``data/`` follows the model's bands: when they change, exactly the files
scaffold wrote there are replaced, and every other file in ``data/`` is left alone and reported.
A folder that was moved or copied is re-pointed at its new place; ``model`` re-points a model
file that moved.

The new contents are computed in full before anything is written (the new smoke data beside
``data/``); a journal of the writes is written next (scaffold/write/journal.py); the writes then
replace each file atomically (write beside it, ``os.replace``), with Ctrl-C and SIGTERM held back
until they are done, and the state is written last, then the journal goes. An update killed in
between is rolled back by the next `update` (or `verify`), never merged as if it were a hand edit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.console import status
from scaffold.data import read_datasets, survey_all, write_datasets
from scaffold.data.geobench import write_tasks
from scaffold.data.geobench2 import write_tasks as write_geobench2
from scaffold.errors import ScaffoldError
from scaffold.pipeline import analysed
from scaffold.pipeline import render_options as pipeline_render_options
from scaffold.pipeline.bands import check_bands_fit_weights, planned_tasks, surveyed_bands
from scaffold.pipeline.geobench2 import (
    check_names_apart,
    known_names,
    plan_geobench2,
    split_band_modalities,
    surveyed_geobench2,
)
from scaffold.render import smoke
from scaffold.render.smoke import SMOKE_FILE
from scaffold.resolve.naming import absolute_target
from scaffold.results.baselines import summary
from scaffold.verify.folder import files_with_markers
from scaffold.write import journal
from scaffold.write.folder import say_older_temps, say_removed
from scaffold.write.journal import DataSwap, RolledBack, journal_path, roll_back, say_rolled_back
from scaffold.write.merge import (
    UNTOUCHED,
    WRITTEN,
    Action,
    FilePlan,
    is_write_temp,
    plan_file,
    unified_diff,
    write_atomic,
)
from scaffold.write.names import (
    CONFIG_FILE,
    DATA_DIR,
    DATA_NEW,
    DATA_OLD,
    FIT_DIR,
    JOURNAL_FILE,
    PRISTINE_DIR,
    STATE_DIR,
    STATE_FILE,
)
from scaffold.write.state import (
    State,
    locked,
    read_pristine,
    read_state,
    with_bases,
)


class UpdateInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived while the writes ran: they were finished first; the message says so."""


@dataclass(frozen=True)
class KeptAside:
    """A hand-edited file the update replaced: `file` (relative to DIR) as the person left it is
    `kept_as`; `edits` names what was edited there (a function, a method, a constant)."""

    file: str
    kept_as: str
    edits: list[str]
    carried: list[str]  # constants whose hand-edited values the new file keeps

    def line(self) -> str:
        carried = f"; kept your {', '.join(self.carried)} in it" if self.carried else ""
        return (
            f"{self.file}: your edits to {', '.join(self.edits)} are in code scaffold's runtime "
            f"now owns (replaced{carried}); your file is kept as {self.kept_as}: carry them over "
            "by overriding the subclass's methods in backbone.py"
        )


@dataclass
class UpdateResult:
    out: Path
    backbone: str
    benchmark_config: Path
    input_shape: tuple[int, ...]
    plans: list[FilePlan] = field(default_factory=list)
    diff: str = ""
    data_rewritten: bool = False  # (dry run: would be) the smoke files under data/ written anew
    data_kept: list[str] = field(default_factory=list)  # other files in data/, left as they are
    # Generated files that still hold conflict markers from an earlier update: nothing was done.
    unresolved: list[str] = field(default_factory=list)
    baselines: tuple[str, ...] = ()
    # How the re-analysis differs from the recorded one (said even when no file changes).
    analysis: list[str] = field(default_factory=list)
    # An earlier update that was killed half way, rolled back before this one.
    rolled_back: RolledBack | None = None
    # Hand-edited files whose code scaffold's runtime now owns, kept aside (see _own_runtime).
    kept_aside: list[KeptAside] = field(default_factory=list)

    @property
    def changes(self) -> list[tuple[str, str]]:
        changes: list[tuple[str, str]] = [
            (p.rel, p.action) for p in self.plans if p.action != "unchanged"
        ]
        if self.data_rewritten:
            changes.append((f"{DATA_DIR}/", "rewritten"))
        return changes

    @property
    def conflicts(self) -> list[str]:
        return [p.rel for p in self.plans if p.action == "conflict"] + self.unresolved

    def to_dict(self) -> dict[str, Any]:
        from scaffold.render.iterate2 import summary as iterate2_summary

        written = [p.rel for p in self.plans if p.action in WRITTEN]
        return {
            "backbone": self.backbone,
            "package": str(self.out / self.backbone),
            "benchmark_config": str(self.benchmark_config),
            "input_shape": list(self.input_shape),
            "files": [str(self.out / rel) for rel in written],
            "changes": [{"file": rel, "action": action} for rel, action in self.changes],
            "conflicts": [str(self.out / rel) for rel in self.conflicts],
            "unresolved": [str(self.out / rel) for rel in self.unresolved],
            "data_rewritten": self.data_rewritten,
            "data_kept": [str(self.out / rel) for rel in self.data_kept],
            "baselines": summary(self.out, self.baselines),
            "analysis_changes": list(self.analysis),
            "rolled_back": dataclasses.asdict(self.rolled_back) if self.rolled_back else None,
            "kept_aside": [dataclasses.asdict(k) for k in self.kept_aside],
            **iterate2_summary(self.out),
        }


def update_dir(
    directory: Path,
    dry_run: bool = False,
    progress=None,
    data: tuple[str, ...] = (),
    model: str | None = None,
    ray: bool | None = None,
    baselines: tuple[str, ...] = (),
    forward_args: dict[str, Any] | None = None,
    image_arg: str | None = None,
    drop_data: tuple[str, ...] = (),
    geobench: str | None = None,
    partition: str | None = None,
    bands: tuple[str, ...] | None = None,
    iterate2: bool | None = None,
    taps: tuple[str, ...] | None = None,
    protocol: tuple[str, ...] | None = None,
    seeds: int | None = None,
    geobench2: str | None = None,
    geobench2_datasets: tuple[str, ...] | None = None,
) -> UpdateResult:
    """Update DIR; `data`: dataset folders to add to the benchmark (each becomes one more
    task); `drop_data`: recorded ones to remove (a folder of `data` takes the place of one
    dropped in the same update: a moved dataset is re-pointed so); `model`
    (path/to/file.py[:Name] or package.module:Name) says where the model lives now when it
    moved; `ray`: write (True) or stop writing (False) the Ray route's config,
    None: as recorded (`iterate2` the same for iterate2's files); `baselines`: reference
    backbones to add to those recorded (a config each); `forward_args` and `image_arg` change
    the recorded ones; `geobench` (ROOT), `partition`, `bands`, `taps`, `protocol` (the
    tracks) and `seeds` replace the recorded ones (None: as recorded)."""

    out = Path(directory).resolve()
    read_state(out)  # refuses a folder scaffold did not make
    with locked(out):  # an update killed half way is rolled back first
        rolled_back = _roll_back_interrupted(out, dry_run, progress)
    state = read_state(out)
    if geobench is not None or partition is not None or bands is not None:
        options = dataclasses.replace(
            state.options,
            geobench=str(Path(geobench).resolve()) if geobench else state.options.geobench,
            partition=partition or state.options.partition,
            bands=tuple(bands) if bands is not None else state.options.bands,
            # new --bands say their modalities again (or name none)
            band_modalities=() if bands is not None else state.options.band_modalities,
        )
        state = dataclasses.replace(state, options=options)
    if geobench2 is not None or geobench2_datasets is not None:
        options = dataclasses.replace(
            state.options,
            geobench2=str(Path(geobench2).resolve()) if geobench2 else state.options.geobench2,
            geobench2_datasets=geobench2_datasets
            if geobench2_datasets is not None
            else state.options.geobench2_datasets,
        )
        state = dataclasses.replace(state, options=options)
    if forward_args or image_arg:
        options = dataclasses.replace(
            state.options,
            forward_args={**state.options.forward_args, **(forward_args or {})},
            image_arg=image_arg or state.options.image_arg,
        )
        state = dataclasses.replace(state, options=options)
    if taps is not None:
        state = dataclasses.replace(
            state, options=dataclasses.replace(state.options, taps=tuple(taps))
        )
    if protocol is not None or seeds is not None:  # the tracks and seeds: as given, else kept
        options = dataclasses.replace(
            state.options,
            protocol=protocol or state.options.protocol,
            seeds=seeds or state.options.seeds,
        )
        state = dataclasses.replace(state, options=options)
    added = tuple(b for b in dict.fromkeys(baselines) if b not in state.options.baselines)
    if added:
        from scaffold.render.baselines import check_names

        check_names(added, own=state.options.name)
        options = dataclasses.replace(state.options, baselines=state.options.baselines + added)
        state = dataclasses.replace(state, options=options)
    with locked(out):
        result = UpdateResult(
            out=out,
            backbone=state.options.name or "",
            benchmark_config=out / "benchmark.yaml",
            input_shape=tuple(state.spec.input_shape),
            rolled_back=rolled_back,
        )
        _remove_leftovers(out, state, dry_run, progress)
        result.unresolved = files_with_markers(out, state.files)
        if result.unresolved:  # merging over markers would bury them: resolve first
            return result
        options = dataclasses.replace(
            state.options, data=_data_folders(out, state.options.data, drop_data, data)
        )
        state = dataclasses.replace(state, options=options)
        return _update_locked(out, state, result, dry_run, progress, model, ray, iterate2)


def _roll_back_interrupted(out: Path, dry_run: bool, progress) -> RolledBack | None:
    """An update killed half way left its journal: roll it back first (a dry run refuses)."""
    if dry_run and journal_path(out).is_file():
        raise ScaffoldError(
            f"{out}: an earlier update was interrupted while writing ({journal_path(out)} is "
            f"its journal); run `scaffold update {shlex.quote(str(out))}` (or verify) to roll it "
            "back first: a dry run changes nothing"
        )
    done = roll_back(out)
    if done is not None:
        say_rolled_back(progress, done)
    return done


def _update_locked(
    out: Path,
    state: State,
    result: UpdateResult,
    dry_run: bool,
    progress,
    model: str | None,
    ray: bool | None,
    iterate2: bool | None,
) -> UpdateResult:
    from scaffold.render.backbone import render
    from scaffold.render.fit import fit_texts
    from scaffold.render.iterate2 import hpo_texts, is_hpo_file

    # The folder may have moved (paths in the files follow DIR) and so may the model.
    options = dataclasses.replace(state.options, out=out, target=_where_model_is(out, state, model))
    if ray is not None:
        options = dataclasses.replace(options, ray=ray)
    if iterate2 is not None:
        options = dataclasses.replace(options, iterate2=iterate2)
    previous = read_datasets(out / STATE_DIR)
    datasets = survey_all(options.data, progress, previous) if options.data else ()
    options = split_band_modalities(options)
    geobench2, _ = surveyed_geobench2(options, progress)
    geobench, bands = surveyed_bands(options, datasets, progress, known_names(geobench2))
    check_names_apart(geobench2, [ds.name for ds in datasets] + [t.name for t in geobench])
    options = dataclasses.replace(options, bands=bands)
    spec = analysed(options.target, options, datasets, progress)
    planned = planned_tasks(geobench, spec, bands, progress, datasets, bool(geobench2))
    planned2 = plan_geobench2(geobench2, spec, bands, options.band_modalities, progress)
    if options.weights is not None and bands and options.weights.is_file():
        check_bands_fit_weights(options.weights, spec, bands)
    render_options = pipeline_render_options(options, datasets, planned, planned2)
    # Rendered in the system's temp folder: only the bytes are needed, and DIR's parent (or DIR)
    # may not be writable.
    tmp = Path(tempfile.mkdtemp(prefix="scaffold-update-"))
    try:
        files = render(spec, render_options, tmp)
        theirs = {rel: (tmp / rel).read_bytes() for rel in files}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if options.baselines:  # derived from benchmark.yaml as merged: hand edits flow too
        theirs |= _baselines_of_merged_main(out, state, theirs, options.baselines, spec)
    # The same for fit/ and iterate2's HPO YAMLs.
    theirs = _of_merged_main(out, state, theirs, options.target, fit_texts, _is_fit_file)
    if options.iterate2:
        theirs = _of_merged_main(out, state, theirs, options.target, hpo_texts, is_hpo_file)

    plans = [
        plan_file(out, rel, read_pristine(out, state, rel), theirs.get(rel))
        for rel in sorted(set(state.files) | set(theirs))
    ]
    plans, result.kept_aside = _own_runtime(out, state, theirs, plans, state.version)
    result.benchmark_config = out / CONFIG_FILE
    result.input_shape = tuple(spec.input_shape)
    result.plans = plans
    result.baselines = options.baselines
    result.analysis = analysis_changes(state.spec, spec)
    old_data = _smoke_files(out, state)
    # The smoke data follows the model's bands; with real data (--data) there is none to follow.
    # (None there either when the last dataset was dropped: the smoke task needs its data.)
    data_changed = (
        not datasets
        and not planned
        and not planned2
        and (
            _data_key(state.spec, state.options.task) != _data_key(spec, options.task)
            or not old_data
        )
    )
    result.data_rewritten = data_changed
    result.data_kept = _other_data_files(out, old_data) if data_changed else []
    new_state = with_bases(
        State(__version__, options, spec, tuple(sorted(theirs)), data_files=tuple(old_data)),
        theirs,
    )
    if dry_run:
        result.diff = unified_diff(plans)
        return result
    state_path = out / STATE_DIR / STATE_FILE
    state_changed = state_path.read_text(encoding="utf-8") != new_state.to_json()
    if not state_changed and all(p.action in UNTOUCHED for p in plans) and not data_changed:
        return result  # nothing to do: not a single file is touched
    _check_writable(out, plans, data_changed)
    done: list[str] = []
    swap: DataSwap | None = None
    begun = False
    try:
        with status(progress, "writing"), _interrupts_deferred(done):
            if data_changed:  # written beside data/ first: nothing in data/ is touched yet
                swap = _new_data(out, spec, options.task, old_data)
                new_state = dataclasses.replace(new_state, data_files=swap.new_files)
            changes = {p.rel: (p.old, p.new) for p in plans if p.action not in UNTOUCHED}
            new_json = new_state.to_json().encode()
            changes[f"{STATE_DIR}/{STATE_FILE}"] = (state_path.read_bytes(), new_json)
            journal.begin(out, changes, swap)  # from here on a killed run is rolled back
            begun = True
            if swap is not None:
                journal.swap_data(out, swap)
                done.append(f"{DATA_DIR}/")
            for plan in plans:
                if plan.action in WRITTEN:
                    assert plan.new is not None
                    write_atomic(out / plan.rel, plan.new)
                    done.append(plan.rel)
                elif plan.action == "removed":
                    (out / plan.rel).unlink(missing_ok=True)
                    done.append(plan.rel)
            write_datasets(out / STATE_DIR, datasets)
            write_tasks(out / STATE_DIR, geobench)
            write_geobench2(out / STATE_DIR, geobench2)
            write_atomic(state_path, new_json)
            done.append(f"{STATE_DIR}/{STATE_FILE}")
            journal.finish(out, swap)
            # The bases now live in state.json: the plain copies of an older state go.
            shutil.rmtree(out / STATE_DIR / PRISTINE_DIR, ignore_errors=True)
    except OSError as exc:
        what = "nothing was written"
        if begun:
            try:
                journal.roll_back(out)
                what = "what was written is undone"
            except (OSError, ScaffoldError):
                what = f"wrote {', '.join(done)}; the next `scaffold update` rolls it back"
        elif swap is not None:
            shutil.rmtree(out / swap.new, ignore_errors=True)
        raise ScaffoldError(f"{out}: cannot write there ({exc.strerror or exc}); {what}") from exc
    return result


def analysis_changes(old, new) -> list[str]:
    """What differs between the recorded spec and the re-analysis, one line each: features
    added or gone, a feature's channels, reduction or layout, the default selection, the
    modules left out as the head, the input shape."""
    changes: list[str] = []
    if tuple(old.input_shape) != tuple(new.input_shape):
        changes.append(f"input shape {_shape(old.input_shape)} -> {_shape(new.input_shape)}")
    before = {_feature_id(f): f for f in old.features}
    after = {_feature_id(f): f for f in new.features}
    for fid, f in after.items():
        was = before.get(fid)
        if was is None:
            changes.append(f"new feature {_feature_name(f)}: {_described(f)}")
            continue
        for what in ("num_chs", "reduction", "layout"):
            if getattr(was, what) != getattr(f, what):
                shown = {"num_chs": "channels"}.get(what, what)
                changes.append(
                    f"{shown} of {_feature_name(f)}: {getattr(was, what)} -> {getattr(f, what)}"
                )
    changes += [
        f"feature gone: {_feature_name(f)} ({_described(f)})"
        for fid, f in before.items()
        if fid not in after
    ]
    old_out = [_feature_name(f) for f in old.selected]
    new_out = [_feature_name(f) for f in new.selected]
    if old_out != new_out:
        changes.append(f"default features {', '.join(old_out)} -> {', '.join(new_out)}")
    old_head, new_head = tuple(old.head_modules), tuple(new.head_modules)
    if added := [m for m in new_head if m not in old_head]:
        changes.append("newly left out as the head: " + ", ".join(added))
    if back := [m for m in old_head if m not in new_head]:
        changes.append("no longer left out as the head: " + ", ".join(back))
    return changes


def _feature_id(f) -> tuple[Any, ...]:
    return (f.source, f.module, f.call, f.key)


def _feature_name(f) -> str:
    name = f.module if f.source == "hook" else f"output[{f.key!r}]"
    name += f" (call {f.call})" if f.call else ""
    return name + (f"[{f.key!r}]" if f.source == "hook" and f.key is not None else "")


def _described(f) -> str:
    return f"{f.num_chs} channels at reduction {f.reduction}"


def _shape(shape) -> str:
    return "x".join(str(d) for d in tuple(shape)[1:])


def _remove_leftovers(out: Path, state: State, dry_run: bool, progress) -> None:
    """What an update killed while writing left in DIR and no journal claims (the new smoke data
    made before the journal, the old one after it, a file half written beside its target by
    `write_atomic`): removed, and said. DIR's lock is held, so no live
    scaffold process is writing them. A dry run only says what would go."""
    names: dict[Path, set[str]] = {}  # folder -> the files scaffold writes there
    for rel in (*state.files, f"{STATE_DIR}/{STATE_FILE}", f"{STATE_DIR}/{JOURNAL_FILE}"):
        names.setdefault((out / rel).parent, set()).add((out / rel).name)
    # (the journal is rolled back before: the data folders it names are gone by now)
    found = [p for p in out.iterdir() if p.name.startswith((DATA_NEW, DATA_OLD)) and p.is_dir()]
    for folder, files in names.items():
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.is_file() and is_write_temp(p.name, files)]
    found.sort()
    if not dry_run:
        for path in found:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    say_removed(progress, found, dry_run)
    say_older_temps(out, progress)


def _data_folders(
    out: Path, recorded: tuple[str, ...], dropped: tuple[str, ...], added: tuple[str, ...]
) -> tuple[str, ...]:
    """The dataset folders after this update: `dropped` ones out (each taken over by the next
    of `added`, in its place), the rest of `added` at the end. A recorded folder that is gone
    is refused, saying how to re-point or drop it."""
    new = [str(Path(d).resolve()) for d in added]
    gone = [str(Path(d).resolve()) for d in dropped]
    for given, path in zip(dropped, gone, strict=True):
        if path not in recorded:
            known = ", ".join(recorded) or "none"
            raise ScaffoldError(f"--drop-data {given}: not a recorded dataset (recorded: {known})")
    folders: list[str] = []
    for path in recorded:
        if path not in gone:
            folders.append(path)
        elif new:
            folders.append(new.pop(0))
    folders = list(dict.fromkeys([*folders, *new]))
    here = shlex.quote(str(out))
    for path in folders:
        if path in recorded and not Path(path).is_dir():
            where = shlex.quote(path)
            raise ScaffoldError(
                f"--data {path} (recorded): no such directory; if it moved, run `scaffold update "
                f"{here} --drop-data {where} --data NEW_PATH`; to stop benchmarking it, "
                f"`scaffold update {here} --drop-data {where}`"
            )
    return tuple(folders)


def _where_model_is(out: Path, state: State, model: str | None) -> str:
    """The target to analyse: `model` (keeping the recorded class name when it names none), or
    the recorded one, with a hint when its file is gone."""
    from scaffold.resolve.target import is_file_target, split_target

    recorded_where, recorded_name = split_target(state.options.target)
    if model is None:
        if is_file_target(recorded_where) and not Path(recorded_where).exists():
            raise ScaffoldError(
                f"the model file {recorded_where} is gone; if it moved, run "
                f"`scaffold update {shlex.quote(str(out))} --model NEW_PATH`"
            )
        return state.options.target
    where, name = split_target(model)
    if is_file_target(where) and not Path(where).is_file():
        raise ScaffoldError(f"--model {model}: no such file")
    name = name or recorded_name
    return absolute_target(f"{where}:{name}" if name else where)


def _baselines_of_merged_main(
    out: Path, state: State, theirs: dict[str, bytes], names: tuple[str, ...], spec
) -> dict[str, bytes]:
    """The baseline configs derived from benchmark.yaml as this update leaves it (the render
    when that has a conflict or is not YAML), so that a task added to it by hand flows too."""
    from scaffold.render.baselines import baseline_texts

    rendered = theirs[CONFIG_FILE]
    plan = plan_file(out, CONFIG_FILE, read_pristine(out, state, CONFIG_FILE), rendered)
    merged = plan.new if plan.action in ("updated", "merged", "added") else plan.old
    if plan.action == "conflict":
        merged = None  # markers: not YAML until the person resolves them
    shape = tuple(spec.input_shape)
    if merged is not None and merged != rendered:
        with contextlib.suppress(ScaffoldError):  # broken by hand: the render's then
            return baseline_texts(merged.decode(errors="replace"), names, shape)
    return baseline_texts(rendered.decode(), names, shape)


def _is_fit_file(rel: str) -> bool:
    return rel.startswith(f"{FIT_DIR}/")


def _of_merged_main(
    out: Path,
    state: State,
    theirs: dict[str, bytes],
    target: str,
    texts: Callable[[str, Path, str], dict[str, bytes]],
    derived: Callable[[str], bool],
) -> dict[str, bytes]:
    """`theirs` with the files `texts` derives from benchmark.yaml (those `derived` names)
    derived from it as this update leaves it (as rendered when that has a conflict or is not
    YAML): a task added to it by hand gets one, a search space edited there flows on."""
    from scaffold.render.backbone import generated_header

    rendered = theirs[CONFIG_FILE]
    plan = plan_file(out, CONFIG_FILE, read_pristine(out, state, CONFIG_FILE), rendered)
    merged = plan.new if plan.action in ("updated", "merged", "added") else plan.old
    if plan.action == "conflict" or merged is None or merged == rendered:
        return theirs
    try:
        new = texts(merged.decode(errors="replace"), out, generated_header(target))
    except ScaffoldError:  # broken by hand: the render's files stand
        return theirs
    kept = {rel: content for rel, content in theirs.items() if not derived(rel)}
    return kept | new


def _data_key(spec, task: str) -> tuple[Any, ...]:
    return (spec.in_chans, spec.num_frames, tuple(spec.img_size), task)


def _smoke_files(out: Path, state: State) -> list[str]:
    """The files scaffold wrote under data/, relative to DIR."""
    if state.data_files is not None:
        return list(state.data_files)
    found = (str(p.relative_to(out)) for p in (out / DATA_DIR).rglob("*") if p.is_file())
    return sorted(
        rel
        for rel in found
        if rel.startswith(f"{DATA_DIR}/") and SMOKE_FILE.fullmatch(rel[len(DATA_DIR) + 1 :])
    )


def _other_data_files(out: Path, ours: list[str]) -> list[str]:
    """Files under data/ that scaffold did not write: never touched, reported as kept."""
    mine = set(ours)
    found = (str(p.relative_to(out)) for p in (out / DATA_DIR).rglob("*") if p.is_file())
    return sorted(rel for rel in found if rel not in mine)


def _new_data(out: Path, spec, task: str, old: list[str]) -> DataSwap:
    """The smoke dataset for the model's bands, frames and size, written beside ``data/`` (in a
    folder of DIR: the same filesystem, so its files move in by renames), and how it replaces
    the old smoke files (`old`, relative to DIR). Nothing else in data/ is ever touched."""
    from scaffold.render.backbone import NUM_CLASSES

    fresh = Path(tempfile.mkdtemp(prefix=DATA_NEW, dir=out))
    fresh.chmod(0o755)  # mkdtemp makes it private; its folders move into data/
    try:
        paths = smoke.write_smoke_dataset(
            fresh / DATA_DIR, spec.in_chans, spec.num_frames, spec.img_size, task, NUM_CLASSES
        )
        replaced = Path(tempfile.mkdtemp(prefix=DATA_OLD, dir=out))
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    new = tuple(sorted(str(p.relative_to(fresh)) for p in paths))
    return DataSwap(fresh.name, replaced.name, new, tuple(old))


def _check_writable(out: Path, plans: list[FilePlan], data_changed: bool) -> None:
    """Refuse before writing anything when a folder to write in is not writable."""
    folders = {out, out / STATE_DIR}
    folders |= {(out / p.rel).parent for p in plans if p.action not in UNTOUCHED}
    if data_changed:
        folders.add(out / DATA_DIR)
    for folder in sorted(folders):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK):
            raise ScaffoldError(f"{existing}: cannot write there (read-only); nothing was changed")


@contextlib.contextmanager
def _interrupts_deferred(done: list[str]) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so that neither stops the writes half way;
    then say what was written."""
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {
            s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held
        }
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise UpdateInterrupted(
            f"the update's writes were finished first ({', '.join(done)}); not verified"
        )


# -- scaffold's runtime: replaced, never merged ------------------------------------------------
def _own_runtime(
    out: Path, state: State, theirs: dict[str, bytes], plans: list[FilePlan], version: str
) -> tuple[list[FilePlan], list[KeptAside]]:
    """The plans with the runtime's files replaced rather than merged, and a package of the
    layout before the runtime (its generic code in backbone.py and registration.py) moved to it.

    A runtime file edited by hand is replaced and kept aside as ``<file>.orig-<version>``. A
    hand-edited backbone.py or registration.py of the old layout is replaced by the new one
    with the person's values of its constants (``OUT_INDICES = ...``) carried over; any other
    edit there was in code the runtime now owns: the file is kept aside the same way and the
    edits are named."""
    from scaffold.render.backbone import RUNTIME_DIR

    new_plans: list[FilePlan] = []
    kept: list[KeptAside] = []
    for plan in plans:
        rel, new = plan.rel, theirs.get(plan.rel)
        base = read_pristine(out, state, rel)
        ours = (out / rel).read_bytes() if (out / rel).is_file() else None
        runtime = f"/{RUNTIME_DIR}/" in rel
        old_layout = (
            rel.endswith(("/backbone.py", "/registration.py"))
            and base is not None
            and RUNTIME_DIR.encode() not in base
            and new is not None
            and RUNTIME_DIR.encode() in new
        )
        # (a file on disk that scaffold never wrote counts as edited: it is kept too)
        edited = ours is not None and ours != base and ours != new
        if new is None or not (runtime or (old_layout and edited)):
            new_plans.append(plan)
            continue
        if runtime:
            action: Action = (
                "unchanged" if ours == new else ("added" if ours is None else "updated")
            )
            new_plans.append(FilePlan(rel, action, new, ours))
            if edited:
                assert ours is not None
                aside = _aside_name(out, rel, version)
                new_plans.append(FilePlan(aside, "added", ours, None))
                kept.append(KeptAside(rel, aside, ["the runtime itself"], []))
            continue
        assert ours is not None and base is not None
        carried_text, carried, edits = _carry_constants(base, ours, new)
        new_plans.append(FilePlan(rel, "merged" if carried else "updated", carried_text, ours))
        if edits:
            aside = _aside_name(out, rel, version)
            new_plans.append(FilePlan(aside, "added", ours, None))
            kept.append(KeptAside(rel, aside, edits, carried))
    return new_plans, kept


def _aside_name(out: Path, rel: str, version: str) -> str:
    """``<rel>.orig-<version>``, numbered when that exists already."""
    aside, n = f"{rel}.orig-{version}", 1
    while (out / aside).exists():
        n += 1
        aside = f"{rel}.orig-{version}-{n}"
    return aside


def _carry_constants(base: bytes, ours: bytes, theirs: bytes) -> tuple[bytes, list[str], list[str]]:
    """`theirs` with each module-level constant the person changed (ours differs from base) set
    to the person's value where `theirs` still has it; the constants carried; and the names of
    every other edit (functions, classes' methods, other module code: owned by the runtime
    now)."""
    import ast

    texts = [t.decode(errors="replace") for t in (base, ours, theirs)]
    try:
        parsed = [_top_level(ast.parse(t), t) for t in texts]
    except SyntaxError:  # not Python any more (a half-resolved conflict): nothing is carried
        return theirs, [], ["the file (it does not parse)"]
    (base_items, ours_items, theirs_items) = parsed
    carried: list[str] = []
    edits: list[str] = []
    replace: list[tuple[int, int, str]] = []  # line ranges of theirs and the person's text
    for key in dict.fromkeys([*base_items, *ours_items]):
        was, now = base_items.get(key), ours_items.get(key)
        if was is not None and now is not None and was.text == now.text:
            continue
        mine = theirs_items.get(key)
        if key.isupper() and now is not None and mine is not None and mine.assign:
            carried.append(key)
            replace.append((mine.start, mine.end, now.text))
        else:
            edits += _edited_parts(key, was, now)
    lines = texts[2].splitlines(keepends=True)
    for start, end, text in sorted(replace, reverse=True):
        lines[start - 1 : end] = [text + "\n"]
    if not edits and not carried and ours != base:
        edits = ["comments"]  # only comments differ: nothing to carry, nothing lost either
    return "".join(lines).encode(), carried, edits


@dataclass
class _Item:
    text: str  # the statement's source, as written
    start: int
    end: int
    assign: bool
    node: Any


def _top_level(tree: Any, text: str) -> dict[str, _Item]:
    """The module's statements by name (an assigned name, a function's or class's), the rest
    by their place among the unnamed ones."""
    import ast

    items: dict[str, _Item] = {}
    for i, node in enumerate(tree.body):
        name, assign = f"module code {i}", False
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                name, assign = target.id, True
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, assign = node.target.id, True
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            name = f"imports {i}"
        segment = ast.get_source_segment(text, node) or ""
        end = node.end_lineno or node.lineno
        items[name] = _Item(segment, node.lineno, end, assign, node)
    return items


def _edited_parts(name: str, was: _Item | None, now: _Item | None) -> list[str]:
    """What differs in the statement `name`: a class's edited methods by name, else the name."""
    import ast

    if was is None or now is None:
        return [name if now is not None else f"{name} (deleted)"]
    if name.startswith("imports"):
        return ["the imports"]
    if name.startswith("module code"):
        return ["module code"]
    if isinstance(was.node, ast.ClassDef) and isinstance(now.node, ast.ClassDef):
        base_methods = {n.name: ast.dump(n) for n in was.node.body if hasattr(n, "name")}
        our_methods = {n.name: ast.dump(n) for n in now.node.body if hasattr(n, "name")}
        parts = [
            f"{name}.{m}"
            for m in dict.fromkeys([*base_methods, *our_methods])
            if base_methods.get(m) != our_methods.get(m)
        ]
        return parts or [name]
    return [name]
