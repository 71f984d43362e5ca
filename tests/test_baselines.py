"""Baselines (`--baseline`) and `scaffold report`: the same benchmark for reference backbones, then
one table and one plot from the real runs."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaffold.analyse.baselines import Baseline, necks_for, probe_backbone
from scaffold.pipeline.new_backbone import Options, generate
from scaffold.render.baselines import baseline_config
from scaffold.write.names import baseline_config_file

from .conftest import BIN, MODELS, clean_env, run_cli, run_json

BACKBONE_KEYS = {"model_factory", "backbone", "necks"}


def structural_diff(a: Any, b: Any, path: tuple = ()) -> set[tuple]:
    """The paths (tuples of keys and list indices) at which two YAML documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: set[tuple] = set()
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                found.add((*path, key))
            else:
                found |= structural_diff(a[key], b[key], (*path, key))
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found = set()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found |= structural_diff(x, y, (*path, i))
        return found
    return set() if a == b else {path}


def is_backbone_key(path: tuple) -> bool:
    """A path inside a terratorch_task that names the backbone, its arguments or necks."""
    if "terratorch_task" not in path:
        return False
    key = path[path.index("terratorch_task") + 1 :]
    return key[0] in BACKBONE_KEYS or (
        key[0] == "model_args" and (key[1] in BACKBONE_KEYS or key[1].startswith("backbone_"))
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# -- the derived config ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_baselines(tmp_path_factory):
    """A CNN backbone generated (not verified) with a timm and a TerraTorch ViT baseline."""
    out = tmp_path_factory.mktemp("baselines") / "cnn"
    return generate(
        Options(
            str(MODELS / "cnn.py"),
            {},
            out=out,
            baselines=("resnet18", "terratorch_prithvi_eo_tiny"),
        )
    )


def test_a_baseline_config_differs_only_in_the_backbone_keys(two_baselines):
    out = two_baselines.out
    main = load(out / "benchmark.yaml")
    resnet = load(out / "baselines" / "resnet18.yaml")
    diff = structural_diff(main, resnet)
    model_args = ("defaults", "terratorch_task", "model_args")
    assert diff == {
        ("experiment_name",),
        ("defaults", "terratorch_task", "model_factory"),
        (*model_args, "backbone"),
    }
    assert resnet["experiment_name"] == "small_cnn-vs-resnet18"
    assert resnet["defaults"]["terratorch_task"]["model_factory"] == "EncoderDecoderFactory"
    assert resnet["defaults"]["terratorch_task"]["model_args"]["backbone"] == "resnet18"
    # tasks, datamodules, trainer, search space and trial count: equal as data
    for key in ("tasks", "optimization_space", "n_trials", "storage_uri"):
        assert resnet[key] == main[key]
    assert resnet["defaults"]["trainer_args"] == main["defaults"]["trainer_args"]

    vit = load(out / "baselines" / "terratorch_prithvi_eo_tiny.yaml")
    diff = structural_diff(main, vit) - {("experiment_name",)}
    assert diff and all(is_backbone_key(p) for p in diff), diff
    args = vit["defaults"]["terratorch_task"]["model_args"]
    assert args["necks"] == [
        {"name": "ReshapeTokensToImage", "remove_cls_token": True},
        {"name": "LearnedInterpolateToPyramidal"},
    ]
    assert args["backbone_pretrained"] is False
    text = (out / "baselines" / "terratorch_prithvi_eo_tiny.yaml").read_text()
    assert (
        "# backbone_pretrained: false: TerraTorch cannot build terratorch_prithvi_eo_tiny" in text
    )
    assert [b["name"] for b in two_baselines.to_dict()["baselines"]] == [
        "resnet18",
        "terratorch_prithvi_eo_tiny",
    ]


def test_task_level_backbone_keys_are_swapped_and_data_keys_kept():
    main = {
        "experiment_name": "mine",
        "custom_modules_path": "/x/mine",
        "defaults": {
            "terratorch_task": {
                "model_factory": "MineFactory",
                "model_args": {
                    "backbone": "mine",
                    "backbone_in_chans": 6,
                    "backbone_forward_kwargs": {"wavelengths": [0.6]},
                    "necks": [{"name": "SelectIndices", "indices": [0]}],
                    "decoder": "UperNetDecoder",
                },
            }
        },
        "tasks": [
            {"name": "a", "terratorch_task": {"model_args": {"backbone_in_chans": 3}}},
            {"name": "b", "terratorch_task": {"model_args": {"backbone_out_indices": [1]}}},
        ],
    }
    necks = [{"name": "PermuteDims", "new_order": [0, 3, 1, 2]}]
    derived = baseline_config(main, Baseline("swin_tiny_patch4_window7_224", necks, False))
    args = derived["defaults"]["terratorch_task"]["model_args"]
    assert args == {
        "backbone": "swin_tiny_patch4_window7_224",
        "backbone_in_chans": 6,
        "necks": necks,
        "decoder": "UperNetDecoder",
        "backbone_pretrained": False,
    }
    assert derived["tasks"][0]["terratorch_task"]["model_args"] == {"backbone_in_chans": 3}
    assert derived["tasks"][1]["terratorch_task"]["model_args"] == {}
    assert derived["custom_modules_path"] == "/x/mine"  # kept as the benchmark has it
    assert main["defaults"]["terratorch_task"]["model_factory"] == "MineFactory"  # not mutated


def test_necks_come_from_the_output_shapes():
    big = probe_backbone("terratorch_prithvi_eo_v2_300", (1, 6, 64, 64))  # meta: no weights
    assert big.necks == [
        {"name": "SelectIndices", "indices": [5, 11, 17, 23]},
        {"name": "ReshapeTokensToImage", "remove_cls_token": True},
        {"name": "LearnedInterpolateToPyramidal"},
    ]
    assert probe_backbone("resnet18", (1, 6, 64, 64)).necks == []
    swin = probe_backbone("swin_tiny_patch4_window7_224", (1, 6, 64, 64))
    assert swin.necks == [{"name": "PermuteDims", "new_order": [0, 3, 1, 2]}]
    assert swin.model_args == {"backbone_img_size": [64, 64]}  # built for 224 otherwise
    # one resolution, three maps, no class token: no learned pyramid (it takes exactly four)
    tokens = necks_for("x", [(1, 16, 8)] * 3, [8, 8, 8], (64, 64))
    assert tokens == [
        {"name": "ReshapeTokensToImage", "remove_cls_token": False},
        {"name": "InterpolateToPyramidal"},
    ]


def test_the_derived_vit_model_builds_and_runs():
    import torch
    from terratorch.models.encoder_decoder_factory import EncoderDecoderFactory

    baseline = probe_backbone("terratorch_prithvi_eo_tiny", (1, 4, 64, 64))
    model = EncoderDecoderFactory().build_model(
        "segmentation",
        backbone=baseline.name,
        backbone_pretrained=False,
        backbone_in_chans=4,
        **baseline.model_args,
        necks=baseline.necks,
        decoder="UperNetDecoder",
        decoder_channels=16,
        num_classes=3,
    )
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, 64, 64)).output
    assert out.shape == (2, 3, 64, 64)


