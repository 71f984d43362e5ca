"""The shortened copy of a benchmark YAML that the verifying run runs.

The YAML on disk is the real benchmark (epochs, trials, data loader workers); the check needs
only to know that every task runs end to end. The copy keeps every task and value but caps the
work (one trial, one epoch, two training and one validation batch, no worker processes) and
keeps its results beside the log, away from the real runs' MLflow store and Optuna database.
Everything else (early stopping included) is the real file's. The copy runs from its log folder,
so the paths the real file names relative to its output folder (the package, the data, split
files) are written absolute there, as a run started in that folder reads them.

A value the copy replaces is never run by the check, so `overridden_problems` checks it in the
real file the way the real run would (terratorch-iterate's parser and runner, Lightning's
Trainer, torch's DataLoader): a broken one there is a finding, not a green check, and so is one
the real run accepts but that makes it train or validate on nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from scaffold.render.dump import dump
from scaffold.verify.types import CheckFailed
from scaffold.write.names import in_folder, output_folder

FAILS = "the real run would fail on it"
# The datamodule's arguments that name what it reads: *_root, *_split (GenericNonGeo*, M*NonGeo).
PATH_KEY = re.compile(r"(?:^|_)(?:root|split)$")

LIMITS: dict[str, Any] = {
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "limit_test_batches": 1,
    "enable_checkpointing": False,
}


def shortened_copy(config: Path, log_dir: Path) -> Path:
    """Write the shortened copy of `config` into `log_dir`; return its path."""
    cfg = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    if not isinstance(cfg, dict):
        raise CheckFailed(
            f"{config.name}: holds a {type(cfg).__name__}, not a mapping of "
            "terratorch-iterate's settings"
        )
    defaults = cfg.setdefault("defaults", {}) or {}
    cfg["defaults"] = defaults
    if isinstance(defaults, dict):  # anything else: the run itself refuses it
        trainer = defaults.setdefault("trainer_args", {}) or {}
        if isinstance(trainer, dict):
            defaults["trainer_args"] = {**trainer, **LIMITS}
    cfg["n_trials"] = 1
    folder = output_folder(config)
    if isinstance(cfg.get("custom_modules_path"), str):
        cfg["custom_modules_path"] = str(in_folder(folder, cfg["custom_modules_path"]))
    for task in cfg.get("tasks") or []:
        if not isinstance(task, dict):
            continue
        args = (task.get("datamodule") or {}).get("init_args")
        if not isinstance(args, dict):
            continue
        if "num_workers" in args:
            args["num_workers"] = 0  # no worker processes for two batches
        for key, value in args.items():
            if PATH_KEY.search(str(key)) and isinstance(value, str) and value:
                args[key] = str(in_folder(folder, value))
    cfg["storage_uri"] = str(log_dir / "hpo")
    cfg["ray_storage_path"] = str(log_dir / "ray")
    copy = log_dir / f"{config.stem}.short{config.suffix}"
    copy.write_text(
        f"# A shortened copy of {config} for the verifying run.\n" + dump(cfg) + "\n",
        encoding="utf-8",
    )
    return copy


def _whole(value: Any) -> int | None:
    """`value` as jsonargparse reads an ``int`` (an int, or a string of one; never a bool or a
    float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def overridden_problems(cfg: Any) -> list[str]:
    """What the real run would refuse (or do nothing with) among the values the shortened copy
    replaces, each naming its key and saying which."""
    if not isinstance(cfg, dict):
        return []  # not a mapping: the run itself says so
    problems = []
    n_trials = _whole(cfg.get("n_trials"))
    if n_trials is None or n_trials <= 0:
        problems.append(
            f"n_trials: {cfg.get('n_trials')!r}: terratorch-iterate runs a whole number of "
            f"trials above 0 ({FAILS})"
        )
    storage = cfg.get("storage_uri")
    if not isinstance(storage, str) or not storage:
        problems.append(
            f"storage_uri: {storage!r}: terratorch-iterate needs a path or URI ({FAILS})"
        )
    elif (_whole(cfg.get("run_repetitions")) or 0) > 0 and not Path(storage).is_absolute():
        # iterate's repeats write a CSV beside the store and refuse it unless it is absolute.
        problems.append(
            f"storage_uri: {storage}: terratorch-iterate repeats runs (run_repetitions) only "
            "under an absolute storage_uri: write this folder's path in front of it "
            f"({FAILS})"
        )
    ray_storage = cfg.get("ray_storage_path")
    if ray_storage is not None and not isinstance(ray_storage, str):
        problems.append(f"ray_storage_path: {ray_storage!r}: not a path ({FAILS})")
    defaults = cfg.get("defaults")
    trainer = defaults.get("trainer_args") if isinstance(defaults, dict) else None
    if isinstance(trainer, dict):
        problems += trainer_problems(trainer, "defaults.trainer_args")
    for i, task in enumerate(cfg.get("tasks") or []):
        args = (task.get("datamodule") or {}).get("init_args") if isinstance(task, dict) else None
        if isinstance(args, dict) and "num_workers" in args:
            workers = _whole(args["num_workers"])
            if workers is None or workers < 0:
                name = task.get("name") or i
                problems.append(
                    f"tasks[{name}].datamodule.init_args.num_workers: {args['num_workers']!r}: "
                    f"the data loader takes a whole number of worker processes, 0 or more ({FAILS})"
                )
    return problems


NO_BATCH = {"limit_train_batches": "train", "limit_val_batches": "validate"}


def trainer_problems(trainer: dict[str, Any], where: str, iterate: bool = True) -> list[str]:
    """What Lightning's Trainer would refuse, or do nothing with, among `trainer`'s epochs and
    batch limits (the mapping at `where`). `iterate`: terratorch-iterate's rules too (it
    requires ``max_epochs``; `terratorch fit` leaves it to Lightning's default)."""
    problems = []
    if "max_epochs" not in trainer:
        if iterate:
            problems.append(
                f"{where}.max_epochs: missing: terratorch-iterate requires it ({FAILS})"
            )
    else:
        epochs = trainer["max_epochs"]
        number = isinstance(epochs, (int, float)) and not isinstance(epochs, bool)
        if epochs is not None and (not number or epochs < -1):
            problems.append(
                f"{where}.max_epochs: {epochs!r}: Lightning trains a whole number of epochs, "
                f"0 or more (or -1: until stopped) ({FAILS})"
            )
        elif epochs == 0:
            problems.append(
                f"{where}.max_epochs: 0: Lightning accepts it, but the real run would train on "
                "nothing"
            )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if trainer.get(key) is None:
            continue
        value = trainer[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not (0 <= value <= 1 or (value > 1 and value % 1 == 0)):
            problems.append(
                f"{where}.{key}: {value!r}: Lightning takes a fraction in [0.0, 1.0] or a "
                f"whole number of batches ({FAILS})"
            )
        elif value == 0 and key in NO_BATCH:
            problems.append(
                f"{where}.{key}: 0: Lightning accepts it, but the real run would "
                f"{NO_BATCH[key]} on nothing"
            )
    # enable_checkpointing is not checked: terratorch-iterate sets it itself (to save_models,
    # or False under Ray) before the Trainer sees it, in the real run as in the copy
    return problems
