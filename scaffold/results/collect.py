"""`scaffold report`: the benchmark's results, backbone against baselines, from MLflow.

Each config (``benchmark.yaml`` and ``baselines/*.yaml``) names its MLflow store (``storage_uri``)
and experiment. Two kinds of finished runs are read there, as terratorch-iterate writes them:

- repeated runs (``terratorch iterate --repeat``): the store ``<storage_uri>_repeated_exp``,
  experiment ``<experiment>_repeated_exp``, one run per task and seed named ``<task>_<seed>``
  with the test metric ``test_test/<metric>``: mean and standard deviation over the seeds;
- otherwise the HPO result (``--hpo``): the task's run under a top-level run, with
  ``best_<metric>``, the best trial's validation metric: one value.

A task's row uses repeated runs when any backbone has them for that task (a validation and a
test number are never compared), else HPO results. A value that is not there is missing
(None), never zero; a config whose experiment never ran is named in the notes, and a task whose
newest run is still running is said to be. Every run is read (MLflow's search, page after
page). Only this config's runs count: a task's HPO run is tagged with its ``backbone`` and
``decoder`` when its search ends, a seed run records them among its params
(``model_args/backbone``); a run that names others (another config writing to the same store
and experiment) is named in the notes and ignored. The config's path is not recorded by
terratorch-iterate, so it cannot be compared.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaffold.errors import ScaffoldError, one_line
from scaffold.results.paper import REPEATED, check_seeds_and_configs, paper_aggregates
from scaffold.verify.folder import moved_note
from scaffold.verify.storage import folder_storage
from scaffold.write.names import CONFIG_FILE, FIT_DIR, RUNS_DIR
from scaffold.write.state import read_state

HPO = "hpo"
IQM_MIN_SEEDS = 5  # fewer seeds than this make an interquartile mean meaningless
SEARCH_PAGE = 1000  # runs per page of MLflow's search; every page is read
# The tags terratorch-iterate sets on a task's run when its search ends, from the task's merged
# ``terratorch_task.model_args``: a run whose tags differ trained another configuration.
IDENTITY_TAGS = ("backbone", "decoder")
PARAMS_PREFIX = "model_args/"  # the same, in a repeated run's params (its task's hparams)
PLOT_DPI = 100
PLOT_HEIGHT = 4.0  # inches
PLOT_WIDTH_PER_TASK = 3.0
PLOT_MARGIN = 1.0


@dataclass
class Cell:
    """One backbone on one task: the values found (one per seed, or the HPO best)."""

    values: list[float]
    run_ids: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # repeated runs: each value's seed
    # each value's configuration (its hyperparameters, the seed left out): seeds of different
    # configurations are named, never averaged silently
    configs: list[str] = field(default_factory=list)
    # each value's hyperparameters as its run recorded them (lr, weight_decay, batch_size)
    params: list[dict[str, Any]] = field(default_factory=list)
    # each value's run's test metrics, by TerraTorch's names ({"Accuracy_Micro": 0.9, ...}):
    # the leaderboard ranks a task by its own metric, whatever the HPO ranked it by
    tests: list[dict[str, float]] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        return len(set(self.configs)) > 1

    def in_seed_order(self) -> Cell:
        """The same runs, in the order of their seeds."""
        order = sorted(range(len(self.seeds)), key=lambda i: self.seeds[i])
        for name in ("values", "run_ids", "seeds", "configs", "params", "tests"):
            items = getattr(self, name)
            if len(items) == len(order):
                setattr(self, name, [items[i] for i in order])
        return self

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "n": len(self.values),
            "values": self.values,
            "run_ids": self.run_ids,
            "seeds": self.seeds,
            "mixed_configurations": self.mixed,
        }


@dataclass
class Backbone:
    name: str
    experiment: str | None
    config: Path
    baseline: bool
    ran: bool = False  # the experiment exists in the store with a finished run
    running: bool = False  # a task's newest run is still running

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "experiment": self.experiment,
            "config": str(self.config),
            "baseline": self.baseline,
            "ran": self.ran,
            "running": self.running,
        }


@dataclass
class TaskRow:
    name: str
    metric: str  # as shown: "val/loss (best HPO trial)" or "test/loss"
    direction: str  # "min" or "max"
    source: str  # REPEATED or HPO
    cells: dict[str, Cell | None] = field(default_factory=dict)

    @property
    def best(self) -> list[str]:
        """The backbones with the best mean (several on a tie); none when no value."""
        found = {name: cell.mean for name, cell in self.cells.items() if cell is not None}
        if not found:
            return []
        pick = min if self.direction == "min" else max
        target = pick(found.values())
        return [name for name, value in found.items() if value == target]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "direction": self.direction,
            "source": self.source,
            "best": self.best,
            "values": {k: (c.to_dict() if c else None) for k, c in self.cells.items()},
        }


@dataclass
class Results:
    directory: Path
    backbones: list[Backbone]
    tasks: list[TaskRow]
    notes: list[str] = field(default_factory=list)
    seeds: int = 0  # the seeds asked for (--seeds), 0: not recorded
    aggregates: list[Any] = field(default_factory=list)  # stats.Aggregate, per backbone and track

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "backbones": [b.to_dict() for b in self.backbones],
            "tasks": [t.to_dict() for t in self.tasks],
            "not_run": [b.config.name for b in self.backbones if not b.ran and not b.running],
            "running": [b.config.name for b in self.backbones if b.running],
            "notes": self.notes,
            "seeds_asked": self.seeds,
            "aggregates": [{**vars(a), "tasks": list(a.tasks)} for a in self.aggregates],
        }


# -- reading -------------------------------------------------------------------------------------
def collect(directory: Path) -> Results:
    """The table's content for DIR: its backbone and baselines, one row per task."""
    from scaffold.results.baselines import configs_of

    directory = Path(directory).resolve()
    state = read_state(directory)
    own = state.options.name or state.spec.qualname
    entries = [(own, directory / CONFIG_FILE, False)]
    entries += [(name, path, True) for name, path in configs_of(directory, state.options.baselines)]

    # MLflow 3 refuses its file store (the one terratorch-iterate writes) unless this is set.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    backbones: list[Backbone] = []
    notes: list[str] = []
    hpo: dict[str, dict[str, Cell]] = {}
    repeated: dict[str, dict[str, Cell]] = {}
    tasks: dict[str, tuple[str, str]] = {}  # name -> (metric, direction), the main config's first
    task_names: dict[str, set[str]] = {}
    stores = Stores(notes)
    try:  # the views are temporary folders: removed whatever happens
        for name, path, is_baseline in entries:
            config = _read_config(path, notes)
            backbone = Backbone(name, None, path, is_baseline)
            backbones.append(backbone)
            if config is None:
                continue
            moved = moved_note(directory, state, config)
            if moved:
                notes.append(f"{name}: {moved}")
            backbone.experiment = str(config.get("experiment_name"))
            config_tasks = _tasks_of(config)
            task_names[name] = set(config_tasks)
            for task, spec in config_tasks.items():
                tasks.setdefault(task, spec)
            storage = folder_storage(directory, config.get("storage_uri"))  # from DIR
            with stores.reading(name, storage):
                hpo[name], backbone.ran, running = _hpo_cells(
                    stores.view(storage),
                    backbone.experiment,
                    config_tasks,
                    _identities(config),
                    notes,
                    name,
                    path.name,
                )
            backbone.running = bool(running)
            for task, run_id in running.items():
                shown = "the table shows its last finished run" if backbone.ran else "no result yet"
                notes.append(f"{name}: task {task!r} is still running (run {run_id}); {shown}")
            store = f"{storage}_repeated_exp" if storage else ""
            with stores.reading(name, store):
                repeated[name] = _repeated_cells(
                    storage,
                    stores.view(store),
                    backbone.experiment,
                    config_tasks,
                    _identities(config),
                    notes,
                    name,
                    path.name,
                )
    finally:
        stores.close()
    # The fit route's seeds (fit/seeds.sh) of the backbone's own tasks, where iterate's
    # repeated runs have none.
    own_tasks = _tasks_of(_read_config(directory / CONFIG_FILE, []) or {})
    for task, cell in _fit_cells(directory, own_tasks, notes, own).items():
        repeated.setdefault(own, {}).setdefault(task, cell)
    for backbone in backbones:  # no run of any kind: say how to make them
        if backbone.experiment and not (
            backbone.ran or backbone.running or repeated.get(backbone.name)
        ):
            notes.append(
                f"{backbone.name}: experiment {backbone.experiment!r} never ran; run "
                f"`terratorch iterate --hpo --config {backbone.config.relative_to(directory)}` "
                f"in {directory}"
            )

    rows: list[TaskRow] = []
    for task, (metric, direction) in tasks.items():
        use_repeated = any(task in cells for cells in repeated.values())
        source = repeated if use_repeated else hpo
        shown = _test_metric(metric) if use_repeated else f"{metric} (best HPO trial)"
        row = TaskRow(task, shown, direction, REPEATED if use_repeated else HPO)
        for backbone in backbones:
            row.cells[backbone.name] = source.get(backbone.name, {}).get(task)
            if backbone.ran and task not in task_names.get(backbone.name, set()):
                notes.append(f"{backbone.name}: task {task!r} is not in {backbone.config.name}")
            elif use_repeated and backbone.ran and row.cells[backbone.name] is None:
                notes.append(
                    f"{backbone.name}: no repeated runs of {task!r}; run `terratorch iterate "
                    f"--hpo --repeat --config {backbone.config}` with run_repetitions set and "
                    "the store given absolute, as benchmark.yaml's repeat command does"
                )
        rows.append(row)
    results = Results(directory, backbones, rows, notes, seeds=state.options.seeds)
    check_seeds_and_configs(results)
    results.aggregates = paper_aggregates(results)
    return results


