"""Evaluation tracks and seeds: what a paper (and the GEO-Bench-2 leaderboard) reports.

Two tracks are ranked apart: ``full_ft`` (the whole model trains) and ``frozen`` (the encoder is
frozen; only the decoder and head learn). The frozen track is the same tasks with TerraTorch's
own ``freeze_backbone: true`` in their ``terratorch_task``, each named ``<task>_frozen`` so that
its runs (MLflow run names, fit folders, iterate2 studies) never mix with the full track's. The
files derived from benchmark.yaml (fit/, iterate2/, baselines/, benchmark_ray.yaml) follow.

Seeds: benchmark.yaml's ``run_repetitions`` is how many seeds terratorch-iterate's
``--repeat`` runs per task (it draws them at random, ``randint(1, 5000)``); the fit route runs
the fixed seeds ``0 .. N-1`` (render/fit.py's ``fit/seeds.sh``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scaffold.errors import ScaffoldError

FULL_FT = "full_ft"
FROZEN = "frozen"
TRACKS = (FULL_FT, FROZEN)
FROZEN_SUFFIX = "_frozen"
DEFAULT_SEEDS = 5  # the leaderboard takes exactly 5 seeds per backbone and dataset
MAX_SEEDS = 100


def parse_protocol(text: str | None) -> tuple[str, ...] | None:
    """``--protocol full_ft,frozen`` as the tracks, in TRACKS' order; None when not given."""
    if text is None:
        return None
    given = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in given if t not in TRACKS]
    if unknown or not given:
        raise ScaffoldError(
            f"--protocol {text!r}: give one or both of {', '.join(TRACKS)} (e.g. full_ft,frozen)"
        )
    return tuple(t for t in TRACKS if t in given)


def check_seeds(seeds: int | None) -> int | None:
    """``--seeds N``: 1 to MAX_SEEDS."""
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise ScaffoldError(f"--seeds {seeds}: give a number of seeds from 1 to {MAX_SEEDS}")
    return seeds


def seed_list(seeds: int) -> list[int]:
    """The fixed seeds of `seeds` repeats."""
    return list(range(seeds))


def track_of(task: str) -> tuple[str, str]:
    """(the task's dataset name, its track): ``<dataset>_frozen`` -> (<dataset>, frozen)."""
    if task.endswith(FROZEN_SUFFIX) and len(task) > len(FROZEN_SUFFIX):
        return task[: -len(FROZEN_SUFFIX)], FROZEN
    return task, FULL_FT


def frozen_task(entry: dict[str, Any]) -> dict[str, Any]:
    """The frozen track's copy of a benchmark task entry."""
    import copy

    frozen = copy.deepcopy(entry)
    frozen["name"] = f"{entry['name']}{FROZEN_SUFFIX}"
    terratorch_task = frozen.get("terratorch_task") or {}
    frozen["terratorch_task"] = {"freeze_backbone": True, **terratorch_task}
    return frozen


def frozen_tasks_text(entries: Iterable[dict[str, Any]]) -> str:
    """The frozen copies of `entries` as items of benchmark.yaml's ``tasks`` list."""
    from scaffold.render.dump import dump

    items = []
    for entry in entries:
        lines = dump(frozen_task(entry)).splitlines()
        items.append(
            f"# {entry['name']}, its encoder frozen (the frozen track).\n"
            + "\n".join(["- " + lines[0], *("  " + line if line else line for line in lines[1:])])
        )
    return "\n".join(items)


# How the repeats run, from the folder (see run_repetitions in benchmark.yaml): iterate reads
# only the file (no option overrides it) and its repeats refuse a relative storage_uri, so they
# run on a copy whose store is this folder's, absolute; the file itself stays movable.
REPEAT_COMMAND = (
    '#   mkdir -p runs && sed "s|^storage_uri: |storage_uri: $PWD/|" benchmark.yaml \\\n'
    "#       > runs/repeat.yaml && MLFLOW_ALLOW_FILE_STORE=true \\\n"
    "#       terratorch iterate --hpo --repeat --config runs/repeat.yaml"
)


def track_sections(
    sections: dict[str, str], smoke: dict[str, Any], protocol: tuple[str, ...], seeds: int
) -> dict[str, str]:
    """benchmark.yaml's text for the tracks and seeds: ``frozen_tasks`` (the frozen copies of
    the rendered tasks, or of the `smoke` task when there are none) and ``search`` with
    ``run_repetitions`` after it."""
    import yaml

    entries = yaml.safe_load(sections["tasks"]) if "tasks" in sections else [smoke]
    frozen = frozen_tasks_text(entries) if FROZEN in protocol else ""
    repeat = (
        "# `terratorch iterate --repeat` reruns each task's best trial with run_repetitions\n"
        "# seeds, drawn at random by terratorch-iterate (randint 1..5000); fit/seeds.sh runs\n"
        "# the fixed seeds 0..N-1 instead. Its repeats refuse a relative storage_uri: run them\n"
        "# from this folder on a copy with the store absolute (this file stays movable):\n"
        f"{REPEAT_COMMAND}\n" + f"run_repetitions: {seeds}"
    )
    return {"frozen_tasks": frozen, "search": sections["search"] + "\n" + repeat}
