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

from scaffold.render.tracks import track_of
from scaffold.results.stats import Aggregate, Score, aggregate

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
    if not scores:
        if len(results.backbones) < 2 and _repeated_rows(results):
            results.notes.append(
                "no aggregate: the normalised IQM compares backbones; add one with "
                "`scaffold update DIR --baseline NAME` and run it on the same tasks"
            )
        return []
    return aggregate(scores, higher)


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