def _fit_cells(
    directory: Path, tasks: dict[str, tuple[str, str]], notes: list[str], who: str
) -> dict[str, Cell]:
    """Each task's seeds run by fit/seeds.sh: ``runs/fit/<task>/seed_<S>/test/metrics.csv``
    (the test metric, ``test/<metric>``) beside the ``config.yaml`` Lightning saved."""
    cells: dict[str, Cell] = {}
    for task, (metric, _) in tasks.items():
        root = directory / RUNS_DIR / FIT_DIR / task
        for folder in sorted(root.glob("seed_*"), key=lambda p: p.name):
            match = re.fullmatch(r"seed_(\d+)", folder.name)
            metrics = folder / "test" / "metrics.csv"
            if not match or not metrics.is_file():
                continue
            key = _test_metric(metric)
            with metrics.open(newline="", encoding="utf-8") as f:
                lines = list(csv.DictReader(f))
            values = [row[key] for row in lines if row.get(key)]
            if not values:
                notes.append(f"{who}: {metrics} holds no {key}; left out")
                continue
            value = float(values[-1])
            if not math.isfinite(value):
                notes.append(
                    f"{who}: fit run {folder} of {task!r} produced {key} = {value}; left out"
                )
                continue
            cell = cells.setdefault(task, Cell([]))
            cell.values.append(value)
            cell.run_ids.append(str(folder.relative_to(directory)))
            cell.seeds.append(int(match.group(1)))
            key, params = _fit_config(folder / "test" / "config.yaml")
            cell.configs.append(key)
            cell.params.append(params)
            cell.tests.append(_last_values(lines, "test/"))
    return {task: cell.in_seed_order() for task, cell in cells.items()}