def test_update_carries_hand_edits_of_the_main_config_into_baselines(tmp_path):
    from scaffold.pipeline.update import update_dir

    out = generate(Options(str(MODELS / "cnn.py"), {}, out=tmp_path / "cnn")).out
    assert not (out / "baselines").exists()
    result = update_dir(out, baselines=("resnet18",))
    assert ("baselines/resnet18.yaml", "added") in result.changes
    # A task added by hand to benchmark.yaml, a comment added by hand to the baseline.
    config = out / "benchmark.yaml"
    main = load(config)
    extra = json.loads(json.dumps(main["tasks"][0]))
    extra["name"] = "second"
    config.write_text(config.read_text() + "\n# a person's note\n")
    text = config.read_text().replace("tasks:\n", "tasks:\n" + _as_item(extra), 1)
    config.write_text(text)
    baseline = out / "baselines" / "resnet18.yaml"
    baseline.write_text(baseline.read_text() + "# kept\n")
    result = update_dir(out)
    assert ("baselines/resnet18.yaml", "merged") in result.changes
    derived = load(baseline)
    assert [t["name"] for t in derived["tasks"]] == ["second", "smoke"]
    assert baseline.read_text().endswith("# kept\n")
    assert structural_diff(load(config), derived) == {
        ("experiment_name",),
        ("defaults", "terratorch_task", "model_factory"),
        ("defaults", "terratorch_task", "model_args", "backbone"),
    }
    assert update_dir(out).changes == []  # in step: nothing left to do


def _as_item(task: dict) -> str:
    lines = yaml.safe_dump([task], sort_keys=False).splitlines()
    return "".join(f"  {line}\n" for line in lines)


def test_unknown_baseline_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "x"
    done = run_cli("new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--baseline", "nope")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        (
            "error: --baseline 'nope': TerraTorch's BACKBONE_REGISTRY does not know it (a timm "
            "name such as resnet18, or a TerraTorch name such as terratorch_prithvi_eo_v2_300)"
        )
    ]
    assert not out.exists()


def test_old_state_without_baselines_reads():
    from scaffold.write.state import Options as StateOptions

    old = {"target": "m.py:M", "args": {}, "task": "segmentation"}
    assert StateOptions.from_dict(old).baselines == ()
    assert baseline_config_file("hf-hub:a/b") == "baselines/hf-hub_a_b.yaml"


