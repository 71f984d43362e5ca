"""The baselines of an output folder as `--json` reports them: name, config file, necks, notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scaffold.write.names import baseline_config_file


def configs_of(directory: Path, names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(baseline name, its config path) for each baseline recorded for DIR."""
    return [(name, directory / baseline_config_file(name)) for name in names]


def summary(directory: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """What each baseline config on disk says: its file, experiment and whether pretrained."""
    found = []
    for name, path in configs_of(directory, names):
        entry: dict[str, Any] = {"name": name, "config": str(path)}
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            model_args = config["defaults"]["terratorch_task"]["model_args"]
            entry["experiment_name"] = config["experiment_name"]
            entry["backbone_pretrained"] = bool(model_args.get("backbone_pretrained"))
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            entry["missing"] = True  # deleted or unreadable: the person's choice, reported
        found.append(entry)
    return found