def _last_values(lines: list[dict[str, str]], prefix: str) -> dict[str, float]:
    """The last value of each `prefix` column of a Lightning metrics.csv, by the name after it."""
    found: dict[str, float] = {}
    for line in lines:
        for key, text in line.items():
            if key and key.startswith(prefix) and text:
                with contextlib.suppress(ValueError):
                    found[key.removeprefix(prefix)] = float(text)
    return found


def _fit_config(path: Path) -> tuple[str, dict[str, Any]]:
    """What a fit run trained, from the config Lightning saved: the model and the data (the seed,
    the folders and the logger left out), and its hyperparameters."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return f"unreadable {path}", {}
    model = (config.get("model") or {}).get("init_args") or {}
    data = (config.get("data") or {}).get("init_args") or {}
    params = {
        "lr": model.get("lr"),
        "weight_decay": (model.get("optimizer_hparams") or {}).get("weight_decay"),
        "batch_size": data.get("batch_size"),
    }
    return repr({k: config.get(k) for k in ("model", "data")}), params


def _hyperparameters(params: dict[str, str]) -> dict[str, Any]:
    """lr, weight_decay and batch_size as a repeated run's params record them (MLflow keeps
    text): None where it recorded none."""
    found: dict[str, Any] = {}
    for key in ("lr", "weight_decay", "batch_size"):
        value = next((v for k, v in params.items() if k.split("/")[-1] == key), None)
        try:
            found[key] = float(value) if value is not None else None
        except ValueError:
            found[key] = None
    return found


def _read_config(path: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        notes.append(f"{path}: missing")
        return None
    except yaml.YAMLError as exc:
        notes.append(f"{path}: not valid YAML ({str(exc).splitlines()[0]})")
        return None
    if not isinstance(config, dict) or "experiment_name" not in config:
        notes.append(f"{path}: not a terratorch-iterate config")
        return None
    return config


def _tasks_of(config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for task in config.get("tasks") or []:
        if isinstance(task, dict) and task.get("name"):
            found[str(task["name"])] = (
                str(task.get("metric") or "val/loss"),
                str(task.get("direction") or "min"),
            )
    return found


def _identities(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each task's IDENTITY_TAGS as terratorch-iterate records them for this config: the
    task's ``model_args`` over the defaults'."""
    defaults = ((config.get("defaults") or {}).get("terratorch_task") or {}).get("model_args")
    found = {}
    for task in config.get("tasks") or []:
        if isinstance(task, dict) and task.get("name"):
            own = (task.get("terratorch_task") or {}).get("model_args")
            args = {**(defaults or {}), **(own or {})}
            found[str(task["name"])] = {k: str(args[k]) for k in IDENTITY_TAGS if k in args}
    return found