# -- real runs: verification of both configs, then the report ------------------------------------
@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """`scaffold new-backbone --baseline resnet18`, as a person runs it: both configs verified
    (the verifying runs keep their results with their logs), then both run with the plain
    command, whose results land in the MLflow store the report reads."""
    out = tmp_path_factory.mktemp("verified") / "cnn"
    code, data = run_json(
        "new-backbone", str(MODELS / "cnn.py"), "--out", str(out), "--baseline", "resnet18"
    )
    # The printed command: from the folder, with MLflow's file store allowed.
    env = clean_env() | {"MLFLOW_ALLOW_FILE_STORE": "true"}
    for config in ("benchmark.yaml", "baselines/resnet18.yaml"):
        argv = [str(BIN / "terratorch"), "iterate", "--hpo", "--config", config]
        done = subprocess.run(argv, cwd=out, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return out, code, data


def logged_best(out: Path, experiments: dict[str, str]) -> dict[str, float]:
    """backbone -> the smallest `best_val/loss` MLflow holds for its experiment's task runs."""
    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri=str(out / "runs" / "hpo"))
    found = {}
    for name, experiment in experiments.items():
        exp = store.get_experiment_by_name(experiment)
        found[name] = min(
            r.data.metrics["best_val/loss"]
            for r in store.search_runs([exp.experiment_id])
            if "best_val/loss" in r.data.metrics
        )
    return found


@pytest.mark.e2e
def test_new_backbone_with_a_baseline_verifies_both(verified):
    out, code, data = verified
    assert code == 0, data
    assert data["verified"] is True
    checks = {c["name"]: c for c in data["checks"]}
    assert list(checks)[-2:] == ["benchmark", "baseline resnet18"]
    assert checks["baseline resnet18"]["ok"]
    assert checks["baseline resnet18"]["detail"].startswith("smoke: best_val/loss = ")
    assert data["baselines"] == [
        {
            "name": "resnet18",
            "config": str(out / "baselines" / "resnet18.yaml"),
            "experiment_name": "small_cnn-vs-resnet18",
            "backbone_pretrained": False,
        }
    ]


