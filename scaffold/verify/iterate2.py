"""The ``iterate2`` check: one trial of each task through terratorch-iterate's ``iterate``.

iterate2 maximises what it reads back from the trial's output and records 0.0, with only a
warning, for a metric it does not find; a trial that exits non-zero is marked failed and the
launcher carries on (exit 0). So a run that "worked" proves nothing: the check runs the real
``iterate`` CLI on this machine, one trial per task on the verifying run's shortened copy of
benchmark.yaml (scaffold/verify/shorten.py: the same batch limits), then reads the study back
from its Optuna storage. The stored value must be the value the trial printed, and finite; a
failed trial, a missing metric line (iterate2's silent 0.0) or a different value is a finding.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from scaffold.render.dump import dump
from scaffold.render.iterate2 import LAUNCHER_VARIABLE, command, task_names
from scaffold.verify.shorten import shortened_copy
from scaffold.verify.storage import folder_storage, local_folder, storage_problem
from scaffold.verify.types import CheckFailed
from scaffold.write.names import (
    CONFIG_FILE,
    ITERATE2_DIR,
    TRIAL_SCRIPT,
    hpo_config_file,
    in_folder,
    iterate2_workdir,
)

TRIAL_RUNS = "iterate2"  # trial.py's run_folder: <parent of storage_uri>/iterate2/<task>/...
NUMBER = r"[-+]?(?:\d*\.?\d+(?:[eE][-+]?\d+)?|inf|nan)"


def iterate2_files(state) -> list[str]:
    """The generated files under iterate2/ (none: the check does not run)."""
    return sorted(rel for rel in state.files if rel.startswith(f"{ITERATE2_DIR}/"))


def printed_values(text: str, metric: str) -> list[float]:
    """The values the trial printed as ``METRIC: VALUE`` lines (its own lines, whole)."""
    pattern = re.compile(rf"^{re.escape(metric)}: ({NUMBER})\s*$", re.MULTILINE)
    return [float(v) for v in pattern.findall(text)]


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no output"
    lines = [line for line in lines if line and not line.startswith("[trial-")]
    return lines[-1] if lines else "no output"


def _hpo(directory: Path, task: str) -> dict[str, Any]:
    path = directory / hpo_config_file(task)
    try:
        hpo = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CheckFailed(f"{path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(hpo, dict) or not isinstance(hpo.get("static"), dict):
        raise CheckFailed(f"{path}: not iterate2's HPO YAML (no `static` mapping)")
    metrics = hpo.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise CheckFailed(f"{path}: names no `metrics`: iterate2 would look for `score`")
    static = hpo["static"]
    config = directory / CONFIG_FILE
    if str(static.get("task")) != task:
        raise CheckFailed(f"{path}: static.task is {static.get('task')!r}, not {task!r}")
    named = static.get("config")
    if not isinstance(named, str) or in_folder(directory, named) != config:
        raise CheckFailed(
            f"{path}: static.config is {named!r}, not {CONFIG_FILE!r} (this folder's, relative "
            f"to it): copied or moved? run `scaffold update {shlex.quote(str(directory))}`"
        )
    return hpo


def run_as_group(argv: list[str], **popen: Any) -> int:
    """Run `argv` in a process group of its own and wait for it; the exit code. Whatever stops
    the wait (Ctrl-C, SIGTERM, an error) first ends the whole group: iterate and the trial
    processes it started (they share its group) never outlive scaffold. And when iterate
    exits, a trial it left behind goes too."""
    process = subprocess.Popen(argv, start_new_session=True, **popen)
    try:
        return process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_trial(directory: Path, config: Path, task: str, main: dict[str, Any], log_dir: Path) -> str:
    """One trial of `task` through ``iterate``, with `config` (a shortened copy of
    benchmark.yaml) in place of benchmark.yaml; what the study stored, checked."""
    import optuna

    hpo = _hpo(directory, task)
    hpo["static"]["config"] = str(config)
    work = log_dir / Path(hpo_config_file(task)).stem  # trial_0.out / trial_0.err land here
    work.mkdir(parents=True, exist_ok=True)
    hpo_copy = work / "hpo.yaml"
    hpo_copy.write_text(dump(hpo) + "\n", encoding="utf-8")
    storage = f"sqlite:///{work / 'optuna.db'}"
    argv = command(directory, main, task)
    for flag, value in (("--hpo-yaml", str(hpo_copy)), ("--optuna-db-path", storage)):
        argv[argv.index(flag) + 1] = value
    argv[argv.index("--optuna-n-trials") + 1] = "1"
    study = argv[argv.index("--optuna-study-name") + 1]
    env = {k: v for k, v in os.environ.items() if k != LAUNCHER_VARIABLE}  # on this machine
    # The trial script's `#!/usr/bin/env python3` finds this Python first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = work / "iterate.log"
    with log.open("wb") as handle:
        code = run_as_group(argv, cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        raise CheckFailed(f"task {task}: iterate exited {code}: {_last_line(log)}")
    trials = optuna.load_study(study_name=study, storage=storage).trials
    if len(trials) != 1:
        raise CheckFailed(f"task {task}: iterate ran {len(trials)} trials, not 1 (see {log})")
    trial = trials[0]
    out, err = work / "trial_0.out", work / "trial_0.err"
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise CheckFailed(
            f"task {task}: the trial failed ({trial.state.name}): {_last_line(err)} "
            f"(its output: {out}, {err})"
        )
    text = out.read_text(errors="replace") if out.is_file() else ""
    found = []
    for metric, stored in zip(hpo["metrics"], trial.values or [], strict=False):
        printed = printed_values(text, str(metric))
        if not printed:
            why = (
                "its 0.0 for a metric it cannot find"
                if stored == 0.0
                else f"it found `{metric}` inside another name"
            )
            raise CheckFailed(
                f"task {task}: the trial printed no `{metric}: VALUE` line; iterate2 stored "
                f"{stored!r} ({why}) (see {out})"
            )
        if not math.isfinite(stored):
            raise CheckFailed(f"task {task}: iterate2 stored {metric} = {stored!r}")
        if stored != printed[-1]:
            raise CheckFailed(
                f"task {task}: the trial printed {metric}: {printed[-1]!r}, iterate2 stored "
                f"{stored!r} (it takes the last `{metric}` it finds in stdout and stderr)"
            )
        found.append(f"{metric} = {stored:.4g}")
    if len(found) != len(hpo["metrics"]):
        raise CheckFailed(f"task {task}: iterate2 stored {trial.values!r} for {hpo['metrics']}")
    _check_sign(task, main, str(hpo["metrics"][0]), trial.values[0], err)
    return f"{task}: {', '.join(found)}"


def _check_sign(task: str, main: dict[str, Any], name: str, printed: float, err: Path) -> None:
    """iterate2 maximises what the trial printed: the task's metric as Lightning logged it at
    its best epoch, negated for a min-direction task. Checked against the trial's own log (the
    CSV in the folder its stderr names), since what Optuna stored is only what it printed."""
    spec: dict[str, Any] = next(
        (t for t in main.get("tasks") or [] if str(t.get("name")) == task), {}
    )
    metric = str(spec.get("metric", "val/loss"))
    direction = str(spec.get("direction", "max"))
    logged = logged_values(err, metric)
    if not logged:
        raise CheckFailed(
            f"task {task}: found no {metric} that the trial logged (Lightning's metrics.csv in the "
            f"folder its stderr names, {err}), so the sign of the printed {name} is unchecked"
        )
    best = min(logged) if direction == "min" else max(logged)
    want = -best if direction == "min" else best
    if not math.isclose(printed, want, rel_tol=1e-6, abs_tol=1e-9):
        how = "negated" if direction == "min" else "as logged"
        raise CheckFailed(
            f"task {task}: the trial printed {name}: {printed!r}, but the best {metric} "
            f"Lightning logged is {best!r}; iterate2 maximises, so a {direction}-direction "
            f"metric must be printed {how} ({want!r})"
        )


def logged_values(err: Path, metric: str) -> list[float]:
    """`metric` in each row of the CSV logs under the folder the trial names on stderr
    (``...; logs in FOLDER``)."""
    text = err.read_text(errors="replace") if err.is_file() else ""
    folders = re.findall(r"; logs in (.+)$", text, re.MULTILINE)
    if not folders:
        return []
    values = []
    for path in sorted(Path(folders[-1].strip()).glob("**/metrics.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    values.append(float(row.get(metric) or "nan"))
                except ValueError:
                    continue
    return [v for v in values if not math.isnan(v)]


def storage_problems(directory: Path, main: dict[str, Any], names: list[str]) -> list[str]:
    """What the real run could not create (the check's trials write under its log folder
    instead): the launcher's Optuna database and working folders, and the trials' run folders
    (``runs/iterate2/`` beside benchmark.yaml's ``storage_uri``, as trial.py puts them)."""
    argv = command(directory, main, names[0])
    found = [("--optuna-db-path", argv[argv.index("--optuna-db-path") + 1])]
    found += [(f"the working folder of {n}", str(directory / iterate2_workdir(n))) for n in names]
    storage = main.get("storage_uri")
    if isinstance(storage, str) and local_folder(storage) is not None:
        storage = folder_storage(directory, storage)  # as the trial reads it, from DIR
        if (local := local_folder(storage)) is not None:
            runs = local.parent / TRIAL_RUNS
            found.append((f"storage_uri's trial folders ({runs})", str(runs)))
    return [p for key, value in found if (p := storage_problem(key, value))]


def check_iterate2(directory: Path, log_dir: Path) -> str:
    """One trial of each task with an HPO YAML through ``iterate``, logs under `log_dir`."""
    script = directory / TRIAL_SCRIPT
    if not script.is_file():
        raise CheckFailed(f"{script} is missing (deleted?)")
    if not os.access(script, os.X_OK):
        raise CheckFailed(
            f"{script} is not executable, and iterate runs it as a program: chmod +x it"
        )
    main, names = task_names(directory)
    if not names:
        raise CheckFailed(f"{directory / ITERATE2_DIR} holds no HPO YAML of a benchmark task")
    problems = storage_problems(directory, main, names)
    if problems:
        raise CheckFailed("; ".join(problems))
    log_dir = log_dir / "iterate2"
    log_dir.mkdir(parents=True, exist_ok=True)
    short = shortened_copy(directory / CONFIG_FILE, log_dir)
    stored = [run_trial(directory, short, name, main, log_dir) for name in names]
    return (
        "iterate ran one trial per task; Optuna stored what each printed: "
        + "; ".join(stored)
        + f" (logs in {log_dir})"
    )