def _other_config(
    recorded: dict[str, str], want: dict[str, str], config_name: str, prefix: str = ""
) -> str | None:
    """How a run that recorded `recorded` (its tags, or its params: ``model_args/<key>`` as
    Lightning's MLflow logger writes the task's hyperparameters) is not of this config."""
    for key, value in want.items():
        if prefix + key not in recorded:
            return f"records no {prefix}{key} (terratorch-iterate's runs record it)"
        if recorded[prefix + key] != value:
            return f"trained {key} {recorded[prefix + key]!r}, not {value!r} as {config_name} says"
    return None


def _all_runs(client, experiment_id: str) -> list:
    """Every run of the experiment, newest first: MLflow's search gives a page at a time."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=SEARCH_PAGE,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _client(storage: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=storage)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _hpo_cells(
    storage: str,
    experiment: str,
    tasks: dict[str, tuple[str, str]],
    identities: dict[str, dict[str, str]],
    notes: list[str],
    who: str,
    config_name: str,
) -> tuple[dict[str, Cell], bool, dict[str, str]]:
    """Each task's newest finished HPO run under a top-level run: ``best_<metric>``; whether
    any run of this config finished; the tasks whose newest run is still running (-> its id).
    A newest run whose value is not finite is said in `notes` (for the backbone `who`), and no
    older run stands in for it. A run whose tags name another backbone or decoder than the
    task's in `identities` (another config sharing the store and experiment) is ignored, and
    said."""
    if not storage or (not storage.startswith(("http", "sqlite")) and not Path(storage).is_dir()):
        return {}, False, {}
    client = _client(storage)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}, False, {}
    runs = _all_runs(client, found.experiment_id)
    tops = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
    cells: dict[str, Cell] = {}
    seen: set[str] = set()
    newest: set[str] = set()  # tasks whose newest run was met
    running: dict[str, str] = {}
    ran = False
    for run in runs:  # newest first
        if run.data.tags.get("mlflow.parentRunId") not in tops:
            continue
        task = run.info.run_name
        if run.info.status == "RUNNING":  # tagged only when its search ends: not checkable yet
            if task in tasks and task not in newest:
                running[task] = run.info.run_id
            newest.add(task)
            continue
        if run.info.status != "FINISHED":
            continue
        key = f"best_{tasks[task][0]}" if task in tasks else None
        want = identities.get(task, {})
        other = _other_config(run.data.tags, want, config_name) if key else None
        if other is not None:
            if key in run.data.metrics:  # a result, not this config's
                notes.append(f"{who}: run {run.info.run_id} of {task!r} {other}: ignored")
            continue
        ran = True
        newest.add(task)
        if task not in tasks or task in seen:
            continue
        value = run.data.metrics.get(key)
        if value is None:
            continue  # no result in this run: an older one may have one
        seen.add(task)
        if _finite(value):
            cells[task] = Cell([float(value)], [run.info.run_id])
        else:
            notes.append(
                f"{who}: the newest run of {task!r} (run {run.info.run_id}) produced "
                f"{key} = {value}; shown as missing"
            )
    return cells, ran, running


class Stores:
    """MLflow file stores as MLflow can read them. A store with a damaged file (a meta.yaml that
    is not YAML or lacks its keys, text in a metric file) or a stray folder stops MLflow's
    search, or prints a traceback: each such file is named in `notes` and the store is read
    through a view (symbolic links in a temporary folder) of its intact experiments and runs."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes
        self._views: dict[str, str] = {}
        self._temps: list[Path] = []

    def view(self, storage: str) -> str:
        """The store to hand to MLflow for `storage`: itself when intact."""
        if storage in self._views:
            return self._views[storage]
        self._views[storage] = storage
        if storage and not storage.startswith(("http", "sqlite")) and Path(storage).is_dir():
            problems = store_problems(Path(storage))
            if problems:
                for path, why in problems:
                    self.notes.append(f"{path}: {why}; left out of the report")
                self._views[storage] = str(self._intact_view(Path(storage), problems))
        return self._views[storage]

    @contextlib.contextmanager
    def reading(self, who: str, storage: str) -> Iterator[None]:
        """MLflow's own errors on a store it cannot read: a note naming the store, not a crash."""
        logger = logging.getLogger("mlflow")
        level = logger.level
        logger.setLevel(logging.ERROR)  # its warnings carry tracebacks: the notes say it
        try:
            yield
        except Exception as exc:
            self.notes.append(f"{who}: cannot read the MLflow store {storage} ({one_line(exc)})")
        finally:
            logger.setLevel(level)

    def _intact_view(self, root: Path, problems: list[tuple[Path, str]]) -> Path:
        bad = {path for path, _ in problems}
        view = Path(tempfile.mkdtemp(prefix="scaffold-report-"))
        self._temps.append(view)
        for experiment in _experiment_dirs(root):
            meta = experiment / "meta.yaml"
            if experiment in bad or meta in bad:
                continue
            into = view / experiment.name
            into.mkdir()
            for entry in experiment.iterdir():
                if entry in bad or (entry / "meta.yaml") in bad or _has_bad(entry, bad):
                    continue
                (into / entry.name).symlink_to(entry.resolve())
        return view

    def close(self) -> None:
        for temp in self._temps:
            shutil.rmtree(temp, ignore_errors=True)


