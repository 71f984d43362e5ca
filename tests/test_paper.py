"""`scaffold report` as a paper's table and as the GEO-Bench-2 leaderboard's submission, from
seed runs in MLflow's real file store (as terratorch-iterate's ``--repeat`` writes them: a run
``<task>_<seed>`` with ``test_test/<metric>`` and the task's ``model_args`` as params)."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

import pytest
import yaml

from scaffold.data.suites import GEOBENCH2_DIMENSIONS
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.results.stats import Score, aggregate
from tests.conftest import MODELS, run_cli, run_json

CORE = GEOBENCH2_DIMENSIONS["Core"]
# Two tasks both backbones ran; the own backbone's second has an outlier (IQM != mean).
OWN = {"pastis": [0.1, 0.5, 0.6, 0.7, 0.9], "fotw": [0.10, 0.20, 0.30, 0.40, 1.00]}
BASE = {"pastis": [0.2, 0.3, 0.4, 0.5, 0.5], "fotw": [0.15, 0.15, 0.16, 0.17, 0.18]}


def _log(config_path, backbone_args, values_by_task, lr=1e-4):
    """Seed runs as terratorch-iterate's --repeat logs them, in the config's repeated store."""
    from mlflow.tracking import MlflowClient

    config = yaml.safe_load(config_path.read_text())
    # the store's path is relative to the generated folder, where iterate runs
    root = next(p for p in config_path.parents if (p / ".scaffold").is_dir())
    client = MlflowClient(tracking_uri=str(root / config["storage_uri"]) + "_repeated_exp")
    name = config["experiment_name"] + "_repeated_exp"
    found = client.get_experiment_by_name(name)
    exp = found.experiment_id if found else client.create_experiment(name)
    for task, values in values_by_task.items():
        for seed, value in enumerate(values):
            run = client.create_run(exp, run_name=f"{task}_{seed}")
            for key, arg in backbone_args.items():
                client.log_param(run.info.run_id, f"model_args/{key}", arg)
            rate = lr(task, seed) if callable(lr) else lr
            client.log_param(run.info.run_id, "lr", rate)
            client.log_metric(run.info.run_id, "test_test/mIoU", value)
            client.set_terminated(run.info.run_id)


def _tasks(config_path, names, metric="val/mIoU"):
    """The config's smoke task, once per name (the leaderboard's datasets), ranked by `metric`."""
    config = yaml.safe_load(config_path.read_text())
    smoke = config["tasks"][0]
    config["tasks"] = [
        {**smoke, "name": n, "metric": metric, "direction": "max", "early_stop_patience": 10}
        for n in names
    ]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    args = (
        config["defaults"]["terratorch_task"]["model_args"] | smoke["terratorch_task"]["model_args"]
    )
    return {"backbone": str(args["backbone"]), "decoder": str(args["decoder"])}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store iterate writes
    result = generate(
        Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "net", baselines=("resnet18",))
    )
    main, base = result.out / "benchmark.yaml", result.out / "baselines" / "resnet18.yaml"
    own_args = _tasks(main, CORE)
    base_args = _tasks(base, CORE)
    return result, main, base, own_args, base_args


def _csv(done):
    return list(csv.DictReader(io.StringIO(done.stdout)))


def test_the_paper_table_by_hand(project):
    result, main, base, own_args, base_args = project
    _log(main, own_args, OWN)
    _log(base, base_args, BASE)
    done = run_cli("report", str(result.out), "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = {(r["backbone"], r["task"], r["track"]): r for r in _csv(done)}
    own = result.backbone
    pastis = rows[(own, "pastis", "full_ft")]
    assert float(pastis["mean"]) == pytest.approx(0.56)
    assert float(pastis["std"]) == pytest.approx(statistics.stdev(OWN["pastis"]))
    assert (pastis["n"], pastis["seeds"]) == ("5", "0 1 2 3 4")
    # the aggregate over the two tasks both ran, by stats.py (checked by hand in test_stats)
    scores = [Score(own, t, "full_ft", s, v) for t, vs in OWN.items() for s, v in enumerate(vs)]
    scores += [
        Score("resnet18", t, "full_ft", s, v) for t, vs in BASE.items() for s, v in enumerate(vs)
    ]
    want = {a.backbone: a for a in aggregate(scores)}
    got = rows[(own, "all tasks", "full_ft")]
    assert float(got["mean"]) == pytest.approx(want[own].iqm)
    assert (float(got["low"]), float(got["high"])) == pytest.approx((want[own].low, want[own].high))
    assert float(got["low"]) < float(got["mean"]) < float(got["high"])
    # by hand: pastis spans 0.1..0.9, fotw 0.1..1.0; own's ten normalised scores, the middle six
    normalised = sorted(
        [(v - 0.1) / 0.8 for v in OWN["pastis"]] + [(v - 0.1) / 0.9 for v in OWN["fotw"]]
    )
    assert float(got["mean"]) == pytest.approx(sum(normalised[2:8]) / 6)
    assert float(got["mean"]) != pytest.approx(sum(normalised) / 10)  # IQM, not the mean
    # the other Core tasks: only the own backbone ran them, so they are not in the aggregate
    assert "fewer" not in done.stderr
    markdown = run_cli("report", str(result.out), "--format", "markdown").stdout
    assert (
        f"| pastis | full_ft | test/mIoU (higher is better) | 0.56 ± {statistics.stdev(OWN['pastis']):.2g} (n=5) |"
        in markdown
    )
    assert "| all tasks | full_ft | normalised IQM [95% CI] |" in markdown
    latex = run_cli("report", str(result.out), "--format", "latex").stdout
    assert "0.56 $\\pm$" in latex and "\\begin{tabular}{lllrr}" in latex
    code, data = run_json("report", str(result.out))
    assert code == 0 and data["seeds_asked"] == 5
    found = {a["backbone"]: a for a in data["aggregates"]}
    assert found[own]["iqm"] == pytest.approx(want[own].iqm)
    assert found[own]["tasks"] == ["fotw", "pastis"] and found[own]["track"] == "full_ft"
    # the plot: each task's seeds as dots, and the aggregate with its interval
    from scaffold.results.collect import collect, figure

    fig = figure(collect(result.out))
    aggregate_ax = fig.axes[-1]
    assert aggregate_ax.get_title().startswith("all tasks (full_ft)")
    bars = [bar.get_height() for bar in aggregate_ax.patches]
    assert bars == pytest.approx([want[own].iqm, want["resnet18"].iqm])
    assert any(type(c).__name__ == "ErrorbarContainer" for c in aggregate_ax.containers)
    pastis_ax = fig.axes[CORE.index("pastis")]
    dots = [line.get_ydata().tolist() for line in pastis_ax.lines if line.get_marker() == "."]
    assert dots == [OWN["pastis"], BASE["pastis"]]
    fig.clf()


def test_fewer_seeds_a_nan_and_mixed_configurations_are_named(project):
    result, main, base, own_args, base_args = project
    values = {"pastis": [0.1, 0.5, float("nan"), 0.7, 0.9], "fotw": OWN["fotw"]}
    _log(
        main, own_args, values, lr=lambda task, seed: 1e-3 if task == "fotw" and seed == 4 else 1e-4
    )
    _log(base, base_args, BASE)
    done = run_cli("report", str(result.out), "--format", "csv")
    own = result.backbone
    rows = {(r["backbone"], r["task"]): r for r in _csv(done)}
    assert rows[(own, "pastis")]["n"] == "4"
    assert rows[(own, "fotw")]["mixed_configurations"] == "True"
    assert f"{own}: task 'pastis' has 4 of the 5 seeds asked for (seeds 0, 1, 3, 4)" in done.stderr
    assert "produced test_test/mIoU = nan; left out of the mean" in done.stderr
    assert (
        f"{own}: task 'fotw': its seeds (0, 1, 2, 3, 4) ran different configurations" in done.stderr
    )
    # fotw is left out of the aggregate, pastis counts its four finite seeds
    scores = [
        Score(own, "pastis", "full_ft", s, v) for s, v in enumerate(values["pastis"]) if s != 2
    ]
    scores += [Score("resnet18", "pastis", "full_ft", s, v) for s, v in enumerate(BASE["pastis"])]
    want = {a.backbone: a for a in aggregate(scores)}
    assert float(rows[(own, "all tasks")]["mean"]) == pytest.approx(want[own].iqm)


def test_a_leaderboard_submission_is_ready(project, tmp_path):
    result, main, _base, own_args, _base_args = project
    _log(main, own_args, {t: [0.5, 0.6, 0.7, 0.8, 0.9] for t in CORE})
    where = tmp_path / "submission"
    done = run_cli("report", str(result.out), "--leaderboard", str(where))
    assert done.returncode == 0, done.stderr
    assert f"{where / 'full_ft'}: ready for the leaderboard" in done.stderr
    with (where / "full_ft" / "results_and_parameters.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * len(CORE)
    first = rows[0]
    assert (first["dataset"], first["Metric"], first["frozen_or_full_ft"]) == (
        CORE[0],
        "Multiclass_Jaccard_Index",
        "full_ft",
    )
    assert (first["Seed"], first["lr"], first["test metric"]) == ("0", "0.0001", "0.5")
    assert sorted(p.name for p in (where / "full_ft").iterdir()) == [
        "additional_info.json",
        "results_and_parameters.csv",
    ]
    # what a person filled in the JSON stays when the report writes the submission again
    path = where / "full_ft" / "additional_info.json"
    info = json.loads(path.read_text())
    info["Paper Link"] = "https://arxiv.org/abs/0000.00000"
    path.write_text(json.dumps(info))
    assert run_cli("report", str(result.out), "--leaderboard", str(where)).returncode == 0
    assert json.loads(path.read_text())["Paper Link"] == "https://arxiv.org/abs/0000.00000"


def test_four_seeds_or_a_wrong_metric_is_refused_with_the_reason(project, tmp_path):
    result, main, _base, own_args, _base_args = project
    _tasks(main, CORE[:-1])
    config = yaml.safe_load(main.read_text())
    config["tasks"].append({**config["tasks"][0], "name": CORE[-1], "metric": "val/loss"})
    main.write_text(yaml.safe_dump(config, sort_keys=False))
    _log(main, own_args, {t: [0.5, 0.6, 0.7, 0.8] for t in CORE[:-1]})  # four seeds each
    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri=str(result.out / config["storage_uri"]) + "_repeated_exp")
    exp = store.get_experiment_by_name(config["experiment_name"] + "_repeated_exp").experiment_id
    for seed in range(5):
        run = store.create_run(exp, run_name=f"{CORE[-1]}_{seed}")
        for key, arg in own_args.items():
            store.log_param(run.info.run_id, f"model_args/{key}", arg)
        store.log_metric(run.info.run_id, "test_test/loss", 0.3)
        store.set_terminated(run.info.run_id)
    where = tmp_path / "submission"
    done = run_cli("report", str(result.out), "--leaderboard", str(where))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    folder = where / "full_ft"
    assert (
        f"{folder}: results_and_parameters.csv: {result.backbone} on {CORE[0]} has 4 rows; the leaderboard takes exactly 5 (one per seed)"
        in lines
    )
    assert any(
        line.startswith(
            f"{folder}: results_and_parameters.csv: metric 'loss' is not one the leaderboard ranks"
        )
        for line in lines
    )
    assert f"{folder}: not ready for the leaderboard" in lines
    assert "Traceback" not in done.stderr and math.isfinite(len(lines))


def test_fit_runs_are_read_in_seed_order_and_a_changed_config_is_named(project):
    """fit/seeds.sh's folders, as `terratorch test` leaves them: test/metrics.csv (CSVLogger) and
    test/config.yaml (LightningCLI's saved configuration)."""
    result, _main, _base, _own_args, _base_args = project
    fit = yaml.safe_load((result.out / "fit" / "smoke.yaml").read_text())
    for seed, value, lr in ((10, 0.7, 1e-4), (2, 0.5, 1e-4), (3, 0.6, 5e-4)):
        folder = result.out / "runs" / "fit" / "pastis" / f"seed_{seed}" / "test"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(f"epoch,step,test/loss,test/mIoU\n0,0,0.69,{value}\n")
        saved = {**fit, "seed_everything": seed}
        saved["model"] = {**fit["model"], "init_args": {**fit["model"]["init_args"], "lr": lr}}
        (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    done = run_cli("report", str(result.out), "--format", "csv")
    rows = {(r["backbone"], r["task"]): r for r in _csv(done)}
    pastis = rows[(result.backbone, "pastis")]
    assert (pastis["seeds"], pastis["n"]) == ("2 3 10", "3")
    assert float(pastis["mean"]) == pytest.approx(0.6)
    assert pastis["mixed_configurations"] == "True"
    assert "task 'pastis': its seeds (2, 3, 10) ran different configurations" in done.stderr
    assert "has 3 of the 5 seeds asked for (seeds 2, 3, 10)" in done.stderr
    # the backbone ran (its seeds did), unlike the baseline
    assert f"{result.backbone}: experiment" not in done.stderr
    assert "resnet18: experiment 'small_cnn-vs-resnet18' never ran" in done.stderr


def test_geobench_v1_tasks_go_by_their_v1_names_and_data_tasks_are_marked(project, tmp_path):
    """A GEO-Bench v1 task is written under its dataset's v1 name (its folder), with the
    recorded partition; another task (``--data``) under its own name, said in the JSON to be
    no dataset of the leaderboard's."""
    import json

    from scaffold.data.geobench import GeobenchTask, write_tasks

    result, main, _base, own_args, _base_args = project
    _tasks(main, ["cashew", "floods"])
    task = GeobenchTask(
        "cashew", "/data/segmentation_v1.0", "m-cashew-plant", "terratorch.datamodules.X",
        ("RED",), "segmentation", 7, "default", (10, 5, 5), "uint16", (64, 64), "mask",
    )  # fmt: skip
    write_tasks(result.out / ".scaffold", (task,))
    _log(main, own_args, {"cashew": [0.5] * 5, "floods": [0.4] * 5})
    where = tmp_path / "submission"
    done = run_cli("report", str(result.out), "--leaderboard", str(where))
    assert done.returncode == 1  # no whole dimension of the leaderboard's datasets
    with (where / "full_ft" / "results_and_parameters.csv").open() as f:
        datasets = {r["dataset"]: r["partition name"] for r in csv.DictReader(f)}
    assert datasets == {"m-cashew-plant": "default", "floods": "default"}
    info = json.loads((where / "full_ft" / "additional_info.json").read_text())
    assert (
        "Not part of the GEO-Bench-2 leaderboard's datasets: m-cashew-plant, floods."
        in (info["Additional information about submission"])
    )


def test_a_task_ranked_by_another_metric_is_submitted_by_the_leaderboards(project, tmp_path):
    """A classification ranked by TerraTorch's macro ``Accuracy`` (as --geobench and --data
    tasks are) is submitted with the leaderboard's Overall_Accuracy, TerraTorch's
    ``Accuracy_Micro`` of the same runs, never the macro value under the micro name."""
    from mlflow.tracking import MlflowClient

    result, main, _base, own_args, _base_args = project
    _tasks(main, CORE, metric="val/Accuracy")
    config = yaml.safe_load(main.read_text())
    for task in config["tasks"]:
        task["type"] = "classification"
    main.write_text(yaml.safe_dump(config, sort_keys=False))
    store = MlflowClient(tracking_uri=str(result.out / config["storage_uri"]) + "_repeated_exp")
    exp = store.create_experiment(config["experiment_name"] + "_repeated_exp")
    for task in CORE:
        for seed in range(5):
            run = store.create_run(exp, run_name=f"{task}_{seed}")
            for key, arg in own_args.items():
                store.log_param(run.info.run_id, f"model_args/{key}", arg)
            store.log_metric(run.info.run_id, "test_test/Accuracy", (50 + seed) / 100)
            store.log_metric(run.info.run_id, "test_test/Accuracy_Micro", (80 + seed) / 100)
            store.set_terminated(run.info.run_id)
    where = tmp_path / "submission"
    done = run_cli("report", str(result.out), "--leaderboard", str(where))
    assert done.returncode == 0, done.stderr
    with (where / "full_ft" / "results_and_parameters.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["Metric"] for r in rows} == {"Overall_Accuracy"}
    assert sorted({float(r["test metric"]) for r in rows}) == [0.8, 0.81, 0.82, 0.83, 0.84]
    # the paper's table keeps the metric the benchmark ranked by
    table = _csv(run_cli("report", str(result.out), "--format", "csv"))
    first = next(r for r in table if r["task"] == CORE[0])
    assert float(first["mean"]) == pytest.approx(0.52)
