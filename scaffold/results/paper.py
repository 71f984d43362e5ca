"""The report as a paper's table: per task and track the test metric's mean +- std over seeds
(n), across tasks the normalised IQM with its 95% stratified-bootstrap interval (stats.py), the
backbone beside its baselines on the same tasks; as markdown, LaTeX or CSV.

Nothing is averaged silently: a task with fewer seeds than asked (``--seeds``), a seed whose run
gave NaN (collect.py leaves it out and says so) and seeds of different configurations are named
in the notes; a task whose seeds ran different configurations is left out of the aggregate.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import yaml

from scaffold.data.geobench import GEOBENCH_FILE
from scaffold.data.suites import GEOBENCH2_DIMENSIONS as DIMENSIONS
from scaffold.data.suites import LEADERBOARD_METRICS
from scaffold.render.tracks import track_of
from scaffold.results.stats import Aggregate, Score, aggregate
from scaffold.write.names import CONFIG_FILE, STATE_DIR
from scaffold.write.state import read_state

FORMATS = ("table", "markdown", "latex", "csv")
REPEATED = "repeated"  # a task row from repeated runs (collect.py): seeds, the test metric


def _repeated_rows(results) -> list:
    return [row for row in results.tasks if row.source == REPEATED]


def check_seeds_and_configs(results) -> None:
    """Notes for each task with fewer seeds than asked, or with seeds of mixed configurations."""
    for row in _repeated_rows(results):
        for name, cell in row.cells.items():
            if cell is None:
                continue
            seeds = ", ".join(map(str, sorted(cell.seeds)))
            if results.seeds and len(cell.values) < results.seeds:
                results.notes.append(
                    f"{name}: task {row.name!r} has {len(cell.values)} of the {results.seeds} "
                    f"seeds asked for (seeds {seeds})"
                )
            if cell.mixed:
                results.notes.append(
                    f"{name}: task {row.name!r}: its seeds ({seeds}) ran different "
                    "configurations; its mean is theirs together, and it is left out of the "
                    "aggregate"
                )


def paper_aggregates(results) -> list[Aggregate]:
    """Per backbone and track, the normalised IQM and its interval over the tasks every
    backbone has seeds of (identical tasks); none with a single backbone (min-max
    normalisation over one backbone's seeds measures only their spread)."""
    scores: list[Score] = []
    higher: dict[str, bool] = {}
    for row in _repeated_rows(results):
        cells = list(row.cells.values())
        if len(cells) < 2 or any(c is None or c.mixed for c in cells):
            continue
        task, track = track_of(row.name)
        higher[task] = row.direction == "max"
        for name, cell in row.cells.items():
            for seed, value in zip(cell.seeds or range(len(cell.values)), cell.values, strict=True):
                scores.append(Score(name, task, track, seed, value))
    return aggregate(scores, higher) if scores else []


def _cell_text(cell, asked: int) -> str:
    if cell is None:
        return "missing"
    text = f"{cell.mean:.4g}"
    if len(cell.values) > 1:
        text += f" ± {cell.std:.2g}"
    text += f" (n={len(cell.values)}"
    text += f" of {asked})" if asked and len(cell.values) < asked else ")"
    return text + (" mixed configurations" if cell.mixed else "")


def table_rows(results) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the paper table: one row per task and track, then one per track
    with the aggregate."""
    names = [b.name for b in results.backbones]
    header = ["task", "track", "metric", *names]
    rows = []
    for row in results.tasks:
        task, track = track_of(row.name)
        arrow = "lower is better" if row.direction == "min" else "higher is better"
        cells = [_cell_text(row.cells.get(n), results.seeds) for n in names]
        rows.append([task, track, f"{row.metric} ({arrow})", *cells])
    for track in dict.fromkeys(a.track for a in results.aggregates):
        found = {a.backbone: a for a in results.aggregates if a.track == track}
        cells = [
            f"{a.iqm:.3f} [{a.low:.3f}, {a.high:.3f}]" if (a := found.get(n)) else "missing"
            for n in names
        ]
        rows.append(["all tasks", track, "normalised IQM [95% CI]", *cells])
    return header, rows


def table_text(results, fmt: str) -> str:
    header, rows = table_rows(results)
    if fmt == "csv":
        return _csv(results)
    if fmt == "latex":
        esc = _latex_escape
        lines = [
            "\\begin{tabular}{" + "l" * 3 + "r" * (len(header) - 3) + "}",
            "\\toprule",
            " & ".join(esc(h) for h in header) + " \\\\",
            "\\midrule",
            *(" & ".join(esc(c).replace("±", "$\\pm$") for c in r) + " \\\\" for r in rows),
            "\\bottomrule",
            "\\end{tabular}",
        ]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(results) -> str:
    """Long form, one line per backbone, task and track (and per track's aggregate)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["backbone", "task", "track", "metric", "mean", "std", "n", "seeds_asked", "seeds",
         "mixed_configurations", "low", "high"]
    )  # fmt: skip
    for row in results.tasks:
        task, track = track_of(row.name)
        for name, cell in row.cells.items():
            if cell is None:
                writer.writerow([name, task, track, row.metric, "", "", 0, results.seeds])
                continue
            std = cell.std if cell.std is not None else ""
            seeds = " ".join(map(str, cell.seeds))
            writer.writerow(
                [name, task, track, row.metric, cell.mean, std, len(cell.values), results.seeds,
                 seeds, cell.mixed]
            )  # fmt: skip
    for a in results.aggregates:
        writer.writerow(
            [a.backbone, "all tasks", a.track, "normalised IQM", a.iqm, "", "", "", "", "",
             a.low, a.high]
        )  # fmt: skip
    return text.getvalue()