RUN_RESERVED = ("tags", "datasets", "traces", "models")  # MLflow's experiment folders, not runs
# MLflow's folder for registered models at the store's root, not an experiment (its file store's
# `_get_active_experiments` leaves it out, as it does `.trash`)
STORE_RESERVED = ("models",)


def _experiment_dirs(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in STORE_RESERVED
    )


def _has_bad(entry: Path, bad: set[Path]) -> bool:
    return any(path.is_relative_to(entry) for path in bad)


def store_problems(root: Path) -> list[tuple[Path, str]]:
    """The files and folders of an MLflow file store that MLflow cannot read, with why."""
    problems: list[tuple[Path, str]] = []
    for experiment in _experiment_dirs(root):
        why = _meta_problem(experiment / "meta.yaml", ("experiment_id", "name"))
        if why == "missing":
            problems.append((experiment, "a stray folder (no meta.yaml): not an MLflow experiment"))
            continue
        if why:
            problems.append((experiment / "meta.yaml", why))
            continue
        for run in sorted(p for p in experiment.iterdir() if p.is_dir()):
            if run.name in RUN_RESERVED:
                continue
            why = _meta_problem(run / "meta.yaml", ("experiment_id", "run_id|run_uuid"))
            if why == "missing":
                problems.append((run, "a stray folder (no meta.yaml): not an MLflow run"))
                continue
            if why:
                problems.append((run / "meta.yaml", why))
                continue
            for metric in sorted(p for p in (run / "metrics").rglob("*") if p.is_file()):
                why = _metric_problem(metric)
                if why:
                    problems.append((metric, why))
    return problems


