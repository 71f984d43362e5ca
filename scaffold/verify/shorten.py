"""The shortened copy of a benchmark YAML that the verifying run runs.

The YAML on disk is the real benchmark (epochs, trials, early stopping, data loader workers); the
check needs only to know that every task runs end to end. The copy keeps every task and value
but caps the work (one trial, one epoch, two training and one validation batch) and keeps its
results beside the log, away from the real runs' MLflow store and Optuna database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
    defaults = cfg.setdefault("defaults", {}) or {}
    cfg["defaults"] = defaults
    trainer = defaults.setdefault("trainer_args", {}) or {}
    defaults["trainer_args"] = {**trainer, **LIMITS}
    cfg["n_trials"] = 1
    for task in cfg.get("tasks") or []:
        if not isinstance(task, dict):
            continue
        task.pop("early_stop_patience", None)
        args = (task.get("datamodule") or {}).get("init_args")
        if isinstance(args, dict) and "num_workers" in args:
            args["num_workers"] = 0  # no worker processes for two batches
    cfg["storage_uri"] = str(log_dir / "hpo")
    cfg["ray_storage_path"] = str(log_dir / "ray")
    copy = log_dir / f"{config.stem}.short{config.suffix}"
    copy.write_text(
        f"# A shortened copy of {config} for the verifying run.\n"
        + yaml.safe_dump(cfg, sort_keys=False),
        encoding="utf-8",
    )
    return copy
