"""The GEO-Bench-2 leaderboard's submission files, written and checked by the leaderboard's own rules.

A submission is a folder holding exactly ``results_and_parameters.csv`` (one row per finished
repeat: dataset, metric, seed, track, hyperparameters, the test metric) and
``additional_info.json``. The rules below are those of The-AI-Alliance/GEO-Bench-2-Leaderboard's
``utils/input_validation.py`` and ``utils/constants.py``: the columns and their kinds, exactly
``REQUIRED_SEEDS`` rows and as many distinct seeds per backbone and dataset, ``frozen_or_full_ft``
in {frozen, full_ft}, the JSON's keys and their types, and every dataset of at least one of the
leaderboard's dimensions. Its validator asks pandas for ``object`` dtypes, which pandas 3 no
longer gives text read from a CSV; here the kind of each value is checked instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scaffold.data.suites import GEOBENCH2_DIMENSIONS as DIMENSIONS
from scaffold.data.suites import LEADERBOARD_METRICS
from scaffold.write.merge import write_atomic

CSV_FILE = "results_and_parameters.csv"
JSON_FILE = "additional_info.json"
REQUIRED_SEEDS = 5
STRING_COLUMNS = (
    "dataset",
    "Metric",
    "experiment_name",
    "partition name",
    "backbone",
    "decoder",
    "batch_size_selection",
    "frozen_or_full_ft",
)
INTEGER_COLUMNS = ("early_stop_patience", "n_trials", "Seed", "data_percentages", "batch_size")
FLOAT_COLUMNS = ("weight_decay", "lr", "test metric")
COLUMNS = STRING_COLUMNS + INTEGER_COLUMNS + FLOAT_COLUMNS
TRACKS = ("frozen", "full_ft")
# The metric each kind of task is ranked by, as the leaderboard names it.
METRICS = {task: name for task, (name, _) in LEADERBOARD_METRICS.items()}
DETECTION_METRICS = ("test_test_map", "test_test_segm_map")
# additional_info.json: each key and the type of its value (the template's own key ends in a space).
JSON_FORMAT: dict[str, type] = {
    "Paper Link": str,
    "Code Repository Link ": str,
    "License": str,
    "Number of HPO trials": str,
    "Additional information about submission": str,
    "Comments on new models in submission": str,
    "New model info": list,
}


def write_submission(
    directory: Path, rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write ``results_and_parameters.csv`` (the leaderboard's columns, in its order) and
    ``additional_info.json`` into `directory`, each replaced whole (never half-written)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row[c] for c in COLUMNS})
    csv_path, json_path = directory / CSV_FILE, directory / JSON_FILE
    write_atomic(csv_path, text.getvalue().encode("utf-8"))
    write_atomic(json_path, (json.dumps(dict(info), indent=2) + "\n").encode("utf-8"))
    return csv_path, json_path


def validate(directory: Path, required_seeds: int = REQUIRED_SEEDS) -> list[str]:
    """The problems the leaderboard's validation would find in the submission in `directory`,
    one line each (empty: it would accept it)."""
    problems: list[str] = []
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if present != sorted((CSV_FILE, JSON_FILE)):
        problems.append(
            f"{directory} must hold exactly {CSV_FILE} and {JSON_FILE} (it holds: {', '.join(present) or 'nothing'})"
        )
    if (directory / CSV_FILE).is_file():
        problems += _csv_problems(directory / CSV_FILE, required_seeds)
    if (directory / JSON_FILE).is_file():
        problems += _json_problems(directory / JSON_FILE)
    return problems


def _csv_problems(path: Path, required_seeds: int) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    problems = [f"{CSV_FILE}: column {c!r} is missing" for c in COLUMNS if c not in header]
    if not rows:
        return problems + [f"{CSV_FILE}: no rows"]
    for column in INTEGER_COLUMNS + FLOAT_COLUMNS:
        if column in header:
            bad = [i for i, r in enumerate(rows, 2) if not _is_number(r[column])]
            if bad:
                problems.append(
                    f"{CSV_FILE}: column {column!r} is not numeric (line {bad[0]}: {rows[bad[0] - 2][column]!r})"
                )
    for column in STRING_COLUMNS:
        if column in header:
            bad = [i for i, r in enumerate(rows, 2) if r[column] == "" or _is_number(r[column])]
            # the leaderboard reads a column of numbers as numbers: text needs one word at least
            if len(bad) == len(rows):
                problems.append(f"{CSV_FILE}: column {column!r} holds no text")
    if "frozen_or_full_ft" in header:
        for value in sorted({r["frozen_or_full_ft"] for r in rows} - set(TRACKS)):
            problems.append(
                f"{CSV_FILE}: frozen_or_full_ft is {value!r}; the leaderboard takes frozen or full_ft"
            )
    known = set(METRICS.values()) | set(DETECTION_METRICS)
    if "Metric" in header:
        for value in sorted({r["Metric"] for r in rows} - known):
            problems.append(
                f"{CSV_FILE}: metric {value!r} is not one the leaderboard ranks ({', '.join(sorted(known))})"
            )
    if {"backbone", "dataset", "Seed"} <= set(header):
        groups: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            groups.setdefault((r["backbone"], r["dataset"]), []).append(r["Seed"])
        for (backbone, dataset), seeds in groups.items():
            if len(seeds) != required_seeds:
                problems.append(
                    f"{CSV_FILE}: {backbone} on {dataset} has {len(seeds)} rows; the leaderboard takes exactly {required_seeds} (one per seed)"
                )
            elif len(set(seeds)) != required_seeds:
                problems.append(
                    f"{CSV_FILE}: {backbone} on {dataset} repeats a seed ({', '.join(seeds)})"
                )
    if "test metric" in header:
        for i, r in enumerate(rows, 2):
            if _is_number(r["test metric"]) and not math.isfinite(float(r["test metric"])):
                problems.append(f"{CSV_FILE}: line {i}: test metric is {r['test metric']}")
            elif (
                r.get("Metric") == "RMSE"
                and _is_number(r["test metric"])
                and float(r["test metric"]) < 0
            ):
                problems.append(f"{CSV_FILE}: line {i}: an RMSE below 0 ({r['test metric']})")
    if "dataset" in header:
        datasets = {r["dataset"] for r in rows}
        if not any(set(members) <= datasets for members in DIMENSIONS.values()):
            core = [d for d in DIMENSIONS["Core"] if d not in datasets]
            problems.append(
                f"{CSV_FILE}: no whole dimension of the leaderboard's datasets (Core lacks {', '.join(core)})"
            )
    return problems


def _json_problems(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{JSON_FILE}: not JSON ({exc})"]
    if not isinstance(data, dict):
        return [f"{JSON_FILE}: not a JSON object"]
    problems = []
    for key, kind in JSON_FORMAT.items():
        if key not in data:
            problems.append(f"{JSON_FILE}: key {key!r} is missing")
        elif not isinstance(data[key], kind):
            problems.append(f"{JSON_FILE}: {key!r} must be a {kind.__name__}")
    for i, model in enumerate(data.get("New model info") or []):
        missing = {"model_display_name", "model_size", "unique_backbone_key"} - set(model or {})
        if missing:
            problems.append(
                f"{JSON_FILE}: 'New model info' item {i} lacks {', '.join(sorted(missing))}"
            )
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