@pytest.mark.e2e
def test_report_gives_every_task_and_backbone_and_marks_the_best(verified, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store, read here
    out, _, _data = verified
    code, report = run_json("report", str(out))
    assert code == 0
    assert [b["name"] for b in report["backbones"]] == ["small_cnn", "resnet18"]
    assert report["not_run"] == [] and report["notes"] == []
    (row,) = report["tasks"]
    assert (row["name"], row["direction"], row["source"]) == ("smoke", "min", "hpo")
    values = {name: cell["mean"] for name, cell in row["values"].items()}
    assert set(values) == {"small_cnn", "resnet18"}
    assert all(math.isfinite(v) and v > 0 for v in values.values())  # cross-entropy losses
    # the runs' own best values, as MLflow holds them
    assert values == pytest.approx(
        logged_best(out, {"small_cnn": "small_cnn", "resnet18": "small_cnn-vs-resnet18"})
    )
    assert row["best"] == [min(values, key=values.get)]

    table = run_cli("report", str(out))
    assert table.returncode == 0
    line = next(line for line in table.stdout.splitlines() if "smoke" in line)
    cells = [c.strip() for c in line.strip("│┃ ").split("│")]
    best = ["small_cnn", "resnet18"].index(row["best"][0])
    assert cells[2 + best].startswith("* ") and not cells[3 - best].startswith("*")


@pytest.mark.e2e
def test_plot_writes_a_png_of_the_stated_size(verified, tmp_path):
    from matplotlib import image

    out, _, _ = verified
    png = tmp_path / "cmp.png"
    code, report = run_json("report", str(out), "--plot", str(png))
    assert code == 0 and report["plot"] == str(png)
    pixels = image.imread(png)
    # one task: (1 in margin + 3 in per task) x 4 in, at 100 dpi
    assert pixels.shape[:2] == (400, 400)
    assert pixels.std() > 0.05  # drawn, not blank


@pytest.mark.e2e
def test_a_backbone_whose_runs_are_missing_shows_as_missing(verified, tmp_path):
    """A baseline added after the runs: its experiment never ran, its cells are missing."""
    import shutil

    from matplotlib import image
    from rich.console import Console

    from scaffold.console import results_table
    from scaffold.pipeline.update import update_dir
    from scaffold.results.collect import collect, figure, plot_results

    out, _, _ = verified
    copy = tmp_path / "cnn"
    shutil.copytree(out, copy, symlinks=True)
    update_dir(copy, baselines=("terratorch_prithvi_eo_tiny",))
    # update re-rendered the copy's paths: its configs name its own copy of the store
    results = collect(copy)
    report = results.to_dict()
    (row,) = report["tasks"]
    assert row["values"]["terratorch_prithvi_eo_tiny"] is None
    assert row["values"]["resnet18"]["n"] == 1
    assert row["best"] in (["small_cnn"], ["resnet18"])
    assert report["not_run"] == ["terratorch_prithvi_eo_tiny.yaml"]
    assert report["notes"][0].startswith(
        "terratorch_prithvi_eo_tiny: experiment 'small_cnn-vs-terratorch_prithvi_eo_tiny' never ran"
    )
    console = Console(width=200, record=True)
    console.print(results_table(results))
    line = next(line for line in console.export_text().splitlines() if "smoke" in line)
    assert line.rstrip(" │┃").endswith("missing")
    # the plot draws no bar for it (a zero-height bar would read as a value), but says so
    fig = figure(results)
    (ax,) = fig.axes
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([row["values"][n]["mean"] for n in ("small_cnn", "resnet18")])
    assert "missing" in [t.get_text() for t in ax.texts]
    fig.clf()
    png = plot_results(results, tmp_path / "m.png")
    assert image.imread(png).shape[:2] == (400, 400)


def test_repeated_runs_give_mean_and_std_over_seeds(two_baselines, tmp_path):
    """`terratorch iterate --hpo --repeat` of the main config (two seeds); baselines not run."""
    import statistics
    import sys

    from mlflow.tracking import MlflowClient

    from scaffold.results.collect import collect

    out = two_baselines.out
    # the config with run_repetitions, as docs/baselines.md says; a copy, so DIR's files stay as generated
    config = tmp_path / "benchmark.yaml"
    text = (out / "benchmark.yaml").read_text()
    assert "\nrun_repetitions: 5\n" in text  # the default --seeds
    config.write_text(text.replace("\nrun_repetitions: 5\n", "\nrun_repetitions: 2\n"))
    # iterate's repeats refuse a relative store: the copy benchmark.yaml's command makes, from DIR
    copy = re.search(r'mkdir -p runs && (sed ".*?") benchmark\.yaml', text)
    assert copy, text
    repeat = tmp_path / "repeat.yaml"
    command = f"{copy.group(1)} {shlex.quote(str(config))} > {shlex.quote(str(repeat))}"
    subprocess.run(["bash", "-c", command], cwd=out, check=True)
    assert f"storage_uri: {out}/runs/hpo\n" in repeat.read_text()
    # iterate itself, in a fresh process (it registers the backbone wherever it runs), without
    # the 60 s it waits after each seed
    script = (
        "import sys, time; time.sleep = lambda s: None; "
        "from terratorch_iterate.main import main; "
        f"sys.argv = ['terratorch', '--hpo', '--repeat', '--config', {str(repeat)!r}]; main()"
    )
    # From DIR, with MLflow's file store allowed, as the printed command runs.
    env = clean_env() | {"MLFLOW_ALLOW_FILE_STORE": "true"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=out, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]

    report = collect(out).to_dict()
    (row,) = report["tasks"]
    assert (row["source"], row["metric"]) == ("repeated", "test/loss")
    mine = row["values"]["small_cnn"]
    assert row["values"]["resnet18"] is None
    assert row["values"]["terratorch_prithvi_eo_tiny"] is None
    assert row["best"] == ["small_cnn"]
    # the seeds' values as terratorch-iterate logged them in its repeated-runs store
    store = MlflowClient(tracking_uri=str(out / "runs" / "hpo_repeated_exp"))
    experiment = store.get_experiment_by_name("small_cnn_repeated_exp")
    logged = sorted(
        r.data.metrics["test_test/loss"]
        for r in store.search_runs([experiment.experiment_id])
        if r.info.run_name.startswith("smoke_")
    )
    assert mine["n"] == 2 and sorted(mine["values"]) == pytest.approx(logged)
    assert mine["mean"] == pytest.approx(statistics.fmean(logged))
    assert mine["std"] == pytest.approx(statistics.stdev(logged))
    assert report["not_run"] == ["resnet18.yaml", "terratorch_prithvi_eo_tiny.yaml"]


def test_best_follows_the_direction_and_skips_missing():
    from scaffold.results.collect import Cell, TaskRow

    row = TaskRow(
        "t", "val/mIoU", "max", "hpo", {"a": Cell([0.5]), "b": None, "c": Cell([0.7, 0.9])}
    )
    assert row.best == ["c"]
    assert row.cells["c"].std == pytest.approx(0.1414213)
    row.direction = "min"
    assert row.best == ["a"]
    row.cells["d"] = Cell([0.5])
    assert row.best == ["a", "d"]  # a tie marks both
    assert TaskRow("t", "val/loss", "min", "hpo", {"a": None}).best == []