def _meta_problem(path: Path, keys: tuple[str, ...]) -> str | None:
    """Why the meta.yaml at `path` is not one MLflow reads ("missing" when absent); `keys` it
    needs (``a|b``: either)."""
    if not path.is_file():
        return "missing"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return f"not readable YAML ({one_line(exc)})"
    if not isinstance(data, dict):
        return "not an MLflow meta.yaml (not a mapping)"
    missing = [k for k in keys if not any(a in data for a in k.split("|"))]
    if missing:
        return f"not an MLflow meta.yaml (no {', '.join(missing)})"
    return None


def _metric_problem(path: Path) -> str | None:
    """MLflow's metric file: one ``timestamp value [step]`` line per logged value."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return f"not readable ({one_line(exc)})"
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) not in (2, 3):
                raise ValueError(f"{len(parts)} fields")
            int(parts[0])
            float(parts[1])
            if len(parts) == 3:
                int(parts[2])
        except ValueError:
            return f"line {i} is not an MLflow metric line (timestamp value step): {line[:60]!r}"
    return None


def _test_metric(metric: str) -> str:
    """terratorch-iterate's repeated runs test the model: ``val/loss`` -> ``test/loss``."""
    return "test/" + metric.split("/")[-1]


def _repeated_cells(
    storage: str,
    store: str,
    experiment: str,
    tasks: dict[str, tuple[str, str]],
    identities: dict[str, dict[str, str]],
    notes: list[str],
    who: str,
    config_name: str,
) -> dict[str, Cell]:
    """Each task's finished seeds in the repeated-runs store (`store`, as read):
    ``test_test/<metric>``; a seed whose value is not finite is left out and said in `notes`,
    and so is one whose recorded ``model_args`` name another backbone or decoder."""
    if not storage or storage.startswith(("http", "sqlite")):
        return {}
    if not Path(store).is_dir():
        return {}
    client = _client(store)
    found = client.get_experiment_by_name(f"{experiment}_repeated_exp")
    if found is None:
        return {}
    runs = _all_runs(client, found.experiment_id)
    cells: dict[str, Cell] = {}
    seen: set[str] = set()
    for run in runs:  # newest first: a seed run again replaces the older one
        name = run.info.run_name or ""
        match = re.fullmatch(r"(.+)_(\d+)", name)
        if not match or match.group(1) not in tasks or name in seen:
            continue
        if run.info.status != "FINISHED":
            continue
        task = match.group(1)
        key = "test_" + _test_metric(tasks[task][0])
        value = run.data.metrics.get(key)
        want = identities.get(task, {})
        other = _other_config(run.data.params, want, config_name, PARAMS_PREFIX)
        if other is not None:
            if value is not None:
                notes.append(f"{who}: seed run {name} (run {run.info.run_id}) {other}: ignored")
            continue
        seen.add(name)
        if _finite(value):
            cell = cells.setdefault(task, Cell([]))
            cell.values.append(float(value))
            cell.run_ids.append(run.info.run_id)
            cell.seeds.append(int(match.group(2)))
            params = {k: v for k, v in run.data.params.items() if "seed" not in k.lower()}
            cell.configs.append(repr(sorted(params.items())))
            cell.params.append(_hyperparameters(run.data.params))
            cell.tests.append(
                {
                    k.removeprefix("test_test/"): float(v)
                    for k, v in run.data.metrics.items()
                    if k.startswith("test_test/")
                }
            )
        elif value is not None:
            notes.append(
                f"{who}: seed run {name} of {task!r} (run {run.info.run_id}) produced "
                f"{key} = {value}; left out of the mean"
            )
    return {task: cell.in_seed_order() for task, cell in cells.items()}


