"""The paper's numbers: per-task mean +- std, the normalised IQM with its stratified-bootstrap
interval, and the GEO-Bench-2 leaderboard's submission files, checked against hand computations
and against the leaderboard's own rules."""

from __future__ import annotations

import csv
import json
import math

import pytest

from scaffold.results import leaderboard
from scaffold.results.stats import Score, aggregate, finite, iqm, summarise

# Two backbones, two tasks, five seeds each. Backbone "m" has an outlier on task b (100), so its
# mean and its IQM differ.
VALUES = {
    ("m", "a"): [0.1, 0.5, 0.6, 0.7, 0.9],
    ("m", "b"): [10.0, 20.0, 30.0, 40.0, 100.0],
    ("base", "a"): [0.2, 0.3, 0.4, 0.5, 0.5],
    ("base", "b"): [15.0, 15.0, 16.0, 17.0, 18.0],
}


def _scores(track: str = "full_ft") -> list[Score]:
    return [
        Score(backbone, task, track, seed, value)
        for (backbone, task), values in VALUES.items()
        for seed, value in enumerate(values)
    ]


def test_per_task_mean_and_sample_std_by_hand():
    by_key = {(s.backbone, s.task): s for s in summarise(_scores())}
    m_b = by_key[("m", "b")]
    assert m_b.n == 5 and m_b.mean == pytest.approx(40.0)
    # sample std (ddof 1): sqrt(((-30)^2 + (-20)^2 + (-10)^2 + 0^2 + 60^2) / 4) = sqrt(1250)
    assert m_b.std == pytest.approx(math.sqrt(1250.0))
    assert by_key[("base", "a")].mean == pytest.approx(0.38)
    assert by_key[("base", "a")].std == pytest.approx(math.sqrt(0.068 / 4))


def test_iqm_trims_a_quarter_at_each_end_and_differs_from_the_mean():
    values = [0.0, 0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 1.0, 1.0]
    # 2 of 10 cut at each end: the mean of the middle six
    assert iqm(values) == pytest.approx((0.1 + 0.2 + 0.3 + 0.5 + 0.6 + 0.7) / 6)
    assert iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)  # the mean is 26.5


def test_aggregate_normalises_per_task_then_takes_the_iqm():
    result = {a.backbone: a for a in aggregate(_scores())}
    # task a spans 0.1..0.9 over both backbones, task b 10..100: m's normalised scores are
    # a: 0, .5, .625, .75, 1 and b: 0, 1/9, 2/9, 3/9, 1; sorted, the middle six of ten
    middle = [1 / 9, 2 / 9, 3 / 9, 0.5, 0.625, 0.75]
    assert result["m"].iqm == pytest.approx(sum(middle) / 6)
    normalised_mean = (0 + 0.5 + 0.625 + 0.75 + 1 + 0 + 1 / 9 + 2 / 9 + 3 / 9 + 1) / 10
    assert result["m"].iqm != pytest.approx(normalised_mean)
    for a in result.values():
        assert a.low <= a.iqm <= a.high and a.low < a.high
        assert a.tasks == ("a", "b")


def test_the_interval_is_the_same_for_the_same_runs():
    first, second = aggregate(_scores()), aggregate(list(reversed(_scores())))
    key = lambda a: (a.backbone, a.low, a.high)  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, second))
    other_seed = aggregate(_scores(), random_state=1)
    assert [(a.low, a.high) for a in first] != [(a.low, a.high) for a in other_seed]


def test_the_interval_resamples_each_task_apart():
    """Stratified: every resample keeps each task's five seeds, so a backbone whose tasks are
    each constant over seeds has a zero-width interval (an unstratified bootstrap over the pooled
    scores would move)."""
    scores = [Score("x", t, "frozen", s, v) for t, v in (("a", 0.2), ("b", 0.8)) for s in range(5)]
    scores += [Score("y", t, "frozen", s, v) for t, v in (("a", 0.4), ("b", 0.6)) for s in range(5)]
    for a in aggregate(scores):
        assert a.high - a.low == pytest.approx(0.0)


def test_lower_is_better_tasks_map_their_largest_value_to_zero():
    scores = [Score("m", "rmse", "full_ft", 0, 1.0), Score("n", "rmse", "full_ft", 0, 3.0)]
    result = {a.backbone: a.iqm for a in aggregate(scores, higher_is_better={"rmse": False})}
    assert result == {"m": 1.0, "n": 0.0}


