"""The numbers a paper quotes, from repeated runs: per task mean +- std over seeds, and across
tasks the interquartile mean of min-max normalised scores with a stratified-bootstrap interval.

The aggregation is the GEO-Bench-2 leaderboard's (its ``utils/compute_tools.py``, after
GEO-Bench's ``plot_tools.py``): each dataset's scores are scaled to [0, 1] by the smallest and
largest score any compared backbone reached on it; a backbone's aggregate is the IQM (the mean of
the middle half, ``scipy.stats.trim_mean`` cutting 25% at each end) of all its normalised seed
scores; its interval resamples the seeds of each dataset apart (a bootstrap stratified by
dataset, ``scipy.stats.bootstrap`` with one sample per dataset), with a fixed random state, so
the same runs always give the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

IQM_CUT = 0.25  # trimmed at each end: the interquartile mean
CONFIDENCE = 0.95
RESAMPLES = 2000
RANDOM_STATE = 0


@dataclass(frozen=True)
class Score:
    """One finished run's test metric: which backbone, task (dataset) and track, and its seed."""

    backbone: str
    task: str
    track: str
    seed: int
    value: float


@dataclass(frozen=True)
class TaskSummary:
    """A task's seeds for one backbone and track: mean, sample std (ddof 1; 0.0 for one seed),
    n, and the values themselves (in seed order)."""

    backbone: str
    task: str
    track: str
    mean: float
    std: float
    n: int
    seeds: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Aggregate:
    """A backbone's aggregate over tasks on one track: the IQM of its normalised scores and the
    `confidence` interval of the stratified bootstrap."""

    backbone: str
    track: str
    iqm: float
    low: float
    high: float
    tasks: tuple[str, ...]


def summarise(scores: Iterable[Score]) -> list[TaskSummary]:
    """Per (backbone, task, track): mean, std and n over the seeds, in first-seen order. A NaN
    score is not averaged in silently: callers drop or name it first (see `finite`)."""
    groups: dict[tuple[str, str, str], list[Score]] = {}
    for s in scores:
        groups.setdefault((s.backbone, s.task, s.track), []).append(s)
    out = []
    for (backbone, task, track), runs in groups.items():
        runs = sorted(runs, key=lambda s: s.seed)
        values = [s.value for s in runs]
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        out.append(
            TaskSummary(
                backbone, task, track, mean, std, n, tuple(s.seed for s in runs), tuple(values)
            )
        )
    return out


def finite(scores: Iterable[Score]) -> tuple[list[Score], list[Score]]:
    """(the finite scores, the NaN or infinite ones): a report names the second list."""
    good: list[Score] = []
    bad: list[Score] = []
    for s in scores:
        (good if math.isfinite(s.value) else bad).append(s)
    return good, bad


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean: scipy's ``trim_mean`` cutting 25% at each end."""
    from scipy.stats import trim_mean

    return float(trim_mean(list(values), IQM_CUT))


def ranges(
    scores: Iterable[Score], higher_is_better: Mapping[str, bool]
) -> dict[str, tuple[float, float]]:
    """Per task, the (worst, best) score any backbone reached: what min-max normalisation maps
    to 0 and 1. A task where lower is better (a loss, RMSE) maps its largest value to 0."""
    found: dict[str, list[float]] = {}
    for s in scores:
        found.setdefault(s.task, []).append(s.value)
    out = {}
    for task, values in found.items():
        lo, hi = min(values), max(values)
        out[task] = (lo, hi) if higher_is_better.get(task, True) else (hi, lo)
    return out


def normalise(value: float, worst: float, best: float) -> float:
    """`value` on [0, 1] between `worst` and `best` (1.0 where every run scored the same)."""
    if best == worst:
        return 1.0
    return (value - worst) / (best - worst)


def aggregate(
    scores: Sequence[Score],
    higher_is_better: Mapping[str, bool] | None = None,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    random_state: int = RANDOM_STATE,
) -> list[Aggregate]:
    """Per (backbone, track): the IQM of the normalised scores over every task and seed, and its
    stratified-bootstrap interval (each task's seeds resampled apart). The normalisation range of
    a task is taken over every backbone of the same track, so backbones compared together share
    it. A backbone with one score per task has a zero-width interval."""
    import numpy as np
    from scipy.stats import bootstrap

    higher = dict(higher_is_better or {})
    # The same runs give the same table whatever order they were read in.
    scores = sorted(scores, key=lambda s: (s.track, s.backbone, s.task, s.seed))
    out = []
    for track in dict.fromkeys(s.track for s in scores):
        on_track = [s for s in scores if s.track == track]
        bounds = ranges(on_track, higher)
        for backbone in dict.fromkeys(s.backbone for s in on_track):
            per_task: dict[str, list[float]] = {}
            for s in on_track:
                if s.backbone == backbone:
                    per_task.setdefault(s.task, []).append(normalise(s.value, *bounds[s.task]))
            samples = tuple(np.asarray(v, dtype=float) for v in per_task.values())
            point = iqm(np.concatenate(samples).tolist())
            if all(len(v) < 2 for v in samples):
                low = high = point
            else:
                result = bootstrap(
                    samples,
                    _pooled_iqm,
                    n_resamples=resamples,
                    confidence_level=confidence,
                    method="percentile",
                    vectorized=True,
                    random_state=np.random.default_rng(random_state),
                )
                low, high = (
                    float(result.confidence_interval.low),
                    float(result.confidence_interval.high),
                )
            out.append(Aggregate(backbone, track, point, low, high, tuple(per_task)))
    return out


def _pooled_iqm(*samples, axis: int = -1):
    """The IQM of the datasets' resampled seed scores pooled together (scipy passes one resample
    of each dataset, with the resamples along the leading axes)."""
    import numpy as np
    from scipy.stats import trim_mean

    return trim_mean(np.concatenate(samples, axis=axis), IQM_CUT, axis=axis)