# -- plotting ------------------------------------------------------------------------------------
def plot_size(results: Results) -> tuple[float, float]:
    """The figure's size in inches (the PNG is this times PLOT_DPI pixels): a panel per task,
    and one for the aggregate in the IQM plot."""
    tracks = len({a.track for a in results.aggregates})
    panels = max(1, len(results.tasks)) + (1 if iqm_ready(results) and not tracks else tracks)
    return (PLOT_MARGIN + PLOT_WIDTH_PER_TASK * panels, PLOT_HEIGHT)


def iqm_ready(results: Results) -> bool:
    """Enough seeds everywhere for terratorch-iterate's normalised IQM plot."""
    return (
        len(results.backbones) >= 2
        and bool(results.tasks)
        and all(
            row.source == REPEATED
            and all(c is not None and len(c.values) >= IQM_MIN_SEEDS for c in row.cells.values())
            for row in results.tasks
        )
    )


def plot_results(results: Results, path: Path) -> Path:
    """A PNG for a paper draft: terratorch-iterate's normalised IQM plot when every backbone has
    enough seeds on every task, else one panel per task with mean +- std bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ScaffoldError(f"--plot {path}: give a .png file")
    if not path.parent.is_dir():
        raise ScaffoldError(f"--plot {path}: no such directory {path.parent}")
    if not results.tasks:
        raise ScaffoldError(f"{results.directory}: the configs have no tasks to plot")
    fig = figure(results)
    try:
        fig.savefig(path, dpi=PLOT_DPI)  # no bbox cropping: the size is what plot_size says
    except OSError as exc:
        raise ScaffoldError(f"--plot {path}: cannot write it ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
    return path


def figure(results: Results):
    """The matplotlib Figure `plot_results` saves (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    # stats.py's aggregate (the table's) when there is one; else terratorch-iterate's IQM plot
    iqm = iqm_ready(results) and not results.aggregates
    with warnings.catch_warnings():  # seaborn's deprecations, from terratorch-iterate's calls
        warnings.simplefilter("ignore", FutureWarning)
        fig = _iqm_figure(results) if iqm else _bars_figure(results)
    fig.set_size_inches(*plot_size(results))
    fig.tight_layout(rect=(0, 0, 1, 0.88 if iqm else 0.95))  # room for the legend or title
    return fig


def _bars_figure(results: Results):
    from matplotlib import pyplot as plt

    names = [b.name for b in results.backbones]
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # tab10 is a ListedColormap
    tracks = list(dict.fromkeys(a.track for a in results.aggregates))
    fig, axes = plt.subplots(1, len(results.tasks) + len(tracks), squeeze=False)
    for ax, track in zip(axes[0][len(results.tasks) :], tracks, strict=True):
        _aggregate_panel(ax, results, track, names, colors)
    for ax, row in zip(axes[0], results.tasks, strict=False):
        best = set(row.best)
        for i, name in enumerate(names):
            cell = row.cells.get(name)
            if cell is None:  # missing: a label where the bar would be, never a zero bar
                ax.text(i, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=8)
                continue
            ax.bar(
                i,
                cell.mean,
                yerr=cell.std,
                capsize=4,
                color=colors[i % len(colors)],
                edgecolor="black" if name in best else "none",
                linewidth=2 if name in best else 0,
                hatch="//" if name in best else None,
            )
            ax.text(i, cell.mean, f"{cell.mean:.3g}", ha="center", va="bottom", fontsize=7)
            if len(cell.values) > 1:  # each seed, over its bar
                ax.plot([i] * len(cell.values), cell.values, "k.", markersize=4, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        arrow = "lower is better" if row.direction == "min" else "higher is better"
        ax.set_title(f"{row.name}\n{row.metric}, {arrow}", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    seeds = any(row.source == REPEATED for row in results.tasks)
    what = "mean ± std over seeds, dots: each seed" if seeds else "best HPO trial"
    fig.suptitle(f"{what}; hatched: best", fontsize=9)
    return fig


def _aggregate_panel(ax, results: Results, track: str, names: list[str], colors) -> None:
    """One track's normalised IQM per backbone with its 95% stratified-bootstrap interval."""
    found = {a.backbone: a for a in results.aggregates if a.track == track}
    for i, name in enumerate(names):
        a = found.get(name)
        if a is None:
            ax.text(i, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=8)
            continue
        ax.bar(i, a.iqm, color=colors[i % len(colors)])
        ax.errorbar(i, a.iqm, yerr=[[a.iqm - a.low], [a.high - a.iqm]], fmt="none", ecolor="k",
                    capsize=4)  # fmt: skip
        ax.text(i, a.high, f"{a.iqm:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_title(f"all tasks ({track})\nnormalised IQM, 95% CI", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)


def _iqm_figure(results: Results):
    """terratorch-iterate's (geobench's) plot: per-task scores normalised to [0, 1] over the
    backbones, bootstrapped interquartile means per task and aggregated over tasks."""
    import pandas as pd
    from matplotlib import pyplot as plt
    from terratorch_iterate import plot_tools

    records = [
        {"model": name, "dataset": row.name, "partition_name": "default", "test metric": value}
        for row in results.tasks
        for name, cell in row.cells.items()
        if cell is not None
        for value in cell.values
    ]
    df = pd.DataFrame.from_records(records)
    normalizer = plot_tools.make_normalizer(df, metrics=("test metric",))
    metric = normalizer.normalize_data_frame(df, "test metric")
    # Higher is better on every panel: a metric to minimise is flipped after normalising.
    flip = {row.name for row in results.tasks if row.direction == "min"}
    df[metric] = [1 - v if d in flip else v for v, d in zip(df[metric], df["dataset"], strict=True)]
    iqms = pd.concat(
        (
            plot_tools.bootstrap_iqm_aggregate(df, metric=metric),
            plot_tools.bootstrap_iqm(df, metric=metric),
        )
    )
    order = [b.name for b in results.backbones]
    plot_tools.plot_per_dataset(iqms, order, metric=metric, fig_size=plot_size(results))
    fig = plt.gcf()
    fig.axes[0].set_ylabel("normalised IQM (higher is better)", fontsize=8)
    return fig