def test_tracks_are_ranked_apart():
    scores = _scores("full_ft") + [
        Score("m", "a", "frozen", 0, 0.3),
        Score("base", "a", "frozen", 0, 0.1),
    ]
    frozen = {a.backbone: a for a in aggregate(scores) if a.track == "frozen"}
    assert (
        frozen["m"].iqm == 1.0 and frozen["base"].iqm == 0.0
    )  # normalised on the frozen runs only


def test_nan_scores_are_set_apart_not_averaged():
    good, bad = finite(
        [Score("m", "a", "full_ft", 0, 0.5), Score("m", "a", "full_ft", 1, math.nan)]
    )
    assert [s.seed for s in good] == [0] and [s.seed for s in bad] == [1]


# -- the leaderboard's files ---------------------------------------------------------------------
def _rows(seeds=(1, 2, 3, 4, 5), metric="Multiclass_Jaccard_Index", datasets=None):
    return [
        {
            "dataset": dataset,
            "Metric": metric,
            "experiment_name": f"my_model_{dataset}",
            "partition name": "default",
            "backbone": "my_model",
            "decoder": "UperNetDecoder",
            "batch_size_selection": "fixed",
            "frozen_or_full_ft": "full_ft",
            "early_stop_patience": 10,
            "n_trials": 16,
            "Seed": seed,
            "data_percentages": 100,
            "batch_size": 8,
            "weight_decay": 0.01,
            "lr": 1e-4,
            "test metric": 0.5 + seed / 100,
        }
        for dataset in (datasets or leaderboard.DIMENSIONS["Core"])
        for seed in seeds
    ]


INFO = {key: ("16" if key == "Number of HPO trials" else "N/A") for key in leaderboard.JSON_FORMAT}
INFO["New model info"] = [
    {"model_display_name": "Mine", "model_size": "5M", "unique_backbone_key": "my_model"}
]


def test_a_valid_submission_passes_the_leaderboards_rules(tmp_path):
    csv_path, json_path = leaderboard.write_submission(tmp_path / "sub", _rows(), INFO)
    assert leaderboard.validate(tmp_path / "sub") == []
    with csv_path.open() as f:
        header = next(csv.reader(f))
    assert header == list(leaderboard.COLUMNS)  # the exact names, "partition name" with its space
    assert "Code Repository Link " in json.loads(json_path.read_text())


def test_four_seeds_a_wrong_metric_or_a_missing_column_fail_with_the_reason(tmp_path):
    leaderboard.write_submission(tmp_path / "four", _rows(seeds=(1, 2, 3, 4)), INFO)
    problems = leaderboard.validate(tmp_path / "four")
    assert any("has 4 rows" in p and "exactly 5" in p for p in problems), problems

    leaderboard.write_submission(tmp_path / "metric", _rows(metric="val/mIoU"), INFO)
    assert any("metric 'val/mIoU'" in p for p in leaderboard.validate(tmp_path / "metric"))

    leaderboard.write_submission(tmp_path / "column", _rows(), INFO)
    path = tmp_path / "column" / leaderboard.CSV_FILE
    lines = [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]  # no "test metric"
    path.write_text("\n".join(lines) + "\n")
    assert any("'test metric' is missing" in p for p in leaderboard.validate(tmp_path / "column"))


def test_track_values_seeds_json_and_dimensions_are_checked(tmp_path):
    rows = _rows()
    rows[0]["frozen_or_full_ft"] = "linear_probe"
    rows[1]["Seed"] = rows[0]["Seed"]
    info = {k: v for k, v in INFO.items() if k != "License"} | {"Number of HPO trials": 16}
    leaderboard.write_submission(tmp_path / "bad", rows, info)
    problems = leaderboard.validate(tmp_path / "bad")
    assert any("frozen_or_full_ft is 'linear_probe'" in p for p in problems)
    assert any("repeats a seed" in p for p in problems)
    assert any("'License' is missing" in p for p in problems)
    assert any("'Number of HPO trials' must be a str" in p for p in problems)

    leaderboard.write_submission(tmp_path / "few", _rows(datasets=["pastis", "benv2"]), INFO)
    assert any(
        "no whole dimension" in p and "kuro_siwo" in p
        for p in leaderboard.validate(tmp_path / "few")
    )
    (tmp_path / "few" / "notes.txt").write_text("x")
    assert any("exactly" in p and "notes.txt" in p for p in leaderboard.validate(tmp_path / "few"))