def _latex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&")):
        text = text.replace(a, b)
    return text


# -- the GEO-Bench-2 leaderboard's submission ------------------------------------------------------
# TerraTorch's test metric -> the leaderboard's name for it. TerraTorch's ``Accuracy`` is the
# macro average; the leaderboard's Overall_Accuracy is TerraTorch's ``Accuracy_Micro``.
LEADERBOARD_NAMES = {logged.split("/")[-1]: name for name, logged in LEADERBOARD_METRICS.values()}


def leaderboard_value(
    task_type: str, metric: str, value: float, tests: dict[str, float]
) -> tuple[str, float]:
    """The leaderboard's metric for a task of `task_type` and a run's value of it: the one the
    leaderboard ranks that kind of task by, read from the run's test metrics (`tests`, every
    one TerraTorch logged) whatever the benchmark ranked it by (a classification ranked by
    macro ``Accuracy`` is submitted with its ``Accuracy_Micro``). A run that logged none of
    it keeps its own metric, which the leaderboard's check then names."""
    name, logged = LEADERBOARD_METRICS.get(task_type, ("", ""))
    own = logged.split("/")[-1]
    if name and own in tests:
        return name, tests[own]
    return LEADERBOARD_NAMES.get(metric, metric), value


# What the optimiser takes when the config says nothing (torch's AdamW).
DEFAULT_WEIGHT_DECAY = 0.01


def submission(results, directory) -> tuple[list[dict], dict, list[str]]:
    """The rows of ``results_and_parameters.csv`` (the backbone's own seeds, every task and
    track), ``additional_info.json``, and the datasets that are not the leaderboard's (``--data``
    tasks: written, and named in the JSON as not part of it)."""
    state = read_state(directory)
    config = yaml.safe_load((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    tasks = {str(t["name"]): t for t in config.get("tasks") or [] if isinstance(t, dict)}
    geobench_file = Path(directory) / STATE_DIR / GEOBENCH_FILE
    v1 = {}  # GEO-Bench v1 tasks go by their v1 names (the dataset's folder, m-<name>)
    if geobench_file.is_file():
        v1 = {t["name"]: t["folder"] for t in json.loads(geobench_file.read_text("utf-8"))}
    defaults = (config.get("defaults") or {}).get("terratorch_task") or {}
    own = results.backbones[0].name
    leaderboard = {d for members in DIMENSIONS.values() for d in members}
    partition = state.options.partition
    share = re.fullmatch(r"([0-9.]+)x_train", partition or "")
    rows, outside = [], []
    for row in _repeated_rows(results):
        cell = row.cells.get(own)
        if cell is None:
            continue
        base, track = track_of(row.name)
        task = tasks.get(row.name) or {}
        dataset = v1.get(base, base)
        if dataset not in leaderboard and dataset not in outside:
            outside.append(dataset)
        metric = row.metric.split("/")[-1]
        merged = {**defaults, **(task.get("terratorch_task") or {})}
        model_args = {**(defaults.get("model_args") or {}), **(merged.get("model_args") or {})}
        data_args = (task.get("datamodule") or {}).get("init_args") or {}
        hparams = merged.get("optimizer_hparams") or {}
        for i, (seed, value) in enumerate(zip(cell.seeds, cell.values, strict=True)):
            params = cell.params[i] if i < len(cell.params) else {}
            tests = cell.tests[i] if i < len(cell.tests) else {}
            name, value = leaderboard_value(str(task.get("type", "")), metric, value, tests)
            rows.append(
                {
                    "dataset": dataset,
                    "Metric": name,
                    "experiment_name": str(config.get("experiment_name") or own),
                    "partition name": partition if base in v1 else "default",
                    "backbone": own,
                    "decoder": str(model_args.get("decoder", "")),
                    "batch_size_selection": "optimized"
                    if "batch_size" in (config.get("optimization_space") or {})
                    else "fixed",
                    "frozen_or_full_ft": track,
                    "early_stop_patience": int(task.get("early_stop_patience") or 0),
                    "n_trials": int(config.get("n_trials") or 0),
                    "Seed": seed,
                    "data_percentages": round(float(share[1]) * 100) if share else 100,
                    "batch_size": int(params.get("batch_size") or data_args.get("batch_size") or 0),
                    "weight_decay": float(
                        params.get("weight_decay")
                        or hparams.get("weight_decay", DEFAULT_WEIGHT_DECAY)
                    ),
                    "lr": float(params.get("lr") or merged.get("lr") or 0.0),
                    "test metric": value,
                }
            )
    note = "Written by scaffold from its benchmark's repeated runs."
    if outside:
        note += f" Not part of the GEO-Bench-2 leaderboard's datasets: {', '.join(outside)}."
    info = {
        "Paper Link": "",
        "Code Repository Link ": "",
        "License": "",
        "Number of HPO trials": str(config.get("n_trials") or ""),
        "Additional information about submission": note,
        "Comments on new models in submission": "",
        "New model info": [
            {"model_display_name": own, "model_size": "", "unique_backbone_key": own}
        ],
    }
    return rows, info, outside


def kept_info(path: Path, info: dict) -> dict:
    """`info` with what a person filled in the existing ``additional_info.json`` at `path`
    (links, licence, model sizes): a value they gave is never replaced."""
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return info
    if not isinstance(before, dict):
        return info
    return {**info, **{k: v for k, v in before.items() if v not in ("", [], None)}}
